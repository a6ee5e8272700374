"""Unit tests of the runtime's pure logic: option checks, user resolution, OCI config, IPAM."""

from __future__ import annotations

import json
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from runtime import logs
from runtime.cgroups import Cgroups
from runtime.errors import InvalidOption
from runtime.ipam import AddressPoolExhausted, Ipam
from runtime.oci import CAPABILITIES, make_config, resolve_args
from runtime.records import ContainerRecord, ContainerStore
from runtime.spec import (
    Attachment,
    ImageConfig,
    Port,
    RunOptions,
    Ulimit,
    Volume,
    merge_env,
    options_from_json,
    options_to_json,
)
from runtime.users import User, resolve_user


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("memory", 1 << 20, "minimum memory"),
        ("cpu_shares", 1, "cpu shares range"),
        ("pids_limit", 0, "pids limit"),
        ("name", "bad name", "letters"),
        ("env", ("=x",), "KEY=VALUE"),
        ("workdir", "relative", "absolute"),
        ("cpuset_cpus", "zero", "list"),
        ("network", "not a/name", "expected none, bridge, host or a network name"),
        ("network", "mynet", "a user-defined network needs its record"),
        ("attachments", (Attachment("mynet"),), "bridge and subnet are not known"),
        ("volumes", (Volume("/x", "vol", propagation="rshared"),), "a bind's propagation"),
        ("volumes", (Volume("/a/../b"),), "absolute"),
        ("volumes", (Volume("/x", "bad name"),), "neither a host path"),
        ("ulimits", (Ulimit("bogus", 1, 1),), "unknown limit"),
        ("ulimits", (Ulimit("nofile", 10, 5),), "soft limit is above"),
    ],
)
def test_run_options_checks(field: str, value: object, message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        RunOptions(**{field: value})  # type: ignore[arg-type]


def test_ports_need_the_bridge() -> None:
    with pytest.raises(InvalidOption, match="need a bridge network"):
        RunOptions(ports=(Port(80),))


def test_merge_env_later_wins_keeping_order() -> None:
    assert merge_env(["A=1", "B=2"], ["B=3", "C=4"]) == ["A=1", "B=3", "C=4"]


PASSWD = """root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
app:x:1000:
wheel:x:10:app,other
nogroup:x:65534:
"""


@pytest.mark.parametrize(
    ("spec", "user"),
    [
        ("", User(0, 0, (), "/root")),
        ("app", User(1000, 1000, (10,), "/home/app")),
        ("1000", User(1000, 1000, (10,), "/home/app")),
        ("1000:1000", User(1000, 1000, (10,), "/home/app")),
        ("4242", User(4242, 0, (), "/")),
        ("4242:4243", User(4242, 4243, (), "/")),
        ("app:nogroup", User(1000, 65534, (10,), "/home/app")),
    ],
)
def test_resolve_user(spec: str, user: User) -> None:
    assert resolve_user(spec, PASSWD, GROUP) == user


@pytest.mark.parametrize(("spec", "message"), [("ghost", "no user 'ghost'"),
                                               ("app:ghosts", "no group 'ghosts'")])  # fmt: skip
def test_resolve_user_unknown(spec: str, message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        resolve_user(spec, PASSWD, GROUP)


@pytest.mark.parametrize(
    ("image", "opts", "args"),
    [
        (ImageConfig(cmd=("sh",)), RunOptions(), ["sh"]),
        (ImageConfig(entrypoint=("ep",), cmd=("a",)), RunOptions(), ["ep", "a"]),
        (ImageConfig(entrypoint=("ep",), cmd=("a",)), RunOptions(command=("b",)), ["ep", "b"]),
        (ImageConfig(entrypoint=("ep",), cmd=("a",)), RunOptions(entrypoint=("x",)), ["x"]),
        (ImageConfig(cmd=("a",)), RunOptions(entrypoint=("x",), command=("y",)), ["x", "y"]),
    ],
)
def test_resolve_args_like_docker(image: ImageConfig, opts: RunOptions, args: list[str]) -> None:
    assert resolve_args(image, opts) == args


def config_for(opts: RunOptions, image: ImageConfig | None = None) -> dict[str, object]:
    return make_config(
        image or ImageConfig(cmd=("sh",), env=("PATH=/bin", "A=image")),
        opts, user=User(1000, 1000, (10,)), hostname="h", rootfs=Path("/r"),
        cgroups_path="/scow/x", extra_mounts=[], netns_path=None, init_binary="/usr/bin/tini",
    )  # fmt: skip


def test_config_security_defaults_and_limits() -> None:
    cfg = config_for(RunOptions(env=("A=run",), memory=64 << 20, cpu_shares=512, pids_limit=50))
    process = cfg["process"]
    assert isinstance(process, dict)
    assert process["args"] == ["/dev/init", "--", "sh"]
    assert process["noNewPrivileges"] is True
    assert process["capabilities"]["bounding"] == CAPABILITIES
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10]}
    assert "A=run" in process["env"] and "PATH=/bin" in process["env"]
    linux = cfg["linux"]
    assert isinstance(linux, dict)
    assert linux["resources"]["memory"] == {"limit": 64 << 20}
    assert linux["resources"]["cpu"] == {"shares": 512}
    assert linux["resources"]["pids"] == {"limit": 50}
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]
    assert {"type": "network"} in linux["namespaces"]
    json.dumps(cfg)  # serialisable as config.json


