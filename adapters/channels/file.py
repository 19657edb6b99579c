"""The embedded default: every message becomes one JSON line in `<out>/<channel>.jsonl`, and
nothing leaves the machine.

The outbox behaves like a gateway that deduplicates: a message whose idempotency key is already
in the file is answered `sent` again without a second line, so a re-run after a crash writes each
message once. A line cut short by a crash is dropped when the file is next opened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from adapters.channels import Message, Outcome


class Channel:
    kind: ClassVar[str] = "file"

    def __init__(self, name: str, out: str = "outbox") -> None:
        self.name = name
        self.path = Path(out) / f"{name}.jsonl"
        self._keys: set[str] | None = None
        self._file = None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._keys = set()
        if self.path.exists():
            data = self.path.read_bytes()
            complete = data[: data.rfind(b"\n") + 1]
            if len(complete) != len(data):  # a crash cut the last line short
                with self.path.open("r+b") as f:
                    f.truncate(len(complete))
            for line in complete.splitlines():
                self._keys.add(json.loads(line)["idempotency_key"])
        self._file = self.path.open("a", encoding="utf-8")

    def send(self, messages: Sequence[Message]) -> list[Outcome]:
        if self._file is None:
            self._open()
        outcomes = []
        for m in messages:
            if m.idempotency_key not in self._keys:
                line = {
                    "message_id": m.message_id,
                    "idempotency_key": m.idempotency_key,
                    "customer_id": m.customer_id,
                    "playbook": m.playbook,
                    "step": m.step,
                    "variant": m.variant,
                    "channel": self.name,
                    "to": m.to,
                    "owner_id": m.owner_id,
                    "due_at": m.due_at.isoformat(),
                    "subject": m.subject,
                    "text": m.text,
                }
                self._file.write(json.dumps(line, ensure_ascii=False) + "\n")
                self._keys.add(m.idempotency_key)
            outcomes.append(Outcome.sent(m, provider_id=f"file:{m.message_id}"))
        self._file.flush()
        os.fsync(self._file.fileno())
        return outcomes

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
