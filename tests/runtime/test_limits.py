"""Memory, CPU shares, pids and the security defaults, enforced by real cgroups."""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from runtime.engine import Runtime
from runtime.spec import RunOptions
from tests.runtime.helpers import BUSYBOX, run

# dd's 64 MiB buffer is filled from /dev/zero, so every page of it is touched.
ALLOC_64M = ("dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")


async def test_over_memory_limit_is_oom_not_crash(runtime: Runtime, busybox_layer: Path) -> None:
    stray = Path.cwd() / "oom"  # conmon's OOM marker, once written wherever the node ran
    there_before = stray.exists()
    small = await run(runtime, busybox_layer, *ALLOC_64M, memory=32 << 20)
    assert small.status.oom_killed, small
    assert "OOM-killed" in str(small.status)
    assert there_before or not stray.exists(), "conmon wrote its oom file outside the container"

    big = await run(runtime, busybox_layer, *ALLOC_64M, memory=128 << 20)
    assert big.code == 0 and not big.status.oom_killed, big


@pytest.mark.slow
async def test_cpu_shares_split_one_cpu(runtime: Runtime, busybox_layer: Path) -> None:
    spin = RunOptions(command=("sh", "-c", "while :; do :; done"), cpuset_cpus="0")
    heavy = await runtime.create(BUSYBOX, [busybox_layer], replace(spin, cpu_shares=1024))
    light = await runtime.create(BUSYBOX, [busybox_layer], replace(spin, cpu_shares=512))
    try:
        await runtime.start(heavy.id)
        await runtime.start(light.id)
        await asyncio.sleep(0.5)  # both running before we measure
        h0, l0 = runtime.stats(heavy.id).cpu_usage_ns, runtime.stats(light.id).cpu_usage_ns
        await asyncio.sleep(3)
        h1, l1 = runtime.stats(heavy.id).cpu_usage_ns, runtime.stats(light.id).cpu_usage_ns
    finally:
        await runtime.remove(heavy.id, force=True)
        await runtime.remove(light.id, force=True)
    ratio = (h1 - h0) / (l1 - l0)
    assert 1.6 <= ratio <= 2.4, f"cpu time ratio {ratio:.2f} ({h1 - h0} ns vs {l1 - l0} ns)"


async def test_read_only_rootfs_and_sized_tmp(runtime: Runtime, busybox_layer: Path) -> None:
    r = await run(
        runtime, busybox_layer, "sh", "-c",
        "touch /x 2>&1; echo ok > /tmp/f && cat /tmp/f; "
        "dd if=/dev/zero of=/tmp/big bs=1M count=20 2>&1; echo rc=$?; du -k /tmp/big",
        read_only=True, tmpfs={"/tmp": 8 << 20},
    )  # fmt: skip
    lines = r.out.splitlines()
    assert "Read-only file system" in lines[0]
    assert lines[1] == "ok"
    assert "No space left on device" in r.out
    assert "rc=1" in r.out
    assert int(r.out.split()[-2]) <= 8 * 1024  # du -k: at most the 8 MiB of the tmpfs


async def test_user_capabilities_and_no_new_privs(runtime: Runtime, busybox_layer: Path) -> None:
    script = "id -u; id -g; grep -E '^(Cap|NoNewPrivs)' /proc/self/status"
    r = await run(runtime, busybox_layer, "sh", "-c", script, user="1000:1000")
    ids, fields = r.out.splitlines()[:2], r.out.splitlines()[2:]
    assert ids == ["1000", "1000"]
    lines = dict(line.split(":\t") for line in fields)
    assert lines["NoNewPrivs"] == "1"
    # CAP_AUDIT_WRITE (29), CAP_KILL (5), CAP_NET_BIND_SERVICE (10); a non-root user keeps
    # them only in the bounding set.
    assert lines["CapBnd"] == f"{(1 << 29) | (1 << 5) | (1 << 10):016x}"
    assert lines["CapEff"] == "0" * 16
    root = await run(runtime, busybox_layer, "grep", "CapEff", "/proc/self/status")
    assert root.out.split()[1] == f"{(1 << 29) | (1 << 5) | (1 << 10):016x}"


async def test_named_user_resolved_from_image(runtime: Runtime, busybox_layer: Path) -> None:
    r = await run(runtime, busybox_layer, "id", user="nobody")
    assert r.out.startswith("uid=65534(nobody) gid=65534(nobody)")


async def test_fork_bomb_stops_at_pids_limit(runtime: Runtime, busybox_layer: Path) -> None:
    rec = await runtime.create(
        BUSYBOX, [busybox_layer],
        RunOptions(command=("sh", "-c", "b() { b & b & wait; }; b"), pids_limit=64),
    )  # fmt: skip
    await runtime.start(rec.id)
    try:
        seen = []
        for _ in range(200):
            stats = runtime.stats(rec.id)
            seen.append(stats.pids)
            if stats.pids_refused > 0:
                break
            await asyncio.sleep(0.01)
        assert runtime.stats(rec.id).pids_refused > 0, "the bomb never reached the limit"
        assert max(seen) <= 64, seen
        # The host still forks.
        assert subprocess.run(["true"], check=False).returncode == 0
    finally:
        await runtime.remove(rec.id, force=True)


async def test_ulimits_apply(runtime: Runtime, busybox_layer: Path) -> None:
    from runtime.spec import Ulimit

    r = await run(runtime, busybox_layer, "sh", "-c", "ulimit -n; ulimit -Hn",
                  ulimits=(Ulimit("nofile", 256, 512),))  # fmt: skip
    assert r.out.split() == ["256", "512"]
