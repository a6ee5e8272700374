"""Throwaway environments: what a client asks for, checked once at the edge.

An environment is a container for a test to use (a database, say), with its
ports published on 127.0.0.1, ready when its wait says so, on a lease with a
TTL. The node side (create, wait, reap) is in ``pool.leases``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pool.functions import InvalidSpec, parse_env
from runtime.errors import InvalidOption
from runtime.units import parse_duration, parse_size

DEFAULT_TTL = 600.0
MAX_TTL = 7 * 24 * 3600.0
DEFAULT_WAIT_TIMEOUT = 60.0
MAX_WAIT_TIMEOUT = 600.0

WaitKind = Literal["none", "port", "log", "http", "cmd"]
_ENV_FIELDS = {"image", "cmd", "env", "ports", "ttl", "wait", "memory", "cpu_shares"}
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
    try:
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
        )
    except InvalidSpec:
        raise
    except InvalidOption as exc:
        raise InvalidSpec(exc.option, exc.value, exc.reason) from None
    if spec.memory < 4 << 20:
        raise InvalidSpec("memory", data.get("memory"), "the minimum is 4m")
    return spec


def parse_ttl(value: Any) -> float:
    try:
        ttl = parse_duration(value, "ttl")
    except InvalidOption as exc:
        raise InvalidSpec(exc.option, exc.value, exc.reason) from None
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
