"""A Dagster logger that turns step and asset events into a short progress display.

It prints event types, step names, asset keys and check names — never log messages,
which could carry whatever an upstream tool put in them.
"""

import logging
import sys
import time

from dagster import logger

from pipelines.transform.reuse import is_standing_pass

SHOWN = {
    "STEP_START", "STEP_SUCCESS", "STEP_FAILURE", "ASSET_MATERIALIZATION",
    "ASSET_CHECK_EVALUATION", "RUN_FAILURE",
}


class ProgressHandler(logging.Handler):
    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream or sys.stderr
        self.started: dict[str, float] = {}
        self.assets = 0

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None)
        event = meta.get("dagster_event") if isinstance(meta, dict) else None
        if event is None or event.event_type_value not in SHOWN:
            return
        kind, step = event.event_type_value, event.step_key or ""
        if kind == "STEP_START":
            self.started[step] = time.monotonic()
            self._print(f"▶ {step}")
        elif kind == "STEP_SUCCESS":
            took = time.monotonic() - self.started.get(step, time.monotonic())
            self._print(f"✔ {step} ({took:.1f}s)")
        elif kind == "STEP_FAILURE":
            self._print(f"✘ {step} failed")
        elif kind == "RUN_FAILURE":
            self._print("✘ run failed")
        elif kind == "ASSET_MATERIALIZATION":
            self.assets += 1
            self._print(f"   [{self.assets:>3}] {event.asset_key.to_user_string()}")
        elif kind == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            mark = "pass" if data.passed else "FAIL"
            if is_standing_pass(data.metadata):
                mark += f" (not run again: the pass of run {str(data.metadata['result_of_run'].value)[:8]} stands)"
            self._print(f"         check {data.check_name} on {data.asset_key.to_user_string()}: {mark}")

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


@logger(description="Prints a short progress display of steps, assets and checks.")
def lethe_progress_logger(init_context):
    log = logging.Logger("lethe_progress", level=logging.DEBUG)
    log.addHandler(ProgressHandler())
    return log
