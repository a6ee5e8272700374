"""Docker's JSON progress streams (build, pull, push): a node command's lines to the
client as they come.

A command that fails before its first line answers with its own status (a bad tag,
an image that cannot be made: a 4xx), after it with a line carrying ``error``, which
is where the docker CLI looks for it, as dockerd does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from starlette.responses import Response, StreamingResponse

from gateway.http import ApiError

# What a command's task puts for the client: a line, a failure, or None when done.
Lines = asyncio.Queue[bytes | ApiError | None]


def error_line(message: str) -> bytes:
    return json.dumps({"error": message, "errorDetail": {"message": message}}).encode() + b"\n"


async def progress_response(lines: Lines, task: asyncio.Task[None]) -> Response:
    """What ``task`` puts on ``lines``, streamed; a client that goes away stops the wait
    (the node finishes the command on its own)."""
    first = await lines.get()
    if isinstance(first, ApiError):
        await task
        raise first

    async def body() -> AsyncIterator[bytes]:
        line: bytes | ApiError | None = first
        try:
            while line is not None:
                yield error_line(line.message) if isinstance(line, ApiError) else line
                line = await lines.get()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return StreamingResponse(body(), media_type="application/json")
