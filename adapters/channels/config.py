"""Channel settings: `channels.yml` (or the embedded default, a local outbox for every channel).

A value may be written `${ENV_VAR}` (read from the environment) or `${secret:block-name}` (a
Prefect Secret block), so secrets never need to sit in the file. A reference that cannot be
resolved stops the run with one line naming the channel and the variable, never the value.
Relative paths (`out`) are relative to the settings file's folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from adapters.channels import KINDS, ChannelConfigError
from flows.secrets import SECRET_NAME, register

CHANNEL_NAMES = ("sms", "email", "im", "call", "visit")
_REFERENCE = re.compile(r"\$\{(secret:)?([A-Za-z0-9_.:-]+)\}")


def default_channels(outbox: Path) -> dict[str, dict[str, Any]]:
    """The embedded default: nothing leaves the machine. Messages go to a local outbox folder,
    calls and visits to the owners' day lists in `call_lists` beside it."""
    channels = {name: {"kind": "file", "out": str(outbox)} for name in CHANNEL_NAMES}
    for name in ("call", "visit"):
        channels[name] = {"kind": "call_list", "out": str(outbox.parent / "call_lists")}
    return channels


def channels_file(path: Path | None) -> Path | None:
    """The channel settings: the given file, else `channels.yml` in the working folder, else
    none (the embedded default: a local outbox)."""
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such channel settings file")
        return Path(path)
    local = Path("channels.yml")
    return local if local.is_file() else None


def load_channels(path: Path | None, outbox: Path) -> dict[str, dict[str, Any]]:
    """Channel name -> settings, references resolved. Channels the file does not name keep the
    embedded default (the outbox)."""
    channels = default_channels(outbox)
    if path is None:
        return channels
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ChannelConfigError(f"{path}: not YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ChannelConfigError(f"{path}: a mapping of channel name to settings")
    for name, settings in data.items():
        if not isinstance(settings, dict):
            raise ChannelConfigError(f"{path}: channel {name}: settings are a mapping")
        if settings.get("kind") not in KINDS:
            raise ChannelConfigError(
                f"{path}: channel {name}: kind {settings.get('kind')!r} "
                f"is not one of {', '.join(KINDS)}"
            )
        resolved = {k: _resolve(path, name, k, v) for k, v in settings.items()}
        if "out" in resolved:
            resolved["out"] = str((Path(path).parent / resolved["out"]).resolve())
        channels[str(name)] = resolved
    return channels


def _resolve(path: Path, channel: str, key: str, value: Any) -> Any:
    """The value with its references read; a Secret block's value, the value of a key whose name
    says it is a secret (`token`, `password`, ...) and the access parts of a `url` are registered
    as secrets."""
    if not isinstance(value, str):
        return value

    def lookup(match: re.Match) -> str:
        name = match[2]
        if match[1]:
            secret = _secret(path, channel, key, name)
            register(secret)
            return secret
        if name not in os.environ:
            raise ChannelConfigError(
                f"{path}: channel {channel}: {key} needs the environment variable {name}"
            )
        return os.environ[name]

    resolved = _REFERENCE.sub(lookup, value)
    if SECRET_NAME.search(key):
        register(resolved)
    elif key == "url":  # a key or token in its query (`?apikey=${K}`) or its user info
        from adapters.channels.webhook import url_secrets

        register(*url_secrets(resolved, ""))
    return resolved


def _secret(path: Path, channel: str, key: str, block: str) -> str:
    from prefect.blocks.system import Secret

    try:
        return str(Secret.load(block).get())
    except Exception as exc:  # the block is missing, or the API is unreachable
        raise ChannelConfigError(
            f"{path}: channel {channel}: {key} needs the Prefect Secret block {block!r} "
            f"({type(exc).__name__})"
        ) from None
