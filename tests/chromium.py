"""Headless Chromium with the network cut off, for the pages that must read offline (the Data
Docs, the exported notebooks): what a page shows, and every address it asked for."""

from __future__ import annotations

import contextlib
import functools
import html
import http.server
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Chromium's own background calls (time, accounts, search) are not the page's
_CHROMIUMS_OWN = re.compile(r"^https?://([\w-]+\.)*(google\.com|googleapis\.com|gstatic\.com)[/:]")
_LOCAL = re.compile(r"^https?://127\.0\.0\.1[/:]")


def run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium with `args`, offline, its profile in `profile`."""
    if not CHROMIUM.exists():
        pytest.fail("install Debian chromium (apt-get install chromium); .ci/run does")
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            # no way out: every name is unknown and every connection goes to a closed port
            "--proxy-server=127.0.0.1:9",
            "--proxy-bypass-list=127.0.0.1",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@dataclass(frozen=True)
class Visit:
    dom: str  # once the page's scripts ran (not inside shadow roots)
    remote: list[str]  # the page's requests beyond this machine: none get through
    local: list[str]  # and those to 127.0.0.1


def offline_dom(url: str, work: Path) -> Visit:
    """What a page became in Chromium with no network, and the addresses it asked for."""
    net_log = work / "net-log.json"
    done = run_chromium([f"--log-net-log={net_log}", "--dump-dom", url], work / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    asked = set(re.findall(r'"url":"(https?://[^"]+)"', net_log.read_text(encoding="utf-8")))
    local = sorted(u for u in asked if _LOCAL.match(u))
    remote = sorted(u for u in asked - set(local) if not _CHROMIUMS_OWN.match(u))
    return Visit(done.stdout, remote, local)


def visible_text(dom: str) -> str:
    """The text a reader sees: no scripts, no styles, no tags, spaces collapsed."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


@contextlib.contextmanager
def served(folder: Path) -> Iterator[str]:
    """`folder` over HTTP on 127.0.0.1 (a free port) while the block runs: its address."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass
