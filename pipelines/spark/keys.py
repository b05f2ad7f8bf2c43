"""The pseudonymisation key's HMAC pads for Spark, in a file outside the warehouse.

The ``spark__lethe_hmac_sha256`` macro reads ``ipad``/``opad`` from the one-row Parquet
file named by ``LETHE_SPARK_KEY_PADS``. The pads are derived from the key (RFC 2104), so
the file is as secret as the key: owner-only, in its own owner-only folder, never under
the Spark warehouse, rewritten from the key file on every run (a rotated key takes
effect) and written with polars — the bytes never pass through SQL text, which the Thrift
Server logs and dbt keeps in its artefacts.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from pipelines.pseudonym import hmac_pads, load_key

PADS_ENV = "LETHE_SPARK_KEY_PADS"


def write_key_pads(folder: Path, key: bytes | None = None) -> Path:
    """Write ``<folder>/hmac_pads.parquet`` (0600, folder 0700) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ipad, opad = hmac_pads(key or load_key())
    target = folder / "hmac_pads.parquet"
    staged = folder / f".hmac_pads.{os.getpid()}.parquet"
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    try:
        pl.DataFrame({"ipad": [ipad], "opad": [opad]}, schema={"ipad": pl.Binary, "opad": pl.Binary}) \
            .write_parquet(staged)
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)
    return target


def export_pads_path(path: Path) -> None:
    """Name the pads file for dbt (``profiles.yml``/macros read it with env_var)."""
    os.environ[PADS_ENV] = str(path.resolve())
