"""Create, start, wait and remove real containers on runc."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from runtime.engine import Runtime
from runtime.errors import Conflict, RuncError
from runtime.runc import init_waits
from runtime.spec import RunOptions
from tests.conftest import opened_runtime, runtime_config_for
from tests.runtime.helpers import BUSYBOX, run


async def test_output_exit_code_and_nothing_left(runtime: Runtime, busybox_layer: Path) -> None:
    r = await run(runtime, busybox_layer, "sh", "-c", "echo hi; echo oops >&2; exit 3")
    assert (r.code, r.out, r.err) == (3, "hi\n", "oops\n")
    assert str(r.status) == "exit code 3"
    assert runtime.store.all() == []


async def test_logs_have_timestamps_and_survive_exit(runtime: Runtime, busybox_layer: Path) -> None:
    rec = await runtime.create(
        BUSYBOX, [busybox_layer], RunOptions(command=("sh", "-c", "echo a; sleep 0.2; echo b"))
    )
    await runtime.start(rec.id)
    await runtime.wait(rec.id)
    lines = runtime.logs(rec.id)
    assert [ln.text for ln in lines] == ["a", "b"]
    assert (lines[1].time - lines[0].time).total_seconds() >= 0.15
    assert runtime.get(rec.id).status == "exited"
    assert runtime.logs(rec.id, tail=1)[0].text == "b"
    await runtime.remove(rec.id)


async def test_killed_container_reports_signal(runtime: Runtime, busybox_layer: Path) -> None:
    rec = await runtime.create(BUSYBOX, [busybox_layer], RunOptions(command=("sleep", "30")))
    await runtime.start(rec.id)
    with pytest.raises(Conflict, match="stop it first"):
        await runtime.remove(rec.id)
    status = await runtime.stop(rec.id, timeout=5)
    # tini forwards SIGTERM to sleep, which dies of it.
    assert status.signal == 15, status
    await runtime.remove(rec.id)


async def test_exec_in_running_container(runtime: Runtime, busybox_layer: Path) -> None:
    rec = await runtime.create(
        BUSYBOX, [busybox_layer], RunOptions(command=("sleep", "30"), hostname="box1")
    )
    await runtime.start(rec.id)
    code, out, _ = await runtime.exec(rec.id, ["cat", "/etc/hostname"])
    assert (code, out) == (0, b"box1\n")
    code, out, _ = await runtime.exec(rec.id, ["sh", "-c", "cat; exit 4"], stdin=b"piped")
    assert (code, out) == (4, b"piped")
    await runtime.remove(rec.id, force=True)


async def test_pause_and_resume(runtime: Runtime, busybox_layer: Path) -> None:
    rec = await runtime.create(BUSYBOX, [busybox_layer], RunOptions(command=("sleep", "30")))
    await runtime.start(rec.id)
    await runtime.pause(rec.id)
    assert runtime.get(rec.id).status == "paused"
    await runtime.resume(rec.id)
    assert runtime.get(rec.id).status == "running"
    await runtime.remove(rec.id, force=True)


ORPHANS = "(sh -c 'sleep 0.1 & exec sleep 0.3' &); exec sleep 5"


async def zombies(rt: Runtime, layer: Path, init: bool) -> int:
    """Orphans re-parented to a main process (sleep) that never waits for children."""
    rec = await rt.create(BUSYBOX, [layer], RunOptions(command=("sh", "-c", ORPHANS), init=init))
    await rt.start(rec.id)
    await asyncio.sleep(1)
    _, out, _ = await rt.exec(rec.id, ["ps", "-o", "stat"])
    await rt.remove(rec.id, force=True)
    return sum(1 for line in out.decode().splitlines() if line.startswith("Z"))


async def test_init_reaps_zombies(runtime: Runtime, busybox_layer: Path) -> None:
    assert await zombies(runtime, busybox_layer, init=False) == 2  # the test can tell
    assert await zombies(runtime, busybox_layer, init=True) == 0


async def test_pipes_mode_holds_stdio(runtime: Runtime, busybox_layer: Path) -> None:
    import os

    from runtime.engine import Stdio

    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    rec = await runtime.create(
        BUSYBOX, [busybox_layer], RunOptions(command=("sh", "-c", "wc -c; exit 5")),
        stdio="pipes", pipes=Stdio(stdin=in_r, stdout=out_w),
    )  # fmt: skip
    os.close(in_r)
    os.close(out_w)
    await runtime.start(rec.id)
    os.write(in_w, b"hello")
    os.close(in_w)
    out = await asyncio.to_thread(os.read, out_r, 100)
    os.close(out_r)
    assert out.strip() == b"5"
    assert (await runtime.wait(rec.id)).code == 5
    await runtime.remove(rec.id)


async def test_run_to_completion_in_one_runc(runtime: Runtime, busybox_layer: Path) -> None:
    import os

    from runtime.engine import Stdio

    out_r, out_w = os.pipe()
    record, status = await runtime.run(
        BUSYBOX, [busybox_layer], RunOptions(command=("sh", "-c", "echo once; exit 2")),
        pipes=Stdio(stdout=out_w),
    )  # fmt: skip
    os.close(out_w)
    assert os.read(out_r, 100) == b"once\n"
    os.close(out_r)
    assert status.code == 2 and "run" in record.phases
    assert runtime.store.ids() == set()

    _, oom = await runtime.run(
        BUSYBOX, [busybox_layer],
        RunOptions(command=("dd", "if=/dev/zero", "of=/dev/null", "bs=64M"), memory=32 << 20),
    )  # fmt: skip
    assert oom.oom_killed


async def test_names_are_unique_and_released(runtime: Runtime, busybox_layer: Path) -> None:
    first = await runtime.create(BUSYBOX, [busybox_layer], RunOptions(name="web"))
    with pytest.raises(Conflict, match=f"'web' is already in use by container {first.id[:12]}"):
        await runtime.create(BUSYBOX, [busybox_layer], RunOptions(name="web"))
    assert runtime.get("web").id == first.id
    assert runtime.get(first.id[:8]).id == first.id
    await runtime.remove("web")
    again = await runtime.create(BUSYBOX, [busybox_layer], RunOptions(name="web"))
    await runtime.remove(again.id)


async def test_start_runs_no_runc_and_runc_sees_it_running(
    scow_dirs: tuple[Path, Path], test_bridge: str, busybox_layer: Path, tmp_path: Path
) -> None:
    """Every runc the runtime runs goes through a wrapper that writes down its arguments."""
    calls = tmp_path / "runc-calls"
    wrapper = tmp_path / "runc"
    real = shutil.which("runc")
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    async with opened_runtime(runtime_config_for(*scow_dirs, runc=str(wrapper))) as runtime:
        rec = await runtime.create(BUSYBOX, [busybox_layer], RunOptions(command=("sleep", "30")))
        fifo = runtime.runc.root / rec.id / "exec.fifo"
        assert fifo.exists()
        # Its init is told from any other process that could hold its pid later.
        assert init_waits(rec.pid) and not init_waits(os.getpid())
        assert (await runtime.runc.state(rec.id) or {})["status"] == "created"
        before = calls.read_text().splitlines()
        await runtime.start(rec.id)
        started = calls.read_text().splitlines()[len(before) :]
        assert not [c for c in started if " start " in f" {c} "], started  # the fifo, read by us
        assert any(" create " in f" {c} " for c in before), before  # the wrapper saw runc's create
        assert not fifo.exists()
        assert (await runtime.runc.state(rec.id) or {})["status"] == "running"
        code, out, _ = await runtime.exec(rec.id, ["cat", "/proc/1/cmdline"])
        assert code == 0 and b"sleep" in out.replace(b"\0", b" "), out
        await runtime.remove(rec.id, force=True)


async def test_start_of_a_container_whose_init_died_fails(
    runtime: Runtime, busybox_layer: Path
) -> None:
    import os
    import signal

    rec = await runtime.create(BUSYBOX, [busybox_layer], RunOptions(command=("true",)))
    os.kill(rec.pid, signal.SIGKILL)  # the init, waiting on the exec fifo
    with pytest.raises(RuncError, match="already dead"):
        await asyncio.wait_for(runtime.start(rec.id), 5)
    await runtime.remove(rec.id, force=True)
    assert runtime.store.ids() == set()
