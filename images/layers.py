"""Layers: tar diffs with OCI whiteouts, unpacked into dirs with overlay whiteouts.

A layer travels as an uncompressed tar (its sha256 is the layer's diff_id) and
is used as an unpacked dir, an overlayfs lowerdir. The two mark deletions
differently, so packing and unpacking translate:

    OCI tar                         overlayfs dir
    .wh.NAME (empty file)           NAME as a 0:0 character device
    DIR/.wh..wh..opq                DIR with xattr trusted.overlay.opaque=y

Unpacking trusts nothing: a member name must be relative without ``..``, a
hardlink must point inside, no member may be written through a symlink the
archive made, device nodes are refused (runc provides /dev), and the total size
is capped (decompression bombs). Symlinks themselves, absolute ones included,
are kept as they are: they are never followed here, and inside a container they
resolve within its root. Errors name the member.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from images.errors import UnsafeArchive

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
DEFAULT_MAX_BYTES = 16 << 30


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


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _walk(root: Path) -> Iterator[Path]:
    """Every path below ``root``, parents before children, in a stable order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            yield base / name


def write_tar(src: Path, out: BinaryIO) -> tuple[str, int]:
    """Pack the dir ``src`` (overlay whiteouts) as an OCI layer tar; (sha256 hex, size)."""
    sink = _Hashing(out)
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for path in _walk(src):
            rel = str(path.relative_to(src))
            st = os.lstat(path)
            if _is_whiteout(st):
                parent, name = os.path.split(rel)
                info = tarfile.TarInfo(os.path.join(parent, WHITEOUT + name))
                info.mtime = int(st.st_mtime)
                tar.addfile(info)
                continue
            info = tar.gettarinfo(str(path), arcname=rel)
            info.uname = info.gname = ""  # ids only: names mean nothing across hosts
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
            if info.isdir() and _is_opaque(path):
                marker = tarfile.TarInfo(os.path.join(rel, OPAQUE))
                marker.mtime = int(st.st_mtime)
                tar.addfile(marker)
    return sink.hash.hexdigest(), sink.size


def _check_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute():
        # Docker strips a leading "/", so "/etc/x" means "etc/x"; "../" never is allowed.
        path = PurePosixPath(*path.parts[1:])
    if ".." in path.parts:
        raise UnsafeArchive(name, "its path leads outside the target ('..')")
    return path


def _validate(tar: tarfile.TarFile, max_bytes: int) -> list[tuple[tarfile.TarInfo, PurePosixPath]]:
    members = []
    symlinks: set[PurePosixPath] = set()
    total = 0
    for info in tar:
        path = _check_name(info.name)
        for parent in list(path.parents)[:-1]:
            if parent in symlinks:
                raise UnsafeArchive(info.name, f"it would be written through the symlink {parent}")
        if info.issym():
            symlinks.add(path)
        elif info.islnk():
            target = _check_name(info.linkname)
            if target in symlinks:
                raise UnsafeArchive(info.name, "a hardlink to a symlink")
        elif info.ischr() or info.isblk() or info.isfifo():
            raise UnsafeArchive(info.name, "device nodes and fifos are not allowed in layers")
        elif not (info.isreg() or info.isdir()):
            raise UnsafeArchive(info.name, f"unsupported member type {info.type!r}")
        total += info.size
        if total > max_bytes:
            raise UnsafeArchive(info.name, f"the archive expands past {max_bytes} bytes")
        members.append((info, path))
    return members


def unpack(archive: Path | BinaryIO, dest: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Unpack a layer tar into ``dest`` (made if missing), whiteouts as overlay wants them.

    Every member is checked before anything is written.
    """
    dest.mkdir(parents=True, exist_ok=True)
    name, fileobj = (archive, None) if isinstance(archive, Path) else (None, archive)
    with tarfile.open(name=name, fileobj=fileobj, mode="r:*") as tar:
        try:
            members = _validate(tar, max_bytes)
        except tarfile.TarError as exc:
            raise UnsafeArchive("?", f"not a readable tar archive: {exc}") from None
        whiteouts: list[PurePosixPath] = []
        opaque: list[PurePosixPath] = []
        regular = []
        for info, path in members:
            if path.name == OPAQUE:
                opaque.append(path.parent)
            elif path.name.startswith(WHITEOUT):
                whiteouts.append(path.parent / path.name[len(WHITEOUT) :])
            else:
                info.name = str(path)
                if info.islnk():
                    info.linkname = str(_check_name(info.linkname))
                regular.append(info)
        tar.extractall(dest, members=regular, numeric_owner=True, filter="fully_trusted")
    for path in whiteouts:
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir() and not target.is_symlink():
            raise UnsafeArchive(str(path), "a whiteout for a path the same layer adds")
        target.unlink(missing_ok=True)
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
    for path in opaque:
        (dest / path).mkdir(parents=True, exist_ok=True)
        os.setxattr(dest / path, OPAQUE_XATTR, b"y", follow_symlinks=False)


def find_in_layers(layers: list[Path], rel: str) -> Path | None:
    """Where ``rel`` is in the merged view of ``layers`` (top first), or None if absent.

    A whiteout or an opaque directory above hides what lies below. Symlinks in
    the path are not followed (resolving them would need the merged view).
    """
    rel = rel.strip("/")
    parts = PurePosixPath(rel).parts if rel else ()
    for layer in layers:
        candidate = layer / rel if rel else layer
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            # An opaque ancestor in this layer hides the path in every layer below.
            if any(_is_opaque(layer.joinpath(*parts[:i])) for i in range(1, len(parts))):
                return None
            continue
        return None if _is_whiteout(st) else candidate
    return None
