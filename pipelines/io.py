"""An IO manager that stores nothing.

Lethe's assets write to DuckDB themselves. Dagster's default IO manager would pickle
any returned value into DAGSTER_HOME — a copy of personal data outside the warehouse,
out of reach of retention and erasure — so returning a value is an error here.
"""

from dagster import ConfigurableIOManager, InputContext, OutputContext


class NoStorageIOManager(ConfigurableIOManager):
    def handle_output(self, context: OutputContext, obj) -> None:
        if obj is not None:
            raise TypeError(
                f"{context.asset_key.to_user_string() if context.has_asset_key else context.name}: "
                "assets must write to the warehouse and return nothing (values would be "
                "pickled into DAGSTER_HOME)"
            )

    def load_input(self, context: InputContext):
        return None
