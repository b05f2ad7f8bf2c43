"""Where Lethe keeps its state, resolved from the environment when asked (never at import).

Everything lives under ``LETHE_HOME`` (default ``./.lethe``): the landing zone, the
DuckDB warehouse and Dagster's home. Each can be moved on its own by an environment
variable or a CLI flag. ``export()`` writes the resolved absolute paths back to the
environment so that dbt's ``profiles.yml`` and Dagster read the same warehouse.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "LETHE_HOME"
LANDING_ENV = "LETHE_LANDING"
WAREHOUSE_ENV = "LETHE_WAREHOUSE"
DAGSTER_HOME_ENV = "DAGSTER_HOME"

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"


@dataclass(frozen=True)
class LethePaths:
    home: Path
    landing: Path
    warehouse: Path
    dagster_home: Path

    @classmethod
    def resolve(
        cls,
        home: str | Path | None = None,
        landing: str | Path | None = None,
        warehouse: str | Path | None = None,
        dagster_home: str | Path | None = None,
    ) -> "LethePaths":
        """Flags win over environment variables, which win over defaults under LETHE_HOME."""
        env = os.environ
        home_path = Path(home or env.get(HOME_ENV) or ".lethe").expanduser().resolve()

        def pick(flag, var, default: Path) -> Path:
            value = flag or env.get(var)
            return Path(value).expanduser().resolve() if value else default

        return cls(
            home=home_path,
            landing=pick(landing, LANDING_ENV, home_path / "landing"),
            warehouse=pick(warehouse, WAREHOUSE_ENV, home_path / "warehouse.duckdb"),
            dagster_home=pick(dagster_home, DAGSTER_HOME_ENV, home_path / "dagster_home"),
        )

    def export(self) -> None:
        """Make these paths the environment's, for dbt and Dagster child processes."""
        os.environ[HOME_ENV] = str(self.home)
        os.environ[LANDING_ENV] = str(self.landing)
        os.environ[WAREHOUSE_ENV] = str(self.warehouse)
        os.environ[DAGSTER_HOME_ENV] = str(self.dagster_home)

    def ensure_dirs(self) -> None:
        for path in (self.home, self.landing, self.warehouse.parent, self.dagster_home):
            path.mkdir(parents=True, exist_ok=True)
        instance_config = self.dagster_home / "dagster.yaml"
        if not instance_config.exists() or instance_config.read_text(encoding="utf-8") == EARLIER_INSTANCE_YAML:
            # an explicit (local, SQLite) instance, and no usage statistics sent anywhere;
            # an instance configured by its operator is left as it is
            instance_config.write_text(INSTANCE_YAML, encoding="utf-8")


INSTANCE_YAML = """\
# Written by Lethe (LethePaths.ensure_dirs in pipelines/settings.py). A local SQLite
# instance, with no usage statistics sent anywhere; its event log keeps its database
# connections open between writes (pipelines/dagster_storage.py).
telemetry:
  enabled: false
storage:
  custom:
    module: pipelines.dagster_storage
    class: LetheSqliteStorage
    config:
      base_dir:
        env: DAGSTER_HOME
"""

# what earlier versions wrote: replaced by INSTANCE_YAML; any other content is the
# operator's and is left as it is
EARLIER_INSTANCE_YAML = "telemetry:\n  enabled: false\n"
