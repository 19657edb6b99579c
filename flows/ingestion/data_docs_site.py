"""The Data Docs site around GX's pages: the offline page view, each load's status, the index.

GX's templates load Bootstrap, Font Awesome, jQuery and Vega from CDNs. Our pages need none of
them to be read (no charts, no JavaScript tables), so those tags are removed when a page is
written: a page makes no request when it is opened, and a small style sheet (GX's
`data_docs_custom_styles.css` hook) stands in for Bootstrap's look.

A load's status is ours, not GX's: GX calls a validation failed when any expectation found a bad
row, but a row breaking an `error` or `warning` rule is quarantined (or its field cleared) by
design and the file still loads. So a page says "Passed with warnings" with how many rows went to
the quarantine table, and "Failed" only when the load stopped (a file refused by the bad-rows
limits, or a fatal error): then nothing was loaded.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

RESULT_SUFFIX = ".json"  # the GX validation result beside each page
SUCCEEDED, WARNED, FAILED = "succeeded", "passed_with_warnings", "failed"

OFFLINE_CSS = """\
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 1rem; }
table { border-collapse: collapse; margin: .5rem 0; }
td, th { border: 1px solid #dee2e6; padding: .25rem .5rem; text-align: left; vertical-align: top; }
nav.navbar { height: auto !important; padding: .5rem 0; border-bottom: 1px solid #dee2e6; }
.breadcrumb { display: flex; gap: .5rem; list-style: none; margin: .25rem 0; padding: 0; }
.breadcrumb-item + .breadcrumb-item::before { content: "/"; padding-right: .5rem; }
.alert-secondary { background: #e2e3e5; padding: .5rem .75rem; margin: 1rem 0 .5rem; }
.text-success { color: #198754; }
.text-warning { color: #b8860b; }
.text-danger { color: #dc3545; }
.fa-check-circle::before { content: "\\2714"; }
.fa-times::before { content: "\\2718"; }
.fa-exclamation-triangle::before { content: "\\26A0"; }
.hide-succeeded-validations-column-section-target-child { display: none; }
"""
# a tag that would fetch from the network when the page is opened (not a link the reader follows);
# GX's logo is such an image, with the site's id in its address
_REMOTE = re.compile(
    r'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>|<link[^>]*\shref="https?://[^"]*"[^>]*>'
    r'|<img[^>]*\ssrc="https?://[^"]*"[^>]*>'
)


def status_of(result: dict[str, Any] | Any) -> dict[str, Any]:
    """The load status kept in a result's `meta.followup.load`; GX's `success` for older runs."""
    meta = result.get("meta", {}) if isinstance(result, dict) else result.meta
    load = (meta or {}).get("followup", {}).get("load")
    if load:
        return load
    success = result.get("success") if isinstance(result, dict) else result.success
    return {"status": SUCCEEDED if success else FAILED}


def status_words(load: dict[str, Any]) -> tuple[str, str, str]:
    """(icon class, colour class, words) of a load status."""
    status = load.get("status")
    if status == SUCCEEDED:
        return "fa-check-circle", "text-success", "Succeeded"
    if status == WARNED:
        quarantined, cleared = load.get("quarantined_rows"), load.get("cleared_rows")
        if quarantined is None:
            detail = "the rows breaking a rule are in the quarantine table"
        else:
            detail = (
                f"{quarantined:,} rows quarantined, {cleared or 0:,} loaded with a field cleared; "
                "each row's reasons are in the quarantine table"
            )
        return "fa-exclamation-triangle", "text-warning", f"Passed with warnings ({detail})"
    stopped = load.get("stopped")
    words = "Failed" + (f" (the load stopped, nothing was loaded: {stopped})" if stopped else "")
    return "fa-times", "text-danger", words


def view(site_dir: Path) -> Any:
    """GX's page view, with the static assets its pages refer to and our offline style sheet."""
    import great_expectations
    from great_expectations.render.view import DefaultJinjaPageView

    static = site_dir / "static"
    favicon = static / "images" / "favicon.ico"
    if not favicon.is_file():
        favicon.parent.mkdir(parents=True, exist_ok=True)
        source = Path(great_expectations.__file__).parent / "render/view/static/images/favicon.ico"
        shutil.copyfile(source, favicon)
    styles = static / "styles"
    styles.mkdir(parents=True, exist_ok=True)
    (styles / "data_docs_custom_styles.css").write_text(OFFLINE_CSS, encoding="utf-8")
    return DefaultJinjaPageView(custom_styles_directory=str(styles))


def write_page(page_view: Any, document: Any, page: Path, site_dir: Path) -> None:
    html = _REMOTE.sub(_alt_text, page_view.render(document, show_how_to_buttons=False))
    # GX's favicon link climbs one level short of the site root from a validation page.
    root = "../" * (len(page.relative_to(site_dir).parts) - 1)
    html = re.sub(
        r'href="(?:\.\./|\./)*static/images/favicon\.ico"',
        f'href="{root}static/images/favicon.ico"',
        html,
    )
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(html, encoding="utf-8")


def _alt_text(tag: re.Match) -> str:
    """A remote image becomes its `alt` text; a remote script or style sheet goes."""
    alt = re.search(r'\salt="([^"]*)"', tag[0]) if tag[0].startswith("<img") else None
    return f"<strong>{alt[1]}</strong>" if alt else ""


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _runs(site_dir: Path) -> list[tuple[str, str, list[tuple[Path, dict]]]]:
    """(run name, run time, [(page, result)]) for every run under `site_dir`, newest first."""
    runs: dict[tuple[dt.datetime, str], list[tuple[Path, dict]]] = {}
    for path in sorted((site_dir / "validations").glob(f"*/*/*/*{RESULT_SUFFIX}")):
        page = path.with_suffix(".html")
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            run_id = result["meta"]["run_id"]
            key = (_utc(dt.datetime.fromisoformat(run_id["run_time"])), run_id["run_name"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("Data Docs: skipping unreadable %s (%s)", path, exc)
            continue
        if page.is_file():
            runs.setdefault(key, []).append((page, result))
    return [
        (name, time.strftime("%Y-%m-%d %H:%M:%S UTC"), pages)
        for (time, name), pages in sorted(runs.items(), reverse=True)
    ]


def _link(text: str, href: str) -> Any:
    from great_expectations.render import RenderedStringTemplateContent

    return RenderedStringTemplateContent(
        content_block_type="string_template",
        string_template={
            "template": "$text",
            "params": {"text": text},
            "styling": {"params": {"text": {"tag": "a", "attributes": {"href": href}}}},
        },
    )


def _status(load: dict[str, Any]) -> Any:
    from great_expectations.render import RenderedStringTemplateContent

    icon, colour, words = status_words(load)
    return RenderedStringTemplateContent(
        content_block_type="string_template",
        string_template={
            "template": "$icon $word",
            "params": {"icon": "", "word": words},
            "styling": {"params": {"icon": {"tag": "i", "classes": ["fas", icon, colour]}}},
        },
    )


def index_document(site_dir: Path) -> Any:
    """The index: per run, newest first, a plain table of its pages (no JavaScript needed)."""
    from great_expectations.render import (
        RenderedDocumentContent,
        RenderedHeaderContent,
        RenderedSectionContent,
        RenderedStringTemplateContent,
        RenderedTableContent,
    )
    from great_expectations.render.util import num_to_str

    sections = []
    for run_name, run_time, pages in _runs(site_dir):
        rows = []
        for page, result in sorted(pages, key=lambda p: p[1].get("suite_name", "")):
            stats = result.get("statistics", {})
            percent = stats.get("success_percent")
            rows.append(
                [
                    _link(
                        result.get("suite_name", page.parent.parent.parent.name),
                        quote(page.relative_to(site_dir).as_posix()),
                    ),
                    result.get("meta", {}).get("followup", {}).get("source", ""),
                    _status(status_of(result)),
                    stats.get("evaluated_expectations"),
                    stats.get("successful_expectations"),
                    stats.get("unsuccessful_expectations"),
                    "" if percent is None else f"{num_to_str(percent, precision=4)}%",
                ]
            )
        header = RenderedHeaderContent(
            header=RenderedStringTemplateContent(
                content_block_type="string_template",
                string_template={
                    "template": "Run $run_name ($run_time)",
                    "params": {"run_name": run_name, "run_time": run_time},
                    "tag": "h5",
                    "styling": {"classes": ["m-0"]},
                },
            ),
            styling={
                "classes": ["col-12", "p-0"],
                "header": {"classes": ["alert", "alert-secondary"]},
            },
        )
        table = RenderedTableContent(
            table=rows,
            header_row=[
                "Suite",
                "Source file",
                "Load status",
                "Evaluated",
                "Successful",
                "Unsuccessful",
                "Success %",
            ],
            styling={
                "classes": ["col-12", "table-responsive"],
                "body": {"classes": ["table", "table-sm"]},
            },
        )
        sections.append(
            RenderedSectionContent(section_name=run_name, content_blocks=[header, table])
        )
    return RenderedDocumentContent(
        renderer_type="SiteIndexPageRenderer",
        page_title="Data Docs",
        sections=sections,
        utm_medium="index-page",
    )
