"""Docker's create body to run options, and records back to Docker's shapes: pure logic."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from pool import docker
from runtime.errors import InvalidOption
from runtime.logs import LogLine
from runtime.records import ContainerRecord, PublishedPort
from runtime.spec import DEFAULT_MEMORY, ImageConfig, RunOptions


def test_create_body_maps_to_run_options() -> None:
    body = {
        "Image": "web", "Cmd": ["httpd", "-f"], "Entrypoint": None, "Env": ["A=1"],
        "WorkingDir": "/srv", "User": "nobody", "Labels": {"team": "a"},
        "HostConfig": {
            "Binds": ["data:/data", "/tmp:/host:ro"], "Memory": 33554432, "CpuShares": 512,
            "PidsLimit": 64, "ReadonlyRootfs": True, "Tmpfs": {"/run": "size=1m"},
            "PortBindings": {"8080/tcp": [{"HostIp": "", "HostPort": "8081"}]},
            "AutoRemove": True, "NetworkMode": "default", "Init": False,
            "Mounts": [{"Type": "tmpfs", "Target": "/cache", "TmpfsOptions": {"SizeBytes": 4096}}],
        },
    }  # fmt: skip
    req = docker.create_request(body, "web1")
    o = req.options
    assert (req.image, req.auto_remove, o.name) == ("web", True, "web1")
    assert o.command == ("httpd", "-f") and o.entrypoint is None and o.env == ("A=1",)
    assert (o.memory, o.cpu_shares, o.pids_limit, o.read_only) == (32 << 20, 512, 64, True)
    assert o.tmpfs == {"/run": 1 << 20, "/cache": 4096}
    assert [(v.source, v.target, v.read_only) for v in o.volumes] == [
        ("data", "/data", False), ("/tmp", "/host", True)]  # fmt: skip
    assert [(p.host_ip, p.host_port, p.container_port) for p in o.ports] == [
        ("127.0.0.1", 8081, 8080)
    ]  # published on loopback unless an address is given
    assert o.network == "bridge" and o.init is False
    assert o.labels == {"team": "a", docker.AUTO_REMOVE: "1"}


def test_defaults_stay_scows_own() -> None:
    o = docker.create_request({"Image": "busybox", "HostConfig": {"Memory": 0}}, "").options
    assert o.memory == DEFAULT_MEMORY and o.init is True and o.network == "bridge"


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
    with pytest.raises(docker.Unsupported, match=named):
        docker.create_request(body, "")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"Image": "x", "Cmd": [1, 2]},
        {"Image": "x", "HostConfig": {"Binds": ["relative:data"]}},
        {"Image": "x", "HostConfig": {"Memory": "lots"}},
        {"Image": "x", "HostConfig": {"PortBindings": {"53/udp": [{}]}}},
    ],
)
def test_bad_values_are_named(body: dict[str, object]) -> None:
    with pytest.raises(InvalidOption):
        docker.create_request(body, "")


def _record(**kw: object) -> ContainerRecord:
    base = dict(
        id="a" * 64, name="web", created=1.0, image="web",
        image_config=ImageConfig(cmd=("httpd",), exposed_ports=("8080/tcp",), env=("PATH=/bin",)),
        options=RunOptions(name="web", env=("A=1",), network="bridge"),
        layers=(), stdio="logs", status="running", pid=42, ip="10.0.0.2",
        ports=(PublishedPort(8080, "127.0.0.1", 8081),), started_at=100.0,
    )  # fmt: skip
    base.update(kw)
    return ContainerRecord(**base)  # type: ignore[arg-type]


def test_inspect_and_list_shapes() -> None:
    record = _record()
    data = docker.inspect_json(record, gateway="10.0.0.1")
    assert data["Name"] == "/web" and data["Path"] == "httpd" and data["Args"] == []
    assert data["State"]["Running"] is True and data["State"]["Pid"] == 42
    assert data["NetworkSettings"]["Ports"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8081"}]}  # fmt: skip
    assert data["NetworkSettings"]["Networks"]["bridge"]["Gateway"] == "10.0.0.1"
    assert data["Config"]["Env"] == ["PATH=/bin", "A=1"]
    row = docker.summary_json(record)
    assert row["Names"] == ["/web"] and row["State"] == "running"
    assert row["Ports"] == [{"IP": "127.0.0.1", "PrivatePort": 8080, "PublicPort": 8081,
                             "Type": "tcp"}]  # fmt: skip
    exited = _record(status="exited", exit_code=3, finished_at=200.0)
    assert docker.status_text(exited, now=260.0) == "Exited (3) About a minute ago"
    assert docker.status_text(record, now=101.0) == "Up 1 second"


def test_list_filters() -> None:
    record = _record(labels={"team": "a"})
    assert docker.matches(record, {"label": ["team=a"], "status": ["running"], "name": ["we"]})
    assert not docker.matches(record, {"label": ["team=b"]})
    assert not docker.matches(record, {"id": ["b"]})
    with pytest.raises(InvalidOption, match="since"):
        docker.matches(record, {"since": ["x"]})


def test_log_lines_become_multiplexed_frames() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    lines = [LogLine(when, "stdout", "out"), LogLine(when, "stderr", "err")]
    data = docker.log_frames(lines, stdout=True, stderr=True, timestamps=False)
    assert data == struct.pack(">BxxxI", 1, 4) + b"out\n" + struct.pack(">BxxxI", 2, 4) + b"err\n"
    only_err = docker.log_frames(lines, stdout=False, stderr=True, timestamps=True)
    assert only_err[8:] == b"2026-01-02T03:04:05.678000Z err\n"
