"""Building the models: the dbt runner (`runner`) and, for another engine than DuckDB, the lake
its sources are landed in (`lake`)."""
