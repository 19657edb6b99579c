"""The Prefect artifacts the flows publish on their run pages, with every registered secret taken
out (flows/secrets.py)."""

from __future__ import annotations

from typing import Any

from flows.secrets import redact


def markdown_artifact(markdown: str, key: str, description: str | None = None) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(redact(markdown), key=key, description=description)


def table_artifact(rows: list[dict[str, Any]], key: str, description: str | None = None) -> None:
    from prefect.artifacts import create_table_artifact

    cleaned = [{k: redact(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]
    create_table_artifact(cleaned, key=key, description=description)
