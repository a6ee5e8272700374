"""Docker Engine API shapes of scow's records: inspect and list JSON for containers, and
the JSON of volumes, stats, processes, changes, path stats and execs.

Pure functions of what a node reports (pool.contract.messages.ContainerInfo and the
plain records of the other commands).
"""

from __future__ import annotations

import hashlib
import stat
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pool.contract.errors import InvalidSpec
from pool.contract.messages import ContainerInfo

ZERO_TIME = "0001-01-01T00:00:00Z"


def command_line(info: ContainerInfo) -> list[str]:
    """Entrypoint + cmd as Docker combines them: an entrypoint given drops the image's cmd
    unless a command is given too."""
    o, ic = info.spec, info.image_config
    if o.entrypoint is not None:
        return list(o.entrypoint) + list(o.command or [])
    return list(ic.entrypoint or ()) + list(o.command if o.command is not None else ic.cmd or ())


def merged_env(*layers: Iterable[str]) -> list[str]:
    """Later KEY=VALUE entries replace earlier ones with the same KEY, keeping first order."""
    merged: dict[str, str] = {}
    for layer in layers:
        for item in layer:
            key, _, value = item.partition("=")
            merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


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


def status_text(info: ContainerInfo, now: float | None = None) -> str:
    """``docker ps``'s STATUS column: "Up 3 seconds", "Exited (0) 2 minutes ago",
    "Up 5 seconds (healthy)"."""
    now = time.time() if now is None else now
    if info.restarting:
        return f"Restarting ({info.exit_code}) {_ago(now - info.finished_at)} ago"
    if info.status == "running":
        health = f" ({info.health.status})" if info.health is not None else ""
        if info.health is not None and info.health.status == "starting":
            health = " (health: starting)"
        return f"Up {_ago(now - info.started_at)}{health}"
    if info.status == "paused":
        return f"Up {_ago(now - info.started_at)} (Paused)"
    if info.status == "exited":
        return f"Exited ({info.exit_code}) {_ago(now - info.finished_at)} ago"
    return "Created"


def network_id(name: str) -> str:
    """The id of a built-in network (``bridge``, ``host``, ``none``): fixed, 64 hex digits,
    as Docker's ids are (user-defined networks have their own, made when created)."""
    return hashlib.sha256(f"scow-network:{name}".encode()).hexdigest()


def endpoint_id(container: str, network: str) -> str:
    """A container's endpoint on a network: fixed for the pair, 64 hex digits."""
    return hashlib.sha256(f"{container}:{network}".encode()).hexdigest()


def _port_map(info: ContainerInfo) -> dict[str, list[dict[str, str]] | None]:
    ports: dict[str, list[dict[str, str]] | None] = {
        p if "/" in p else f"{p}/tcp": None for p in info.image_config.exposed_ports
    }
    for p in info.ports:
        key = f"{p.container_port}/{p.protocol}"
        ports[key] = [*(ports.get(key) or []), {"HostIp": p.host_ip, "HostPort": str(p.host_port)}]
    return ports


