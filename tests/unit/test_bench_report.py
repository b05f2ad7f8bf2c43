"""The benchmark's printed report shows each repeat's totals beside the medians."""

from benchmarks.run import report


def _result(runs: list[dict], erasure_runs: list[dict]) -> dict:
    stage = {"stage": "ingest", "seconds": 2.0, "peak_rss": 2**20}
    return {
        "scale": "tiny", "repeat": len(runs), "dataset": {"rows": 100, "contacts": 10, "bytes": 2**20},
        "pipeline": {"seconds": 3.0, "peak_rss": 2**20, "stages": [stage]},
        "reference": {"seconds": 1.0, "peak_rss": 2**20, "stages": [stage]},
        "ratios": {"end to end": 3.0}, "startup_seconds": 0.5, "runs": runs,
        "same_final_counts": True, "final_counts": {"pipeline": {}, "reference": {}},
        "pseudonymised": {"pipeline": {}, "reference": {}},
        "erasure": [{"k": 5, "pipeline": {"seconds": 2.0, "stages": [stage]},
                     "reference": {"seconds": 1.0, "stages": [stage]}, "ratio": 2.0,
                     "ratio_without_startup": 1.9, "runs": erasure_runs}],
    }


def test_each_repeat_is_listed_in_order_when_there_are_several():
    text = report(_result([{"pipeline": 3.04, "reference": 1.0}, {"pipeline": 2.5, "reference": 1.3}],
                          [{"pipeline": 9.0, "reference": 4.0}, {"pipeline": 7.0, "reference": 3.5}]))
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("each run")]
    assert [line.split(")", 1)[1].strip(" :") for line in lines] == \
        ["3.0 / 1.0, 2.5 / 1.3", "9.0 / 4.0, 7.0 / 3.5"]


def test_one_run_prints_no_list():
    text = report(_result([{"pipeline": 3.0, "reference": 1.0}], [{"pipeline": 9.0, "reference": 4.0}]))
    assert "each run" not in text
