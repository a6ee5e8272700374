"""What a client asks for, checked once at the edge: functions and environments.

A function is an image plus a spec, with names following OpenFaaS where it has
one. An environment is a container for a test to use (a database, say), with its
ports published, ready when its wait says so, on a lease with a TTL. Each parser
names the field and the value at fault.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pool.contract.choices import PROTOCOLS, Protocol
from pool.contract.errors import InvalidSpec
from pool.contract.units import parse_duration, parse_size

NAME_RE = re.compile(r"^[a-z0-9-]{1,63}$")
# A secret's name is the name of its file in /run/secrets.
SECRET_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62})$")

@dataclass(frozen=True)
class FunctionSpec:
    name: str
    image: str
    protocol: Protocol = "http"
    port: int = 8080
    command: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = "65534"
    memory: int = 128 << 20
    cpu_shares: int = 1024
    pids: int = 128
    timeout: float = 30.0
    max_invocations: int = 1  # 1: a fresh container per call; N: reuse N times; 0: unlimited
    idle_ttl: float = 300.0
    concurrency: int = 1
    pool_min: int = 1
    pool_max: int = 16
    read_only: bool = True
    auth: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()  # names of secrets, mounted as files (never env)

    @property
    def throwaway(self) -> bool:
        return self.max_invocations == 1

    def to_json(self) -> str:
        data = asdict(self)
        data["labels"] = dict(self.labels)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> FunctionSpec:
        data = json.loads(text)
        if data.get("command") is not None:
            data["command"] = tuple(data["command"])
        data["env"] = tuple(data.get("env", ()))
        data["secrets"] = tuple(data.get("secrets", ()))
        return cls(**data)


_FIELDS = {
    "name", "image", "protocol", "port", "command", "env", "workdir", "user", "memory",
    "cpu_shares", "pids", "timeout", "max_invocations", "idle_ttl", "concurrency", "pool",
    "read_only", "auth", "labels", "secrets",
}  # fmt: skip


def parse_spec(data: Mapping[str, Any]) -> FunctionSpec:
    """Check a deploy request (JSON or YAML shaped) once, naming the field and value at fault."""
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise InvalidSpec(
            unknown[0], data[unknown[0]], f"unknown field (known: {', '.join(sorted(_FIELDS))})"
        )
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidSpec("name", name, "use 1 to 63 of a-z, 0-9 and '-'")
    image = data.get("image")
    if not isinstance(image, str) or not image:
        raise InvalidSpec("image", image, "an image in the store is required")
    protocol = data.get("protocol", "http")
    if protocol not in PROTOCOLS:
        raise InvalidSpec("protocol", protocol, "expected 'http' or 'stdio'")
    pool = data.get("pool") or {}
    if not isinstance(pool, Mapping):
        raise InvalidSpec("pool", pool, "expected {min: N, max: N}")
    command = data.get("command")
    if isinstance(command, str):
        command = ["sh", "-c", command]
    if command is not None and not (
        isinstance(command, list) and all(isinstance(c, str) for c in command)
    ):
        raise InvalidSpec("command", command, "expected a list of strings or a shell string")
    labels = data.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise InvalidSpec("labels", labels, "expected {name: value}")
    secret_names = data.get("secrets") or []
    if not isinstance(secret_names, list) or not all(
        isinstance(n, str) and SECRET_NAME_RE.match(n) for n in secret_names
    ):
        raise InvalidSpec("secrets", secret_names, "expected a list of secret names")
    spec = FunctionSpec(
        name=name,
        image=image,
        protocol=protocol,
        port=_int(data, "port", 8080, 1, 65535),
        command=tuple(command) if command is not None else None,
        env=parse_env(data.get("env")),
        workdir=str(data.get("workdir", "")),
        user=str(data.get("user", "65534")),
        memory=parse_size(data.get("memory", "128m"), "memory"),
        cpu_shares=_int(data, "cpu_shares", 1024, 2, 262144),
        pids=_int(data, "pids", 128, 1, 1 << 22),
        timeout=parse_duration(data.get("timeout", "30s"), "timeout"),
        max_invocations=_int(data, "max_invocations", 1, 0, 1 << 31),
        idle_ttl=parse_duration(data.get("idle_ttl", "5m"), "idle_ttl"),
        concurrency=_int(data, "concurrency", 1, 1, 1024),
        pool_min=_int(pool, "min", 1, 0, 1024, "pool.min"),
        pool_max=_int(pool, "max", 16, 1, 1024, "pool.max"),
        read_only=bool(data.get("read_only", True)),
        auth=bool(data.get("auth", False)),
        labels={str(k): str(v) for k, v in labels.items()},
        secrets=tuple(dict.fromkeys(secret_names)),
    )
    if spec.memory < 4 << 20:
        raise InvalidSpec("memory", data.get("memory"), "the minimum is 4m")
    if spec.pool_min > spec.pool_max:
        raise InvalidSpec("pool.min", spec.pool_min, f"above pool.max ({spec.pool_max})")
    if spec.timeout <= 0:
        raise InvalidSpec("timeout", data.get("timeout"), "must be above zero")
    if spec.concurrency > 1 and (spec.protocol != "http" or spec.max_invocations == 1):
        raise InvalidSpec(
            "concurrency",
            spec.concurrency,
            "sharing a container needs http and max_invocations != 1",
        )
    if spec.protocol == "stdio" and spec.max_invocations != 1:
        raise InvalidSpec(
            "max_invocations", spec.max_invocations, "stdio runs one process per call"
        )
    return spec


def parse_env(value: Any, field: str = "env") -> tuple[str, ...]:
    """``{NAME: value}`` or ``["NAME=value"]``, as Docker and OpenFaaS take it.

    >>> parse_env({"A": 1}), parse_env(["B=2"])
    (('A=1',), ('B=2',))
    """
    if not value:
        return ()
    if isinstance(value, Mapping):
        return tuple(f"{k}={'' if v is None else v}" for k, v in value.items())
    if isinstance(value, list) and all(isinstance(e, str) and "=" in e for e in value):
        return tuple(value)
    raise InvalidSpec(field, value, 'expected {NAME: value} or ["NAME=value"]')


def _int(
    data: Mapping[str, Any], key: str, default: int, low: int, high: int, label: str = ""
) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidSpec(label or key, value, f"expected a whole number from {low} to {high}")
    return value


# -- environments ---------------------------------------------------------------------

DEFAULT_TTL = 600.0
MAX_TTL = 7 * 24 * 3600.0
DEFAULT_WAIT_TIMEOUT = 60.0
MAX_WAIT_TIMEOUT = 600.0

WaitKind = Literal["none", "port", "log", "http", "cmd"]
_ENV_FIELDS = {"image", "cmd", "env", "ports", "ttl", "wait", "memory", "cpu_shares", "node"}
_WAIT_FIELDS = {"port", "log", "http", "cmd", "timeout"}


@dataclass(frozen=True)
class Wait:
    kind: WaitKind = "none"
    port: int = 0
    pattern: str = ""  # log: a regular expression; http: the path
    command: tuple[str, ...] = ()
    timeout: float = DEFAULT_WAIT_TIMEOUT


@dataclass(frozen=True)
class EnvironmentSpec:
    image: str
    command: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    ttl: float = DEFAULT_TTL
    wait: Wait = Wait()
    memory: int = 512 << 20
    cpu_shares: int = 1024
    node: str = ""  # the node it must run on; "": the least loaded


def _node(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 255:
        raise InvalidSpec("node", value, "a node's id (scow node ls)")
    return value


def parse_environment(data: Mapping[str, Any]) -> EnvironmentSpec:
    """Check a create request once, naming the field and the value at fault."""
    if not isinstance(data, Mapping):
        raise InvalidSpec("body", data, "expected a JSON object")
    unknown = sorted(set(data) - _ENV_FIELDS)
    if unknown:
        raise InvalidSpec(
            unknown[0], data[unknown[0]], f"unknown field (known: {', '.join(sorted(_ENV_FIELDS))})"
        )
    image = data.get("image")
    if not isinstance(image, str) or not image:
        raise InvalidSpec("image", image, "an image in the store is required")
    raw_ports = data.get("ports") or []
    if not isinstance(raw_ports, list):
        raise InvalidSpec("ports", raw_ports, "expected a list of port numbers")
    ports = tuple(_port(p, "ports") for p in raw_ports)
    spec = EnvironmentSpec(
        image=image,
        command=_command(data.get("cmd"), "cmd"),
        env=parse_env(data.get("env")),
        ports=ports,
        ttl=parse_ttl(data.get("ttl", DEFAULT_TTL)),
        wait=_wait(data.get("wait"), ports),
        memory=parse_size(data.get("memory", "512m"), "memory"),
        cpu_shares=_cpu_shares(data.get("cpu_shares", 1024)),
        node=_node(data.get("node", "")),
    )
    if spec.memory < 4 << 20:
        raise InvalidSpec("memory", data.get("memory"), "the minimum is 4m")
    return spec


def parse_ttl(value: Any) -> float:
    ttl = parse_duration(value, "ttl")
    if not 1 <= ttl <= MAX_TTL:
        raise InvalidSpec("ttl", value, f"expected from 1s to {MAX_TTL / 3600:g}h")
    return ttl


def _port(value: Any, field: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidSpec(field, value, "expected a port number from 1 to 65535")
    return value


def _cpu_shares(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 262144:
        raise InvalidSpec("cpu_shares", value, "expected a whole number from 2 to 262144")
    return value


def _command(value: Any, field: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return ("sh", "-c", value)
    if isinstance(value, list) and value and all(isinstance(c, str) for c in value):
        return tuple(value)
    raise InvalidSpec(field, value, "expected a non-empty list of strings or a shell string")


def _wait(value: Any, ports: tuple[int, ...]) -> Wait:
    if value is None:  # a port to publish is what a test will use: wait for it
        return Wait("port", port=ports[0]) if ports else Wait()
    if not isinstance(value, Mapping):
        raise InvalidSpec("wait", value, "expected {port: N} | {log: REGEX} | {http: PATH} | {cmd}")
    unknown = sorted(set(value) - _WAIT_FIELDS)
    if unknown:
        raise InvalidSpec(f"wait.{unknown[0]}", value[unknown[0]], "unknown field")
    timeout = parse_duration(value.get("timeout", DEFAULT_WAIT_TIMEOUT), "wait.timeout")
    if not 0 < timeout <= MAX_WAIT_TIMEOUT:
        raise InvalidSpec(
            "wait.timeout", value.get("timeout"), f"expected up to {MAX_WAIT_TIMEOUT:g}s"
        )
    kinds = [k for k in ("log", "http", "cmd") if k in value]
    if len(kinds) > 1:
        raise InvalidSpec("wait", value, "give one of log, http or cmd")
    port = _port(value["port"], "wait.port") if "port" in value else (ports[0] if ports else 0)
    if not kinds:
        if not port:
            raise InvalidSpec("wait", value, "a port to wait for is needed")
        return Wait("port", port=port, timeout=timeout)
    kind = kinds[0]
    if kind == "log":
        try:
            re.compile(value["log"])
        except (re.error, TypeError) as exc:
            raise InvalidSpec(
                "wait.log", value["log"], f"not a regular expression: {exc}"
            ) from None
        return Wait("log", pattern=value["log"], timeout=timeout)
    if kind == "http":
        path = value["http"]
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidSpec("wait.http", path, "expected a path starting with /")
        if not port:
            raise InvalidSpec("wait.port", None, "waiting for http needs a port")
        return Wait("http", port=port, pattern=path, timeout=timeout)
    command = _command(value["cmd"], "wait.cmd")
    assert command is not None
    return Wait("cmd", command=command, timeout=timeout)
