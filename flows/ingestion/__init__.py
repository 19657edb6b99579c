"""A company's files (or API pages) into DuckDB safely: read, type, validate, quarantine, upsert.

Plain functions; the Prefect flow in `flows/ingest.py` wires them.
"""
