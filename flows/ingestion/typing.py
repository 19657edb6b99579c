"""SQL that turns a text cell into its declared type, or NULL when it cannot be read.

Everything here is a DuckDB expression over one column, so a 10-million-row file is typed in one
vectorised pass. The forms accepted are the contract's: dates `2024-03-05`, `2024/3/5`, `20240305`
or Excel serials; booleans true/false, 1/0, yes/no, 是/否, Y/N; amounts with `¥` and thousands
separators; full-width digits and letters in ids.
"""

from __future__ import annotations

from phonenumbers import PhoneMetadata

from flows.ingestion.entities import Column

# Full-width ASCII (U+FF01..U+FF5E) and the ideographic space, as their ASCII twins.
_FULL_WIDTH = "".join(chr(c) for c in range(0xFF01, 0xFF5F)) + "\u3000"
_HALF_WIDTH = "".join(chr(c) for c in range(0x21, 0x7F)) + " "
_TRIM = " \t\r\n\x00\u3000\u00a0\ufeff"

TIMESTAMP_FORMATS = [
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%Y%m%d %H:%M:%S",
    "%Y%m%d%H%M%S",
    "%Y%m%d",
    "%Y.%m.%d",
    "%Y年%m月%d日 %H:%M:%S",
    "%Y年%m月%d日 %H:%M",
    "%Y年%m月%d日",
]
TRUE_WORDS = ("true", "t", "1", "yes", "y", "是", "对", "同意")
FALSE_WORDS = ("false", "f", "0", "no", "n", "否", "不", "不同意")
# Mainland mobile numbers, exactly as phonenumbers' own metadata defines them: the common case is
# typed in SQL, and only what does not match goes through phonenumbers in Python.
CN_MOBILE = PhoneMetadata.metadata_for_region("CN").mobile.national_number_pattern

TYPE_LABELS = {
    "timestamp": "date/time",
    "date": "date",
    "decimal": "number",
    "integer": "whole number",
    "bool": "yes/no value",
    "timezone": "time zone",
    "json": "JSON object",
    "phone": "phone number",
    "email": "email address",
}


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _list(values) -> str:
    return "[" + ", ".join(quote(v) for v in values) + "]"


# Cells that need no work at all, the common case, pass through untouched: cleaning every cell
# costs far more (trim with a list of characters is ~1 µs a cell, translate ~5 µs). A cell passes
# when trimming could not change it: its first and last characters are not in `_TRIM` (and, for
# codes, numbers and dates, it is all ASCII, so there is nothing full-width to fold). Comparing
# the two characters is about twice as fast as a regular expression over the cell.
_TRIM_CODES = ", ".join(str(ord(c)) for c in sorted(_TRIM))


def _edges_clean(cell: str) -> str:
    return (
        f"ascii({cell}) not in ({_TRIM_CODES}) and ascii(right({cell}, 1)) not in ({_TRIM_CODES})"
    )


def clean(cell: str, column: Column) -> str:
    """The cell trimmed (and for codes, numbers and dates made half-width); '' becomes NULL."""
    if column.type in ("text", "json"):
        slow = f"nullif(trim({cell}, {quote(_TRIM)}), '')"
        return f"case when {_edges_clean(cell)} then {cell} else {slow} end"
    folded = f"translate({cell}, {quote(_FULL_WIDTH)}, {quote(_HALF_WIDTH)})"
    slow = f"nullif(trim({folded}, {quote(_TRIM)}), '')"
    ascii_only = f"strlen({cell}) = length({cell})"
    return f"case when {ascii_only} and {_edges_clean(cell)} then {cell} else {slow} end"


def _timestamp(c: str, tz: str) -> str:
    zoned = r"[T ]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}(:?\d{2})?)$"
    return (
        f"coalesce(timezone({quote(tz)}, try_strptime({c}, {_list(TIMESTAMP_FORMATS)})), "
        f"case when regexp_matches({c}, {quote(zoned)}) then try_cast({c} as timestamptz) end, "
        f"case when regexp_full_match({c}, '\\d{{5}}(\\.\\d+)?') then timezone({quote(tz)}, "
        f"timestamp '1899-12-30' + to_microseconds(cast(round(cast({c} as double) * 86400e6) "
        f"as bigint))) end)"
    )


