"""What a container is made from: the image's config and the run options.

Both are frozen dataclasses. The options check themselves when made (whoever makes
them: a node from a client's spec, the builder for a RUN step); the docker CLI's
string forms (``-v``, ``-p``, ``--ulimit``, ``--tmpfs``) are parsed at the edge, in
``pool.contract.containers``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from runtime.errors import InvalidOption

# none: loopback only; bridge: scow's bridge; host: the host's own network (build steps,
# as ``docker build`` runs RUN; never for functions); or the name of a user-defined network
# (then the first of ``RunOptions.attachments``).
BUILTIN_NETWORKS = ("none", "bridge", "host")
NETWORK_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")

DEFAULT_MEMORY = 512 << 20
DEFAULT_CPU_SHARES = 1024
DEFAULT_PIDS = 1024
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
    healthcheck: Mapping[str, Any] | None = None  # Docker's Healthcheck, as the image has it

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
            healthcheck=dict(c["Healthcheck"]) if c.get("Healthcheck") else None,
        )


PROPAGATIONS = ("shared", "rshared", "slave", "rslave", "private", "rprivate")


@dataclass(frozen=True)
class Volume:
    """``-v``: ``/ctr`` (anonymous), ``name:/ctr`` (named) or ``/host:/ctr`` (bind)."""

    target: str
    source: str = ""  # "" anonymous; a name; or an absolute host path
    read_only: bool = False
    propagation: str = ""  # a bind's; "" is rprivate
    nocopy: bool = False  # a new volume is not seeded from the image

    @property
    def kind(self) -> Literal["anonymous", "named", "bind"]:
        if not self.source:
            return "anonymous"
        return "bind" if self.source.startswith("/") else "named"


@dataclass(frozen=True)
class Port:
    """``-p``: ``8080``, ``9000:8080``, ``127.0.0.1:9000:8080``, ``127.0.0.1::8080/tcp``."""

    container_port: int
    host_port: int = 0  # 0: a free port chosen when the container starts
    host_ip: str = ""  # "": 127.0.0.1 and the address of the container's bridge
    protocol: str = "tcp"  # or udp


@dataclass(frozen=True)
class Attachment:
    """A user-defined network a container is on: its bridge and subnet (the network's
    record), the names the other members know it by, and an address asked for (``--ip``)."""

    network: str
    network_id: str = ""
    bridge: str = ""
    subnet: str = ""
    aliases: tuple[str, ...] = ()
    ip: str = ""


@dataclass(frozen=True)
class Healthcheck:
    """Docker's healthcheck in seconds; empty ``test`` and zero times: the image's."""

    test: tuple[str, ...] = ()
    interval: float = 0.0
    timeout: float = 0.0
    start_period: float = 0.0
    start_interval: float = 0.0
    retries: int = 0


@dataclass(frozen=True)
class Ulimit:
    name: str
    soft: int
    hard: int


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
    cpu_quota: int = 0  # CFS microseconds of CPU per period; 0: no quota
    cpu_period: int = 0  # 0: the kernel's (100 ms)
    ulimits: tuple[Ulimit, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str = "none"  # BUILTIN_NETWORKS, or a user-defined network's name
    attachments: tuple[Attachment, ...] = ()  # the user-defined networks it is on
    ports: tuple[Port, ...] = ()
    publish_all: bool = False
    links: tuple[tuple[str, str], ...] = ()  # (container name or id, alias)
    # On the bridge, reach only the host: not the other containers (functions of other
    # tenants), which cannot reach this one either.
    isolated: bool = False
    init: bool = True
    # Capabilities beyond the default three (docker's --cap-add), e.g. for build steps.
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()  # of the default three, or ALL
    extra_hosts: tuple[tuple[str, str], ...] = ()  # (name, address or "host-gateway")
    dns: tuple[str, ...] = ()  # nameservers; none: the host's (less loopback ones)
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    tty: bool = False  # a pseudo-terminal as its stdin, stdout and stderr
    stdin_open: bool = False  # its stdin stays open for attaching clients
    stdin_once: bool = False  # ... until the first of them leaves
    console: tuple[int, int] = (0, 0)  # the TTY's first size (rows, columns)
    # Kept with the container for its owner (the node acts on them, not the runtime).
    restart: str = "no"
    restart_retries: int = 0
    healthcheck: Healthcheck | None = None
    stop_timeout: int | None = None

    def __post_init__(self) -> None:
        checks = (_check_name, _check_env, _check_limits, _check_paths, _check_mounts,
                  _check_network, _check_ports, _check_ulimits, _check_caps)  # fmt: skip
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
    if o.cpu_quota and o.cpu_quota < 1000:
        raise InvalidOption("cpu_quota", o.cpu_quota, "at least 1000 microseconds (--cpus 0.01)")
    if o.cpu_period and not 1000 <= o.cpu_period <= 1_000_000:
        raise InvalidOption("cpu_period", o.cpu_period, "from 1000 to 1000000 microseconds")
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


def _check_mounts(o: RunOptions) -> None:
    for v in o.volumes:
        if not v.target.startswith("/") or ".." in PurePosixPath(v.target).parts:
            raise InvalidOption("volume", v.target, "the container path must be absolute, no '..'")
        if v.source and not v.source.startswith("/") and not NAME_RE.match(v.source):
            raise InvalidOption("volume", v.source, "neither a host path nor a volume name")
        if v.propagation and (v.propagation not in PROPAGATIONS or v.kind != "bind"):
            raise InvalidOption("volume", v.propagation, "a bind's propagation: "
                                + ", ".join(PROPAGATIONS))  # fmt: skip


def _check_ports(o: RunOptions) -> None:
    for p in o.ports:
        if not 1 <= p.container_port <= 65535 or not 0 <= p.host_port <= 65535:
            raise InvalidOption("port", f"{p.host_port}:{p.container_port}", "outside 1-65535")
        if p.protocol not in ("tcp", "udp"):
            raise InvalidOption("port", p.protocol, "only tcp and udp ports can be published")


def _check_ulimits(o: RunOptions) -> None:
    for u in o.ulimits:
        if u.name not in RLIMITS:
            raise InvalidOption("ulimit", u.name, f"unknown limit (known: {', '.join(RLIMITS)})")
        if u.soft > u.hard:
            raise InvalidOption("ulimit", f"{u.name}={u.soft}:{u.hard}",
                                "the soft limit is above the hard limit")  # fmt: skip


def _check_network(o: RunOptions) -> None:
    if o.network not in BUILTIN_NETWORKS and not NETWORK_NAME_RE.match(o.network):
        raise InvalidOption("network", o.network, "expected none, bridge, host or a network name")
    user = o.network not in BUILTIN_NETWORKS
    if user and (not o.attachments or o.attachments[0].network != o.network):
        raise InvalidOption("network", o.network, "a user-defined network needs its record")
    names = [a.network for a in o.attachments]
    for a in o.attachments:
        if names.count(a.network) > 1:
            raise InvalidOption("network", a.network, "the container is on it already")
        if not a.bridge or not a.subnet:
            raise InvalidOption("network", a.network, "its bridge and subnet are not known")
    if o.network in ("none", "host") and (o.ports or o.links or o.attachments):
        raise InvalidOption("network", o.network,
                            "ports, links and other networks need a bridge network")  # fmt: skip


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
    for cap in o.cap_drop:
        if cap.upper() != "ALL" and cap.upper().removeprefix("CAP_") not in CAPABILITIES:
            raise InvalidOption("cap_drop", cap, "not a Linux capability")
    for name, address in o.extra_hosts:
        if not re.fullmatch(r"[a-zA-Z0-9]([a-zA-Z0-9.-]{0,252})", name):
            raise InvalidOption("extra_hosts", name, "not a host name")
        if address != "host-gateway":
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise InvalidOption("extra_hosts", address, "not an address") from None
    for server in o.dns:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise InvalidOption("dns", server, "not an address") from None
    for word in (*o.dns_search, *o.dns_options):
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,253}", word):
            raise InvalidOption("dns", word, "not a domain or resolver option")


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
    data["links"] = [list(pair) for pair in o.links]
    data["extra_hosts"] = [list(pair) for pair in o.extra_hosts]
    return data


def options_from_json(data: Mapping[str, Any]) -> RunOptions:
    d = dict(data)
    for key in ("command", "entrypoint"):
        if d.get(key) is not None:
            d[key] = tuple(d[key])
    d["env"] = tuple(d.get("env", ()))
    d["volumes_from"] = tuple(d.get("volumes_from", ()))
    for key in ("cap_add", "cap_drop", "dns", "dns_search", "dns_options"):
        d[key] = tuple(d.get(key, ()))
    d["extra_hosts"] = tuple((str(n), str(a)) for n, a in d.get("extra_hosts", ()))
    d["volumes"] = tuple(Volume(**v) for v in d.get("volumes", ()))
    d["ports"] = tuple(Port(**p) for p in d.get("ports", ()))
    d["ulimits"] = tuple(Ulimit(**u) for u in d.get("ulimits", ()))
    d["attachments"] = tuple(
        Attachment(**{**a, "aliases": tuple(a.get("aliases") or ())})
        for a in d.get("attachments", ())
    )
    links = d.get("links") or ()
    # Records made before a container could link one container under several aliases
    # kept links as a mapping.
    d["links"] = tuple((str(k), str(v)) for k, v in (links.items() if isinstance(links, dict)
                                                    else links))  # fmt: skip
    d["console"] = tuple(d.get("console") or (0, 0))
    if d.get("healthcheck") is not None:
        h = d["healthcheck"]
        d["healthcheck"] = Healthcheck(**{**h, "test": tuple(h.get("test") or ())})
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
    if c.healthcheck:
        out["Healthcheck"] = dict(c.healthcheck)
    return out
