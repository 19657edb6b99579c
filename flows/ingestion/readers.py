"""Read one entity's file (CSV, XLSX or Parquet) into a DuckDB temp table of text cells.

Every cell stays text here: typing and validation happen afterwards, in SQL, so that a bad cell
becomes a quarantine reason instead of a crash. Each row keeps its line number in the file
(`_line`), and records the CSV parser cannot split (too many or too few fields, bad quoting) are
returned as `malformed` with DuckDB's line number and the raw text.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
from charset_normalizer import from_bytes

from flows.ingestion.entities import Entity, bare_header, normalise_header

log = logging.getLogger(__name__)
_MAX_CELL_BYTES = 64 * 1024 * 1024
_MAX_COLUMNS = 1000  # a CRM export has dozens; thousands is another file

FORMATS = (".csv", ".xlsx", ".parquet")
_SAMPLE_BYTES = 1 << 20
_HEADER_SCAN_ROWS = 20
_PRIVATE_USE = re.compile("[\ue000-\uf8ff]")
_CHINESE_ENCODINGS = {"gb2312", "gbk", "gb18030", "hz", "cp936", "big5", "big5hkscs", "cp950"}


class SourceError(Exception):
    """A fatal problem with a source file; the message is one line for the user."""


@dataclass
class SourceTable:
    entity: str
    path: Path
    table: str
    headers: list[str]
    columns: dict[str, str]  # contract column name -> cell column (c0, c1, …)
    extras: dict[str, str]  # unknown header text -> cell column
    rows: int = 0
    header_line: int = 1
    encoding: str = "utf-8"
    blank_rows: int = 0
    malformed: list[tuple[int, str, str]] = field(default_factory=list)  # (line, raw, reason)


def find_source_file(folder: Path, entity: str) -> Path | None:
    """The entity's file in the folder (`orders.csv`, `orders.xlsx` or `orders.parquet`), if any."""
    found = [p for p in (folder / f"{entity}{ext}" for ext in FORMATS) if p.is_file()]
    if not found:
        found = [
            p for p in folder.iterdir() if p.stem.lower() == entity and p.suffix.lower() in FORMATS
        ]
    if len(found) > 1:
        names = ", ".join(sorted(p.name for p in found))
        raise SourceError(f"{folder}: several files for {entity} ({names}); keep one")
    return found[0] if found else None


def read_source(
    con: duckdb.DuckDBPyConnection,
    entity: Entity,
    path: Path,
    table: str,
    work_dir: Path,
    encoding: str | None = None,
) -> SourceTable:
    """Read `path` into temp table `table` with columns `_line, c0 … cN` (all VARCHAR); a CSV in
    `encoding`, else in the one `detect_encoding` finds."""
    if path.stat().st_size == 0:
        raise SourceError(f"{path.name}: the file is empty (no header row)")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(con, entity, path, table, work_dir, detect_encoding(path, encoding))
    if suffix == ".xlsx":
        return _read_xlsx(con, entity, path, table)
    if suffix == ".parquet":
        return _read_parquet(con, entity, path, table)
    raise SourceError(
        f"{path.name}: unsupported file type {suffix!r} (use .csv, .xlsx or .parquet)"
    )


# --- header handling -------------------------------------------------------------------------


