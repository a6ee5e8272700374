"""Running busybox containers to completion in runtime tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.engine import Runtime
from runtime.monitor import ExitStatus
from runtime.spec import ImageConfig, RunOptions

BUSYBOX = ImageConfig(cmd=("sh",))


@dataclass(frozen=True)
class Result:
    status: ExitStatus
    out: str
    err: str

    @property
    def code(self) -> int:
        return self.status.code


async def run(rt: Runtime, layer: Path, *cmd: str, **opts: Any) -> Result:
    """Create, start, wait and remove one container; its status and logs."""
    rec = await rt.create(BUSYBOX, [layer], RunOptions(command=cmd, **opts))
    try:
        await rt.start(rec.id)
        status = await rt.wait(rec.id)
        lines = rt.logs(rec.id)
    finally:
        await rt.remove(rec.id, force=True)
    out = "".join(ln.text + "\n" for ln in lines if ln.stream == "stdout")
    err = "".join(ln.text + "\n" for ln in lines if ln.stream == "stderr")
    return Result(status, out, err)