def _seccomp(cfg: dict[str, object]) -> tuple[set[str], int]:
    """The syscalls a config's seccomp filter allows outright, and its clone rules."""
    rules = cfg["linux"]["seccomp"]["syscalls"]  # type: ignore[index]
    names = {n for r in rules if "args" not in r and r["action"] == "SCMP_ACT_ALLOW"
             for n in r["names"]}  # fmt: skip
    return names, sum(1 for r in rules if r["names"] == ["clone"])


def test_seccomp_refuses_namespaces_and_tracing_unless_the_capability_is_added() -> None:
    names, clone_rules = _seccomp(config_for(RunOptions()))
    assert not {"unshare", "setns", "mount", "ptrace", "bpf", "keyctl", "clone3"} & names
    assert {"read", "write", "execve"} <= names
    assert clone_rules == 1  # clone only without namespace flags
    names, clone_rules = _seccomp(config_for(RunOptions(cap_add=("SYS_ADMIN",))))
    assert {"unshare", "mount", "clone"} <= names and clone_rules == 0
    assert "ptrace" not in names and "keyctl" not in names


def test_config_drops_capabilities_and_sets_a_cpu_quota_and_a_terminal() -> None:
    cfg: Any = config_for(RunOptions(cap_drop=("ALL",), cap_add=("CHOWN",), cpu_quota=50_000,
                                     tty=True, console=(30, 90)))  # fmt: skip
    assert cfg["process"]["capabilities"]["bounding"] == ["CAP_CHOWN"]
    assert cfg["linux"]["resources"]["cpu"] == {"shares": 1024, "quota": 50_000,
                                                "period": 100_000}  # fmt: skip
    assert cfg["process"]["terminal"] is True
    assert cfg["process"]["consoleSize"] == {"height": 30, "width": 90}
    dropped: Any = config_for(RunOptions(cap_drop=("kill",)))
    assert dropped["process"]["capabilities"]["bounding"] == [
        "CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE"]  # fmt: skip


def test_read_only_config_gets_tmpfs_on_tmp_and_run() -> None:
    cfg = config_for(RunOptions(read_only=True, tmpfs={"/tmp": 1 << 20}))
    assert cfg["root"] == {"path": "/r", "readonly": True}
    mounts = {m["destination"]: m for m in cfg["mounts"]}  # type: ignore[attr-defined]
    assert "size=1048576" in mounts["/tmp"]["options"]
    assert mounts["/run"]["type"] == "tmpfs"


def test_config_without_command_is_an_error() -> None:
    with pytest.raises(InvalidOption, match="no command"):
        config_for(RunOptions(), ImageConfig())


def test_options_round_trip_through_json() -> None:
    opts = RunOptions(
        name="x", command=("a", "b"), volumes=(Volume("/d", "n"),), ports=(Port(80, 8080),),
        ulimits=(Ulimit("nofile", 1, 2),), tmpfs={"/t": 5}, labels={"k": "v"},
        network="bridge", links=(("db", "database"),), cap_add=("CHOWN",),
    )  # fmt: skip
    assert options_from_json(json.loads(json.dumps(options_to_json(opts)))) == opts
    rec = ContainerRecord("i" * 64, "n", 1.0, "busybox", ImageConfig(cmd=("sh",)), opts, ("/l",),
                          "logs")  # fmt: skip
    assert ContainerRecord.from_json(json.loads(json.dumps(rec.to_json()))) == rec


def test_a_record_saved_once_removal_began_writes_nothing(tmp_path: Path) -> None:
    """An exit status saved while the container is being removed must not bring its
    directory back (the soak test found such strays, holding only container.json)."""
    store = ContainerStore(tmp_path / "containers")
    rec = ContainerRecord("r" * 64, "n", 1.0, "busybox", ImageConfig(cmd=("sh",)), RunOptions(),
                          (), "logs")  # fmt: skip
    store.paths(rec.id).root.mkdir(parents=True)
    store.save(rec)
    aside = store.set_aside(rec.id)
    assert aside is not None and store.ids() == set() and store.set_aside_dirs() == [aside]
    with pytest.raises(FileNotFoundError):
        store.save(rec.evolve(status="exited"))
    assert store.ids() == set() and store.load(rec.id) is None
    assert store.set_aside(rec.id) is None  # already gone: nothing to do


