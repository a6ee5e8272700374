"""Docker Engine API shapes, translated to and from the runtime's own.

Pure functions: the create body (``Config`` plus ``HostConfig``) becomes
RunOptions, checked once here; a ContainerRecord becomes Docker's inspect and
list JSON; log lines become the multiplexed stream frames. What Docker accepts
and scow does not offer is refused with a message that names it, never ignored.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runtime.errors import InvalidOption
from runtime.logs import LogLine
from runtime.oci import resolve_args
from runtime.records import ContainerRecord
from runtime.spec import (
    DEFAULT_CPU_SHARES,
    DEFAULT_MEMORY,
    DEFAULT_PIDS,
    DEFAULT_TMPFS_SIZE,
    ImageConfig,
    NetworkMode,
    Port,
    RunOptions,
    Ulimit,
    Volume,
    merge_env,
    parse_tmpfs,
)

AUTO_REMOVE = "scow.auto-remove"  # label: remove the container when it exits (--rm)
STDOUT, STDERR = 1, 2
ZERO_TIME = "0001-01-01T00:00:00Z"


class Unsupported(Exception):
    """Something Docker offers that scow does not: a 501 that names it."""


@dataclass(frozen=True)
class CreateRequest:
    options: RunOptions
    image: str
    auto_remove: bool


def _strings(value: Any, what: str) -> tuple[str, ...] | None:
    """A Cmd or Entrypoint: a list, a string (one word, as Docker takes it), or null."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InvalidOption(what, value, "expected a list of strings")


def _int(value: Any, what: str, default: int) -> int:
    if value in (None, 0, -1):
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidOption(what, value, "expected a number")
    return value


def _ports(host: Mapping[str, Any]) -> tuple[Port, ...]:
    out = []
    for key, bindings in (host.get("PortBindings") or {}).items():
        number, _, proto = str(key).partition("/")
        if proto not in ("", "tcp"):
            raise InvalidOption("port", key, "only tcp ports can be published")
        for b in bindings or [{}]:
            host_port = str((b or {}).get("HostPort") or "")
            text = f"{(b or {}).get('HostIp') or '127.0.0.1'}:{host_port}:{number}"
            out.append(Port.parse(text))
    return tuple(out)


def _mounts(host: Mapping[str, Any]) -> tuple[tuple[Volume, ...], dict[str, int]]:
    volumes = [Volume.parse(b) for b in host.get("Binds") or []]
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
                raise InvalidOption("mount", source, "a bind mount's source is an absolute path")
            suffix = ":ro" if m.get("ReadOnly") else ""
            volumes.append(Volume.parse(f"{source}:{target}{suffix}" if source else target))
        else:
            raise Unsupported(f"mounts of type {kind!r} are not supported")
    return tuple(volumes), tmpfs


def _network(host: Mapping[str, Any]) -> NetworkMode:
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


def create_request(body: Mapping[str, Any], name: str) -> CreateRequest:
    """The runtime's options from a ``POST /containers/create`` body."""
    host: Mapping[str, Any] = body.get("HostConfig") or {}
    image = body.get("Image")
    if not isinstance(image, str) or not image:
        raise InvalidOption("Image", image, "the container's image is required")
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
        Ulimit.parse(f"{u['Name']}={u['Soft']}:{u['Hard']}") for u in host.get("Ulimits") or []
    )
    labels = {str(k): str(v) for k, v in (body.get("Labels") or {}).items()}
    auto_remove = bool(host.get("AutoRemove"))
    if auto_remove:
        labels[AUTO_REMOVE] = "1"
    init = host.get("Init")
    options = RunOptions(
        name=name,
        command=_strings(body.get("Cmd"), "Cmd"),
        entrypoint=_strings(body.get("Entrypoint"), "Entrypoint"),
        env=tuple(body.get("Env") or ()),
        workdir=body.get("WorkingDir") or "",
        user=body.get("User") or "",
        hostname=body.get("Hostname") or "",
        read_only=bool(host.get("ReadonlyRootfs")),
        tmpfs=tmpfs,
        volumes=volumes,
        volumes_from=tuple(v.partition(":")[0] for v in host.get("VolumesFrom") or ()),
        memory=_int(host.get("Memory"), "Memory", DEFAULT_MEMORY),
        cpu_shares=_int(host.get("CpuShares"), "CpuShares", DEFAULT_CPU_SHARES),
        pids_limit=_int(host.get("PidsLimit"), "PidsLimit", DEFAULT_PIDS),
        cpuset_cpus=host.get("CpusetCpus") or "",
        ulimits=ulimits,
        labels=labels,
        network=_network(host),
        ports=_ports(host),
        publish_all=bool(host.get("PublishAllPorts")),
        links=_links(host),
        init=True if init is None else bool(init),
        cap_add=tuple(host.get("CapAdd") or ()),
    )
    return CreateRequest(options, image, auto_remove)