def _mounts_json(info: ContainerInfo, volume_paths: Mapping[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    read_only = {v.target: v.read_only for v in info.spec.volumes}
    for name, target in info.volumes:
        out.append({"Type": "volume", "Name": name, "Source": volume_paths.get(name, ""),
                    "Destination": target, "Driver": "local", "Mode": "",
                    "RW": not read_only.get(target, False), "Propagation": ""})  # fmt: skip
    for v in info.spec.volumes:
        if v.kind == "bind":
            out.append({"Type": "bind", "Source": v.source, "Destination": v.target,
                        "Mode": "", "RW": not v.read_only,
                        "Propagation": v.propagation or "rprivate"})  # fmt: skip
    return out


def _prefix_len(subnet: str) -> int:
    return int(subnet.rpartition("/")[2]) if "/" in subnet else 0


def _endpoints_json(info: ContainerInfo) -> dict[str, dict[str, Any]]:
    """``NetworkSettings.Networks``: each network the container is on."""
    out: dict[str, dict[str, Any]] = {}
    if info.spec.network == "none":
        out["none"] = _endpoint_json("none", network_id("none"), "", "", "", 0, (), info)
    for e in info.endpoints:
        names = (info.name, info.id[:12], *e.aliases) if e.network_id else ()
        out[e.network] = _endpoint_json(
            e.network, e.network_id or network_id(e.network), e.ip, e.gateway, e.mac,
            _prefix_len(e.subnet), names, info,
        )  # fmt: skip
    if info.spec.network == "bridge" and "bridge" not in out:  # a record made before endpoints
        out["bridge"] = _endpoint_json("bridge", network_id("bridge"), info.ip, info.gateway,
                                       "", 16 if info.ip else 0, (), info)  # fmt: skip
    return out


def _endpoint_json(
    name: str, nid: str, ip: str, gateway: str, mac: str, prefix: int, names: Iterable[str],
    info: ContainerInfo,
) -> dict[str, Any]:  # fmt: skip
    names = list(dict.fromkeys(names))
    return {
        "IPAMConfig": None, "Links": None, "Aliases": names[1:] or None, "MacAddress": mac,
        "DriverOpts": None, "NetworkID": nid,
        "EndpointID": endpoint_id(info.id, name) if ip else "",
        "Gateway": gateway, "IPAddress": ip, "IPPrefixLen": prefix, "IPv6Gateway": "",
        "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DNSNames": names or None,
    }  # fmt: skip


def _network_json(info: ContainerInfo) -> dict[str, Any]:
    networks = _endpoints_json(info)
    first = networks.get(info.spec.network) or next(iter(networks.values()), {})
    return {
        "Bridge": "", "SandboxID": info.id, "SandboxKey": "", "HairpinMode": False,
        "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
        "Ports": _port_map(info), "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
        "EndpointID": first.get("EndpointID", ""), "Gateway": first.get("Gateway", ""),
        "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "IPAddress": first.get("IPAddress", ""), "IPPrefixLen": first.get("IPPrefixLen", 0),
        "IPv6Gateway": "", "MacAddress": first.get("MacAddress", ""),
        "Networks": networks,
    }  # fmt: skip


def healthcheck(info: ContainerInfo) -> dict[str, Any] | None:
    """The healthcheck in force: the create's (its zero fields the image's), or the image's."""
    image = dict(info.image_config.healthcheck or {})
    own = info.spec.healthcheck
    if own is None:
        return image or None
    mine = own.to_docker()
    if not own.test:
        mine["Test"] = image.get("Test", [])
    return {**image, **mine}


def config_json(info: ContainerInfo) -> dict[str, Any]:
    ic, o = info.image_config, info.spec
    out = {
        "Hostname": info.hostname, "Domainname": "", "User": o.user or ic.user,
        "AttachStdin": o.stdin_open, "AttachStdout": True, "AttachStderr": True,
        "ExposedPorts": {(p if "/" in p else f"{p}/tcp"): {} for p in ic.exposed_ports} or None,
        "Tty": o.tty, "OpenStdin": o.stdin_open, "StdinOnce": o.stdin_once,
        "Env": merged_env(ic.env, o.env),
        "Cmd": list(o.command) if o.command is not None else (
            list(ic.cmd) if ic.cmd and o.entrypoint is None else None),
        "Image": info.image, "Volumes": {v: {} for v in ic.volumes} or None,
        "WorkingDir": o.workdir or ic.working_dir,
        "Entrypoint": list(o.entrypoint) if o.entrypoint is not None else (
            list(ic.entrypoint) if ic.entrypoint else None),
        "OnBuild": None, "Labels": dict(info.labels),
        "StopSignal": ic.stop_signal or "SIGTERM",
    }  # fmt: skip
    if (check := healthcheck(info)) is not None:
        out["Healthcheck"] = check
    if o.stop_timeout is not None:
        out["StopTimeout"] = o.stop_timeout
    return out


def host_config_json(info: ContainerInfo) -> dict[str, Any]:
    o = info.spec
    bindings: dict[str, list[dict[str, str]]] = {}
    for p in o.ports:
        bindings.setdefault(f"{p.container_port}/{p.protocol}", []).append(
            {"HostIp": p.host_ip, "HostPort": str(p.host_port) if p.host_port else ""}
        )
    binds = []
    for v in o.volumes:
        if v.source:
            options = [x for x in ("ro" if v.read_only else "", v.propagation,
                                   "nocopy" if v.nocopy else "") if x]  # fmt: skip
            binds.append(f"{v.source}:{v.target}" + (":" + ",".join(options) if options else ""))
    return {
        "Binds": binds or None, "ContainerIDFile": "",
        # Docker's name for "the daemon keeps the output and serves it on /logs", which
        # clients (docker-py's run) check for; the file itself is in conmon's format.
        "LogConfig": {"Type": "json-file", "Config": {}},
        "NetworkMode": o.network, "PortBindings": bindings,
        "RestartPolicy": {"Name": o.restart, "MaximumRetryCount": o.restart_retries},
        "AutoRemove": o.auto_remove, "VolumeDriver": "",
        "VolumesFrom": list(o.volumes_from) or None, "ConsoleSize": list(o.console),
        "CapAdd": list(o.cap_add) or None, "CapDrop": list(o.cap_drop) or None,
        "CgroupnsMode": "private", "Dns": list(o.dns), "DnsOptions": list(o.dns_options),
        "DnsSearch": list(o.dns_search),
        "ExtraHosts": [f"{name}:{address}" for name, address in o.extra_hosts] or None,
        "GroupAdd": None,
        "IpcMode": "private", "Cgroup": "",
        "Links": [f"/{name}:/{info.name}/{alias or name}" for name, alias in o.links] or None,
        "OomScoreAdj": 0, "PidMode": "", "Privileged": False,
        "PublishAllPorts": o.publish_all, "ReadonlyRootfs": o.read_only,
        "SecurityOpt": ["no-new-privileges"], "UTSMode": "", "UsernsMode": "",
        "ShmSize": 64 << 20, "Runtime": "runc", "Isolation": "",
        "CpuShares": o.cpu_shares, "Memory": o.memory,
        "NanoCpus": o.cpu_quota * 10_000 if o.cpu_period in (0, 100_000) else 0,
        "CgroupParent": "",
        "BlkioWeight": 0, "BlkioWeightDevice": [], "BlkioDeviceReadBps": [],
        "BlkioDeviceWriteBps": [], "BlkioDeviceReadIOps": [], "BlkioDeviceWriteIOps": [],
        "CpuPeriod": o.cpu_period, "CpuQuota": o.cpu_quota, "CpuRealtimePeriod": 0,
        "CpuRealtimeRuntime": 0,
        "CpusetCpus": o.cpuset_cpus, "CpusetMems": "", "Devices": [],
        "DeviceCgroupRules": None, "DeviceRequests": None, "MemoryReservation": 0,
        "MemorySwap": o.memory, "MemorySwappiness": None, "OomKillDisable": False,
        "PidsLimit": o.pids_limit,
        "Ulimits": [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in o.ulimits] or None,
        "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
        "MaskedPaths": [], "ReadonlyPaths": [],
        "Tmpfs": {path: f"size={size}" for path, size in o.tmpfs.items()} or None,
        "Init": o.init,
    }  # fmt: skip


def state_json(info: ContainerInfo) -> dict[str, Any]:
    running = info.status in ("running", "paused")
    status = "restarting" if info.restarting else info.status
    state: dict[str, Any] = {
        "Status": status, "Running": running, "Paused": info.status == "paused",
        "Restarting": info.restarting, "OOMKilled": info.oom_killed, "Dead": False,
        "Pid": info.pid if running else 0,
        "ExitCode": info.exit_code if info.exit_code is not None else 0,
        "Error": "", "StartedAt": rfc3339(info.started_at),
        "FinishedAt": rfc3339(info.finished_at),
    }  # fmt: skip
    if info.health is not None:
        state["Health"] = {
            "Status": info.health.status, "FailingStreak": info.health.failing_streak,
            "Log": [{"Start": rfc3339(e["start"]), "End": rfc3339(e["end"]),
                     "ExitCode": e["exit_code"], "Output": e["output"]}
                    for e in info.health.log],
        }  # fmt: skip
    return state


def inspect_json(info: ContainerInfo) -> dict[str, Any]:
    """``GET /containers/{id}/json``."""
    argv = command_line(info)
    return {
        "Id": info.id, "Created": rfc3339(info.created),
        "Path": argv[0] if argv else "", "Args": argv[1:],
        "State": state_json(info),
        "Image": info.image_id or info.image, "ResolvConfPath": "", "HostnamePath": "",
        "HostsPath": "", "LogPath": info.log_path, "Name": "/" + info.name,
        "RestartCount": info.restart_count, "Driver": "overlay", "Platform": "linux",
        "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "", "ExecIDs": None,
        "HostConfig": host_config_json(info),
        "GraphDriver": {"Data": None, "Name": "overlay"},
        "Mounts": _mounts_json(info, info.volume_paths),
        "Config": config_json(info),
        "NetworkSettings": _network_json(info),
    }  # fmt: skip


def summary_json(info: ContainerInfo) -> dict[str, Any]:
    """One row of ``GET /containers/json``."""
    argv = command_line(info)
    ports = [{"IP": p.host_ip, "PrivatePort": p.container_port, "PublicPort": p.host_port,
              "Type": p.protocol} for p in info.ports]  # fmt: skip
    return {
        "Id": info.id, "Names": ["/" + info.name], "Image": info.image,
        "ImageID": info.image_id, "Command": " ".join(argv), "Created": int(info.created),
        "Ports": ports, "Labels": dict(info.labels),
        "State": "restarting" if info.restarting else info.status,
        "Status": status_text(info),
        "HostConfig": {"NetworkMode": info.spec.network},
        "NetworkSettings": {"Networks": _endpoints_json(info)},
        "Mounts": _mounts_json(info, {}),
    }  # fmt: skip


def matches(info: ContainerInfo, filters: Mapping[str, Iterable[str]]) -> bool:
    """Docker's list filters: id, name, label (key or key=value), status, ancestor."""
    for key, values in filters.items():
        values = list(values)
        if not values:
            continue
        if key == "id":
            ok = any(info.id.startswith(v) for v in values)
        elif key == "name":
            ok = any(v.lstrip("/") in info.name for v in values)
        elif key == "label":
            ok = all(label_matches(info.labels, v) for v in values)
        elif key == "status":
            ok = info.status in values
        elif key == "ancestor":
            ok = info.image in values
        elif key == "network":
            ok = any(e.network in values or e.network_id in values for e in info.endpoints) or (
                info.spec.network in values)  # fmt: skip
        elif key == "health":
            ok = (info.health.status if info.health else "none") in values
        elif key == "exited":
            ok = info.status == "exited" and str(info.exit_code) in values
        else:
            raise InvalidSpec("filter", key, "supported: id, name, label, status, ancestor, "
                              "network, health, exited")  # fmt: skip
        if not ok:
            return False
    return True


def label_matches(labels: Mapping[str, str], wanted: str) -> bool:
    key, eq, value = wanted.partition("=")
    return key in labels and (not eq or labels[key] == value)




# -- the other commands' records -----------------------------------------------------------


def volume_json(v: Mapping[str, Any]) -> dict[str, Any]:
    return {"Name": v["name"], "Driver": "local", "Mountpoint": v["path"],
            "CreatedAt": rfc3339(v["created"]), "Labels": dict(v["labels"]) or None,
            "Scope": "local", "Options": None}  # fmt: skip


def stats_json(s: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "read": rfc3339(time.time()), "name": "/" + s["name"], "id": s["id"],
        "pids_stats": {"current": s["pids"], "limit": s["pids_limit"]},
        "memory_stats": {"usage": s["memory_bytes"], "max_usage": s["memory_peak_bytes"],
                         "limit": s["memory_limit"], "failcnt": s["oom_kills"], "stats": {}},
        "cpu_stats": {"cpu_usage": {"total_usage": s["cpu_usage_ns"]},
                      "system_cpu_usage": s["system_cpu_ns"], "online_cpus": s["cpus"],
                      "throttling_data": {"throttled_periods": s["throttled_periods"],
                                          "throttled_time": s["throttled_ns"]}},
        "networks": {}, "blkio_stats": {},
    }  # fmt: skip


def top_json(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    return {"Titles": ["UID", "PID", "PPID", "TIME", "CMD"],
            "Processes": [[r["uid"], str(r["pid"]), str(r["ppid"]), r["time"], r["command"]]
                          for r in rows]}  # fmt: skip


def changes_json(changes: list[Mapping[str, str]]) -> list[dict[str, Any]]:
    kinds = {"C": 0, "A": 1, "D": 2}
    return [{"Path": c["path"], "Kind": kinds[c["kind"]]} for c in changes]


def go_file_mode(mode: int) -> int:
    """A Unix st_mode as Go's os.FileMode encodes it (what the docker CLI decodes).

    >>> go_file_mode(0o40755) == (1 << 31) | 0o755
    True
    """
    out = stat.S_IMODE(mode)
    if stat.S_ISDIR(mode):
        out |= 1 << 31
    elif stat.S_ISLNK(mode):
        out |= 1 << 27
    return out


def path_stat_json(p: Mapping[str, Any]) -> dict[str, Any]:
    mtime = datetime.fromtimestamp(p["mtime"], UTC).isoformat().replace("+00:00", "Z")
    return {"name": p["name"], "size": p["size"], "mode": go_file_mode(p["mode"]),
            "mtime": mtime, "linkTarget": p["link"]}  # fmt: skip


def exec_json(e: Mapping[str, Any]) -> dict[str, Any]:
    """Docker's exec inspect of scow's exec record."""
    config = e["config"]
    return {
        "ID": e["id"], "ContainerID": e["container"], "Running": e["running"],
        "ExitCode": e["exit_code"], "Pid": e.get("pid", 0),
        "OpenStdin": config["stdin"], "OpenStdout": config["stdout"],
        "OpenStderr": config["stderr"], "CanRemove": False,
        "DetachKeys": config.get("detach_keys", ""),
        "ProcessConfig": {"tty": bool(config.get("tty")), "entrypoint": config["cmd"][0],
                          "arguments": config["cmd"][1:], "privileged": False,
                          "user": config["user"]},
    }  # fmt: skip
