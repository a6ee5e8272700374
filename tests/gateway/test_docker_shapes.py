"""Docker's create body to a ContainerSpec, a node's records back to Docker's shapes, and
a node's output to Docker's frames: pure logic of the gateway's Docker package."""

from __future__ import annotations

import json
import struct

import pytest

from gateway.docker import shapes
from gateway.docker.frames import framed, log_frames
from gateway.docker.requests import Unsupported, create_request, update_request
from pool.contract.containers import BindSpec, ContainerSpec, HealthSpec
from pool.contract.errors import InvalidSpec
from pool.contract.messages import (
    ContainerInfo,
    Endpoint,
    HealthState,
    ImageSettings,
    Published,
)


def test_create_body_maps_to_a_spec() -> None:
    body = {
        "Image": "web", "Cmd": ["httpd", "-f"], "Entrypoint": None, "Env": ["A=1"],
        "WorkingDir": "/srv", "User": "nobody", "Labels": {"team": "a"},
        "ExposedPorts": {"9090/tcp": {}},
        "HostConfig": {
            "Binds": ["data:/data", "/tmp:/host:ro"], "Memory": 33554432, "CpuShares": 512,
            "PidsLimit": 64, "ReadonlyRootfs": True, "Tmpfs": {"/run": "size=1m"},
            "PortBindings": {"8080/tcp": [{"HostIp": "", "HostPort": "8081"}]},
            "AutoRemove": True, "NetworkMode": "default", "Init": False,
            "Mounts": [{"Type": "tmpfs", "Target": "/cache", "TmpfsOptions": {"SizeBytes": 4096}}],
        },
    }  # fmt: skip
    spec = create_request(body, "web1")
    assert (spec.image, spec.auto_remove, spec.name) == ("web", True, "web1")
    assert spec.command == ("httpd", "-f") and spec.entrypoint is None and spec.env == ("A=1",)
    assert (spec.memory, spec.cpu_shares, spec.pids_limit, spec.read_only) == (
        32 << 20, 512, 64, True)  # fmt: skip
    assert spec.tmpfs == {"/run": 1 << 20, "/cache": 4096}
    assert [(v.source, v.target, v.read_only, v.kind) for v in spec.volumes] == [
        ("data", "/data", False, "named"), ("/tmp", "/host", True, "bind")]  # fmt: skip
    assert [(p.host_ip, p.host_port, p.container_port) for p in spec.ports] == [
        ("", 8081, 8080)
    ]  # no address: the node publishes it on 127.0.0.1 and the bridge's address
    assert spec.network == "bridge" and spec.init is False and spec.exposed == ("9090/tcp",)
    assert spec.labels == {"team": "a"}
    assert ContainerSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_limits_not_given_are_left_to_the_node() -> None:
    spec = create_request({"Image": "busybox", "HostConfig": {"Memory": 0, "PidsLimit": -1}}, "")
    assert (spec.memory, spec.pids_limit) == (0, 0) and spec.init is True
    assert spec.network == "bridge"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"Image": "x", "HostConfig": {"NetworkMode": "host"}}, "host's network"),
        ({"Image": "x", "HostConfig": {"NetworkMode": "container:web"}}, "container:"),
        ({"Image": "x", "HostConfig": {"Privileged": True}}, "privileged"),
        ({"Image": "x", "HostConfig": {"Mounts": [{"Type": "npipe", "Target": "/x"}]}}, "npipe"),
        ({"Image": "x", "HostConfig": {"Devices": [{"PathOnHost": "/dev/kvm"}]}}, "--device"),
        ({"Image": "x", "HostConfig": {"PidMode": "host"}}, "PidMode 'host'"),
        ({"Image": "x", "HostConfig": {"SecurityOpt": ["seccomp=unconfined"]}}, "seccomp"),
    ],
)
def test_what_scow_does_not_offer_is_refused_by_name(body: dict[str, object], named: str) -> None:
    with pytest.raises(Unsupported, match=named):
        create_request(body, "")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "Image"),
        ({"Image": "x", "Cmd": [1, 2]}, "Cmd"),
        ({"Image": "x", "HostConfig": {"Binds": ["relative:data"]}}, "relative:data"),
        ({"Image": "x", "HostConfig": {"Memory": "lots"}}, "lots"),
        ({"Image": "x", "HostConfig": {"PortBindings": {"53/sctp": [{}]}}}, "sctp"),
        ({"Image": "x", "HostConfig": {"PortBindings": {"53/tcp": [{"HostIp": "x"}]}}}, "'x'"),
        ({"Image": "x", "Env": "A=1"}, "Env"),
        ({"Image": "x", "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}}, "sometimes"),
        ({"Image": "x", "HostConfig": {"RestartPolicy": {"Name": "always"}, "AutoRemove": True}},
         "--rm"),
        ({"Image": "x", "Healthcheck": {"Test": ["RUN", "x"]}}, "CMD, CMD-SHELL or NONE"),
        ({"Image": "x", "Healthcheck": {"Test": ["CMD", "x"], "Interval": "1s"}}, "Interval"),
        ({"Image": "x", "HostConfig": {"Binds": ["/h:/c:rshared,bogus"]}}, "bogus"),
        ({"Image": "x", "HostConfig": {"Binds": ["vol:/c:rshared"]}}, "bind mounts only"),
        ({"Image": "x", "HostConfig": {"ConsoleSize": [24]}}, "ConsoleSize"),
        ({"Image": "x", "HostConfig": {"ExtraHosts": ["nocolon"]}}, "nocolon"),
        ({"Image": "x", "HostConfig": {"NanoCpus": 10**9, "CpuQuota": 5000}}, "exclude"),
        ({"Image": "x", "NetworkingConfig": {"EndpointsConfig": {"n": {"Aliases": "a"}}}},
         "Aliases"),
    ],
)
def test_bad_values_are_named(body: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidSpec, match=named):
        create_request(body, "")


