"""A container as a client asks for one (the Docker API's create, the docker CLI's flags),
in scow's words: ``ContainerSpec``, with the parsers of the CLI's string forms
(``-v``, ``-p``, ``--ulimit``, ``--tmpfs``). Each names the value at fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pool.contract.choices import ContainerNetwork
from pool.contract.errors import InvalidSpec
from pool.contract.units import parse_size


@dataclass(frozen=True)
class BindSpec:
    """``-v``: ``/ctr`` (anonymous), ``name:/ctr`` (named) or ``/host:/ctr`` (bind)."""

    target: str
    source: str = ""  # "" anonymous; a name; or an absolute host path
    read_only: bool = False

    @classmethod
    def parse(cls, text: str) -> BindSpec:
        parts = text.split(":")
        mode = ""
        if len(parts) == 3 or (len(parts) == 2 and parts[1] in ("ro", "rw")):
            mode = parts.pop()
        if mode not in ("", "ro", "rw") or not 1 <= len(parts) <= 2:
            raise InvalidSpec("volume", text, "expected [SOURCE:]TARGET[:ro|rw]")
        source, target = ("", parts[0]) if len(parts) == 1 else (parts[0], parts[1])
        if not target.startswith("/"):
            raise InvalidSpec("volume", text, "the container path must be absolute")
        if ".." in target.split("/"):
            raise InvalidSpec("volume", text, "the container path may not contain '..'")
        if source and not source.startswith("/") and not CONTAINER_NAME_RE.match(source):
            raise InvalidSpec("volume", text, f"{source!r} is neither a host path nor a name")
        clean = "/" + "/".join(p for p in target.split("/") if p and p != ".")
        return cls(target=clean, source=source, read_only=mode == "ro")

    @property
    def kind(self) -> Literal["anonymous", "named", "bind"]:
        if not self.source:
            return "anonymous"
        return "bind" if self.source.startswith("/") else "named"


@dataclass(frozen=True)
class PortSpec:
    """``-p``: ``8080``, ``9000:8080``, ``127.0.0.1:9000:8080``, ``127.0.0.1::8080/tcp``."""

    container_port: int
    host_port: int = 0  # 0: a free port chosen when the container starts
    host_ip: str = "127.0.0.1"
    protocol: str = "tcp"

    @classmethod
    def parse(cls, text: str) -> PortSpec:
        spec, _, proto = text.partition("/")
        proto = proto or "tcp"
        if proto != "tcp":
            raise InvalidSpec("port", text, "only tcp ports can be published")
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
            raise InvalidSpec("port", text, "expected [IP:][HOSTPORT:]PORT[/tcp]") from None


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
    ulimits: tuple[UlimitSpec, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    network: ContainerNetwork = "bridge"
    ports: tuple[PortSpec, ...] = ()
    publish_all: bool = False
    links: Mapping[str, str] = field(default_factory=dict)  # container -> alias
    init: bool = True
    cap_add: tuple[str, ...] = ()
    auto_remove: bool = False
    exposed: tuple[str, ...] = ()  # ports the create body exposes, beside the image's

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("tmpfs", "labels", "links"):
            data[key] = dict(getattr(self, key))
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContainerSpec:
        d = {k: v for k, v in data.items() if k in _CONTAINER_FIELDS}
        for key in ("command", "entrypoint"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        for key in ("env", "volumes_from", "cap_add", "exposed"):
            d[key] = tuple(d.get(key) or ())
        d["volumes"] = tuple(BindSpec(**v) for v in d.get("volumes") or ())
        d["ports"] = tuple(PortSpec(**p) for p in d.get("ports") or ())
        d["ulimits"] = tuple(UlimitSpec(**u) for u in d.get("ulimits") or ())
        return cls(**d)


_CONTAINER_FIELDS = {f for f in ContainerSpec.__dataclass_fields__}
