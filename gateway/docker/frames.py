"""Docker's multiplexed stream: each frame is [stream, 0, 0, 0, size (big-endian)], data.

A node sends a command's output in scow's words: bytes tagged with the stream they
came from (``stdout``, ``stderr``), or a container's log lines as JSON lines
(``log``). These become Docker's frames here, its timestamps too. A terminal's
output (``tty``, and its log, ``tty-log``) is one stream and goes as it is: Docker
sends no frames for a container or exec with a TTY.
"""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime

STDOUT, STDERR = 1, 2
STREAMS = {"stdout": STDOUT, "stderr": STDERR}


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(data)) + data


def log_frames(
    lines: bytes, *, stdout: bool, stderr: bool, timestamps: bool, tty: bool = False
) -> bytes:
    """Frames of a batch of log lines (``{"stream", "time", "text"}`` JSON lines); a
    terminal's lines as the terminal showed them, without frames."""
    out = []
    for raw in lines.splitlines():
        if not raw:
            continue
        line = json.loads(raw)
        kind = STREAMS.get(line["stream"], STDOUT)
        if (kind == STDOUT and not stdout) or (kind == STDERR and not stderr):
            continue
        text = line["text"] + ("\r\n" if tty else "\n")
        if timestamps:
            when = datetime.fromisoformat(line["time"]).astimezone(UTC)
            text = f"{when.strftime('%Y-%m-%dT%H:%M:%S.%fZ')} {text}"
        out.append(text.encode() if tty else frame(kind, text.encode()))
    return b"".join(out)


def framed(stream: str, data: bytes, options: dict[str, bool]) -> bytes:
    """What a chunk of a node's output is on Docker's stream."""
    if stream in ("log", "tty-log"):
        return log_frames(data, stdout=options.get("stdout", True),
                          stderr=options.get("stderr", True),
                          timestamps=options.get("timestamps", False),
                          tty=stream == "tty-log")  # fmt: skip
    if stream in STREAMS:
        return frame(STREAMS[stream], data)
    return data
