"""Docker Engine API shapes of scow's records: inspect and list JSON for containers, and
the JSON of volumes, stats, processes, changes, path stats and execs.

Pure functions of what a node reports (pool.contract.messages.ContainerInfo and the
plain records of the other commands).
"""

from __future__ import annotations

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
    """``docker ps``'s STATUS column: "Up 3 seconds", "Exited (0) 2 minutes ago"."""
    now = time.time() if now is None else now
    if info.status == "running":
        return f"Up {_ago(now - info.started_at)}"
    if info.status == "paused":
        return f"Up {_ago(now - info.started_at)} (Paused)"
    if info.status == "exited":
        return f"Exited ({info.exit_code}) {_ago(now - info.finished_at)} ago"
    return "Created"


def _port_map(info: ContainerInfo) -> dict[str, list[dict[str, str]] | None]:
    ports: dict[str, list[dict[str, str]] | None] = dict.fromkeys(info.image_config.exposed_ports)
    for p in info.ports:
        ports.setdefault(f"{p.container_port}/tcp", None)
        ports[f"{p.container_port}/tcp"] = [
            *(ports[f"{p.container_port}/tcp"] or []),
            {"HostIp": p.host_ip, "HostPort": str(p.host_port)},
        ]
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
                        "Mode": "", "RW": not v.read_only, "Propagation": "rprivate"})  # fmt: skip
    return out


def _endpoint(info: ContainerInfo, gateway: str) -> dict[str, Any]:
    on_bridge = info.spec.network == "bridge"
    return {"IPAddress": info.ip, "IPPrefixLen": 24 if info.ip else 0,
                "Gateway": gateway if on_bridge else "", "MacAddress": "",
                "NetworkID": info.spec.network, "EndpointID": info.id if on_bridge else "",
                "Aliases": None}  # fmt: skip


def _network_json(info: ContainerInfo, gateway: str) -> dict[str, Any]:
    endpoint = _endpoint(info, gateway)
    return {
        "IPAddress": info.ip, "IPPrefixLen": endpoint["IPPrefixLen"],
        "Gateway": endpoint["Gateway"], "MacAddress": "", "Bridge": "",
        "Ports": _port_map(info),
        "Networks": {info.spec.network: endpoint},
    }  # fmt: skip


def config_json(info: ContainerInfo) -> dict[str, Any]:
    ic, o = info.image_config, info.spec
    return {
        "Hostname": info.hostname, "Domainname": "", "User": o.user or ic.user,
        "AttachStdin": False, "AttachStdout": False, "AttachStderr": False, "Tty": False,
        "OpenStdin": False, "StdinOnce": False,
        "Env": merged_env(ic.env, o.env),
        "Cmd": list(o.command) if o.command is not None else (
            list(ic.cmd) if ic.cmd and o.entrypoint is None else None),
        "Entrypoint": list(o.entrypoint) if o.entrypoint is not None else (
            list(ic.entrypoint) if ic.entrypoint else None),
        "Image": info.image, "WorkingDir": o.workdir or ic.working_dir,
        "Labels": dict(info.labels),
        "ExposedPorts": {p: {} for p in ic.exposed_ports} or None,
        "Volumes": {v: {} for v in ic.volumes} or None,
        "StopSignal": ic.stop_signal or "SIGTERM",
    }  # fmt: skip


def host_config_json(info: ContainerInfo) -> dict[str, Any]:
    o = info.spec
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
        "AutoRemove": o.auto_remove,
        "Memory": o.memory, "MemorySwap": o.memory, "CpuShares": o.cpu_shares,
        "PidsLimit": o.pids_limit, "CpusetCpus": o.cpuset_cpus,
        "ReadonlyRootfs": o.read_only,
        "Tmpfs": {path: f"size={size}" for path, size in o.tmpfs.items()} or None,
        "Links": [f"/{name}:/{info.name}/{alias or name}" for name, alias in o.links.items()]
        or None,
        "VolumesFrom": list(o.volumes_from) or None, "Init": o.init,
        "CapAdd": list(o.cap_add) or None, "Privileged": False,
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "Ulimits": [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in o.ulimits] or None,
        # Docker's name for "the daemon keeps the output and serves it on /logs", which
        # clients (docker-py's run) check for; the file itself is in conmon's format.
        "LogConfig": {"Type": "json-file", "Config": {}},
    }  # fmt: skip


def inspect_json(info: ContainerInfo) -> dict[str, Any]:
    """``GET /containers/{id}/json``."""
    argv = command_line(info)
    running = info.status in ("running", "paused")
    return {
        "Id": info.id, "Created": rfc3339(info.created),
        "Path": argv[0] if argv else "", "Args": argv[1:],
        "State": {
            "Status": info.status, "Running": running, "Paused": info.status == "paused",
            "Restarting": False, "OOMKilled": info.oom_killed, "Dead": False,
            "Pid": info.pid if running else 0,
            "ExitCode": info.exit_code if info.exit_code is not None else 0,
            "Error": "", "StartedAt": rfc3339(info.started_at),
            "FinishedAt": rfc3339(info.finished_at),
        },
        "Image": info.image_id or info.image, "Name": "/" + info.name, "RestartCount": 0,
        "Driver": "overlay", "Platform": "linux", "LogPath": info.log_path,
        "HostConfig": host_config_json(info),
        "Config": config_json(info),
        "NetworkSettings": _network_json(info, info.gateway),
        "Mounts": _mounts_json(info, info.volume_paths),
    }  # fmt: skip


def summary_json(info: ContainerInfo) -> dict[str, Any]:
    """One row of ``GET /containers/json``."""
    argv = command_line(info)
    ports = [{"IP": p.host_ip, "PrivatePort": p.container_port, "PublicPort": p.host_port,
              "Type": "tcp"} for p in info.ports]  # fmt: skip
    return {
        "Id": info.id, "Names": ["/" + info.name], "Image": info.image,
        "ImageID": info.image_id, "Command": " ".join(argv), "Created": int(info.created),
        "Ports": ports, "Labels": dict(info.labels), "State": info.status,
        "Status": status_text(info),
        "HostConfig": {"NetworkMode": "bridge" if info.spec.network == "bridge"
                       else info.spec.network},
        "NetworkSettings": {"Networks": {info.spec.network: _endpoint(info, info.gateway)}},
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
        else:
            raise InvalidSpec("filter", key, "supported: id, name, label, status, ancestor")
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
        "OpenStderr": config["stderr"], "CanRemove": False, "DetachKeys": "",
        "ProcessConfig": {"tty": False, "entrypoint": config["cmd"][0],
                          "arguments": config["cmd"][1:], "privileged": False,
                          "user": config["user"]},
    }  # fmt: skip
