"""Docker's containers on a node: the node side of the Docker Engine API's container routes.

Each command takes Docker's own arguments and answers Docker's own JSON (see
docker.py for the shapes). Output streams (logs, attach) go back as frames of
Docker's multiplexed format through the command's output channel, at the pace
the client reads them; a follow ends when the container exits, when the client
goes away, or when the node stops.

``Supervisor`` keeps what must outlive one command: removing ``--rm``
containers once they exit (after attached readers have drained their output),
and the map of which node has which container, in Redis.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import time
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pool import docker
from pool.command import Command, CommandError, Handler, required
from pool.contract import keys
from runtime.errors import Conflict, NotFound
from runtime.monitor import ExitStatus
from runtime.records import ContainerRecord

if TYPE_CHECKING:
    from pool.manager import PoolManager

T = TypeVar("T")
POLL = 0.05  # seconds between reads of a followed log
DRAIN = 5.0  # how long an exited --rm container waits for its attached readers


class Supervisor:
    def __init__(self, node: PoolManager) -> None:
        self.node = node
        self.readers: collections.Counter[str] = collections.Counter()  # attach streams
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._detached: set[asyncio.Task[None]] = set()  # exec -d
        self._changes: dict[str, asyncio.Event] = {}  # set at a container's next event

    def next_change(self, cid: str) -> asyncio.Event:
        """An event set at the container's next start, exit or removal, or when its last
        attached reader leaves. Take it before looking at the container, so that a
        change in between is not missed."""
        return self._changes.setdefault(cid, asyncio.Event())

    def changed(self, action: str, record: ContainerRecord) -> None:
        """The runtime's event hook: wake whoever waits on this container."""
        change = self._changes.pop(record.id, None)
        if change is not None:
            change.set()

    async def track(self, record: ContainerRecord) -> None:
        value = json.dumps({"node": self.node.node_id, "name": record.name})
        await self.node.redis.hset(keys.CONTAINERS, record.id, value)

    async def untrack(self, cid: str) -> None:
        await self.node.redis.hdel(keys.CONTAINERS, cid)

    def watch(self, record: ContainerRecord) -> None:
        """Remove a ``--rm`` container when it exits."""
        if record.labels.get(docker.AUTO_REMOVE) == "1" and record.id not in self._watchers:
            task = asyncio.create_task(self._remove_on_exit(record.id), name=f"rm-{record.id[:12]}")
            self._watchers[record.id] = task
            task.add_done_callback(lambda _: self._watchers.pop(record.id, None))

    async def _remove_on_exit(self, cid: str) -> None:
        runtime = self.node.runtime
        with contextlib.suppress(NotFound):
            await asyncio.shield(runtime.wait(cid))
            deadline = time.monotonic() + DRAIN
            while True:
                change = self.next_change(cid)
                if not self.readers[cid] or time.monotonic() >= deadline:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(change.wait(), deadline - time.monotonic())
            await runtime.remove(cid, force=True, volumes=True)
        await self.untrack(cid)

    async def reconcile(self) -> None:
        """After a restart: claim this node's containers under its new id, watch running
        ``--rm`` containers again, and remove the exited ones."""
        for record in self.node.runtime.containers():
            if record.labels.get("scow.role") == "function":
                continue
            await self.track(record)
            if record.labels.get(docker.AUTO_REMOVE) != "1":
                continue
            if record.status == "exited":
                await self.node.runtime.remove(record.id, force=True, volumes=True)
                await self.untrack(record.id)
            elif record.status != "created":
                self.watch(record)

    def detached(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)

    async def close(self) -> None:
        """Stop watching (the containers themselves keep running, as environments do)."""
        tasks = [*self._watchers.values(), *self._detached]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def until_cancelled(cmd: Command, work: Awaitable[T]) -> T:
    """``work``'s result, or 499 once the caller left or the node is stopping."""
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


def _record(node: PoolManager, cmd: Command) -> ContainerRecord:
    return node.runtime.get(required(cmd.args, "id"))


def _flag(cmd: Command, key: str, default: bool = False) -> bool:
    value = cmd.args.get(key, default)
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