def exposed(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The create body's ``ExposedPorts``, for PublishAllPorts beside the image's own."""
    return tuple(sorted(body.get("ExposedPorts") or {}))


# -- records as Docker shows them ---------------------------------------------------------


def rfc3339(stamp: float) -> str:
    if not stamp:
        return ZERO_TIME
    return datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")


def _ago(seconds: float) -> str:
    s = int(max(seconds, 0))
    if s < 60:
        return "Less than a second" if s < 1 else ("1 second" if s == 1 else f"{s} seconds")
    if s < 3600:
        return f"{s // 60} minutes" if s >= 120 else "About a minute"
    if s < 86400:
        return f"{s // 3600} hours" if s >= 7200 else "About an hour"
    return f"{s // 86400} days"


def status_text(record: ContainerRecord, now: float | None = None) -> str:
    """``docker ps``'s STATUS column: "Up 3 seconds", "Exited (0) 2 minutes ago"."""
    now = time.time() if now is None else now
    if record.status == "running":
        return f"Up {_ago(now - record.started_at)}"
    if record.status == "paused":
        return f"Up {_ago(now - record.started_at)} (Paused)"
    if record.status == "exited":
        return f"Exited ({record.exit_code}) {_ago(now - record.finished_at)} ago"
    return "Created"


def _port_map(record: ContainerRecord) -> dict[str, list[dict[str, str]] | None]:
    ports: dict[str, list[dict[str, str]] | None] = dict.fromkeys(record.image_config.exposed_ports)
    for p in record.ports:
        ports.setdefault(f"{p.container_port}/tcp", None)
        ports[f"{p.container_port}/tcp"] = [
            *(ports[f"{p.container_port}/tcp"] or []),
            {"HostIp": p.host_ip, "HostPort": str(p.host_port)},
        ]
    return ports


def _mounts_json(record: ContainerRecord, volume_paths: Mapping[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    read_only = {v.target: v.read_only for v in record.options.volumes}
    for name, target in record.volumes:
        out.append({"Type": "volume", "Name": name, "Source": volume_paths.get(name, ""),
                    "Destination": target, "Driver": "local", "Mode": "",
                    "RW": not read_only.get(target, False), "Propagation": ""})  # fmt: skip
    for v in record.options.volumes:
        if v.kind == "bind":
            out.append({"Type": "bind", "Source": v.source, "Destination": v.target,
                        "Mode": "", "RW": not v.read_only, "Propagation": "rprivate"})  # fmt: skip
    return out


def _endpoint(record: ContainerRecord, gateway: str) -> dict[str, Any]:
    on_bridge = record.options.network == "bridge"
    return {"IPAddress": record.ip, "IPPrefixLen": 24 if record.ip else 0,
                "Gateway": gateway if on_bridge else "", "MacAddress": "",
                "NetworkID": record.options.network, "EndpointID": record.id if on_bridge else "",
                "Aliases": None}  # fmt: skip


def _network_json(record: ContainerRecord, gateway: str) -> dict[str, Any]:
    endpoint = _endpoint(record, gateway)
    return {
        "IPAddress": record.ip, "IPPrefixLen": endpoint["IPPrefixLen"],
        "Gateway": endpoint["Gateway"], "MacAddress": "", "Bridge": "",
        "Ports": _port_map(record),
        "Networks": {record.options.network: endpoint},
    }  # fmt: skip


def config_json(record: ContainerRecord, image_id: str = "") -> dict[str, Any]:
    ic, o = record.image_config, record.options
    return {
        "Hostname": record.hostname, "Domainname": "", "User": o.user or ic.user,
        "AttachStdin": False, "AttachStdout": False, "AttachStderr": False, "Tty": False,
        "OpenStdin": False, "StdinOnce": False,
        "Env": merge_env(ic.env, o.env),
        "Cmd": list(o.command) if o.command is not None else (
            list(ic.cmd) if ic.cmd and o.entrypoint is None else None),
        "Entrypoint": list(o.entrypoint) if o.entrypoint is not None else (
            list(ic.entrypoint) if ic.entrypoint else None),
        "Image": record.image, "WorkingDir": o.workdir or ic.working_dir,
        "Labels": dict(record.labels),
        "ExposedPorts": {p: {} for p in ic.exposed_ports} or None,
        "Volumes": {v: {} for v in ic.volumes} or None,
        "StopSignal": ic.stop_signal or "SIGTERM",
    }  # fmt: skip


def host_config_json(record: ContainerRecord) -> dict[str, Any]:
    o = record.options
    bindings: dict[str, list[dict[str, str]]] = {}
    for p in o.ports:
        bindings.setdefault(f"{p.container_port}/tcp", []).append(
            {"HostIp": p.host_ip, "HostPort": str(p.host_port) if p.host_port else ""}
        )
    return {
        "Binds": [f"{v.source}:{v.target}{':ro' if v.read_only else ''}"
                  for v in o.volumes if v.source] or None,
        "NetworkMode": "bridge" if o.network == "bridge" else o.network,
        "PortBindings": bindings, "PublishAllPorts": o.publish_all,
        "AutoRemove": record.labels.get(AUTO_REMOVE) == "1",
        "Memory": o.memory, "MemorySwap": o.memory, "CpuShares": o.cpu_shares,
        "PidsLimit": o.pids_limit, "CpusetCpus": o.cpuset_cpus,
        "ReadonlyRootfs": o.read_only,
        "Tmpfs": {path: f"size={size}" for path, size in o.tmpfs.items()} or None,
        "Links": [f"/{name}:/{record.name}/{alias or name}" for name, alias in o.links.items()]
        or None,
        "VolumesFrom": list(o.volumes_from) or None, "Init": o.init,
        "CapAdd": list(o.cap_add) or None, "Privileged": False,
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "Ulimits": [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in o.ulimits] or None,
        # Docker's name for "the daemon keeps the output and serves it on /logs", which
        # clients (docker-py's run) check for; the file itself is in conmon's format.
        "LogConfig": {"Type": "json-file", "Config": {}},
    }  # fmt: skip


def inspect_json(
    record: ContainerRecord, *, image_id: str = "", gateway: str = "",
    volume_paths: Mapping[str, str] | None = None, log_path: str = "",
) -> dict[str, Any]:  # fmt: skip
    """``GET /containers/{id}/json``."""
    argv = resolve_args(record.image_config, record.options)
    running = record.status in ("running", "paused")
    return {
        "Id": record.id, "Created": rfc3339(record.created),
        "Path": argv[0] if argv else "", "Args": argv[1:],
        "State": {
            "Status": record.status, "Running": running, "Paused": record.status == "paused",
            "Restarting": False, "OOMKilled": record.oom_killed, "Dead": False,
            "Pid": record.pid if running else 0,
            "ExitCode": record.exit_code if record.exit_code is not None else 0,
            "Error": "", "StartedAt": rfc3339(record.started_at),
            "FinishedAt": rfc3339(record.finished_at),
        },
        "Image": image_id or record.image, "Name": "/" + record.name, "RestartCount": 0,
        "Driver": "overlay", "Platform": "linux", "LogPath": log_path,
        "HostConfig": host_config_json(record),
        "Config": config_json(record),
        "NetworkSettings": _network_json(record, gateway),
        "Mounts": _mounts_json(record, volume_paths or {}),
    }  # fmt: skip


def summary_json(record: ContainerRecord, image_id: str = "", gateway: str = "") -> dict[str, Any]:
    """One row of ``GET /containers/json``."""
    argv = resolve_args(record.image_config, record.options)
    ports = [{"IP": p.host_ip, "PrivatePort": p.container_port, "PublicPort": p.host_port,
              "Type": "tcp"} for p in record.ports]  # fmt: skip
    return {
        "Id": record.id, "Names": ["/" + record.name], "Image": record.image,
        "ImageID": image_id, "Command": " ".join(argv), "Created": int(record.created),
        "Ports": ports, "Labels": dict(record.labels), "State": record.status,
        "Status": status_text(record),
        "HostConfig": {"NetworkMode": "bridge" if record.options.network == "bridge"
                       else record.options.network},
        "NetworkSettings": {"Networks": {record.options.network: _endpoint(record, gateway)}},
        "Mounts": _mounts_json(record, {}),
    }  # fmt: skip


def matches(record: ContainerRecord, filters: Mapping[str, Iterable[str]]) -> bool:
    """Docker's list filters: id, name, label (key or key=value), status, ancestor."""
    for key, values in filters.items():
        values = list(values)
        if not values:
            continue
        if key == "id":
            ok = any(record.id.startswith(v) for v in values)
        elif key == "name":
            ok = any(v.lstrip("/") in record.name for v in values)
        elif key == "label":
            ok = all(_label_matches(record.labels, v) for v in values)
        elif key == "status":
            ok = record.status in values
        elif key == "ancestor":
            ok = record.image in values
        else:
            raise InvalidOption("filter", key, "supported: id, name, label, status, ancestor")
        if not ok:
            return False
    return True


def _label_matches(labels: Mapping[str, str], wanted: str) -> bool:
    key, eq, value = wanted.partition("=")
    return key in labels and (not eq or labels[key] == value)


def frame(stream: int, data: bytes) -> bytes:
    """One frame of Docker's multiplexed stream: [stream, 0, 0, 0, size (big-endian)], data."""
    return struct.pack(">BxxxI", stream, len(data)) + data


def log_frames(lines: Iterable[LogLine], *, stdout: bool, stderr: bool, timestamps: bool) -> bytes:
    out = []
    for line in lines:
        kind = STDOUT if line.stream == "stdout" else STDERR
        if (kind == STDOUT and not stdout) or (kind == STDERR and not stderr):
            continue
        text = line.text + "\n"
        if timestamps:
            stamp = line.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            text = f"{stamp} {text}"
        out.append(frame(kind, text.encode()))
    return b"".join(out)


def image_exposed(image: ImageConfig, extra: Iterable[str]) -> ImageConfig:
    """The image config with the create body's ExposedPorts added (for -P and inspect)."""
    from dataclasses import replace

    ports = tuple(sorted({*image.exposed_ports, *extra}))
    return replace(image, exposed_ports=ports)
