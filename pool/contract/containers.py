"""A container as a client asks for one (the Docker API's create, the docker CLI's flags),
in scow's words: ``ContainerSpec``, with the parsers of the CLI's string forms
(``-v``, ``-p``, ``--ulimit``, ``--tmpfs``). Each names the value at fault.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from pool.contract.errors import InvalidSpec
from pool.contract.units import parse_size

PROPAGATIONS = ("shared", "rshared", "slave", "rslave", "private", "rprivate")
# Options Docker takes on -v that change nothing here: SELinux relabels (no SELinux
# policy is loaded for containers) and macOS consistency hints.
_IGNORED_BIND_OPTIONS = ("z", "Z", "consistent", "cached", "delegated")


@dataclass(frozen=True)
class BindSpec:
    """``-v``: ``/ctr`` (anonymous), ``name:/ctr`` (named) or ``/host:/ctr`` (bind), with
    options after a third colon: ``ro``/``rw``, a propagation (``rshared``...), ``nocopy``."""

    target: str
    source: str = ""  # "" anonymous; a name; or an absolute host path
    read_only: bool = False
    propagation: str = ""  # a bind's mount propagation; "" is rprivate
    nocopy: bool = False  # a new volume is not seeded from the image

    @classmethod
    def parse(cls, text: str) -> BindSpec:
        parts = text.split(":")
        options = ""
        if len(parts) == 3 or (len(parts) == 2 and not parts[1].startswith("/")):
            options = parts.pop()
        if not 1 <= len(parts) <= 2:
            raise InvalidSpec("volume", text, "expected [SOURCE:]TARGET[:OPTIONS]")
        source, target = ("", parts[0]) if len(parts) == 1 else (parts[0], parts[1])
        if not target.startswith("/"):
            raise InvalidSpec("volume", text, "the container path must be absolute")
        if ".." in target.split("/"):
            raise InvalidSpec("volume", text, "the container path may not contain '..'")
        if source and not source.startswith("/") and not CONTAINER_NAME_RE.match(source):
            raise InvalidSpec("volume", text, f"{source!r} is neither a host path nor a name")
        read_only, propagation, nocopy = False, "", False
        for option in filter(None, options.split(",")):
            if option in ("ro", "rw"):
                read_only = option == "ro"
            elif option in PROPAGATIONS:
                if not source.startswith("/"):
                    raise InvalidSpec("volume", text, f"{option} applies to bind mounts only")
                propagation = option
            elif option == "nocopy":
                nocopy = True
            elif option not in _IGNORED_BIND_OPTIONS:
                raise InvalidSpec("volume", text, f"unknown option {option!r} (known: ro, rw, "
                                  f"{', '.join(PROPAGATIONS)}, nocopy, z, Z)")  # fmt: skip
        clean = "/" + "/".join(p for p in target.split("/") if p and p != ".")
        return cls(clean, source, read_only, propagation, nocopy)

    @property
    def kind(self) -> Literal["anonymous", "named", "bind"]:
        if not self.source:
            return "anonymous"
        return "bind" if self.source.startswith("/") else "named"


@dataclass(frozen=True)
class PortSpec:
    """``-p``: ``8080``, ``9000:8080``, ``127.0.0.1:9000:8080``, ``127.0.0.1::8080/tcp``,
    ``53:53/udp``. Without an address the port is published on 127.0.0.1 and on the
    container's bridge address (so that clients in other containers reach it, as with
    Docker), never on another interface unless an address asks for it."""

    container_port: int
    host_port: int = 0  # 0: a free port chosen when the container starts
    host_ip: str = ""  # "": 127.0.0.1 and the bridge's address
    protocol: str = "tcp"

    @classmethod
    def parse(cls, text: str) -> PortSpec:
        spec, _, proto = text.partition("/")
        proto = proto or "tcp"
        if proto not in ("tcp", "udp"):
            raise InvalidSpec("port", text, f"unknown protocol {proto!r} (tcp or udp)")
        parts = spec.rsplit(":", 2)
        ip, host, ctr = ("", "", parts[-1])
        if len(parts) == 2:
            host = parts[0]
        elif len(parts) == 3:
            ip, host = parts[0], parts[1]
        ip = ip.strip("[]")
        if ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise InvalidSpec("port", text, f"{ip!r} is not an IP address") from None
        try:
            return cls(
                container_port=_port_number(ctr, text),
                host_port=_port_number(host, text) if host else 0,
                host_ip=ip, protocol=proto,
            )  # fmt: skip
        except ValueError:
            raise InvalidSpec("port", text, "expected [IP:][HOSTPORT:]PORT[/tcp|udp]") from None


def _port_number(text: str, whole: str) -> int:
    n = int(text)
    if not 1 <= n <= 65535:
        raise InvalidSpec("port", whole, f"{n} is outside 1-65535")
    return n


@dataclass(frozen=True)
class UlimitSpec:
    name: str
    soft: int
    hard: int

    @classmethod
    def parse(cls, text: str) -> UlimitSpec:
        m = re.fullmatch(r"([a-z]+)=(-?\d+)(?::(-?\d+))?", text)
        if not m:
            raise InvalidSpec("ulimit", text, "expected NAME=SOFT[:HARD], e.g. nofile=1024:2048")
        soft = int(m.group(2))
        hard = int(m.group(3)) if m.group(3) else soft
        if soft > hard:
            raise InvalidSpec("ulimit", text, "the soft limit is above the hard limit")
        return cls(m.group(1), soft, hard)


CONTAINER_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
DEFAULT_TMPFS_SIZE = 64 << 20


def parse_tmpfs(text: str) -> tuple[str, int]:
    """``--tmpfs /run:size=16m`` -> ("/run", 16 MiB); without a size, 64 MiB.

    >>> parse_tmpfs("/run:size=16m,nosuid")
    ('/run', 16777216)
    """
    path, _, opts = text.partition(":")
    size = DEFAULT_TMPFS_SIZE
    for opt in filter(None, opts.split(",")):
        key, _, value = opt.partition("=")
        if key == "size":
            size = parse_size(value, "tmpfs size")
        elif key not in ("rw", "noexec", "nosuid", "nodev", "exec"):
            raise InvalidSpec("tmpfs", text, f"unsupported option {opt!r}")
    return path, size


RestartName = Literal["no", "always", "unless-stopped", "on-failure"]
RESTART_NAMES: tuple[str, ...] = get_args(RestartName)


def parse_restart(text: str) -> tuple[str, int]:
    """``--restart``: ``no``, ``always``, ``unless-stopped``, ``on-failure[:N]``.

    >>> parse_restart("on-failure:3"), parse_restart("always")
    (('on-failure', 3), ('always', 0))
    """
    name, colon, count = text.partition(":")
    name = name or "no"
    if name not in RESTART_NAMES:
        raise InvalidSpec("restart", text, f"expected one of {', '.join(RESTART_NAMES)}")
    if colon and (name != "on-failure" or not count.isdigit()):
        raise InvalidSpec("restart", text, "only on-failure takes a count: on-failure:N")
    return name, int(count or 0)


@dataclass(frozen=True)
class HealthSpec:
    """A healthcheck (Dockerfile ``HEALTHCHECK``, ``--health-*``): ``test`` is Docker's
    (``["CMD", ...]``, ``["CMD-SHELL", "..."]``, ``["NONE"]``; empty: the image's), times in
    seconds (0: the image's, else Docker's defaults)."""

    test: tuple[str, ...] = ()
    interval: float = 0.0
    timeout: float = 0.0
    start_period: float = 0.0
    start_interval: float = 0.0
    retries: int = 0

    def __post_init__(self) -> None:
        if self.test and self.test[0] not in ("CMD", "CMD-SHELL", "NONE"):
            raise InvalidSpec("healthcheck", list(self.test),
                              "the test starts with CMD, CMD-SHELL or NONE")  # fmt: skip
        if self.test and self.test[0] == "CMD-SHELL" and len(self.test) != 2:
            raise InvalidSpec("healthcheck", list(self.test), "CMD-SHELL takes one command line")
        for name in ("interval", "timeout", "start_period", "start_interval"):
            value = getattr(self, name)
            if value < 0 or (0 < value < 0.001):
                raise InvalidSpec(f"healthcheck {name}", value, "0, or at least 1ms")
        if self.retries < 0:
            raise InvalidSpec("healthcheck retries", self.retries, "cannot be negative")

    @classmethod
    def from_docker(cls, data: Mapping[str, Any] | None) -> HealthSpec | None:
        """Docker's ``Healthcheck`` object (durations in nanoseconds)."""
        if not data:
            return None
        test = data.get("Test") or []
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
            raise InvalidSpec("Healthcheck.Test", test, "expected a list of strings")

        def seconds(key: str) -> float:
            value = data.get(key) or 0
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidSpec(f"Healthcheck.{key}", value, "expected nanoseconds")
            return value / 1e9

        retries = data.get("Retries") or 0
        if not isinstance(retries, int) or isinstance(retries, bool):
            raise InvalidSpec("Healthcheck.Retries", retries, "expected a number")
        return cls(tuple(test), seconds("Interval"), seconds("Timeout"),
                   seconds("StartPeriod"), seconds("StartInterval"), retries)  # fmt: skip

    def to_docker(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Test": list(self.test)}
        for key, value in (("Interval", self.interval), ("Timeout", self.timeout),
                           ("StartPeriod", self.start_period),
                           ("StartInterval", self.start_interval)):  # fmt: skip
            if value:
                out[key] = int(value * 1e9)
        if self.retries:
            out["Retries"] = self.retries
        return out


NETWORK_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class EndpointSpec:
    """A container on a user-defined network: the network (its name, id, bridge and
    subnet, filled in by the gateway from the network's record), the other names members
    know it by, and an address asked for (``--ip``; "" from the network's IPAM)."""

    network: str
    network_id: str = ""
    bridge: str = ""
    subnet: str = ""
    aliases: tuple[str, ...] = ()
    ip: str = ""

    def __post_init__(self) -> None:
        for alias in self.aliases:
            if not NETWORK_NAME_RE.match(alias) and not CONTAINER_NAME_RE.match(alias):
                raise InvalidSpec("alias", alias, "use letters, digits, '_', '.' and '-'")
        if self.ip:
            try:
                ipaddress.IPv4Address(self.ip)
            except ValueError:
                raise InvalidSpec("ip", self.ip, "not an IPv4 address") from None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EndpointSpec:
        return cls(**{**data, "aliases": tuple(data.get("aliases") or ())})


@dataclass(frozen=True)
class ContainerSpec:
    """A container as a node makes it: the Docker API's Config and HostConfig in scow's
    words (the runtime's run options, and the image). Zero limits are the node's defaults.

    Its JSON is the runtime's own record of the options (``runtime.spec.options_to_json``),
    so a record read back from a node gives the spec again.
    """

    image: str
    name: str = ""
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    read_only: bool = False
    tmpfs: Mapping[str, int] = field(default_factory=dict)
    volumes: tuple[BindSpec, ...] = ()
    volumes_from: tuple[str, ...] = ()
    memory: int = 0
    cpu_shares: int = 0
    pids_limit: int = 0
    cpuset_cpus: str = ""
    cpu_quota: int = 0  # CFS microseconds per period (--cpus, --cpu-quota); 0: none
    cpu_period: int = 0
    ulimits: tuple[UlimitSpec, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    # "bridge" (scow's), "none", or the name of a user-defined network (then the first of
    # ``endpoints``); ``endpoints`` are the user-defined networks it is on.
    network: str = "bridge"
    endpoints: tuple[EndpointSpec, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    publish_all: bool = False
    links: tuple[tuple[str, str], ...] = ()  # (container, alias): one container, many aliases
    init: bool = True
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    extra_hosts: tuple[tuple[str, str], ...] = ()  # --add-host NAME:ADDRESS|host-gateway
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    tty: bool = False
    stdin_open: bool = False  # the container's stdin is kept open for attaching clients
    stdin_once: bool = False  # and closed when the first of them leaves
    console: tuple[int, int] = (0, 0)  # a TTY's first size: rows, columns
    restart: str = "no"  # RESTART_NAMES, run by the node
    restart_retries: int = 0  # on-failure's most restarts; 0: no limit
    healthcheck: HealthSpec | None = None  # None: the image's
    stop_timeout: int | None = None  # seconds between the stop signal and SIGKILL
    auto_remove: bool = False
    exposed: tuple[str, ...] = ()  # ports the create body exposes, beside the image's

    def __post_init__(self) -> None:
        if self.restart not in RESTART_NAMES:
            raise InvalidSpec("restart", self.restart, f"expected one of {RESTART_NAMES}")
        if self.restart_retries < 0:
            raise InvalidSpec("restart", self.restart_retries, "the count cannot be negative")
        if self.restart_retries and self.restart != "on-failure":
            raise InvalidSpec("restart", f"{self.restart}:{self.restart_retries}",
                              "only on-failure takes a count")  # fmt: skip
        if self.auto_remove and self.restart != "no":
            raise InvalidSpec("restart", self.restart,
                              "a container removed when it exits (--rm) cannot be restarted")
        if self.network not in ("bridge", "none") and not NETWORK_NAME_RE.match(self.network):
            raise InvalidSpec("network", self.network, "not a network name")
        if self.stop_timeout is not None and self.stop_timeout < -1:
            raise InvalidSpec("stop_timeout", self.stop_timeout, "whole seconds, -1: forever")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("tmpfs", "labels"):
            data[key] = dict(getattr(self, key))
        data["links"] = [list(pair) for pair in self.links]
        data["extra_hosts"] = [list(pair) for pair in self.extra_hosts]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContainerSpec:
        d = {k: v for k, v in data.items() if k in _CONTAINER_FIELDS}
        for key in ("command", "entrypoint"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        for key in ("env", "volumes_from", "cap_add", "cap_drop", "exposed", "dns",
                    "dns_search", "dns_options"):  # fmt: skip
            d[key] = tuple(d.get(key) or ())
        d["extra_hosts"] = tuple((str(n), str(a)) for n, a in d.get("extra_hosts") or ())
        d["volumes"] = tuple(BindSpec(**v) for v in d.get("volumes") or ())
        d["ports"] = tuple(PortSpec(**p) for p in d.get("ports") or ())
        d["ulimits"] = tuple(UlimitSpec(**u) for u in d.get("ulimits") or ())
        d["endpoints"] = tuple(EndpointSpec.from_json(e) for e in d.get("endpoints") or ())
        d["links"] = link_pairs(d.get("links"))
        d["console"] = tuple(d.get("console") or (0, 0))
        if d.get("healthcheck") is not None:
            h = d["healthcheck"]
            d["healthcheck"] = HealthSpec(**{**h, "test": tuple(h.get("test") or ())})
        return cls(**d)


_CONTAINER_FIELDS = {f for f in ContainerSpec.__dataclass_fields__}


def link_pairs(value: Any) -> tuple[tuple[str, str], ...]:
    """Links as (container, alias) pairs; records made before a link could have several
    aliases kept them as a mapping."""
    if isinstance(value, Mapping):
        return tuple((str(k), str(v)) for k, v in value.items())
    return tuple((str(k), str(v)) for k, v in value or ())
