"""Volumes on a node: list, create, inspect, remove, prune; records in scow's words."""

from __future__ import annotations

from typing import Any

from pool.commands import Command, CommandError, Handler, required, strings
from runtime.engine import Runtime
from runtime.volumes import VolumeInfo


def volume_record(info: VolumeInfo) -> dict[str, Any]:
    return {"name": info.name, "path": str(info.path), "created": info.created,
            "labels": dict(info.labels), "anonymous": info.anonymous}  # fmt: skip


class VolumeCommands:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def commands(self) -> dict[str, Handler]:
        return {"volume.create": self.create, "volume.list": self.list,
                "volume.inspect": self.inspect, "volume.remove": self.remove,
                "volume.prune": self.prune}  # fmt: skip

    def _used(self) -> set[str]:
        return {name for r in self.runtime.containers() for name, _ in r.volumes}

    async def create(self, cmd: Command) -> Any:
        driver = cmd.args.get("driver") or "local"
        if driver != "local":
            raise CommandError("not_implemented", f"volume driver {driver!r} is not supported")
        name = str(cmd.args.get("name") or "")
        return volume_record(self.runtime.volumes.create(name, labels=strings(cmd.args, "labels")))

    async def list(self, cmd: Command) -> Any:
        """Every volume, and whether a container uses it (``dangling``: none does)."""
        used = self._used()
        return [{**volume_record(v), "dangling": v.name not in used}
                for v in self.runtime.volumes.all()]  # fmt: skip

    async def inspect(self, cmd: Command) -> Any:
        return volume_record(self.runtime.volumes.get(required(cmd.args, "name")))

    async def remove(self, cmd: Command) -> Any:
        name = required(cmd.args, "name")
        users = [] if cmd.args.get("force") else self.runtime.volume_users(name)
        self.runtime.volumes.remove(name, in_use_by=users)
        return {}

    async def prune(self, cmd: Command) -> Any:
        """Unused anonymous volumes (and named ones too with ``all``), as Docker 23+ does."""
        used = self._used()
        removed = []
        for info in self.runtime.volumes.all():
            if info.name in used or (not info.anonymous and not cmd.args.get("all")):
                continue
            self.runtime.volumes.remove(info.name)
            removed.append(info.name)
        return {"removed": removed}
