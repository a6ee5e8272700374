"""Docker's multiplexed stream: each frame is [stream, 0, 0, 0, size (big-endian)], data.

A node sends a command's output in scow's words: bytes tagged with the stream they
came from (``stdout``, ``stderr``), or a container's log lines as JSON lines
(``log``). These become Docker's frames here, its timestamps too.
"""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime

STDOUT, STDERR = 1, 2
STREAMS = {"stdout": STDOUT, "stderr": STDERR}


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(data)) + data


def log_frames(lines: bytes, *, stdout: bool, stderr: bool, timestamps: bool) -> bytes:
    """Frames of a batch of log lines (``{"stream", "time", "text"}`` JSON lines)."""
    out = []
    for raw in lines.splitlines():
        if not raw:
            continue
        line = json.loads(raw)
        kind = STREAMS.get(line["stream"], STDOUT)
        if (kind == STDOUT and not stdout) or (kind == STDERR and not stderr):
            continue
        text = line["text"] + "\n"
        if timestamps:
            when = datetime.fromisoformat(line["time"]).astimezone(UTC)
            text = f"{when.strftime('%Y-%m-%dT%H:%M:%S.%fZ')} {text}"
        out.append(frame(kind, text.encode()))
    return b"".join(out)


def framed(stream: str, data: bytes, options: dict[str, bool]) -> bytes:
    """What a chunk of a node's output is on Docker's stream."""
    if stream == "log":
        return log_frames(data, stdout=options.get("stdout", True),
                          stderr=options.get("stderr", True),
                          timestamps=options.get("timestamps", False))  # fmt: skip
    if stream in STREAMS:
        return frame(STREAMS[stream], data)
    return data
