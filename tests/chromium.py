"""Headless Chromium with the network cut off, for the pages that must read offline (the Data
Docs, the exported notebooks): what a page shows, and every address it asked for."""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Chromium's own background calls (time, accounts, search) are not the page's
_CHROMIUMS_OWN = re.compile(r"^https?://([\w-]+\.)*(google\.com|googleapis\.com|gstatic\.com)[/:]")
_LOCAL = re.compile(r"^https?://127\.0\.0\.1[/:]")


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess:
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


def offline_dom(url: str, work: Path) -> tuple[str, list[str]]:
    """The page's DOM once its scripts ran offline, and the remote addresses it asked for."""
    net_log = work / "net-log.json"
    done = _run([f"--log-net-log={net_log}", "--dump-dom", url], work / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    asked = re.findall(r'"url":"(https?://[^"]+)"', net_log.read_text(encoding="utf-8"))
    remote = sorted({u for u in asked if not _CHROMIUMS_OWN.match(u) and not _LOCAL.match(u)})
    return done.stdout, remote


def visible_text(dom: str) -> str:
    """The text a reader sees: no scripts, no styles, no tags, spaces collapsed."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def offline_screenshot(url: str, png: Path, work: Path, size: str = "1280,900") -> Path:
    done = _run([f"--window-size={size}", f"--screenshot={png}", url], work / "profile-shot")
    assert done.returncode == 0, done.stderr[-2000:]
    return png
