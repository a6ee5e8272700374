"""Docker Engine API request bodies in scow's words: a ``POST /containers/create`` body
becomes a ContainerSpec, checked once here. What Docker accepts and scow does not
offer is refused with a message that names it (a 501), never ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pool.contract.choices import ContainerNetwork
from pool.contract.containers import (
    DEFAULT_TMPFS_SIZE,
    BindSpec,
    ContainerSpec,
    PortSpec,
    UlimitSpec,
    parse_tmpfs,
)
from pool.contract.errors import InvalidSpec


class Unsupported(Exception):
    """Something Docker offers that scow does not: a 501 that names it."""


def _strings(value: Any, what: str) -> tuple[str, ...] | None:
    """A Cmd or Entrypoint: a list, a string (one word, as Docker takes it), or null."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InvalidSpec(what, value, "expected a list of strings")


def _int(value: Any, what: str) -> int:
    """A limit; 0 (Docker's "none given", as are null and -1) is the node's default."""
    if value in (None, 0, -1):
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidSpec(what, value, "expected a number")
    return value


def _ports(host: Mapping[str, Any]) -> tuple[PortSpec, ...]:
    out = []
    for key, bindings in (host.get("PortBindings") or {}).items():
        number, _, proto = str(key).partition("/")
        if proto not in ("", "tcp"):
            raise InvalidSpec("port", key, "only tcp ports can be published")
        for b in bindings or [{}]:
            host_port = str((b or {}).get("HostPort") or "")
            text = f"{(b or {}).get('HostIp') or '127.0.0.1'}:{host_port}:{number}"
            out.append(PortSpec.parse(text))
    return tuple(out)


def _mounts(host: Mapping[str, Any]) -> tuple[tuple[BindSpec, ...], dict[str, int]]:
    volumes = [BindSpec.parse(b) for b in host.get("Binds") or []]
    tmpfs: dict[str, int] = {}
    for path, opts in (host.get("Tmpfs") or {}).items():
        target, size = parse_tmpfs(f"{path}:{opts}" if opts else path)
        tmpfs[target] = size
    for m in host.get("Mounts") or []:
        kind, target = m.get("Type", "volume"), m.get("Target", "")
        if kind == "tmpfs":
            size = (m.get("TmpfsOptions") or {}).get("SizeBytes") or DEFAULT_TMPFS_SIZE
            tmpfs[target] = int(size)
        elif kind in ("bind", "volume"):
            source = m.get("Source") or ""
            if kind == "bind" and not source.startswith("/"):
                raise InvalidSpec("mount", source, "a bind mount's source is an absolute path")
            suffix = ":ro" if m.get("ReadOnly") else ""
            volumes.append(BindSpec.parse(f"{source}:{target}{suffix}" if source else target))
        else:
            raise Unsupported(f"mounts of type {kind!r} are not supported")
    return tuple(volumes), tmpfs


def _network(host: Mapping[str, Any]) -> ContainerNetwork:
    mode = host.get("NetworkMode") or "default"
    if mode in ("default", "bridge"):
        return "bridge"
    if mode == "none":
        return "none"
    raise Unsupported(f"network mode {mode!r} is not supported: use bridge or none")


def _links(host: Mapping[str, Any]) -> dict[str, str]:
    links = {}
    for link in host.get("Links") or []:
        name, _, alias = str(link).partition(":")
        links[name.lstrip("/")] = alias.rpartition("/")[2]
    return links


def create_request(body: Mapping[str, Any], name: str) -> ContainerSpec:
    """The spec of a ``POST /containers/create`` body."""
    host: Mapping[str, Any] = body.get("HostConfig") or {}
    image = body.get("Image")
    if not isinstance(image, str) or not image:
        raise InvalidSpec("Image", image, "the container's image is required")
    if body.get("Tty"):
        raise Unsupported("a TTY (docker run -t) is not supported")
    if body.get("OpenStdin"):
        raise Unsupported("a container's stdin (docker run -i) is not supported; exec -i is")
    if host.get("Privileged"):
        raise Unsupported("privileged containers are not offered")
    restart = (host.get("RestartPolicy") or {}).get("Name") or "no"
    if restart != "no":
        raise Unsupported(f"restart policy {restart!r} is not supported")
    volumes, tmpfs = _mounts(host)
    ulimits = tuple(
        UlimitSpec.parse(f"{u['Name']}={u['Soft']}:{u['Hard']}") for u in host.get("Ulimits") or []
    )
    env = body.get("Env") or []
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise InvalidSpec("Env", env, "expected a list of KEY=VALUE strings")
    init = host.get("Init")
    return ContainerSpec(
        image=image,
        name=name,
        command=_strings(body.get("Cmd"), "Cmd"),
        entrypoint=_strings(body.get("Entrypoint"), "Entrypoint"),
        env=tuple(env),
        workdir=body.get("WorkingDir") or "",
        user=body.get("User") or "",
        hostname=body.get("Hostname") or "",
        read_only=bool(host.get("ReadonlyRootfs")),
        tmpfs=tmpfs,
        volumes=volumes,
        volumes_from=tuple(v.partition(":")[0] for v in host.get("VolumesFrom") or ()),
        memory=_int(host.get("Memory"), "Memory"),
        cpu_shares=_int(host.get("CpuShares"), "CpuShares"),
        pids_limit=_int(host.get("PidsLimit"), "PidsLimit"),
        cpuset_cpus=host.get("CpusetCpus") or "",
        ulimits=ulimits,
        labels={str(k): str(v) for k, v in (body.get("Labels") or {}).items()},
        network=_network(host),
        ports=_ports(host),
        publish_all=bool(host.get("PublishAllPorts")),
        links=_links(host),
        init=True if init is None else bool(init),
        cap_add=tuple(host.get("CapAdd") or ()),
        auto_remove=bool(host.get("AutoRemove")),
        exposed=tuple(sorted(body.get("ExposedPorts") or {})),
    )


