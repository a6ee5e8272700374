"""Docker's multiplexed streams as the CLI reads them: stdout frames to stdout, stderr
frames to stderr."""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from typing import Any

from gateway.client import ApiClient, error_of


def demux(chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
    """(stream, data) from Docker's multiplexed frames: 1 stdout, 2 stderr."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= 8:
            kind, size = struct.unpack(">BxxxI", buffer[:8])
            if len(buffer) < 8 + size:
                break
            yield kind, buffer[8 : 8 + size]
            buffer = buffer[8 + size :]


def write_frames(chunks: Iterator[bytes]) -> None:
    for kind, data in demux(chunks):
        out = sys.stderr.buffer if kind == 2 else sys.stdout.buffer
        out.write(data)
        out.flush()


def stream(api: ApiClient, method: str, path: str, **kw: Any) -> Iterator[bytes]:
    with api.stream(method, path, timeout=None, **kw) as response:
        if response.status_code >= 400:
            response.read()
            raise error_of(response)
        yield from response.iter_bytes()
