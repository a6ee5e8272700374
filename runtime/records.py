"""What the runtime remembers about each container, on disk under the state dir.

Everything a container owns is named from its id (DESIGN.md): its directory
``containers/<id>/``, cgroup ``<parent>/<id>``, netns ``scow-<id12>``, veth
``sv<id10>``, IPAM lease owner ``<id>``. The record adds what cannot be derived:
options, chosen ports, pids, exit status. It is written atomically, first with
status ``creating`` so that a crash mid-create is found and undone by the reaper.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from runtime.errors import Conflict, NotFound
from runtime.spec import (
    ImageConfig,
    RunOptions,
    image_config_to_json,
    options_from_json,
    options_to_json,
)

Status = Literal["creating", "created", "running", "paused", "exited"]
StdioMode = Literal["logs", "pipes"]


@dataclass(frozen=True)
class PublishedPort:
    container_port: int
    host_ip: str
    host_port: int
    protocol: str = "tcp"


@dataclass(frozen=True)
class NetworkEndpoint:
    """The container on one network: ``bridge`` (scow's default) or a user-defined one."""

    network: str
    bridge: str
    subnet: str
    ip: str
    gateway: str
    interface: str  # eth0, eth1 ...
    mac: str
    network_id: str = ""
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Health:
    """A container's health as its checks found it (Docker's ``State.Health``)."""

    status: str = "starting"  # starting, healthy, unhealthy
    failing_streak: int = 0
    log: tuple[dict[str, Any], ...] = ()  # the last five: Start, End, ExitCode, Output


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    name: str
    created: float
    image: str
    image_config: ImageConfig
    options: RunOptions
    layers: tuple[str, ...]
    stdio: StdioMode
    status: Status = "creating"
    hostname: str = ""
    pid: int = 0
    monitor_pid: int = 0
    ip: str = ""
    ports: tuple[PublishedPort, ...] = ()
    proxy_pid: int = 0
    volumes: tuple[tuple[str, str], ...] = ()  # (volume name, container path)
    anonymous_volumes: tuple[str, ...] = ()
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int | None = None
    oom_killed: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    # Seconds spent in each phase of setup: rootfs, netns, create, start.
    phases: dict[str, float] = field(default_factory=dict)
    endpoints: tuple[NetworkEndpoint, ...] = ()  # the networks it is on, eth0 first
    health: Health | None = None  # None: no healthcheck
    restart_count: int = 0  # restarts by its policy since it was last started by hand
    restarting: bool = False  # waiting out its back-off before a restart
    stopped_by_hand: bool = False  # stopped by a client: unless-stopped keeps it down

    def evolve(self, **changes: Any) -> ContainerRecord:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_config"] = image_config_to_json(self.image_config)
        data["options"] = options_to_json(self.options)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerRecord:
        d = dict(data)
        d["image_config"] = ImageConfig.from_oci(d["image_config"])
        d["options"] = options_from_json(d["options"])
        d["layers"] = tuple(d["layers"])
        d["ports"] = tuple(PublishedPort(**p) for p in d.get("ports", ()))
        d["endpoints"] = tuple(
            NetworkEndpoint(**{**e, "aliases": tuple(e.get("aliases") or ())})
            for e in d.get("endpoints", ())
        )
        if d.get("health") is not None:
            h = d["health"]
            d["health"] = Health(h["status"], h["failing_streak"], tuple(h.get("log") or ()))
        d["volumes"] = tuple(tuple(v) for v in d.get("volumes", ()))
        d["anonymous_volumes"] = tuple(d.get("anonymous_volumes", ()))
        return cls(**d)


@dataclass(frozen=True)
class ContainerPaths:
    """Every file of one container, from its id."""

    root: Path

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def rootfs(self) -> Path:
        return self.root / "bundle" / "rootfs"

    @property
    def skeleton(self) -> Path:
        return self.root / "skel"

    @property
    def upper(self) -> Path:
        return self.root / "diff"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def log(self) -> Path:
        return self.root / "container.log"

    @property
    def exit_dir(self) -> Path:
        return self.root / "exit"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def pid_file(self) -> Path:
        return self.root / "init.pid"

    @property
    def monitor_pid_file(self) -> Path:
        return self.root / "conmon.pid"

    @property
    def record(self) -> Path:
        return self.root / "container.json"


REMOVING = ".removing-"  # a container directory set aside for removal


class ContainerStore:
    """Records under ``root/<id>/``; names as symlinks ``names/<name> -> <id>``.

    A symlink is made atomically, so two creators (even in two processes) can
    never both take one name.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.names = root.parent / "names"

    def claim_name(self, name: str, cid: str) -> None:
        self.names.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(cid, self.names / name)
        except FileExistsError:
            owner = os.readlink(self.names / name)
            raise Conflict(
                f"the container name {name!r} is already in use by container {owner[:12]}"
            ) from None

    def release_name(self, name: str, cid: str) -> None:
        """Drop ``name`` if it still points at ``cid``."""
        with contextlib.suppress(FileNotFoundError):
            if os.readlink(self.names / name) == cid:
                os.unlink(self.names / name)

    def names_of(self, cid: str) -> list[str]:
        """Names pointing at ``cid`` (for the reaper, when the record is gone)."""
        try:
            return [e.name for e in os.scandir(self.names) if os.readlink(e.path) == cid]
        except FileNotFoundError:
            return []

    def paths(self, cid: str) -> ContainerPaths:
        return ContainerPaths(self.root / cid)

    def save(self, record: ContainerRecord) -> None:
        """Write ``record``; FileNotFoundError once the container is removed (a save
        never makes its directory again)."""
        path = self.paths(record.id).record
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record.to_json()))
        os.replace(tmp, path)

    def load(self, cid: str) -> ContainerRecord | None:
        try:
            return ContainerRecord.from_json(json.loads(self.paths(cid).record.read_text()))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def ids(self) -> set[str]:
        try:
            return {e.name for e in os.scandir(self.root)
                    if e.is_dir() and not e.name.startswith(REMOVING)}  # fmt: skip
        except FileNotFoundError:
            return set()

    def set_aside(self, cid: str) -> Path | None:
        """Take a container's directory out of the store in one rename, for removal.

        Once it is out, nothing can write into it by its id (a save of its exit status
        racing the removal used to leave its ``container.json`` behind). None when it
        was not there.
        """
        aside = self.root / f"{REMOVING}{cid}"
        try:
            os.rename(self.root / cid, aside)
        except FileNotFoundError:
            return None
        return aside

    def set_aside_dirs(self) -> list[Path]:
        """Directories set aside and not yet removed (a removal a crash cut short)."""
        try:
            return [Path(e.path) for e in os.scandir(self.root) if e.name.startswith(REMOVING)]
        except FileNotFoundError:
            return []

    def volume_users(self, name: str) -> list[str]:
        """The names of the containers that mount volume ``name``."""
        return [r.name for r in self.all() if any(v == name for v, _ in r.volumes)]

    def all(self) -> list[ContainerRecord]:
        records = [r for cid in sorted(self.ids()) if (r := self.load(cid)) is not None]
        return sorted(records, key=lambda r: r.created)

    def find(self, ref: str) -> ContainerRecord:
        """By full id, name, or unique id prefix (as the docker CLI resolves them)."""
        if len(ref) == 64 and (rec := self.load(ref)) is not None:
            return rec
        try:
            if (rec := self.load(os.readlink(self.names / ref))) is not None:
                return rec
        except (FileNotFoundError, OSError):
            pass  # not a name: try it as an id prefix
        records = self.all()
        matches = [r for r in records if ref and r.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        raise NotFound("container", ref)


def write_private(path: Path, text: str, mode: int) -> None:
    """A file of the runtime's own in a container's directory: never written through a
    link planted there, and with exactly ``mode``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)
