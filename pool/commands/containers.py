"""Containers on a node for the Docker Engine API's routes, in scow's words.

A create takes a ContainerSpec (the gateway translated Docker's body); inspect and
list answer the container's record (ContainerInfo's JSON), from which the gateway
makes Docker's JSON. Their output and input (logs, attach, resize) are in attach.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from images.errors import ImageError
from images.store import ImageStore
from pool.commands import Command, CommandError, Handler, flag, required
from pool.contract.containers import ContainerSpec
from pool.contract.messages import AUTO_REMOVE
from pool.supervisor import Supervisor
from runtime.engine import Runtime
from runtime.errors import Conflict, NotFound
from runtime.monitor import ExitStatus
from runtime.records import ContainerRecord
from runtime.spec import ImageConfig, RunOptions, options_from_json

T = TypeVar("T")


def run_options(spec: ContainerSpec) -> RunOptions:
    """The runtime's options of a spec; its zero limits are the runtime's defaults."""
    data = spec.to_json()
    for key in ("image", "auto_remove", "exposed"):
        data.pop(key)
    data["attachments"] = data.pop("endpoints")  # the runtime's word for them
    for key in ("memory", "cpu_shares", "pids_limit"):
        if not data[key]:
            data.pop(key)
    if spec.auto_remove:
        data["labels"] = {**data["labels"], AUTO_REMOVE: "1"}
    return options_from_json(data)


def with_exposed(image: ImageConfig, extra: Iterable[str]) -> ImageConfig:
    """The image config with the create body's ExposedPorts added (for -P and inspect)."""
    return replace(image, exposed_ports=tuple(sorted({*image.exposed_ports, *extra})))


async def until_cancelled(cmd: Command, work: Awaitable[T]) -> T:
    """``work``'s result, or a ``cancelled`` failure once the caller left or the node is
    stopping."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                return task.result()
            if await cmd.cancelled():
                raise CommandError("cancelled", "the caller went away or the node stopped")
    finally:
        if not task.done():
            task.cancel()


async def _until_set(change: asyncio.Event) -> None:
    """Until ``change`` is set, or a second at most: a change made by another process
    (the reaper of a restarted node) raises no event here."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(change.wait(), 1.0)


def _signal_name(value: str) -> str:
    name = value.upper().removeprefix("SIG")
    if name.isdigit():
        try:
            return signal.Signals(int(name)).name.removeprefix("SIG")
        except ValueError:
            raise CommandError("invalid", f"invalid signal {value!r}") from None
    if f"SIG{name}" not in signal.Signals.__members__:
        raise CommandError("invalid", f"invalid signal {value!r}")
    return name


def _process_row(pid: int) -> dict[str, Any] | None:
    try:
        status = dict(
            line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if ":\t" in line
        )  # fmt: skip
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) // ticks
    clock = f"{cpu // 3600:02d}:{cpu // 60 % 60:02d}:{cpu % 60:02d}"
    command = cmdline.decode(errors="replace") or f"[{status.get('Name', '?').strip()}]"
    return {"uid": status.get("Uid", "0").split()[0], "pid": pid,
            "ppid": int(status.get("PPid", "0").strip() or 0), "time": clock,
            "command": command}  # fmt: skip


