"""A ContainerSpec as a node runs it and reports it back: pure logic."""

from __future__ import annotations

from pool.commands.containers import run_options
from pool.contract.containers import BindSpec, ContainerSpec, PortSpec, UlimitSpec
from pool.contract.messages import AUTO_REMOVE, ContainerInfo
from runtime.records import ContainerRecord
from runtime.spec import DEFAULT_MEMORY, ImageConfig


def test_zero_limits_are_the_runtimes_defaults() -> None:
    options = run_options(ContainerSpec(image="busybox"))
    assert options.memory == DEFAULT_MEMORY and options.pids_limit > 0
    assert run_options(ContainerSpec(image="busybox", memory=64 << 20)).memory == 64 << 20


def test_a_record_read_back_gives_the_spec_again() -> None:
    spec = ContainerSpec(
        image="web", name="web", command=("httpd",), env=("A=1",), tmpfs={"/run": 4096},
        volumes=(BindSpec("/data", "data", True),), memory=64 << 20, cpu_shares=512,
        pids_limit=32, ulimits=(UlimitSpec("nofile", 64, 128),), labels={"team": "a"},
        ports=(PortSpec(8080, 8081),), links=(("db", "database"),), cap_add=("NET_ADMIN",),
        auto_remove=True,
    )  # fmt: skip
    options = run_options(spec)
    assert options.labels == {"team": "a", AUTO_REMOVE: "1"}
    record = ContainerRecord(
        id="a" * 64, name="web", created=1.0, image="web", image_config=ImageConfig(),
        options=options, layers=(), stdio="logs", status="created", labels=dict(options.labels),
    )  # fmt: skip
    info = ContainerInfo.from_json(record.to_json())
    assert info.spec == spec
    assert info.labels == {"team": "a"}  # scow's own mark is AutoRemove, not a label