async def create(node: PoolManager, cmd: Command) -> Any:
    body = cmd.args.get("body")
    if not isinstance(body, dict):
        raise CommandError("invalid", "the create body must be a JSON object")
    try:
        req = docker.create_request(body, str(cmd.args.get("name") or ""))
    except docker.Unsupported as exc:
        raise CommandError("not_implemented", str(exc)) from None
    image = node.images.get(req.image)
    config = docker.image_exposed(image.run_config, docker.exposed(body))
    record = await node.runtime.create(
        config, node.images.layer_dirs(image), req.options, image=req.image
    )
    await node.containers.track(record)
    return {"Id": record.id, "Warnings": []}


async def start(node: PoolManager, cmd: Command) -> Any:
    record = _record(node, cmd)
    if record.status in ("running", "paused"):
        return {"modified": False}
    if record.status == "exited":
        record = await node.runtime.revive(record.id)
    else:
        record = await node.runtime.start(record.id)
    node.containers.watch(record)
    return {"modified": True}


async def stop(node: PoolManager, cmd: Command) -> Any:
    record = _record(node, cmd)
    if record.status not in ("running", "paused"):
        return {"modified": False}
    timeout = cmd.args.get("t")
    await node.runtime.stop(record.id, float(timeout) if timeout is not None else 10.0)
    return {"modified": True}


async def restart(node: PoolManager, cmd: Command) -> Any:
    record = _record(node, cmd)
    if record.status in ("running", "paused"):
        timeout = cmd.args.get("t")
        await node.runtime.stop(record.id, float(timeout) if timeout is not None else 10.0)
    record = node.runtime.get(record.id)
    if record.status == "created":
        record = await node.runtime.start(record.id)
    else:
        record = await node.runtime.revive(record.id)
    return {"modified": True}


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


async def kill(node: PoolManager, cmd: Command) -> Any:
    record = _record(node, cmd)
    sig = _signal_name(str(cmd.args.get("signal") or "KILL"))
    await node.runtime.kill(record.id, sig)
    return {}


async def remove(node: PoolManager, cmd: Command) -> Any:
    record = _record(node, cmd)
    await node.runtime.remove(record.id, force=_flag(cmd, "force"), volumes=_flag(cmd, "v"))
    await node.containers.untrack(record.id)
    return {}


def _gateway(node: PoolManager) -> str:
    """The bridge's own address: the containers' default route."""
    return str(next(node.runtime.network.subnet.hosts()))


def _inspect(node: PoolManager, record: ContainerRecord) -> dict[str, Any]:
    volume_paths = {}
    for name, _ in record.volumes:
        with contextlib.suppress(NotFound):
            volume_paths[name] = str(node.runtime.volumes.get(name).path)
    image_id = ""
    with contextlib.suppress(Exception):  # the image may have been removed since
        image_id = "sha256:" + node.images.get(record.image).id.removeprefix("sha256:")
    return docker.inspect_json(
        record, image_id=image_id, gateway=_gateway(node), volume_paths=volume_paths,
        log_path=str(node.runtime.paths(record.id).log),
    )  # fmt: skip


async def inspect(node: PoolManager, cmd: Command) -> Any:
    return _inspect(node, _record(node, cmd))


async def list_containers(node: PoolManager, cmd: Command) -> Any:
    filters = cmd.args.get("filters") or {}
    if not isinstance(filters, dict):
        raise CommandError("invalid", "filters must map a filter to its values")
    everything = _flag(cmd, "all") or bool(filters.get("status"))
    records = sorted(node.runtime.containers(), key=lambda r: r.created, reverse=True)
    return [
        docker.summary_json(r, gateway=_gateway(node))
        for r in records
        if (everything or r.status in ("running", "paused")) and docker.matches(r, filters)
    ]


