"""All or nothing: the statements of a block in one DuckDB transaction."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import duckdb


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Commit when the block ends; roll back, and re-raise, when anything in it raises (a
    `KeyboardInterrupt` too): nothing half-written stays."""
    con.execute("begin")
    try:
        yield con
    except BaseException:
        # a rollback that fails too (the database invalidated) must not hide why
        with contextlib.suppress(duckdb.Error):
            con.execute("rollback")
        raise
    con.execute("commit")
