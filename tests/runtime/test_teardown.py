"""Nothing is left behind: after many cycles, after bad input, after a crashed owner."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runtime.engine import Runtime
from runtime.errors import Conflict, InvalidOption, NotFound
from runtime.network import netns_name, veth_name
from runtime.spec import Port, RunOptions, Volume
from tests import leakcheck
from tests.runtime.helpers import BUSYBOX, run

REPO = Path(__file__).resolve().parents[2]


def host_names() -> set[str]:
    """The host-wide names a runtime makes: its veths and its netns."""
    links = {n for n in os.listdir("/sys/class/net") if n.startswith("sv")}
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    return links | {n for n in netns if n.startswith("scow-")}


@pytest.fixture(autouse=True)
def elsewhere() -> set[str]:
    """Veths and netns that were on the host before the test (another scow's, or
    a killed run's): theirs, not this runtime's leftovers."""
    return host_names()


def leftovers(rt: Runtime, elsewhere: set[str]) -> dict[str, object]:
    """Everything the runtime could leave, by kind; empty lists when clean."""
    with open("/proc/self/mountinfo") as f:
        mounts = [ln.split()[4] for ln in f if str(rt.config.state_dir) in ln]
    # A removed netns's veth pairs are deleted by the kernel a moment later.
    deadline = time.monotonic() + 3
    while (new := host_names() - elsewhere) and time.monotonic() < deadline:
        time.sleep(0.02)
    return {
        "containers": sorted(rt.store.ids()),
        "mounts": mounts,
        "cgroups": sorted(rt.cgroups.ids()),
        "netns": sorted(n for n in new if n.startswith("scow-")),
        "veths": sorted(n for n in new if n.startswith("sv")),
        "leases": rt.network.ipam.leases(),
    }


CLEAN = {"containers": [], "mounts": [], "cgroups": [], "netns": [], "veths": [], "leases": {}}


@pytest.mark.slow
async def test_200_cycles_leave_nothing(
    runtime: Runtime, busybox_layer: Path, elsewhere: set[str]
) -> None:
    opts = RunOptions(command=("true",), network="bridge", read_only=True)
    for _ in range(200):
        rec = await runtime.create(BUSYBOX, [busybox_layer], opts)
        await runtime.start(rec.id)
        assert (await runtime.wait(rec.id)).code == 0
        await runtime.remove(rec.id)
    assert leftovers(runtime, elsewhere) == CLEAN


async def test_bad_input_names_the_value_and_leaves_nothing(
    runtime: Runtime, busybox_layer: Path, elsewhere: set[str]
) -> None:
    with pytest.raises(InvalidOption, match="invalid memory 1024"):
        RunOptions(memory=1024)

    with pytest.raises(InvalidOption, match="no user 'nosuch'"):
        await runtime.create(
            BUSYBOX, [busybox_layer], RunOptions(command=("true",), user="nosuch", network="bridge")
        )
    assert leftovers(runtime, elsewhere) == CLEAN

    with pytest.raises(NotFound, match="/no/such/layer"):
        await runtime.create(BUSYBOX, [busybox_layer, Path("/no/such/layer")], RunOptions())

    with pytest.raises(InvalidOption, match="/no/such/dir"):
        await runtime.create(
            BUSYBOX, [busybox_layer], RunOptions(volumes=(Volume("/x", "/no/such/dir"),))
        )

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(Conflict, match=f"127.0.0.1:{port}"):
            await runtime.create(
                BUSYBOX, [busybox_layer],
                RunOptions(network="bridge", ports=(Port(80, port),)),
            )  # fmt: skip
    assert leftovers(runtime, elsewhere) == CLEAN
    assert runtime.volumes.all() == []


async def test_reaper_removes_what_a_crashed_owner_left(
    runtime: Runtime, busybox_layer: Path, elsewhere: set[str]
) -> None:
    rec = await runtime.create(
        BUSYBOX, [busybox_layer], RunOptions(command=("sleep", "30"), network="bridge")
    )
    await runtime.start(rec.id)
    assert os.path.exists(f"/run/netns/{netns_name(rec.id)}")
    assert os.path.exists(f"/sys/class/net/{veth_name(rec.id)}")
    # The owner died mid-create: its record still says so.
    runtime.store.save(rec.evolve(status="creating"))

    fresh = Runtime(runtime.config)
    await fresh.open()
    assert await fresh.reap() == [rec.id]
    assert leftovers(fresh, elsewhere) == CLEAN


async def test_reaper_stops_orphaned_port_proxy(
    runtime: Runtime, busybox_layer: Path, elsewhere: set[str]
) -> None:
    rec = await runtime.create(
        BUSYBOX, [busybox_layer],
        RunOptions(command=("sleep", "30"), network="bridge", ports=(Port(80),)),
    )  # fmt: skip
    proxy = runtime._proxies.pop(rec.id)  # as after a restart: only the pid is known
    runtime.paths(rec.id).record.unlink()  # and the record was never completed
    assert await runtime.reap() == [rec.id]
    assert proxy.wait(5) is not None
    assert leftovers(runtime, elsewhere) == CLEAN


CRASH = """
import asyncio, os, sys
from pathlib import Path
from runtime.engine import Runtime, RuntimeConfig
from runtime.spec import ImageConfig, RunOptions

async def main():
    rt = Runtime(RuntimeConfig(**{k: (Path(v) if k.endswith("dir") or k == "cgroup_root" else v)
                                 for k, v in CONFIG.items()}))
    await rt.open()
    rec = await rt.create(ImageConfig(), [Path(sys.argv[1])], RunOptions(
        command=("sh", "-c", "for i in 1 2 3 4 5; do echo line$i; sleep 0.2; done; exit 7")))
    await rt.start(rec.id)
    print(rec.id, flush=True)
    os._exit(0)  # die without cleaning anything up

asyncio.run(main())
"""


async def test_logs_and_exit_survive_a_restart_of_the_owner(
    runtime: Runtime, busybox_layer: Path, elsewhere: set[str]
) -> None:
    cfg = runtime.config
    config = {
        "state_dir": str(cfg.state_dir), "run_dir": str(cfg.run_dir),
        "cgroup_parent": cfg.cgroup_parent, "bridge": cfg.bridge, "subnet": cfg.subnet,
    }  # fmt: skip
    script = f"from ipaddress import IPv4Network\nCONFIG = {config!r}\n" + textwrap.dedent(CRASH)
    out = subprocess.run(
        [sys.executable, "-c", script, str(busybox_layer)],
        capture_output=True, text=True, timeout=30, cwd=REPO, check=True,
    )  # fmt: skip
    cid = out.stdout.strip()
    status = await runtime.wait(cid)  # conmon kept the container and its log going
    assert status.code == 7
    assert [ln.text for ln in runtime.logs(cid)] == [f"line{i}" for i in range(1, 6)]
    await runtime.remove(cid)
    assert leftovers(runtime, elsewhere) == CLEAN


async def test_a_removed_container_leaves_nothing_under_the_run_and_state_dirs(
    runtime: Runtime, busybox_layer: Path
) -> None:
    """conmon's link to the bundle went on living in <run>/conmon, one per container ever
    made, not even removed by a restart: now it goes with its container, and the reaper
    takes those an older scow left."""
    await run(runtime, busybox_layer, "true")
    state, run_dir = runtime.config.state_dir, runtime.config.run_dir
    assert leakcheck.scow_leftovers(state, run_dir) == []
    stray = run_dir / "conmon" / ("f" * 64)
    stray.symlink_to(state / "containers" / ("f" * 64) / "bundle")
    await runtime.reap()
    assert not os.path.lexists(stray)