async def wait(node: PoolManager, cmd: Command) -> Any:
    """Docker's conditions: ``not-running`` (default), ``next-exit``, ``removed``."""
    record = _record(node, cmd)
    condition = cmd.args.get("condition") or "not-running"
    if condition not in ("not-running", "next-exit", "removed"):
        raise CommandError("invalid", f"invalid condition {condition!r}")
    runtime = node.runtime
    if condition == "not-running" and record.status in ("created", "exited"):
        status = ExitStatus(record.exit_code or 0, record.oom_killed)
    else:
        while True:  # next-exit/removed of one not started yet: until it starts
            change = node.containers.next_change(record.id)
            try:
                record = runtime.get(record.id)
            except NotFound:
                return {"StatusCode": 0, "Error": None}
            if record.status != "created":
                break
            await until_cancelled(cmd, _until_set(change))
        status = await until_cancelled(cmd, asyncio.shield(runtime.wait(record.id)))
    if condition == "removed":
        while True:
            change = node.containers.next_change(record.id)
            if runtime.store.load(record.id) is None:
                break
            await until_cancelled(cmd, _until_set(change))
    return {"StatusCode": status.code, "Error": None}


async def _until_set(change: asyncio.Event) -> None:
    """Until ``change`` is set, or a second at most: a change made by another process
    (the reaper of a restarted node) raises no event here."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(change.wait(), 1.0)


async def _follow(
    node: PoolManager, cmd: Command, record: ContainerRecord, offset: int,
    *, stdout: bool, stderr: bool, timestamps: bool, follow: bool,
) -> None:  # fmt: skip
    """Send the log from byte ``offset`` on; with ``follow``, until the container ends."""
    runtime, cid = node.runtime, record.id
    ended = asyncio.ensure_future(asyncio.shield(runtime.wait(cid))) if follow else None
    try:
        while True:
            finished = ended is None or ended.done()  # read once more after the end
            lines, offset = runtime.logs_from(cid, offset)
            data = docker.log_frames(lines, stdout=stdout, stderr=stderr, timestamps=timestamps)
            if data:
                await cmd.send(data)
            if finished:
                return
            if not data:
                if await cmd.cancelled():
                    return
                # New lines are polled for; the end is not: it wakes this at once.
                assert ended is not None  # not following: returned above
                await asyncio.wait([ended], timeout=POLL)
    finally:
        if ended is not None and not ended.done():
            ended.cancel()


async def logs(node: PoolManager, cmd: Command) -> Any:
    record = _record(node, cmd)
    stdout, stderr = _flag(cmd, "stdout"), _flag(cmd, "stderr")
    timestamps = _flag(cmd, "timestamps")
    tail = str(cmd.args.get("tail") or "all")
    since = float(cmd.args.get("since") or 0)
    until = float(cmd.args.get("until") or 0)
    await cmd.send(b"")  # found: the response can start
    lines = node.runtime.logs(record.id, stdout=stdout, stderr=stderr)
    lines = [ln for ln in lines if ln.time.timestamp() >= since
             and (not until or ln.time.timestamp() <= until)]  # fmt: skip
    if tail != "all":
        if not tail.isdigit():
            raise CommandError("invalid", f"invalid tail {tail!r}: a number or all")
        lines = lines[-int(tail) :] if int(tail) else []
    data = docker.log_frames(lines, stdout=stdout, stderr=stderr, timestamps=timestamps)
    if data:
        await cmd.send(data)
    if _flag(cmd, "follow") and record.status in ("created", "running", "paused"):
        size = _size(node.runtime.paths(record.id).log)
        await _follow(node, cmd, record, size, stdout=stdout, stderr=stderr,
                      timestamps=timestamps, follow=True)  # fmt: skip
    return {}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


async def attach(node: PoolManager, cmd: Command) -> Any:
    """The container's output from now (all of it with ``logs``) until it exits."""
    record = _record(node, cmd)
    if record.stdio != "logs":
        raise CommandError("conflict", f"container {record.name} has no attachable output")
    offset = (
        0
        if record.status == "created" or _flag(cmd, "logs")
        else _size(node.runtime.paths(record.id).log)
    )
    node.containers.readers[record.id] += 1
    try:
        await cmd.send(b"")  # attached: the client may start the container now
        await _follow(node, cmd, record, offset, stdout=_flag(cmd, "stdout"),
                      stderr=_flag(cmd, "stderr"), timestamps=False,
                      follow=_flag(cmd, "stream", True))  # fmt: skip
    finally:
        node.containers.readers[record.id] -= 1
        if not node.containers.readers[record.id]:
            del node.containers.readers[record.id]
            node.containers.changed("detach", record)  # its --rm removal may go on
    return {}


