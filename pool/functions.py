"""A function: an image plus a spec, with names following OpenFaaS where it has one."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from runtime import secrets as runtime_secrets
from runtime.errors import InvalidOption
from runtime.units import parse_duration, parse_size

NAME_RE = re.compile(r"^[a-z0-9-]{1,63}$")
SECRET_NAME_RE = runtime_secrets.NAME_RE  # a secret's name is its file's name
Protocol = Literal["http", "stdio"]


class InvalidSpec(InvalidOption):
    """A function spec field that cannot be used (the field, the value and why)."""


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
    try:
        return _parse(data)
    except InvalidSpec:
        raise
    except InvalidOption as exc:  # sizes and durations, checked by the runtime's parsers
        raise InvalidSpec(exc.option, exc.value, exc.reason) from None


def _parse(data: Mapping[str, Any]) -> FunctionSpec:
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
    if protocol not in ("http", "stdio"):
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