class ContainerCommands:
    def __init__(self, runtime: Runtime, images: ImageStore, supervisor: Supervisor) -> None:
        self.runtime, self.images, self.supervisor = runtime, images, supervisor

    @property
    def commands(self) -> dict[str, Handler]:
        return {
            "container.create": self.create, "container.start": self.start,
            "container.stop": self.stop, "container.restart": self.restart,
            "container.kill": self.kill, "container.remove": self.remove,
            "container.inspect": self.inspect, "container.list": self.list,
            "container.wait": self.wait, "container.top": self.top,
            "container.changes": self.changes, "container.stats": self.stats,
            "container.rename": self.rename, "container.pause": self.pause,
            "container.unpause": self.unpause, "container.prune": self.prune,
            "container.update": self.update,
        }  # fmt: skip

    def _record(self, cmd: Command) -> ContainerRecord:
        return self.runtime.get(required(cmd.args, "id"))

    def info(self, record: ContainerRecord) -> dict[str, Any]:
        """The record as ContainerInfo reads it: with the image's id, the bridge's
        address, where its volumes and its log are."""
        volume_paths = {}
        for name, _ in record.volumes:
            with contextlib.suppress(NotFound):
                volume_paths[name] = str(self.runtime.volumes.get(name).path)
        image_id = ""
        with contextlib.suppress(ImageError):  # the image may have been removed since
            image_id = self.images.get(record.image).id
        return {**record.to_json(), "image_id": image_id,
                "gateway": str(self.runtime.network.gateway), "node": self.supervisor.node_id,
                "volume_paths": volume_paths,
                "log_path": str(self.runtime.paths(record.id).log)}  # fmt: skip

    async def create(self, cmd: Command) -> Any:
        raw = cmd.args.get("spec")
        if not isinstance(raw, dict):
            raise CommandError("invalid", "argument 'spec' must be a container spec")
        spec = ContainerSpec.from_json(raw)
        image = self.images.get(spec.image)
        record = await self.runtime.create(
            with_exposed(image.run_config, spec.exposed), self.images.layer_dirs(image),
            run_options(spec), image=spec.image,
        )  # fmt: skip
        await self.supervisor.track(record)
        return {"id": record.id}

    async def start(self, cmd: Command) -> Any:
        record = self._record(cmd)
        if record.status in ("running", "paused"):
            return {"modified": False}
        # Started by hand: its restart count starts over, and a stop by hand is undone.
        self.runtime.note(record.id, stopped_by_hand=False, restart_count=0, restarting=False)
        if record.status == "exited":
            record = await self.runtime.revive(record.id, self.supervisor.created)
        else:
            record = await self.runtime.start(record.id)
        self.supervisor.started(record)
        return {"modified": True}

    def _stop_timeout(self, cmd: Command, record: ContainerRecord) -> float:
        """The client's, else the container's own (``--stop-timeout``), else 10 s."""
        timeout = cmd.args.get("t")
        if timeout is not None:
            return float(timeout)
        own = record.options.stop_timeout
        if own is None:
            return 10.0
        return float("inf") if own < 0 else float(own)

    async def stop(self, cmd: Command) -> Any:
        record = self._record(cmd)
        if record.restarting:  # waiting out its back-off: it stays down
            self.runtime.note(record.id, stopped_by_hand=True, restarting=False)
            return {"modified": True}
        if record.status not in ("running", "paused"):
            return {"modified": False}
        self.runtime.note(record.id, stopped_by_hand=True)  # its restart policy lets it be
        await self.runtime.stop(record.id, self._stop_timeout(cmd, record))
        return {"modified": True}

    async def restart(self, cmd: Command) -> Any:
        record = self._record(cmd)
        if record.status in ("running", "paused"):
            self.runtime.note(record.id, stopped_by_hand=True)  # not a restart by its policy
            await self.runtime.stop(record.id, self._stop_timeout(cmd, record))
        record = self.runtime.note(record.id, stopped_by_hand=False, restarting=False)
        if record.status == "created":
            record = await self.runtime.start(record.id)
        else:
            record = await self.runtime.revive(record.id)
        self.supervisor.started(record)
        return {"modified": True}

    async def kill(self, cmd: Command) -> Any:
        record = self._record(cmd)
        await self.runtime.kill(record.id, _signal_name(str(cmd.args.get("signal") or "KILL")))
        return {}

    async def remove(self, cmd: Command) -> Any:
        record = self._record(cmd)
        if record.status in ("running", "paused") and not flag(cmd.args, "force"):
            await self.runtime.remove(record.id)  # refused: it runs, and nothing was forgotten
        self.supervisor.removing(record.id)
        await self.runtime.remove(record.id, force=flag(cmd.args, "force"),
                                  volumes=flag(cmd.args, "v"))  # fmt: skip
        await self.supervisor.untrack(record.id)
        return {}

    async def inspect(self, cmd: Command) -> Any:
        return self.info(self._record(cmd))

    async def list(self, cmd: Command) -> Any:
        """Every container (``all``) or the running ones, newest first."""
        records = sorted(self.runtime.containers(), key=lambda r: r.created, reverse=True)
        return [self.info(r) for r in records
                if flag(cmd.args, "all") or r.status in ("running", "paused")]  # fmt: skip

    async def wait(self, cmd: Command) -> Any:
        """Docker's conditions: ``not-running`` (default), ``next-exit``, ``removed``."""
        record = self._record(cmd)
        condition = cmd.args.get("condition") or "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise CommandError("invalid", f"invalid condition {condition!r}")
        runtime = self.runtime
        if record.status in ("created", "exited") and condition != "next-exit":
            status = ExitStatus(record.exit_code or 0, record.oom_killed)
            if condition == "removed" and record.status == "created":  # docker run --rm
                record, status = await self._next_exit(cmd, record)
        else:
            record, status = await self._next_exit(cmd, record)
        if condition == "removed":
            while True:
                change = self.supervisor.next_change(record.id)
                if runtime.store.load(record.id) is None:
                    break
                await until_cancelled(cmd, _until_set(change))
        return {"code": status.code}

    async def _next_exit(
        self, cmd: Command, record: ContainerRecord
    ) -> tuple[ContainerRecord, ExitStatus]:
        """The container's next exit: of this run when it runs, else of its next start (a
        created or exited container is waited for until it is started)."""
        if record.status in ("created", "exited"):
            first = record.started_at
            while True:
                change = self.supervisor.next_change(record.id)
                try:
                    record = self.runtime.get(record.id)
                except NotFound:
                    return record, ExitStatus(record.exit_code or 0)
                if record.status in ("running", "paused") or record.started_at != first:
                    break
                await until_cancelled(cmd, _until_set(change))
        status = await until_cancelled(cmd, asyncio.shield(self.runtime.wait(record.id)))
        return record, status

    async def update(self, cmd: Command) -> Any:
        """New limits (memory, cpu shares, pids) and restart policy for a container."""
        record = self._record(cmd)
        raw = cmd.args.get("changes")
        if not isinstance(raw, dict):
            raise CommandError("invalid", "argument 'changes' must be an object")
        limits = {k: raw[k] for k in ("memory", "cpu_shares", "pids_limit", "cpu_quota",
                                      "cpu_period") if raw.get(k)}  # fmt: skip
        kept = {k: raw[k] for k in ("restart", "restart_retries") if k in raw}
        if kept and record.labels.get(AUTO_REMOVE) == "1" and kept.get("restart") != "no":
            raise CommandError("invalid", f"container {record.name} is removed when it exits "
                               "(--rm): it cannot have a restart policy")  # fmt: skip
        record = await self.runtime.update(record.id, **limits, **kept)
        if record.status in ("running", "paused"):
            self.supervisor.restarts.watch(record)  # a policy given now applies from now
        return {}

    async def top(self, cmd: Command) -> Any:
        record = self._record(cmd)
        if record.status not in ("running", "paused"):
            raise CommandError("conflict", f"container {record.name} is not running")
        return [row for pid in self.runtime.cgroups.pids(record.id) if (row := _process_row(pid))]

    async def changes(self, cmd: Command) -> Any:
        return [{"kind": kind, "path": path}
                for kind, path in self.runtime.changes(self._record(cmd).id)]  # fmt: skip

    async def stats(self, cmd: Command) -> Any:
        record = self._record(cmd)
        s = self.runtime.stats(record.id)
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
        return {
            "name": record.name, "id": record.id, "pids": s.pids,
            "pids_limit": record.options.pids_limit, "memory_bytes": s.memory_bytes,
            "memory_peak_bytes": s.memory_peak_bytes, "memory_limit": record.options.memory,
            "oom_kills": s.oom_kills, "cpu_usage_ns": s.cpu_usage_ns,
            "system_cpu_ns": sum(int(x) for x in fields) * 10**9 // os.sysconf("SC_CLK_TCK"),
            "cpus": os.cpu_count() or 1, "throttled_periods": s.throttled_periods,
            "throttled_ns": s.throttled_ns,
        }  # fmt: skip

    async def rename(self, cmd: Command) -> Any:
        record = self.runtime.rename(required(cmd.args, "id"), required(cmd.args, "name"))
        await self.supervisor.track(record)
        return {}

    async def pause(self, cmd: Command) -> Any:
        record = self._record(cmd)
        if record.status != "running":
            raise Conflict(f"container {record.name} is not running")
        await self.runtime.pause(record.id)
        return {}

    async def unpause(self, cmd: Command) -> Any:
        record = self._record(cmd)
        if record.status != "paused":
            raise Conflict(f"container {record.name} is not paused")
        await self.runtime.resume(record.id)
        return {}

    async def prune(self, cmd: Command) -> Any:
        """Remove the exited containers among ``ids`` (the gateway chose them by filter)."""
        ids = cmd.args.get("ids")
        if not isinstance(ids, list):
            raise CommandError("invalid", "argument 'ids' must list containers")
        removed = []
        for record in self.runtime.containers():
            if record.status == "exited" and record.id in ids:
                await self.runtime.remove(record.id, force=True)
                await self.supervisor.untrack(record.id)
                removed.append(record.id)
        return {"removed": removed}
