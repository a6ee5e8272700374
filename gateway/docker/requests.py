"""Docker Engine API request bodies in scow's words: a ``POST /containers/create`` body
becomes a ContainerSpec, checked once here. What Docker accepts and scow does not
offer is refused with a message that names it (a 501), never ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pool.contract.containers import (
    DEFAULT_TMPFS_SIZE,
    RESTART_NAMES,
    BindSpec,
    ContainerSpec,
    EndpointSpec,
    HealthSpec,
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
        for b in bindings or [{}]:
            host_port = str((b or {}).get("HostPort") or "")
            ip = (b or {}).get("HostIp") or ""
            address = f"[{ip}]" if ":" in ip else ip
            out.append(PortSpec.parse(f"{address}:{host_port}:{number}/{proto or 'tcp'}"))
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
            options = ["ro"] if m.get("ReadOnly") else []
            if propagation := (m.get("BindOptions") or {}).get("Propagation"):
                options.append(str(propagation))
            if (m.get("VolumeOptions") or {}).get("NoCopy"):
                options.append("nocopy")
            suffix = ":" + ",".join(options) if options else ""
            volumes.append(BindSpec.parse(f"{source}:{target}{suffix}" if source
                                          else f"{target}{suffix}"))  # fmt: skip
        else:
            raise Unsupported(f"mounts of type {kind!r} are not supported")
    return tuple(volumes), tmpfs


def _network(
    body: Mapping[str, Any], host: Mapping[str, Any]
) -> tuple[str, tuple[EndpointSpec, ...]]:
    """The network mode, and the user-defined networks asked for with their aliases and
    addresses (``NetworkingConfig.EndpointsConfig``); the gateway fills in their records."""
    mode = str(host.get("NetworkMode") or "default")
    if mode == "default":
        mode = "bridge"
    if mode == "host":
        raise Unsupported("the host's network (--network host) is not offered to containers")
    if mode.startswith("container:"):
        raise Unsupported("sharing another container's network (--network container:) "
                          "is not supported")  # fmt: skip
    configs = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    if not isinstance(configs, dict):
        raise InvalidSpec("NetworkingConfig", configs, "EndpointsConfig must be an object")
    endpoints = []
    for name, config in configs.items():
        if name not in ("bridge", "none", "default"):  # the built-ins' settings: none kept
            endpoints.append(_endpoint(name, config))
    if mode not in ("bridge", "none"):
        primary = next((e for e in endpoints if e.network == mode), None)
        rest = [e for e in endpoints if e.network != mode]
        endpoints = [primary or EndpointSpec(mode), *rest]
    elif endpoints and mode == "none":
        raise InvalidSpec("network", mode, "a container on no network joins no other network")
    return mode, tuple(endpoints)


def _endpoint(name: str, config: Any) -> EndpointSpec:
    config = config or {}
    if not isinstance(config, dict):
        raise InvalidSpec("EndpointsConfig", name, "expected an object")
    aliases = config.get("Aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise InvalidSpec("Aliases", aliases, "expected a list of names")
    ip = str((config.get("IPAMConfig") or {}).get("IPv4Address") or "")
    return EndpointSpec(network=name, aliases=tuple(dict.fromkeys(aliases)), ip=ip)


def _links(host: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """``/name:/self/alias`` (as the docker CLI sends them) or ``name:alias``; one container
    may come several times with different aliases (Compose sends three a link)."""
    links = []
    for link in host.get("Links") or []:
        name, _, alias = str(link).partition(":")
        pair = (name.lstrip("/"), alias.rpartition("/")[2] or name.lstrip("/"))
        if pair not in links:
            links.append(pair)
    return tuple(links)


def _restart(host: Mapping[str, Any]) -> tuple[str, int]:
    policy = host.get("RestartPolicy") or {}
    if not isinstance(policy, Mapping):
        raise InvalidSpec("RestartPolicy", policy, "expected {Name, MaximumRetryCount}")
    name = str(policy.get("Name") or "no")
    count = policy.get("MaximumRetryCount") or 0
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise InvalidSpec("RestartPolicy.MaximumRetryCount", count, "expected a count")
    if name not in RESTART_NAMES:
        raise InvalidSpec("RestartPolicy.Name", name, f"expected one of {', '.join(RESTART_NAMES)}")
    return name, count if name == "on-failure" else 0


def _strings_of(host: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = host.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidSpec(key, value, "expected a list of strings")
    return tuple(value)


def _extra_hosts(host: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """``--add-host name:address`` (``name=address`` too, and the address may be IPv6)."""
    out = []
    for entry in _strings_of(host, "ExtraHosts"):
        sep = "=" if "=" in entry else ":"
        name, found, address = entry.partition(sep)
        if not found or not name or not address:
            raise InvalidSpec("ExtraHosts", entry, "expected NAME:ADDRESS")
        out.append((name, address.strip("[]")))
    return tuple(out)


# HostConfig fields scow does not act on: set to anything but their empty value, refused
# by name (a 501), never ignored.
_NOT_OFFERED = {
    "Devices": "devices (--device)", "DeviceRequests": "device requests (--gpus)",
    "DeviceCgroupRules": "device cgroup rules", "Sysctls": "sysctls",
    "CgroupParent": "a cgroup parent", "BlkioWeight": "block I/O weights",
    "KernelMemory": "kernel memory limits",
    "MemoryReservation": "memory reservations", "OomKillDisable": "disabling the OOM killer",
    "GroupAdd": "supplementary groups (--group-add)", "Runtime": "other runtimes",
    "Isolation": "isolation modes",
}
_HOST_MODES = {"PidMode": "the host's pid namespace", "IpcMode": "the host's IPC namespace",
               "UsernsMode": "the host's user namespace", "UTSMode": "the host's UTS namespace",
               "CgroupnsMode": "the host's cgroup namespace"}  # fmt: skip


def _refuse_what_is_not_offered(host: Mapping[str, Any]) -> None:
    for key, what in _NOT_OFFERED.items():
        if host.get(key) not in (None, 0, "", [], {}, False, "runc", "default"):
            raise Unsupported(f"not supported: {what} ({key})")
    for key, what in _HOST_MODES.items():
        mode = str(host.get(key) or "")
        if mode == "host" or mode.startswith("container:"):
            raise Unsupported(f"{key} {mode!r} is not offered: sharing {what} or another "
                              "container's")  # fmt: skip
    for opt in _strings_of(host, "SecurityOpt"):
        if not opt.startswith("no-new-privileges") and opt not in ("label=disable",):
            raise Unsupported(f"security option {opt!r} is not supported (every container has "
                              "scow's seccomp profile and no new privileges)")  # fmt: skip


def _cpu_quota(host: Mapping[str, Any]) -> tuple[int, int]:
    """``--cpus`` (NanoCpus) or ``--cpu-quota``/``--cpu-period``, as a CFS quota and period
    in microseconds (0: none)."""
    nanos = _int(host.get("NanoCpus"), "NanoCpus")
    quota = _int(host.get("CpuQuota"), "CpuQuota")
    period = _int(host.get("CpuPeriod"), "CpuPeriod")
    if nanos and (quota or period):
        raise InvalidSpec("NanoCpus", nanos, "--cpus and --cpu-quota/--cpu-period exclude "
                          "each other")  # fmt: skip
    if nanos:
        return nanos * 100_000 // 1_000_000_000, 100_000
    return quota, period


def _console(host: Mapping[str, Any]) -> tuple[int, int]:
    size = host.get("ConsoleSize") or [0, 0]
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(n, int) and 0 <= n <= 10000 for n in size)):  # fmt: skip
        raise InvalidSpec("ConsoleSize", size, "expected [rows, columns]")
    return size[0], size[1]


def create_request(body: Mapping[str, Any], name: str) -> ContainerSpec:
    """The spec of a ``POST /containers/create`` body."""
    host: Mapping[str, Any] = body.get("HostConfig") or {}
    image = body.get("Image")
    if not isinstance(image, str) or not image:
        raise InvalidSpec("Image", image, "the container's image is required")
    if host.get("Privileged"):
        raise Unsupported("privileged containers are not offered")
    _refuse_what_is_not_offered(host)
    restart, retries = _restart(host)
    network, endpoints = _network(body, host)
    stop_timeout = body.get("StopTimeout")
    if stop_timeout is not None and (not isinstance(stop_timeout, int)
                                     or isinstance(stop_timeout, bool)):  # fmt: skip
        raise InvalidSpec("StopTimeout", stop_timeout, "expected whole seconds")
    cpu_quota, cpu_period = _cpu_quota(host)
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
        cpu_quota=cpu_quota,
        cpu_period=cpu_period,
        ulimits=ulimits,
        labels={str(k): str(v) for k, v in (body.get("Labels") or {}).items()},
        network=network,
        endpoints=endpoints,
        ports=_ports(host),
        publish_all=bool(host.get("PublishAllPorts")),
        links=_links(host),
        init=True if init is None else bool(init),
        cap_add=_strings_of(host, "CapAdd"),
        cap_drop=_strings_of(host, "CapDrop"),
        extra_hosts=_extra_hosts(host),
        dns=_strings_of(host, "Dns"),
        dns_search=_strings_of(host, "DnsSearch"),
        dns_options=_strings_of(host, "DnsOptions"),
        tty=bool(body.get("Tty")),
        stdin_open=bool(body.get("OpenStdin")),
        stdin_once=bool(body.get("StdinOnce")),
        console=_console(host),
        restart=restart,
        restart_retries=retries,
        healthcheck=HealthSpec.from_docker(body.get("Healthcheck")),
        stop_timeout=stop_timeout,
        auto_remove=bool(host.get("AutoRemove")),
        exposed=tuple(sorted(body.get("ExposedPorts") or {})),
    )




# docker update's fields scow applies; any other set to something is refused, named.
_UPDATABLE = {"Memory": "memory", "CpuShares": "cpu_shares", "PidsLimit": "pids_limit"}
_NOT_UPDATABLE = ("CpusetCpus", "CpusetMems", "BlkioWeight", "KernelMemory",
                  "MemoryReservation", "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpuCount",
                  "CpuPercent")  # fmt: skip


def update_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """A ``POST /containers/{id}/update`` body in scow's words: new limits and a restart
    policy. MemorySwap may only repeat Memory (scow gives containers no swap)."""
    changes: dict[str, Any] = {}
    for key, name in _UPDATABLE.items():
        if value := _int(body.get(key), key):
            changes[name] = value
    swap = _int(body.get("MemorySwap"), "MemorySwap")
    if swap and swap not in (changes.get("memory"), -1):
        raise Unsupported("a swap limit (MemorySwap) other than the memory limit is not offered")
    for key in _NOT_UPDATABLE:
        if body.get(key) not in (None, 0, "", -1):
            raise Unsupported(f"updating {key} is not supported (memory, cpu shares and quota, "
                              "pids and the restart policy are)")  # fmt: skip
    quota, period = _cpu_quota(body)
    if quota or period:
        changes.update(cpu_quota=quota, cpu_period=period or 100_000)
    if body.get("RestartPolicy"):
        name, count = _restart(body)
        changes.update(restart=name, restart_retries=count)
    return changes
