"""One Thrift (HiveServer2) session on the Spark Thrift Server, set up like dbt's.

The same environment variables as the ``spark`` target of ``dbt_project/profiles.yml``,
and the same session settings (UTC, ANSI on), so SQL run from Python sees what the dbt
models see. PyHive comes with ``dbt-spark[PyHive]`` (the ``spark`` extra).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

SESSION_SETTINGS = {
    "set:hiveconf:spark.sql.session.timeZone": "UTC",
    "set:hiveconf:spark.sql.ansi.enabled": "true",
}


def spark_quote(name: str) -> str:
    """A Spark SQL identifier in backticks (a backtick inside it doubled)."""
    return "`" + name.replace("`", "``") + "`"


@dataclass(frozen=True)
class SparkEndpoint:
    host: str
    port: int
    user: str

    @classmethod
    def from_env(cls) -> "SparkEndpoint":
        return cls(
            host=os.environ.get("LETHE_SPARK_HOST", "127.0.0.1"),
            port=int(os.environ.get("LETHE_SPARK_THRIFT_PORT", "10000")),
            user=os.environ.get("LETHE_SPARK_USER", "lethe"),
        )

    def describe(self) -> str:
        return f"{self.host}:{self.port}"


class SparkUnavailable(RuntimeError):
    """The Thrift Server does not answer; the message says how to start one."""


@contextmanager
def spark_cursor(endpoint: SparkEndpoint | None = None):
    """A PyHive cursor on a fresh session; closed afterwards."""
    endpoint = endpoint or SparkEndpoint.from_env()
    try:
        from pyhive import hive
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SparkUnavailable("PyHive is not installed: pip install -e '.[spark]'") from exc
    try:
        connection = hive.connect(host=endpoint.host, port=endpoint.port, username=endpoint.user,
                                  configuration=dict(SESSION_SETTINGS))
    except Exception as exc:
        raise SparkUnavailable(
            f"no Spark Thrift Server answers at {endpoint.describe()} ({type(exc).__name__}); "
            "start the local one with `scripts/spark-cluster start` or set LETHE_SPARK_HOST / "
            "LETHE_SPARK_THRIFT_PORT"
        ) from None
    try:
        cursor = connection.cursor()
        yield cursor
    finally:
        connection.close()


def rows(cursor, sql: str) -> list[tuple]:
    cursor.execute(sql)
    return cursor.fetchall()
