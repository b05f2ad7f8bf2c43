"""dbt-duckdb plugin: gives every dbt connection the pseudonymisation key's pads.

Named in ``dbt_project/profiles.yml``. The key is read from the environment or the key
file by ``pipelines.pseudonym`` — it is never a dbt var (vars are written to
run_results.json and dbt.log) and never appears in compiled SQL.
"""

from dbt.adapters.duckdb.plugins import BasePlugin

from pipelines.sql_functions import install_sql_functions


class Plugin(BasePlugin):
    def configure_connection(self, conn):
        install_sql_functions(conn)