def test_what_docker_run_sends_for_the_rest_of_what_people_type() -> None:
    """-it, --restart, --health-*, --network NAME with aliases and an address, --link twice,
    -p .../udp, a bind's propagation, --stop-timeout."""
    body = {
        "Image": "busybox", "Tty": True, "OpenStdin": True, "StdinOnce": True,
        "AttachStdin": True, "StopTimeout": 3,
        "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 500_000_000, "Retries": 2,
                        "StartPeriod": 2_000_000_000},
        "HostConfig": {
            "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
            "NetworkMode": "backend", "ConsoleSize": [24, 80],
            "Links": ["/db:/web/database", "/db:/web/pg"],
            "PortBindings": {"53/udp": [{"HostIp": "", "HostPort": "5353"}]},
            "Binds": ["/srv:/srv:ro,rslave", "cache:/cache:nocopy"],
        },
        "NetworkingConfig": {"EndpointsConfig": {
            "backend": {"Aliases": ["api", "api"], "IPAMConfig": {"IPv4Address": "10.9.0.9"}},
            "bridge": {}}},
    }  # fmt: skip
    spec = create_request(body, "web")
    assert (spec.tty, spec.stdin_open, spec.stdin_once, spec.console) == (True, True, True,
                                                                         (24, 80))  # fmt: skip
    assert (spec.restart, spec.restart_retries, spec.stop_timeout) == ("on-failure", 3, 3)
    assert spec.healthcheck is not None
    assert (spec.healthcheck.test, spec.healthcheck.interval, spec.healthcheck.retries,
            spec.healthcheck.start_period) == (("CMD-SHELL", "true"), 0.5, 2, 2.0)  # fmt: skip
    assert spec.network == "backend"
    assert [(e.network, e.aliases, e.ip) for e in spec.endpoints] == [
        ("backend", ("api",), "10.9.0.9")]  # fmt: skip
    assert spec.links == (("db", "database"), ("db", "pg"))  # both aliases kept
    assert [(p.container_port, p.host_port, p.protocol) for p in spec.ports] == [
        (53, 5353, "udp")]  # fmt: skip
    assert [(v.read_only, v.propagation, v.nocopy) for v in spec.volumes] == [
        (True, "rslave", False), (False, "", True)]  # fmt: skip
    assert ContainerSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_update_takes_limits_and_a_restart_policy_and_names_the_rest() -> None:
    changes = update_request({"Memory": 64 << 20, "MemorySwap": 64 << 20, "CpuShares": 256,
                              "PidsLimit": 50, "CpuQuota": 0,
                              "RestartPolicy": {"Name": "always"}})  # fmt: skip
    assert changes == {"memory": 64 << 20, "cpu_shares": 256, "pids_limit": 50,
                       "restart": "always", "restart_retries": 0}  # fmt: skip
    assert update_request({"NanoCpus": 500_000_000}) == {"cpu_quota": 50_000,
                                                         "cpu_period": 100_000}  # fmt: skip
    with pytest.raises(Unsupported, match="BlkioWeight"):
        update_request({"BlkioWeight": 500})
    with pytest.raises(Unsupported, match="MemorySwap"):
        update_request({"Memory": 64 << 20, "MemorySwap": 128 << 20})