def _map_headers(entity: Entity, path: Path, headers: list[str]) -> tuple[dict, dict]:
    if len(headers) > _MAX_COLUMNS:
        raise SourceError(
            f"{path.name}: {len(headers):,} columns, more than {_MAX_COLUMNS:,}: not an export of"
            f" {entity.name}"
        )
    known = entity.header_map()
    columns: dict[str, str] = {}
    extras: dict[str, str] = {}
    named: dict[str, str] = {}  # column -> the header it was read from
    for position, text in enumerate(headers):
        cell = f"c{position}"
        name = _column_of(known, text)
        if name and name in columns:
            raise SourceError(
                f"{path.name}: headers {named[name]!r} and {text!r} are both {name}; keep one"
            )
        if name:
            columns[name], named[name] = cell, text
        else:
            label = (text or "").strip() or f"column_{position + 1}"
            extras.setdefault(label, cell)
    missing = [c for c in entity.required_columns if c not in columns]
    if missing:
        named = [" ".join(h.split()) or repr(h) for h in headers if h]  # one line, always
        found = ", ".join(named[:20]) + (f", … ({len(named) - 20} more)" if len(named) > 20 else "")
        found = found or "none"
        raise SourceError(
            f"{path.name}: missing required column {', '.join(missing)} (found: {found})"
        )
    return columns, extras


def _column_of(known: dict[str, str], text: str | None) -> str | None:
    """The column a header names, as written or without its note in brackets."""
    return known.get(normalise_header(text or "")) or known.get(
        normalise_header(bare_header(text or ""))
    )


def _find_header_row(entity: Entity, path: Path, rows: list[list[str]]) -> int:
    """Index of the header row: the first row naming every required column (title rows above it
    are skipped); failing that the first row naming any known column."""
    known = entity.header_map()
    required = set(entity.required_columns)
    best = None
    for index, row in enumerate(rows[:_HEADER_SCAN_ROWS]):
        names = {_column_of(known, cell) for cell in row} - {None}
        if required <= names and names:
            return index
        if best is None and names:
            best = index
    if best is None:
        raise SourceError(
            f"{path.name}: no header row found (expected columns such as "
            f"{', '.join(entity.required_columns or list(entity.columns)[:3])})"
        )
    return best


# --- CSV --------------------------------------------------------------------------------------


def detect_encoding(path: Path, named: str | None = None) -> str:
    """By its byte order mark (`utf-8-sig`, `utf-16`: Excel's "Unicode text"), else `named` (the
    import rules'), else the first of UTF-8 and GB18030 that decodes the start of the file
    strictly (GB18030 without private-use characters, which Big5 or Shift_JIS bytes read as
    GB18030 give), else what charset-normalizer finds (GBK family read as GB18030). GB18030 comes
    before the detector: on a typical CRM export, mostly ASCII with short Chinese names, the
    detector says Korean or Japanese."""
    with path.open("rb") as handle:
        sample = handle.read(_SAMPLE_BYTES)
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if named:
        return named
    for encoding in ("utf-8", "gb18030"):
        try:  # the whole file when it is shorter than the sample: it must end whole too
            text = codecs.getincrementaldecoder(encoding)().decode(
                sample, final=len(sample) < _SAMPLE_BYTES
            )
        except UnicodeDecodeError:
            continue
        if not _PRIVATE_USE.search(text):
            return encoding
    best = from_bytes(sample).best()
    encoding = (best.encoding if best else "gb18030").lower()
    if encoding in _CHINESE_ENCODINGS and not encoding.startswith("big5") and encoding != "cp950":
        return "gb18030"
    return encoding


def _to_utf8(path: Path, encoding: str, work_dir: Path) -> Path:
    """Transcode to a UTF-8 copy in `work_dir`, streaming, so DuckDB can read it."""
    target = Path(tempfile.mkstemp(prefix=f"{path.stem}.", suffix=".csv", dir=work_dir)[1])
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0
    try:
        with path.open("rb") as src, target.open("w", encoding="utf-8", newline="") as dst:
            while chunk := src.read(16 << 20):
                dst.write(decoder.decode(chunk))
                offset += len(chunk)
            dst.write(decoder.decode(b"", final=True))
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{path.name}: not valid {encoding} near byte {offset + exc.start}; "
            "save it as UTF-8 or GB18030"
        ) from exc
    return target


