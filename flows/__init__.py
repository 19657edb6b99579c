"""The followup pipeline. Importing any part of it first sets what every tool must see before it
is imported (telemetry off, warnings filtered): flows/settings.py."""

from flows import settings as _settings  # noqa: F401
