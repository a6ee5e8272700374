"""Container logs as conmon writes them (the CRI "k8s-file" format), read back.

One line per chunk of output: ``<RFC 3339 nano time> <stdout|stderr> <F|P> <text>``,
where ``P`` marks a partial line continued by the next entry of the same stream.
The file is appended while the container runs and stays after it exits.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

READ_MAX = 32 << 20  # what one read of a log takes, at most (the rest comes next time)


@dataclass(frozen=True)
class LogLine:
    time: datetime
    stream: str  # "stdout" or "stderr"
    text: str  # without the trailing newline

    @property
    def timestamp(self) -> str:
        return self.time.isoformat()


def _parse_time(text: str) -> datetime:
    # Python parses at most microseconds: drop the extra nanosecond digits.
    head, dot, rest = text.partition(".")
    if dot:
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
        text = f"{head}.{digits[:6]}{rest[len(digits) :]}"
    return datetime.fromisoformat(text)


def parse(lines: Iterable[str]) -> Iterator[LogLine]:
    partial: dict[str, tuple[datetime, str]] = {}
    for raw in lines:
        parts = raw.rstrip("\n").split(" ", 3)
        if len(parts) < 3:
            continue
        stamp, stream, tag = parts[:3]
        text = parts[3] if len(parts) > 3 else ""
        try:
            when = _parse_time(stamp)
        except ValueError:
            continue
        if tag == "P":
            first, acc = partial.get(stream, (when, ""))
            partial[stream] = (first, acc + text)
            continue
        if stream in partial:
            first, acc = partial.pop(stream)
            when, text = first, acc + text
        yield LogLine(when, stream, text)
    for stream, (when, text) in partial.items():
        yield LogLine(when, stream, text)


def read(
    path: Path,
    *,
    stdout: bool = True,
    stderr: bool = True,
    since: datetime | None = None,
    tail: int | None = None,
) -> list[LogLine]:
    try:
        with open(path, errors="replace") as f:
            lines = list(parse(f))
    except FileNotFoundError:
        return []
    wanted = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
    out = [ln for ln in lines if ln.stream in wanted and (since is None or ln.time >= since)]
    return out[-tail:] if tail is not None and tail >= 0 else out


def read_from(path: Path, offset: int) -> tuple[list[LogLine], int]:
    """Lines appended after byte ``offset`` (whole lines only), and the offset after them.

    A log shorter than ``offset`` was cut back at its size limit: it is read from its
    start again.
    """
    try:
        size = os.stat(path).st_size
        if size == offset:  # the common case, around every call: nothing new
            return [], offset
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size < offset:
                offset = 0
            f.seek(offset)
            data = f.read(READ_MAX)
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
    text = data[:end].decode(errors="replace")
    return list(parse(text.splitlines(keepends=True))), offset + end