def _process_row(pid: int) -> list[str]:
    try:
        status = dict(
            line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if ":\t" in line
        )  # fmt: skip
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return []
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) // ticks
    uid = status.get("Uid", "0").split()[0]
    ppid = status.get("PPid", "0").strip()
    clock = f"{cpu // 3600:02d}:{cpu // 60 % 60:02d}:{cpu % 60:02d}"
    command = cmdline.decode(errors="replace") or f"[{status.get('Name', '?').strip()}]"
    return [uid, str(pid), ppid, clock, command]


async def top(node: PoolManager, cmd: Command) -> Any:
    record = _record(node, cmd)
    if record.status not in ("running", "paused"):
        raise CommandError("conflict", f"container {record.name} is not running")
    rows = [row for pid in node.runtime.cgroups.pids(record.id) if (row := _process_row(pid))]
    return {"Titles": ["UID", "PID", "PPID", "TIME", "CMD"], "Processes": rows}


async def changes(node: PoolManager, cmd: Command) -> Any:
    kinds = {"C": 0, "A": 1, "D": 2}
    return [{"Path": path, "Kind": kinds[kind]}
            for kind, path in node.runtime.changes(_record(node, cmd).id)]  # fmt: skip


async def stats(node: PoolManager, cmd: Command) -> Any:
    record = _record(node, cmd)
    s = node.runtime.stats(record.id)
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    system_ns = sum(int(x) for x in fields) * 10**9 // os.sysconf("SC_CLK_TCK")
    cpus = os.cpu_count() or 1
    return {
        "read": docker.rfc3339(time.time()), "name": "/" + record.name, "id": record.id,
        "pids_stats": {"current": s.pids, "limit": record.options.pids_limit},
        "memory_stats": {"usage": s.memory_bytes, "max_usage": s.memory_peak_bytes,
                         "limit": record.options.memory, "failcnt": s.oom_kills, "stats": {}},
        "cpu_stats": {"cpu_usage": {"total_usage": s.cpu_usage_ns},
                      "system_cpu_usage": system_ns, "online_cpus": cpus,
                      "throttling_data": {"throttled_periods": s.throttled_periods,
                                          "throttled_time": s.throttled_ns}},
        "networks": {}, "blkio_stats": {},
    }  # fmt: skip


async def rename(node: PoolManager, cmd: Command) -> Any:
    record = node.runtime.rename(required(cmd.args, "id"), required(cmd.args, "name"))
    await node.containers.track(record)
    return {}


async def pause(node: PoolManager, cmd: Command) -> Any:
    record = _record(node, cmd)
    if record.status != "running":
        raise Conflict(f"container {record.name} is not running")
    await node.runtime.pause(record.id)
    return {}


async def unpause(node: PoolManager, cmd: Command) -> Any:
    record = _record(node, cmd)
    if record.status != "paused":
        raise Conflict(f"container {record.name} is not paused")
    await node.runtime.resume(record.id)
    return {}


async def prune(node: PoolManager, cmd: Command) -> Any:
    filters = cmd.args.get("filters") or {}
    removed = []
    for record in node.runtime.containers():
        if record.status == "exited" and docker.matches(record, filters):
            await node.runtime.remove(record.id, force=True)
            await node.containers.untrack(record.id)
            removed.append(record.id)
    return {"ContainersDeleted": removed, "SpaceReclaimed": 0}


COMMANDS: dict[str, Handler] = {
    "container.create": create,
    "container.start": start,
    "container.stop": stop,
    "container.restart": restart,
    "container.kill": kill,
    "container.remove": remove,
    "container.inspect": inspect,
    "container.list": list_containers,
    "container.wait": wait,
    "container.logs": logs,
    "container.attach": attach,
    "container.top": top,
    "container.changes": changes,
    "container.stats": stats,
    "container.rename": rename,
    "container.pause": pause,
    "container.unpause": unpause,
    "container.prune": prune,
}
