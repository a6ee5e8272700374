"""Docker's create body to a ContainerSpec, a node's records back to Docker's shapes, and
a node's output to Docker's frames: pure logic of the gateway's Docker package."""

from __future__ import annotations

import json
import struct

import pytest

from gateway.docker import shapes
from gateway.docker.frames import framed, log_frames
from gateway.docker.requests import Unsupported, create_request
from pool.contract.containers import BindSpec, ContainerSpec
from pool.contract.errors import InvalidSpec
from pool.contract.messages import ContainerInfo, ImageSettings, Published


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
        ("127.0.0.1", 8081, 8080)
    ]  # published on loopback unless an address is given
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
        ({"Image": "x", "Tty": True}, "TTY"),
        ({"Image": "x", "OpenStdin": True}, "stdin"),
        ({"Image": "x", "HostConfig": {"NetworkMode": "host"}}, "'host'"),
        ({"Image": "x", "HostConfig": {"Privileged": True}}, "privileged"),
        ({"Image": "x", "HostConfig": {"RestartPolicy": {"Name": "always"}}}, "'always'"),
        ({"Image": "x", "HostConfig": {"Mounts": [{"Type": "npipe", "Target": "/x"}]}}, "npipe"),
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
        ({"Image": "x", "HostConfig": {"PortBindings": {"53/udp": [{}]}}}, "53/udp"),
        ({"Image": "x", "Env": "A=1"}, "Env"),
    ],
)
def test_bad_values_are_named(body: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidSpec, match=named):
        create_request(body, "")


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