def _head_rows(path: Path) -> tuple[list[list[str]], str]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            head = "".join(itertools.islice(handle, _HEADER_SCAN_ROWS))
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path.name}: not valid UTF-8 near byte {exc.start}") from None
    first = next((line for line in head.splitlines() if line.strip()), "")
    delimiter = max([",", "\t", ";", "|"], key=first.count)
    # a cell of megabytes (a pasted document) is the row's problem, not the file's
    csv.field_size_limit(max(csv.field_size_limit(), _MAX_CELL_BYTES))
    try:
        rows = list(csv.reader(io.StringIO(head), delimiter=delimiter))
    except csv.Error as exc:  # a cell over the csv module's field limit (a 2 MB cell)
        raise SourceError(f"{path.name}: the first rows cannot be read as CSV ({exc})") from None
    return rows, delimiter


def _read_csv(
    con, entity: Entity, path: Path, table: str, work_dir: Path, encoding: str
) -> SourceTable:
    readable = path if encoding in ("utf-8", "utf-8-sig") else _to_utf8(path, encoding, work_dir)
    rows, delimiter = _head_rows(readable)
    if not rows:
        raise SourceError(f"{path.name}: the file is empty (no header row)")
    header_index = _find_header_row(entity, path, rows)
    headers = rows[header_index]
    header_line = header_index + 1  # csv.reader yields one row per line here, blank ones too
    columns, extras = _map_headers(entity, path, headers)
    cells = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(headers)))
    scan, rejects = f"{table}_scan", f"{table}_rejects"
    con.execute(
        f"""
        create or replace temp table {table}_read as
        select * from read_csv(?, header = true, skip = ?, delim = ?, quote = '"', escape = '"',
            auto_detect = false, columns = {{{cells}}}, store_rejects = true,
            rejects_scan = '{scan}', rejects_table = '{rejects}', strict_mode = true,
            null_padding = false, max_line_size = 4000000)
        """,
        [str(readable), header_line - 1, delimiter],
    )
    malformed, blank = _malformed_lines(con, rejects)
    accepted = con.execute(f"select count(*) from {table}_read").fetchone()[0]
    line_of = _line_numbers_sql(header_line, [m[0] for m in malformed], blank)
    # A view, not a copy: at 20M rows every copy of the text costs seconds (and disk, spilled).
    first_rowid = con.execute(f"select min(rowid) from {table}_read").fetchone()[0] or 0
    is_blank = _blank_row_sql(len(headers))
    con.execute(
        f"""
        create or replace temp view {table} as
        with numbered as (select rowid - {first_rowid} as _ordinal, * from {table}_read)
        select {line_of} as _line, * exclude (_ordinal) from numbered where not ({is_blank})
        """
    )
    blank_rows = con.execute(f"select count(*) from {table}_read where {is_blank}").fetchone()[0]
    return SourceTable(
        entity=entity.name,
        path=path,
        table=table,
        headers=headers,
        columns=columns,
        extras=extras,
        rows=accepted - blank_rows,
        header_line=header_line,
        encoding=encoding,
        blank_rows=blank_rows + len(blank),
        malformed=malformed,
    )


def _malformed_lines(con, rejects: str) -> tuple[list[tuple[int, str, str]], list[int]]:
    """Records DuckDB could not split, one per line (a record may fail on several columns).
    Lines holding nothing but whitespace or NUL bytes are blank, not data."""
    rows = con.execute(
        f"""
        select line, any_value(csv_line), string_agg(distinct error_message, '; ')
        from {rejects} group by line order by line
        """
    ).fetchall()
    malformed, blank = [], []
    for line, raw, message in rows:
        text = (raw or "").replace("\x00", "")
        if not text.strip():
            blank.append(int(line))
        else:
            malformed.append((int(line), text.strip("\r\n"), f"malformed record: {message}"))
    return malformed, blank


