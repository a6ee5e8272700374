"""Layers: tar diffs with OCI whiteouts, unpacked into dirs with overlay whiteouts.

A layer travels as an uncompressed tar (its sha256 is the layer's diff_id) and
is used as an unpacked dir, an overlayfs lowerdir. The two mark deletions
differently, so packing and unpacking translate:

    OCI tar                         overlayfs dir
    .wh.NAME (empty file)           NAME as a 0:0 character device
    DIR/.wh..wh..opq                DIR with xattr trusted.overlay.opaque=y

Both directions go through runtime/tarfs.py in layer mode, so a layer is
unpacked as every archive from outside is (checked whole first, then written
without ever following a link) and a container's upperdir is packed as every
tree scow reads out of a container is (through fds, nothing followed).
"""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path
from typing import IO, BinaryIO

from runtime.rootdir import RootDir
from runtime.tarfs import Limits, Placement, extract_tar, read_tree, write_tar

DEFAULT_MAX_BYTES = Limits.max_bytes


class _Hashing(io.RawIOBase):
    """A write-through file that hashes what passes."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.hash.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)


def pack(src: Path, out: BinaryIO) -> tuple[str, int]:
    """Pack the dir ``src`` (overlay whiteouts) as an OCI layer tar; (sha256 hex, size)."""
    sink = _Hashing(out)
    with RootDir(src) as root:
        write_tar(read_tree(root, layer=True), sink, layer=True)  # type: ignore[arg-type]
    return sink.hash.hexdigest(), sink.size


def unpack(archive: Path | IO[bytes], dest: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Unpack a layer tar into ``dest`` (made if missing), whiteouts as overlay wants them.

    The whole archive is checked before anything is written; on any refusal
    ``dest`` is left as it was found (made empty, or removed if it was made here).
    """
    made = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    limits = Limits(max_bytes=max_bytes)
    try:
        with RootDir(dest) as root:
            if isinstance(archive, Path):
                with open(archive, "rb") as f:
                    extract_tar(f, root, limits=limits, placement=Placement(layer=True))
            else:
                extract_tar(archive, root, limits=limits, placement=Placement(layer=True))
    except BaseException:
        if made:
            shutil.rmtree(dest, ignore_errors=True)
        raise
