"""What a container is made from: the image's config and the run options.

Both are frozen dataclasses, parsed and checked once at the edge. The string forms
follow the docker CLI (``-v``, ``-p``, ``--ulimit``, ``--tmpfs``, ``--env-file``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pool.contract.units import parse_size
from runtime.errors import InvalidOption

# none: loopback only; bridge: scow's bridge; host: the host's own network (build steps,
# as ``docker build`` runs RUN; never for functions).
NetworkMode = Literal["none", "bridge", "host"]

DEFAULT_MEMORY = 512 << 20
DEFAULT_CPU_SHARES = 1024
DEFAULT_PIDS = 1024
DEFAULT_TMPFS_SIZE = 64 << 20
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
ENV_KEY_RE = re.compile(r"^[^=\s]+$")


@dataclass(frozen=True)
class ImageConfig:
    """The runnable part of an OCI image config (``config`` in the image's JSON)."""

    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str = ""

    @classmethod
    def from_oci(cls, config: Mapping[str, Any] | None) -> ImageConfig:
        c = config or {}
        return cls(
            env=tuple(c.get("Env") or ()),
            entrypoint=tuple(c["Entrypoint"]) if c.get("Entrypoint") else None,
            cmd=tuple(c["Cmd"]) if c.get("Cmd") else None,
            working_dir=c.get("WorkingDir") or "",
            user=c.get("User") or "",
            exposed_ports=tuple(sorted(c.get("ExposedPorts") or {})),
            volumes=tuple(sorted(c.get("Volumes") or {})),
            labels=dict(c.get("Labels") or {}),
            stop_signal=c.get("StopSignal") or "",
        )


@dataclass(frozen=True)
class Volume:
    """``-v``: ``/ctr`` (anonymous), ``name:/ctr`` (named) or ``/host:/ctr`` (bind)."""

    target: str
    source: str = ""  # "" anonymous; a name; or an absolute host path
    read_only: bool = False

    @property
    def kind(self) -> Literal["anonymous", "named", "bind"]:
        if not self.source:
            return "anonymous"
        return "bind" if self.source.startswith("/") else "named"

    @classmethod
    def parse(cls, text: str) -> Volume:
        parts = text.split(":")
        mode = ""
        if len(parts) == 3 or (len(parts) == 2 and parts[1] in ("ro", "rw")):
            mode = parts.pop()
        if mode not in ("", "ro", "rw") or not 1 <= len(parts) <= 2:
            raise InvalidOption("volume", text, "expected [SOURCE:]TARGET[:ro|rw]")
        source, target = ("", parts[0]) if len(parts) == 1 else (parts[0], parts[1])
        if not target.startswith("/"):
            raise InvalidOption("volume", text, "the container path must be absolute")
        if ".." in PurePosixPath(target).parts:
            raise InvalidOption("volume", text, "the container path may not contain '..'")
        if source and not source.startswith("/") and not NAME_RE.match(source):
            raise InvalidOption("volume", text, f"{source!r} is neither a host path nor a name")
        return cls(target=str(PurePosixPath(target)), source=source, read_only=mode == "ro")


@dataclass(frozen=True)
class Port:
    """``-p``: ``8080``, ``9000:8080``, ``127.0.0.1:9000:8080``, ``127.0.0.1::8080/tcp``."""

    container_port: int
    host_port: int = 0  # 0: a free port chosen when the container starts
    host_ip: str = "127.0.0.1"
    protocol: str = "tcp"

    @classmethod
    def parse(cls, text: str) -> Port:
        spec, _, proto = text.partition("/")
        proto = proto or "tcp"
        if proto != "tcp":
            raise InvalidOption("port", text, "only tcp ports can be published")
        parts = spec.rsplit(":", 2)
        ip, host, ctr = ("", "", parts[-1])
        if len(parts) == 2:
            host = parts[0]
        elif len(parts) == 3:
            ip, host = parts[0], parts[1]
        try:
            return cls(
                container_port=_port_number(ctr, text),
                host_port=_port_number(host, text) if host else 0,
                host_ip=ip.strip("[]") or "127.0.0.1",
            )
        except ValueError:
            raise InvalidOption("port", text, "expected [IP:][HOSTPORT:]PORT[/tcp]") from None


def _port_number(text: str, whole: str) -> int:
    n = int(text)
    if not 1 <= n <= 65535:
        raise InvalidOption("port", whole, f"{n} is outside 1-65535")
    return n


@dataclass(frozen=True)
class Ulimit:
    name: str
    soft: int
    hard: int

    @classmethod
    def parse(cls, text: str) -> Ulimit:
        m = re.fullmatch(r"([a-z]+)=(-?\d+)(?::(-?\d+))?", text)
        if not m:
            raise InvalidOption("ulimit", text, "expected NAME=SOFT[:HARD], e.g. nofile=1024:2048")
        name = m.group(1)
        if name not in RLIMITS:
            raise InvalidOption("ulimit", text, f"unknown limit {name!r}")
        soft = int(m.group(2))
        hard = int(m.group(3)) if m.group(3) else soft
        if soft > hard:
            raise InvalidOption("ulimit", text, "the soft limit is above the hard limit")
        return cls(name, soft, hard)


RLIMITS = {
    "core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA", "fsize": "RLIMIT_FSIZE",
    "locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK", "msgqueue": "RLIMIT_MSGQUEUE",
    "nice": "RLIMIT_NICE", "nofile": "RLIMIT_NOFILE", "nproc": "RLIMIT_NPROC",
    "rss": "RLIMIT_RSS", "rtprio": "RLIMIT_RTPRIO", "sigpending": "RLIMIT_SIGPENDING",
    "stack": "RLIMIT_STACK",
}  # fmt: skip


@dataclass(frozen=True)
class RunOptions:
    """How to run one container, on top of its image's config."""

    name: str = ""
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    read_only: bool = False
    tmpfs: Mapping[str, int] = field(default_factory=dict)  # path -> size in bytes
    volumes: tuple[Volume, ...] = ()
    volumes_from: tuple[str, ...] = ()
    memory: int = DEFAULT_MEMORY
    cpu_shares: int = DEFAULT_CPU_SHARES
    pids_limit: int = DEFAULT_PIDS
    cpuset_cpus: str = ""
    ulimits: tuple[Ulimit, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    network: NetworkMode = "none"
    ports: tuple[Port, ...] = ()
    publish_all: bool = False
    links: Mapping[str, str] = field(default_factory=dict)  # container name or id -> alias
    # On the bridge, reach only the host: not the other containers (functions of other
    # tenants), which cannot reach this one either.
    isolated: bool = False
    init: bool = True
    # Capabilities beyond the default three (docker's --cap-add), e.g. for build steps.
    cap_add: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks = (_check_name, _check_env, _check_limits, _check_paths, _check_network, _check_caps)
        for check in checks:
            check(self)


def _check_name(o: RunOptions) -> None:
    if o.name and not NAME_RE.match(o.name):
        raise InvalidOption("name", o.name, "use letters, digits, '_', '.' and '-' (max 128)")
    if o.hostname and not re.fullmatch(r"[a-zA-Z0-9]([a-zA-Z0-9.-]{0,62})", o.hostname):
        raise InvalidOption("hostname", o.hostname, "not a valid host name")


def _check_env(o: RunOptions) -> None:
    for item in o.env:
        key = item.partition("=")[0]
        if not ENV_KEY_RE.match(key):
            raise InvalidOption("env", item, "expected KEY=VALUE with a non-empty KEY")


def _check_limits(o: RunOptions) -> None:
    if o.memory < 4 << 20:
        raise InvalidOption("memory", o.memory, "the minimum memory limit is 4m")
    if not 2 <= o.cpu_shares <= 262144:
        raise InvalidOption("cpu_shares", o.cpu_shares, "cpu shares range from 2 to 262144")
    if o.pids_limit < 1:
        raise InvalidOption("pids_limit", o.pids_limit, "the pids limit must be at least 1")
    if o.cpuset_cpus and not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", o.cpuset_cpus):
        raise InvalidOption("cpuset_cpus", o.cpuset_cpus, "expected a list such as 0 or 0-1,3")


def _check_paths(o: RunOptions) -> None:
    for path in o.tmpfs:
        if not path.startswith("/") or ".." in PurePosixPath(path).parts:
            raise InvalidOption("tmpfs", path, "the path must be absolute, without '..'")
    if o.workdir and not o.workdir.startswith("/"):
        raise InvalidOption("workdir", o.workdir, "the working directory must be absolute")
    targets = [v.target for v in o.volumes] + list(o.tmpfs)
    for target in targets:
        if targets.count(target) > 1:
            raise InvalidOption("volume", target, "two mounts on one container path")


def _check_network(o: RunOptions) -> None:
    if o.network not in ("none", "bridge", "host"):
        raise InvalidOption("network", o.network, "expected 'none', 'bridge' or 'host'")
    if o.network != "bridge" and (o.ports or o.links):
        raise InvalidOption("network", o.network, "ports and links need the bridge network")


CAPABILITIES = {
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE",
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER",
    "KILL", "LEASE", "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN",
    "NET_BIND_SERVICE", "NET_BROADCAST", "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP",
    "SETUID", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT",
    "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "SYSLOG",
    "WAKE_ALARM",
}  # fmt: skip


def _check_caps(o: RunOptions) -> None:
    for cap in o.cap_add:
        if cap.upper().removeprefix("CAP_") not in CAPABILITIES:
            raise InvalidOption("cap_add", cap, "not a Linux capability")


def parse_tmpfs(text: str) -> tuple[str, int]:
    """``--tmpfs /run:size=16m`` -> ("/run", 16 MiB); without a size, 64 MiB."""
    path, _, opts = text.partition(":")
    size = DEFAULT_TMPFS_SIZE
    for opt in filter(None, opts.split(",")):
        key, _, value = opt.partition("=")
        if key == "size":
            size = parse_size(value, "tmpfs size")
        elif key not in ("rw", "noexec", "nosuid", "nodev", "exec"):
            raise InvalidOption("tmpfs", text, f"unsupported option {opt!r}")
    return path, size


def parse_env_file(path: Path) -> tuple[str, ...]:
    """Lines of KEY=VALUE; ``#`` comments and blank lines skipped; a bare KEY takes ours."""
    import os

    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InvalidOption("env-file", str(path), exc.strerror or str(exc)) from None
    out = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, _ = line.partition("=")
        if not ENV_KEY_RE.match(key):
            raise InvalidOption("env-file", f"{path}:{n}", f"bad line {line!r}")
        if eq:
            out.append(line)
        elif key in os.environ:
            out.append(f"{key}={os.environ[key]}")
    return tuple(out)


def merge_env(*layers: Iterable[str]) -> list[str]:
    """Later KEY=VALUE entries replace earlier ones with the same KEY, keeping first order."""
    merged: dict[str, str] = {}
    for layer in layers:
        for item in layer:
            key, _, value = item.partition("=")
            merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


def options_to_json(o: RunOptions) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(o)
    data["tmpfs"] = dict(o.tmpfs)
    data["labels"] = dict(o.labels)
    data["links"] = dict(o.links)
    return data


def options_from_json(data: Mapping[str, Any]) -> RunOptions:
    d = dict(data)
    for key in ("command", "entrypoint"):
        if d.get(key) is not None:
            d[key] = tuple(d[key])
    d["env"] = tuple(d.get("env", ()))
    d["volumes_from"] = tuple(d.get("volumes_from", ()))
    d["cap_add"] = tuple(d.get("cap_add", ()))
    d["volumes"] = tuple(Volume(**v) for v in d.get("volumes", ()))
    d["ports"] = tuple(Port(**p) for p in d.get("ports", ()))
    d["ulimits"] = tuple(Ulimit(**u) for u in d.get("ulimits", ()))
    return RunOptions(**d)


def image_config_to_json(c: ImageConfig) -> dict[str, Any]:
    """The OCI image ``config`` shape, so ImageConfig.from_oci reads it back."""
    out: dict[str, Any] = {
        "Env": list(c.env),
        "Entrypoint": list(c.entrypoint) if c.entrypoint else None,
        "Cmd": list(c.cmd) if c.cmd else None,
        "WorkingDir": c.working_dir,
        "User": c.user,
        "ExposedPorts": {p: {} for p in c.exposed_ports},
        "Volumes": {v: {} for v in c.volumes},
        "Labels": dict(c.labels),
    }
    if c.stop_signal:
        out["StopSignal"] = c.stop_signal
    return out
