"""Running Lethe's dbt models and enforcement on a Spark cluster (the ``spark`` dbt target).

DuckDB stays the ingestion engine: extracts are read, checked against their contracts and
quarantined there exactly as on the default path; the validated raw tables are then
shipped to Spark (``ship``), where dbt builds the same models and enforcement rewrites the
tables. See docs/spark.md.
"""
