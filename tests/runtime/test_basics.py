"""Create, start, wait and remove real containers on runc."""

from __future__ import annotations

from pathlib import Path

from runtime.engine import Runtime
from runtime.spec import ImageConfig, RunOptions

BUSYBOX = ImageConfig(cmd=("sh",))


async def run(rt: Runtime, layer: Path, *cmd: str, **opts: object) -> tuple[int, str, str]:
    """Run to completion; exit code, stdout and stderr from the container's log."""
    rec = await rt.create(BUSYBOX, [layer], RunOptions(command=cmd, **opts))  # type: ignore[arg-type]
    await rt.start(rec.id)
    status = await rt.wait(rec.id)
    lines = rt.logs(rec.id)
    await rt.remove(rec.id)
    out = "".join(ln.text + "\n" for ln in lines if ln.stream == "stdout")
    err = "".join(ln.text + "\n" for ln in lines if ln.stream == "stderr")
    return status.code, out, err


async def test_echo_and_exit_code(runtime: Runtime, busybox_layer: Path) -> None:
    code, out, err = await run(runtime, busybox_layer, "sh", "-c", "echo hi; echo oops >&2; exit 3")
    assert (code, out, err) == (3, "hi\n", "oops\n")
    assert runtime.store.all() == []