def _info(**kw: object) -> ContainerInfo:
    base: dict[str, object] = dict(
        id="a" * 64, name="web", created=1.0, image="web", status="running",
        spec=ContainerSpec(image="web", name="web", env=("A=1",),
                           volumes=(BindSpec("/data", "data"), BindSpec("/h", "/srv", True))),
        image_config=ImageSettings(cmd=("httpd",), exposed_ports=("8080/tcp",),
                                   env=("PATH=/bin", "A=0")),
        pid=42, ip="10.0.0.2", ports=(Published(8080, "127.0.0.1", 8081),),
        volumes=(("data", "/data"),), started_at=100.0, gateway="10.0.0.1",
        volume_paths={"data": "/var/lib/scow/volumes/data"},
    )  # fmt: skip
    base.update(kw)
    return ContainerInfo(**base)  # type: ignore[arg-type]


def test_inspect_and_list_shapes() -> None:
    data = shapes.inspect_json(_info())
    assert data["Name"] == "/web" and data["Path"] == "httpd" and data["Args"] == []
    assert data["State"]["Running"] is True and data["State"]["Pid"] == 42
    assert data["NetworkSettings"]["Ports"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8081"}]}  # fmt: skip
    assert data["NetworkSettings"]["Networks"]["bridge"]["Gateway"] == "10.0.0.1"
    assert data["Config"]["Env"] == ["PATH=/bin", "A=1"]  # the container's A over the image's
    mounts = {m["Destination"]: m for m in data["Mounts"]}
    assert mounts["/data"]["Source"] == "/var/lib/scow/volumes/data" and mounts["/data"]["RW"]
    assert mounts["/h"]["Type"] == "bind" and mounts["/h"]["RW"] is False
    row = shapes.summary_json(_info())
    assert row["Names"] == ["/web"] and row["State"] == "running"
    assert row["Ports"] == [{"IP": "127.0.0.1", "PrivatePort": 8080, "PublicPort": 8081,
                             "Type": "tcp"}]  # fmt: skip
    exited = _info(status="exited", exit_code=3, finished_at=200.0)
    assert shapes.status_text(exited, now=260.0) == "Exited (3) About a minute ago"
    assert shapes.status_text(_info(), now=101.0) == "Up 1 second"
    assert shapes.inspect_json(exited)["State"]["Pid"] == 0


def test_an_entrypoint_given_drops_the_images_cmd() -> None:
    spec = ContainerSpec(image="web", entrypoint=("sh",))
    assert shapes.command_line(_info(spec=spec)) == ["sh"]
    spec = ContainerSpec(image="web", entrypoint=("sh",), command=("-c", "true"))
    assert shapes.command_line(_info(spec=spec)) == ["sh", "-c", "true"]


def test_list_filters() -> None:
    info = _info(labels={"team": "a"})
    assert shapes.matches(info, {"label": ["team=a"], "status": ["running"], "name": ["we"]})
    assert not shapes.matches(info, {"label": ["team=b"]})
    assert not shapes.matches(info, {"id": ["b"]})
    with pytest.raises(InvalidSpec, match="since"):
        shapes.matches(info, {"since": ["x"]})


def test_a_path_stat_has_gos_file_mode() -> None:
    got = shapes.path_stat_json({"name": "etc", "size": 4096, "mode": 0o40755, "mtime": 0,
                                 "link": ""})  # fmt: skip
    assert got == {"name": "etc", "size": 4096, "mode": (1 << 31) | 0o755,
                   "mtime": "1970-01-01T00:00:00Z", "linkTarget": ""}  # fmt: skip
    assert shapes.go_file_mode(0o120777) == (1 << 27) | 0o777


def _line(stream: str, text: str) -> bytes:
    return json.dumps({"stream": stream, "time": "2026-01-02T03:04:05.678+00:00",
                       "text": text}).encode() + b"\n"  # fmt: skip


def test_log_lines_become_multiplexed_frames() -> None:
    lines = _line("stdout", "out") + _line("stderr", "err")
    data = log_frames(lines, stdout=True, stderr=True, timestamps=False)
    assert data == struct.pack(">BxxxI", 1, 4) + b"out\n" + struct.pack(">BxxxI", 2, 4) + b"err\n"
    only_err = log_frames(lines, stdout=False, stderr=True, timestamps=True)
    assert only_err[8:] == b"2026-01-02T03:04:05.678000Z err\n"


def test_output_is_framed_by_its_stream() -> None:
    assert framed("stderr", b"x", {}) == struct.pack(">BxxxI", 2, 1) + b"x"
    assert framed("stdout", b"", {}) == struct.pack(">BxxxI", 1, 0)
    assert framed("", b"tar bytes", {}) == b"tar bytes"  # bulk output goes as it is
    assert framed("log", _line("stdout", "hi"), {"timestamps": False})[8:] == b"hi\n"


def test_a_terminals_output_goes_without_frames() -> None:
    assert framed("tty", b"\x1b[1m$ ", {}) == b"\x1b[1m$ "
    assert framed("tty-log", _line("stdout", "hi"), {}) == b"hi\r\n"


def test_inspect_has_the_fields_clients_index() -> None:
    """Fields docker-py, Compose and testcontainers read: none may be missing (KeyError)."""
    health = HealthState("unhealthy", 3, ({"start": 1.0, "end": 2.0, "exit_code": 1,
                                           "output": "no"},))  # fmt: skip
    spec = ContainerSpec(image="web", restart="always", tty=True, stop_timeout=5,
                         network="backend")  # fmt: skip
    endpoint = Endpoint("backend", "10.9.0.2", "10.9.0.1", "10.9.0.0/24", "02:42:0a:09:00:02",
                        "f" * 64, ("api",), "eth0")  # fmt: skip
    data = shapes.inspect_json(_info(spec=spec, health=health, restart_count=2,
                                     endpoints=(endpoint,)))  # fmt: skip
    host = data["HostConfig"]
    for key in ("UTSMode", "CgroupnsMode", "Runtime", "Isolation", "DeviceCgroupRules",
                "VolumeDriver", "ConsoleSize", "ShmSize", "SecurityOpt"):  # fmt: skip
        assert key in host, key
    assert host["LogConfig"] == {"Type": "json-file", "Config": {}}
    assert host["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
    assert data["Config"]["Tty"] is True and data["Config"]["StopTimeout"] == 5
    assert "Healthcheck" not in data["Config"]  # neither the container nor its image has one
    assert data["RestartCount"] == 2
    assert data["State"]["Health"]["Status"] == "unhealthy"
    assert data["State"]["Health"]["Log"][0]["ExitCode"] == 1
    net = data["NetworkSettings"]["Networks"]["backend"]
    assert (net["IPAddress"], net["Gateway"], net["IPPrefixLen"]) == ("10.9.0.2", "10.9.0.1", 24)
    assert net["NetworkID"] == "f" * 64 and "api" in net["Aliases"]
    assert data["NetworkSettings"]["IPAddress"] == "10.9.0.2"
    assert shapes.status_text(_info(health=HealthState("healthy")), now=101.0) == (
        "Up 1 second (healthy)")  # fmt: skip


def test_a_healthcheck_is_the_containers_over_its_images() -> None:
    image = ImageSettings(healthcheck={"Test": ["CMD", "check"], "Interval": 5_000_000_000,
                                       "Retries": 4})  # fmt: skip
    own = HealthSpec(interval=1.0)
    assert shapes.healthcheck(_info(image_config=image, spec=ContainerSpec("w",
        healthcheck=own))) == {"Test": ["CMD", "check"], "Interval": 1_000_000_000,
                               "Retries": 4}  # fmt: skip
    assert shapes.healthcheck(_info(image_config=image)) == image.healthcheck
