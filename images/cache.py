"""The build cache: a step's key (its parent image, its instruction, the content it
copies) to the image that step made. Kept as one JSON file in the store."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path


def step_key(parent: str | None, instruction: str, extra: str = "") -> str:
    text = f"{parent or 'scratch'}\n{instruction}\n{extra}"
    return hashlib.sha256(text.encode()).hexdigest()


class BuildCache:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, str]:
        try:
            data: dict[str, str] = json.loads(self.path.read_text())
            return data
        except (FileNotFoundError, ValueError):
            return {}

    def get(self, key: str) -> str | None:
        return self._read().get(key)

    def put(self, key: str, image_id: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            data[key] = image_id
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)

    def forget(self, image_ids: set[str]) -> None:
        """Drop entries that point at removed images."""
        with contextlib.suppress(FileNotFoundError):
            data = {k: v for k, v in self._read().items() if v not in image_ids}
            self.path.write_text(json.dumps(data))
