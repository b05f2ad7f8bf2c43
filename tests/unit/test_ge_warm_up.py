"""Great Expectations is imported in the background while a dbt step runs, so the proofs
at the end of enforcement do not pay its ≈ 3 s import on the run's critical path. The
import must still happen (the proofs find it done), happen once, and a failure of it in
the background must neither be lost nor surface anywhere but in the proofs, as before."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pipelines.transform.dbt as dbt_module

REPO = Path(__file__).resolve().parents[2]


def _run(code: str, *paths: Path) -> subprocess.CompletedProcess:
    pythonpath = ":".join([*(str(p) for p in paths), str(REPO)])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin"})


def test_the_background_import_loads_great_expectations_once_and_the_proofs_use_it():
    code = (
        "import sys\n"
        "from pipelines.enforce import proof\n"
        "assert 'great_expectations' not in sys.modules\n"
        "thread = proof.warm_up_great_expectations()\n"
        "assert thread is not None and thread.daemon\n"
        "thread.join(240)\n"
        "print('imported', 'great_expectations' in sys.modules)\n"
        "print('again', proof.warm_up_great_expectations())\n"
        "print(proof.validate_with_great_expectations([proof.Proof('p', 'd', 0), proof.Proof('q', 'd', 2)]))\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["imported True", "again None", "{'p': True, 'q': False}"]


def test_a_failed_background_import_is_reported_by_the_proofs_and_nowhere_else(tmp_path):
    broken = tmp_path / "great_expectations"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise RuntimeError('the package is broken')\n")
    code = (
        "from pipelines.enforce import proof\n"
        "proof.warm_up_great_expectations().join(60)\n"
        "try:\n"
        "    proof.validate_with_great_expectations([proof.Proof('p', 'd', 0)])\n"
        "except RuntimeError as error:\n"
        "    print('proofs raised:', error)\n"
    )
    done = _run(code, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "proofs raised: the package is broken"
    assert "Exception in thread" not in done.stderr  # the background failure is not printed as its own


def test_a_dbt_step_starts_the_import_once_dbt_is_launched(monkeypatch, tmp_path):
    order = []

    class Invocation:
        target_path = tmp_path / "not-the-project-target"

        def stream(self):
            order.append("stream")
            return iter(())

    class Dbt:
        def cli(self, args, context=None):
            order.append("dbt launched")
            return Invocation()

    monkeypatch.setattr(dbt_module, "warm_up_great_expectations", lambda: order.append("warm up"))
    monkeypatch.setenv(dbt_module.WAREHOUSE_ENV, "restored after the test")  # the step sets it
    warehouse = SimpleNamespace(resolved_path=lambda: tmp_path / "warehouse.duckdb")
    engine = SimpleNamespace(is_spark=lambda: False)
    list(dbt_module._stream_build(SimpleNamespace(), Dbt(), warehouse, engine))
    assert order == ["dbt launched", "warm up", "stream"]
