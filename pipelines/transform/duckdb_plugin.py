"""dbt-duckdb plugin: gives every dbt connection and cursor the pseudonymisation key's
pads and Lethe's SQL functions.

Named in ``dbt_project/profiles.yml``. The key is read from the environment or the key
file by ``pipelines.pseudonym`` — it is never a dbt var (vars are written to
run_results.json and dbt.log) and never appears in compiled SQL. dbt-duckdb runs
models on cursors, which are connections of their own in DuckDB: session variables and
temporary macros do not carry over, so each cursor is configured too.
"""

from dbt.adapters.duckdb.plugins import BasePlugin

from pipelines.enforce.compact import duckdb_settings
from pipelines.pseudonym import load_key
from pipelines.sql_functions import install_sql_functions


class Plugin(BasePlugin):
    def initialize(self, plugin_config):
        self._key = load_key()

    def configure_connection(self, conn):
        # memory limit and spill directory are database-wide: set once, like Lethe's own connections
        for name, value in duckdb_settings().items():
            quoted = value.replace("'", "''")
            conn.execute(f"SET {name} = '{quoted}'")
        install_sql_functions(conn, self._key)

    def configure_cursor(self, cursor):
        install_sql_functions(cursor, self._key)