def _line_numbers_sql(header_line: int, rejected: list[int], blank: list[int]) -> str:
    """SQL for each accepted row's line: rows follow the header one a line, skipping the lines
    of rejected records. (A quoted field spanning lines, or an empty line, shifts the count:
    DuckDB reports neither, so numbers then count records rather than physical lines.)"""
    first = header_line + 1
    skipped = sorted(set(rejected) | set(blank))
    if not skipped:
        return f"(_ordinal + {first})"
    # Accepted slots before the i-th skipped line; a row moves down one for each skipped line
    # that comes before its slot.
    slots_before = [line - first - i for i, line in enumerate(skipped)]
    return f"(_ordinal + {first} + len(list_filter({slots_before}, lambda s: s <= _ordinal)))"


def drop_source(con: duckdb.DuckDBPyConnection, src: SourceTable) -> None:
    """Free what `read_source` created."""
    if src.path.suffix.lower() == ".csv":
        con.execute(f"drop view {src.table}")
        con.execute(f"drop table {src.table}_read")
    else:
        con.execute(f"drop table {src.table}")


def _blank_row_sql(width: int) -> str:
    return " and ".join(f"nullif(trim(c{i}), '') is null" for i in range(width)) or "false"


# --- XLSX and Parquet -------------------------------------------------------------------------


def _read_xlsx(con, entity: Entity, path: Path, table: str) -> SourceTable:
    import polars as pl

    try:
        frame = pl.read_excel(
            path, engine="calamine", has_header=False, infer_schema_length=0, raise_if_empty=False
        )
    except Exception as exc:  # calamine raises its own types for broken workbooks
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise SourceError(f"{path.name}: cannot read the workbook ({first})") from None
    if frame.height == 0:
        raise SourceError(f"{path.name}: the first sheet is empty (no header row)")
    frame = frame.with_columns(pl.all().cast(pl.String))
    head = [list(r) for r in frame.head(_HEADER_SCAN_ROWS).iter_rows()]
    header_index = _find_header_row(entity, path, head)
    headers = [str(h) if h is not None else "" for h in head[header_index]]
    columns, extras = _map_headers(entity, path, headers)
    body = frame.slice(header_index + 1).with_row_index("_ordinal")
    body.columns = ["_ordinal", *[f"c{i}" for i in range(len(headers))]]
    con.register(f"{table}_frame", body.to_arrow())
    header_line = header_index + 1
    con.execute(
        f"create or replace temp table {table} as "
        f"select (_ordinal + {header_line + 1})::bigint as _line, * exclude (_ordinal) "
        f"from {table}_frame"
    )
    con.unregister(f"{table}_frame")
    blank_rows = con.execute(
        f"delete from {table} where {_blank_row_sql(len(headers))}"
    ).fetchone()[0]
    return SourceTable(
        entity=entity.name,
        path=path,
        table=table,
        headers=headers,
        columns=columns,
        extras=extras,
        rows=body.height - blank_rows,
        header_line=header_line,
        encoding="xlsx",
        blank_rows=blank_rows,
    )


def _read_parquet(con, entity: Entity, path: Path, table: str) -> SourceTable:
    try:
        names = [
            r[0]
            for r in con.execute("describe select * from read_parquet(?)", [str(path)]).fetchall()
        ]
    except duckdb.Error as exc:
        raise SourceError(f"{path.name}: cannot read the Parquet file ({exc})") from exc
    columns, extras = _map_headers(entity, path, names)
    cells = ", ".join(f'cast("{n}" as varchar) as c{i}' for i, n in enumerate(names))
    con.execute(
        f"create or replace temp table {table} as "
        f"select (file_row_number + 1)::bigint as _line, {cells} "
        f"from read_parquet(?, file_row_number = true)",
        [str(path)],
    )
    rows = con.execute(f"select count(*) from {table}").fetchone()[0]
    return SourceTable(
        entity=entity.name,
        path=path,
        table=table,
        headers=names,
        columns=columns,
        extras=extras,
        rows=rows,
        header_line=0,
        encoding="parquet",
    )