def _date(c: str) -> str:
    return (
        f"coalesce(cast(try_strptime({c}, {_list(TIMESTAMP_FORMATS)}) as date), "
        f"case when regexp_full_match({c}, '\\d{{5}}(\\.\\d+)?') then "
        f"cast(date '1899-12-30' + cast(floor(cast({c} as double)) as integer) as date) end)"
    )


def _enum(c: str, column: Column) -> str:
    folded = f"upper({c})" if column.upper else f"lower({c})"
    whens = []
    for canonical, synonyms in column.values.items():
        words = {canonical.upper() if column.upper else canonical.lower()}
        words |= {s.upper() if column.upper else s.lower() for s in synonyms}
        whens.append(
            f"when {folded} in ({', '.join(map(quote, sorted(words)))}) then {quote(canonical)}"
        )
    expression = f"case {' '.join(whens)} else {folded} end" if whens else folded
    if column.default is not None:
        expression = f"coalesce({expression}, {quote(column.default)})"
    return expression


def phone_digits(c: str) -> str:
    return f"regexp_replace({c}, '[\\s\\-().]', '', 'g')"


def phone_national(d: str) -> str:
    """Digits `d` of a mainland number without its +86 / 0086 / 86 prefix."""
    return (
        f"case when starts_with({d}, '+86') then substr({d}, 4) "
        f"when starts_with({d}, '0086') then substr({d}, 5) "
        f"when starts_with({d}, '86') and length({d}) = 13 then substr({d}, 3) else {d} end"
    )


def is_cn_mobile(national: str) -> str:
    return f"regexp_full_match({national}, {quote(CN_MOBILE)})"


def _phone(d: str, python_map: str) -> str:
    """E.164 from the digits column `d`: mainland mobiles here, the rest from phonenumbers."""
    national = phone_national(d)
    return (
        f"case when {d} is null then null when {is_cn_mobile(national)} then '+86' || {national} "
        f"else {python_map} end"
    )


def parse(c: str, column: Column, tz: str, python_phone: str = "null") -> str:
    """Typed value of the cleaned cell column `c`, NULL when unreadable. (For a phone, `c` is its
    digits column, see `phone_digits`.)"""
    kind = column.type
    if kind in ("id", "text"):
        return c
    if kind == "message_ref":  # a message id, or a survey link / token carrying it as ?m=<id>
        return f"coalesce(nullif(regexp_extract({c}, '[?&]m=([^&#\\s]+)', 1), ''), {c})"
    if kind == "enum":
        return _enum(c, column)
    if kind == "timestamp":
        return _timestamp(c, tz)
    if kind == "date":
        return _date(c)
    if kind == "bool":
        return (
            f"case when lower({c}) in ({', '.join(map(quote, TRUE_WORDS))}) then true "
            f"when lower({c}) in ({', '.join(map(quote, FALSE_WORDS))}) then false end"
        )
    if kind == "decimal":
        stripped = f"regexp_replace({c}, '[¥￥$,\\s元]|RMB|CNY', '', 'gi')"
        return f"try_cast({stripped} as decimal(18, 2))"
    if kind == "integer":
        number = f"try_cast({c} as double)"
        return f"case when {number} = floor({number}) then cast({number} as bigint) end"
    if kind == "timezone":
        return f"case when {c} in (select name from pg_timezone_names()) then {c} end"
    if kind == "json":
        return f"case when json_valid({c}) then cast({c} as json) end"
    if kind == "email":
        return f"lower({c})"
    if kind == "phone":
        return _phone(c, python_phone)
    if kind == "list":
        parts = f"list_transform(regexp_split_to_array({c}, '[;,，；、]'), lambda x: trim(x))"
        return f"nullif(array_to_string(list_filter({parts}, lambda x: x <> ''), ';'), '')"
    raise ValueError(f"no parser for column type {kind!r}")
