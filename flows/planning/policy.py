"""The policy every plan applies (`playbooks/_policy.yml`): caps per purpose and channel over
rolling days, the consent flag each channel needs for marketing, how long a follow-up may be
deferred, and who is assigned calls and escalations."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from flows.planning.calendar import Calendar
from flows.planning.declarations import PLAYBOOK_DIR


@dataclass(frozen=True)
class Cap:
    max: int
    days: int


@dataclass(frozen=True)
class Policy:
    caps: dict[str, tuple[Cap, ...]]
    channel_caps: dict[str, tuple[Cap, ...]]
    consent: dict[str, str]
    max_deferral_days: int = 14
    assign_roles: tuple[str, ...] = ("sales", "service")
    specialist_role: str = "service"  # who gets an escalation's 1-to-1 task (escalation.py)
    calendar: Calendar = field(default_factory=Calendar)  # the working days tasks are put on

    @classmethod
    def load(
        cls, path: Path = PLAYBOOK_DIR / "_policy.yml", calendar: Calendar | None = None
    ) -> Policy:
        """The policy in `path`, with the working days of `calendar` (default: the declared
        table, playbooks/calendar.csv)."""
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}

        def caps(block: dict) -> dict[str, tuple[Cap, ...]]:
            out = {
                k: tuple(Cap(int(c["max"]), int(c["days"])) for c in v) for k, v in block.items()
            }
            for name, limits in out.items():
                if any(cap.max < 1 or cap.days < 1 for cap in limits):
                    raise ValueError(f"{path}: cap {name}: max and days must be at least 1")
            return out

        return cls(
            caps=caps(data.get("caps", {})),
            channel_caps=caps(data.get("channel_caps", {})),
            consent=dict(data.get("consent", {})),
            max_deferral_days=int(data.get("max_deferral_days", 14)),
            assign_roles=tuple(data.get("assign_roles", ("sales", "service"))),
            specialist_role=str(data.get("specialist_role", "service")),
            calendar=calendar or Calendar.load(),
        )
