"""GE imports pyspark.sql.connect when pyspark is installed; in a process whose __main__
has no spec and no file (pytest-xdist workers, `python -c`) pyspark calls sys.exit(0)
there when Spark Connect's optional packages are missing — enforcement then died with
``SystemExit: 0``. A stand-in pyspark that exits the same way shows the guard's effect."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _fake_pyspark(root: Path) -> Path:
    connect = root / "pyspark" / "sql" / "connect"
    connect.mkdir(parents=True)
    (root / "pyspark" / "__init__.py").write_text("")
    (root / "pyspark" / "sql" / "__init__.py").write_text("")
    # what pyspark.sql.connect.utils.check_dependencies does in such a process
    (connect / "__init__.py").write_text("import sys\nsys.exit(0)\n")
    return root


def _run(code: str, fake: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": f"{fake}:{REPO}", "PATH": "/usr/bin:/bin"})


def test_guard_turns_the_exit_into_an_import_error(tmp_path):
    fake = _fake_pyspark(tmp_path)
    probe = ("\ntry:\n    from pyspark.sql.connect import DataFrame\nexcept ImportError:\n"
             "    print('import error, still running')\n")

    unguarded = _run(probe, fake)
    assert unguarded.returncode == 0 and "still running" not in unguarded.stdout  # the stand-in exits

    guarded = _run("from pipelines.enforce.proof import keep_spark_connect_from_exiting\n"
                   "keep_spark_connect_from_exiting()" + probe, fake)
    assert guarded.returncode == 0, guarded.stderr[-2000:]
    assert "import error, still running" in guarded.stdout


def test_great_expectations_validates_in_a_python_c_process():
    """The real import chain in this environment (with or without the spark extra)."""
    code = ("from pipelines.enforce.proof import Proof, validate_with_great_expectations\n"
            "print(validate_with_great_expectations([Proof('p', 'd', 0), Proof('q', 'd', 2)]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "{'p': True, 'q': False}" in done.stdout
