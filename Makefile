# The two commands of the README. Both create .venv and install the project first.
#   make demo   generate sample extracts and run the whole pipeline on an embedded DuckDB
#   make test   run the test suite
# And for Spark (docs/spark.md):
#   make demo-spark  the same pipeline with models and enforcement on a local Spark cluster
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export LETHE_HOME ?= $(CURDIR)/.lethe

.PHONY: demo demo-spark test test-spark install install-spark dev clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

# The spark extra (pyspark ships Spark itself; dbt-spark[PyHive]); Java 17+ must be on PATH.
$(VENV)/.installed-spark: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	@touch $@

install-spark: $(VENV)/.installed-spark

demo: install
	$(BIN)/lethe keygen
	$(BIN)/lethe generate --out $(LETHE_HOME)/landing
	$(BIN)/lethe run

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The demo on Spark: a local standalone cluster (master, two workers, Thrift Server, all
# on 127.0.0.1) started unless one answers, then `lethe run --target spark`. Its own
# LETHE_HOME, since the rows move to the cluster; the cluster keeps running for queries
# (`LETHE_HOME=.lethe-spark scripts/spark-cluster stop` ends it).
SPARK_HOME_DIR ?= $(CURDIR)/.lethe-spark

demo-spark: install-spark
	@command -v java >/dev/null 2>&1 || { echo "demo-spark: no java on PATH (Spark needs Java 17+)"; exit 1; }
	@export LETHE_HOME=$(SPARK_HOME_DIR) LETHE_SPARK_PYTHON=$(CURDIR)/$(BIN)/python; \
	$(BIN)/lethe keygen && \
	{ [ -d "$$LETHE_HOME/landing" ] || $(BIN)/lethe generate --out "$$LETHE_HOME/landing"; } && \
	{ scripts/spark-cluster status >/dev/null 2>&1 || scripts/spark-cluster start; } && \
	$(BIN)/lethe run --target spark

# The Spark checks (docs/spark.md), outside the default suite: a local cluster under a
# temporary LETHE_HOME, the end-to-end test and the macro test on it, then stop.
test-spark: install-spark
	@command -v java >/dev/null 2>&1 || { echo "test-spark: no java on PATH (Spark needs Java 17+)"; exit 1; }
	@export LETHE_HOME=$$(mktemp -d) LETHE_SPARK_PYTHON=$(CURDIR)/$(BIN)/python; \
	trap 'scripts/spark-cluster stop >/dev/null; rm -rf "$$LETHE_HOME"' EXIT; \
	scripts/spark-cluster start && \
	LETHE_SPARK_TESTS=1 $(BIN)/python -m pytest -p no:cacheprovider \
	    tests/integration/test_spark_pipeline.py tests/integration/test_spark_macros.py

dev: install
	$(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf $(LETHE_HOME) dbt_project/target dbt_project/logs