def test_ipam_never_hands_out_an_address_twice(tmp_path: Path) -> None:
    ipam = Ipam(tmp_path / "ipam.json", IPv4Network("10.9.0.0/29"))  # hosts .1-.6, .1 is ours
    got = [ipam.allocate(f"c{i}") for i in range(5)]
    assert got == [IPv4Address(f"10.9.0.{i}") for i in range(2, 7)]
    assert ipam.allocate("c0") == got[0]  # same owner, same address
    with pytest.raises(AddressPoolExhausted):
        ipam.allocate("c5")
    ipam.release("c1")
    # A fresh Ipam on the same file (a restart) sees the leases and reuses only the free one.
    again = Ipam(tmp_path / "ipam.json", IPv4Network("10.9.0.0/29"))
    assert again.allocate("c6") == got[1]
    assert len(set(again.leases())) == 5


def test_ipam_does_not_reuse_a_released_address_at_once(tmp_path: Path) -> None:
    ipam = Ipam(tmp_path / "ipam.json", IPv4Network("10.9.0.0/24"))
    first = ipam.allocate("a")
    ipam.release("a")
    assert ipam.allocate("b") != first


def test_log_parse_joins_partial_lines() -> None:
    text = [
        "2026-01-01T10:00:00.123456789+00:00 stdout P hel\n",
        "2026-01-01T10:00:00.2+00:00 stderr F err\n",
        "2026-01-01T10:00:00.3+00:00 stdout F lo\n",
        "2026-01-01T10:00:01Z stdout F \n",
    ]
    lines = list(logs.parse(text))
    assert [(ln.stream, ln.text) for ln in lines] == [
        ("stderr", "err"),
        ("stdout", "hello"),
        ("stdout", ""),
    ]
    assert lines[1].time == datetime.fromisoformat("2026-01-01T10:00:00.123456+00:00")


def _fake_v1(root: Path, cid: str) -> None:
    base = {c: root / c / "scow" / cid for c in ("memory", "cpu", "cpuacct", "pids")}
    for d in base.values():
        d.mkdir(parents=True)
    (base["memory"] / "memory.usage_in_bytes").write_text("1000\n")
    (base["memory"] / "memory.max_usage_in_bytes").write_text("5000\n")
    (base["memory"] / "memory.oom_control").write_text(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"
    )
    (base["cpuacct"] / "cpuacct.usage").write_text("123456\n")
    (base["cpu"] / "cpu.stat").write_text("nr_periods 9\nnr_throttled 3\nthrottled_time 777\n")
    (base["pids"] / "pids.current").write_text("4\n")
    (base["pids"] / "pids.events").write_text("max 6\n")


def test_cgroup_v1_stats_from_injected_root(tmp_path: Path) -> None:
    _fake_v1(tmp_path, "abc")
    cg = Cgroups(tmp_path, "scow")
    assert cg.version == "v1"
    s = cg.stats("abc")
    assert (s.memory_bytes, s.memory_peak_bytes, s.oom_kills) == (1000, 5000, 2)
    assert (s.cpu_usage_ns, s.throttled_periods, s.throttled_ns) == (123456, 3, 777)
    assert (s.pids, s.pids_refused) == (4, 6)
    assert cg.ids() == {"abc"}
    assert cg.path_for("abc") == "/scow/abc"


def test_cgroup_v2_stats_from_injected_root(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    d = tmp_path / "scow" / "abc"
    d.mkdir(parents=True)
    (d / "memory.current").write_text("2000\n")
    (d / "memory.peak").write_text("9000\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    (d / "cpu.stat").write_text("usage_usec 50\nnr_throttled 2\nthrottled_usec 30\n")
    (d / "pids.current").write_text("3\n")
    cg = Cgroups(tmp_path, "scow")
    assert cg.version == "v2"
    s = cg.stats("abc")
    assert (s.memory_bytes, s.memory_peak_bytes, s.oom_kills) == (2000, 9000, 1)
    assert (s.cpu_usage_ns, s.throttled_periods, s.throttled_ns) == (50_000, 2, 30_000)
    assert s.pids == 3
    assert cg.stats("missing").memory_bytes == 0  # gone is zero, not an error


def test_cgroup_remove_is_idempotent_on_injected_root(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("")
    (tmp_path / "scow" / "abc").mkdir(parents=True)
    cg = Cgroups(tmp_path, "scow")
    cg.remove("abc")
    cg.remove("abc")
    assert not cg.exists("abc")


def test_only_runc_has_its_exec_fifo_read_by_scow(tmp_path: Path) -> None:
    from runtime.runc import Runc

    assert Runc(tmp_path, "runc").reads_exec_fifo
    assert Runc(tmp_path, "/usr/sbin/runc").reads_exec_fifo
    assert not Runc(tmp_path, "crun").reads_exec_fifo  # crun's start writes to its fifo
