"""`flows.atomic.transaction`: all of a block or none of it."""

import duckdb
import pytest

from flows.atomic import transaction


@pytest.fixture
def con(tmp_path):
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    con.execute("create table t (x integer)")
    yield con
    con.close()


def test_a_block_that_ends_is_committed(con):
    with transaction(con):
        con.execute("insert into t values (1), (2)")
    assert con.execute("select count(*) from t").fetchone()[0] == 2
    # committed: a new transaction can start, and a second connection sees the rows
    assert con.cursor().execute("select sum(x) from t").fetchone()[0] == 3


def test_a_block_that_raises_leaves_nothing_and_the_error_goes_on(con):
    with pytest.raises(ZeroDivisionError), transaction(con):
        con.execute("insert into t values (1)")
        1 / 0  # noqa: B018
    assert con.execute("select count(*) from t").fetchone()[0] == 0
    # no transaction is left open: the next block starts its own
    with transaction(con):
        con.execute("insert into t values (7)")
    assert con.execute("select x from t").fetchall() == [(7,)]


def test_a_failed_statement_rolls_back_the_earlier_ones(con):
    with pytest.raises(duckdb.ConversionException), transaction(con):
        con.execute("insert into t values (1)")
        con.execute("insert into t values ('not a number')")
    assert con.execute("select count(*) from t").fetchone()[0] == 0
