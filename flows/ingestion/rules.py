"""A company's own import rules: `import.yml` in the source folder (else the file
`FOLLOWUP_IMPORT` names), read without touching code.

    encoding: gb18030              # every file of the folder (default: detected)
    files:
      staff.csv: {encoding: big5}  # one file
    headers:                       # more header names, per entity: header -> column
      customers: {会员号: customer_id, 手机1: phone}
    labels:                        # more labels of enumerated columns: label -> value
      orders:
        status: {待评价: paid, 退款中: refunded}

Everything is checked when the file is read: an unknown entity, column, encoding or value is one
line naming it, before anything is loaded.
"""

from __future__ import annotations

import codecs
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flows.ingestion.entities import (
    LOAD_ORDER,
    OTHER_ENTITIES,
    Entity,
    load_entity,
    normalise_header,
)

FILE_NAME = "import.yml"
ENTITIES = (*LOAD_ORDER, *OTHER_ENTITIES)


class RulesError(ValueError):
    """The import rules cannot be used; one line naming the file and the entry."""


@dataclass(frozen=True)
class ImportRules:
    path: Path | None = None
    encoding: str | None = None
    encodings: dict[str, str] = field(default_factory=dict)  # file name -> encoding
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # entity -> header -> column
    labels: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    @classmethod
    def find(cls, source_dir: Path | None, default: Path | None) -> ImportRules:
        """The folder's `import.yml`, else `default` (the setting), else no rules."""
        local = source_dir / FILE_NAME if source_dir is not None else None
        if local is not None and local.is_file():
            return cls.load(local)
        if default is not None:
            if not default.is_file():
                raise RulesError(f"{default}: no such import rules file (FOLLOWUP_IMPORT)")
            return cls.load(default)
        return cls()

    @classmethod
    def load(cls, path: Path) -> ImportRules:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise RulesError(f"{path}: not YAML in UTF-8: {' '.join(str(exc).split())}") from None
        where = str(path)
        _mapping(data, where)
        unknown = set(data) - {"encoding", "files", "headers", "labels"}
        if unknown:
            raise RulesError(
                f"{where}: unknown key {sorted(unknown)[0]!r} (encoding, files, headers, labels)"
            )
        encodings = {
            str(name): _encoding(_mapping(spec, f"{where}: files.{name}").get("encoding"), where)
            for name, spec in _mapping(data.get("files") or {}, f"{where}: files").items()
        }
        headers = {
            entity: {
                str(h): str(c) for h, c in _mapping(spec, f"{where}: headers.{entity}").items()
            }
            for entity, spec in _entities(data.get("headers"), f"{where}: headers").items()
        }
        labels = {
            entity: {
                str(column): {
                    str(label): str(value)
                    for label, value in _mapping(
                        words, f"{where}: labels.{entity}.{column}"
                    ).items()
                }
                for column, words in _mapping(spec, f"{where}: labels.{entity}").items()
            }
            for entity, spec in _entities(data.get("labels"), f"{where}: labels").items()
        }
        rules = cls(path, _encoding(data.get("encoding"), where), encodings, headers, labels)
        for name in ENTITIES:  # every entry names a column and a value that exist
            rules.apply(load_entity(name))
        return rules

    def encoding_of(self, path: Path) -> str | None:
        """The encoding the rules name for `path`, or None (detected)."""
        return self.encodings.get(path.name) or self.encoding

    def apply(self, entity: Entity) -> Entity:
        """`entity` with the company's header names and labels, which take precedence: a header
        the suite gives another column, or a label it gives another value, is the company's."""
        headers = self.headers.get(entity.name, {})
        labels = self.labels.get(entity.name, {})
        if not headers and not labels:
            return entity
        where = f"{self.path}: {entity.name}"
        columns = dict(entity.columns)
        for header, name in headers.items():
            _column(entity, name, f"{where}: header {header!r}")
            key = normalise_header(header)
            if key in columns and key != name:
                raise RulesError(f"{where}: header {header!r} is the name of column {key}")
            for other, column in columns.items():  # the suite's meaning of the header goes
                kept = tuple(a for a in column.aliases if normalise_header(a) != key)
                columns[other] = dataclasses.replace(column, aliases=kept)
            columns[name] = dataclasses.replace(
                columns[name], aliases=(*columns[name].aliases, header)
            )
        for name, words in labels.items():
            column = _column(entity, name, f"{where}: labels")
            if column.type != "enum":
                raise RulesError(f"{where}: labels: {name} is not an enumerated column")
            fold = str.upper if column.upper else str.lower
            taken = {fold(label) for label in words}
            values = {
                k: [w for w in v if fold(w) not in taken] for k, v in columns[name].values.items()
            }
            for label, value in words.items():
                if value not in values and not column.open:
                    raise RulesError(
                        f"{where}: labels.{name}: {label!r} -> {value!r} is not one of "
                        f"{', '.join(values)}"
                    )
                values.setdefault(value, []).append(label)
            columns[name] = dataclasses.replace(
                columns[name], values={k: tuple(v) for k, v in values.items()}
            )
        return dataclasses.replace(entity, columns=columns)


def _column(entity: Entity, name: str, where: str):
    if name not in entity.columns:
        raise RulesError(
            f"{where}: {name!r} is not a column of {entity.name} ({', '.join(entity.columns)})"
        )
    return entity.columns[name]


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise RulesError(f"{where}: a mapping is expected")
    return value


def _entities(value: Any, where: str) -> dict[str, Any]:
    value = _mapping(value or {}, where)
    for name in value:
        if name not in ENTITIES:
            raise RulesError(f"{where}: {name!r} is not an entity ({', '.join(ENTITIES)})")
    return value


def _encoding(name: Any, where: str) -> str | None:
    if name is None:
        return None
    try:
        return codecs.lookup(str(name)).name
    except LookupError:
        raise RulesError(f"{where}: {name!r} is not an encoding (e.g. gb18030, big5)") from None
