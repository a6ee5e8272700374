"""A container's files, reached from the host: ``docker cp`` in both directions.

A container path is resolved the way the kernel would inside the container, but
walked on the host: each symlink is read and followed against the container's
root (an absolute link means the container's ``/``, never the host's), ``..``
stops at that root, and a path under a volume or bind mount maps to the mount's
host directory. So no link the container made can lead a copy out of it, and
the last component of a written path is never followed (it is replaced).

Only what the host can see is reachable: the rootfs and the container's
volumes. A tmpfs lives in the container's mount namespace alone.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from runtime.errors import ContainerError, InvalidOption, NotFound

MAX_LINKS = 40  # as the kernel's ELOOP limit
DEFAULT_MAX_BYTES = 4 << 30


class UnsafeCopy(ContainerError):
    def __init__(self, member: str, reason: str) -> None:
        self.member, self.reason = member, reason
        super().__init__(f"refusing archive member {member!r}: {reason}")


@dataclass(frozen=True)
class ContainerFS:
    """Where a container's paths live on the host: its rootfs plus mounts (container path,
    host path), and paths that the host cannot see (tmpfs)."""

    rootfs: Path
    mounts: Sequence[tuple[str, Path]] = ()
    hidden: Sequence[str] = ()

    def host_path(self, path: PurePosixPath) -> Path:
        """The host path of an already resolved container path."""
        best: tuple[str, Path] | None = None
        for target, source in (*self.mounts, *((h, Path()) for h in self.hidden)):
            if _under(path, target) and (best is None or len(target) > len(best[0])):
                best = (target, source)
        if best is None:
            return self.rootfs / str(path).lstrip("/")
        target, source = best
        if target in self.hidden:
            raise InvalidOption("path", str(path), f"it is on the tmpfs at {target}")
        rest = str(path)[len(target) :].lstrip("/")
        return source / rest if rest else source

    def resolve(self, path: str, *, follow_last: bool = True) -> PurePosixPath:
        """``path`` (absolute, in the container) with every symlink followed inside the
        container; the last component too unless ``follow_last`` is false."""
        if not path.startswith("/"):
            raise InvalidOption("path", path, "a container path must be absolute")
        todo = [p for p in PurePosixPath(path).parts[1:] if p not in ("", ".")]
        todo.reverse()
        current = PurePosixPath("/")
        links = 0
        while todo:
            part = todo.pop()
            if part == "..":
                current = current.parent
                continue
            candidate = current / part
            if not todo and not follow_last:
                return candidate
            host = self.host_path(candidate)
            if not host.is_symlink():
                current = candidate
                continue
            links += 1
            if links > MAX_LINKS:
                raise InvalidOption("path", path, "too many levels of symbolic links")
            target = os.readlink(host)
            if target.startswith("/"):
                current = PurePosixPath("/")
            rest = [p for p in PurePosixPath(target).parts if p not in ("/", "", ".")]
            todo.extend(reversed(rest))
        return current


def _under(path: PurePosixPath, target: str) -> bool:
    return path == PurePosixPath(target) or PurePosixPath(target) in path.parents


def go_file_mode(st: os.stat_result) -> int:
    """The mode as Go's os.FileMode encodes it (what the docker CLI decodes)."""
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        mode |= 1 << 31
    elif stat.S_ISLNK(st.st_mode):
        mode |= 1 << 27
    return mode


def path_stat(fs: ContainerFS, path: str) -> dict[str, object]:
    """Docker's container path stat: name, size, mode, mtime and link target."""
    resolved = fs.resolve(path, follow_last=False)
    host = fs.host_path(resolved)
    try:
        st = os.lstat(host)
    except FileNotFoundError:
        raise NotFound("path", path) from None
    link = ""
    if stat.S_ISLNK(st.st_mode):
        link = str(fs.resolve(path))
    mtime = datetime.fromtimestamp(st.st_mtime, UTC).isoformat().replace("+00:00", "Z")
    name = PurePosixPath(path).name or "/"
    return {"name": name, "size": st.st_size, "mode": go_file_mode(st), "mtime": mtime,
            "linkTarget": link}  # fmt: skip


def write_tar(fs: ContainerFS, path: str, out: BinaryIO) -> None:
    """A tar of ``path`` (a file, link or whole directory), named by its last component
    as ``docker cp`` expects. Links inside are archived as links, never followed."""
    resolved = fs.resolve(path, follow_last=False)
    host = fs.host_path(resolved)
    if not os.path.lexists(host):
        raise NotFound("path", path)
    arcname = PurePosixPath(path.rstrip("/")).name or "."
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.add(host, arcname=arcname, recursive=True)


def _members(tar: tarfile.TarFile, max_bytes: int) -> Iterator[tuple[tarfile.TarInfo, str]]:
    total = 0
    for info in tar:
        name = info.name
        parts = [p for p in PurePosixPath(name).parts if p not in ("/", "", ".")]
        if ".." in parts:
            raise UnsafeCopy(name, "its path leads outside the target ('..')")
        if info.ischr() or info.isblk() or info.isfifo():
            raise UnsafeCopy(name, "device nodes and fifos cannot be copied in")
        if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
            raise UnsafeCopy(name, f"unsupported member type {info.type!r}")
        total += info.size
        if total > max_bytes:
            raise UnsafeCopy(name, f"the archive expands past {max_bytes} bytes")
        yield info, "/".join(parts)


def extract_tar(
    fs: ContainerFS, dest: str, archive: BinaryIO, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[str]:
    """Unpack a tar into the container directory ``dest``; the container paths written.

    Each member's parent is resolved inside the container, so a symlink (the
    container's own, or one made by an earlier member) cannot carry a write out.
    """
    base = fs.resolve(dest)
    if not fs.host_path(base).is_dir():
        raise InvalidOption("path", dest, "the destination is not a directory in the container")
    written: list[str] = []
    try:
        tar = tarfile.open(fileobj=archive, mode="r|*")  # noqa: SIM115 (closed below)
    except tarfile.TarError as exc:
        raise UnsafeCopy("?", f"not a readable tar archive: {exc}") from None
    with tar:
        try:
            for info, rel in _members(tar, max_bytes):
                if not rel:
                    continue
                where = PurePosixPath(base) / rel
                parent = fs.resolve(str(where.parent))
                host_parent = fs.host_path(parent)
                if not host_parent.is_dir():
                    raise UnsafeCopy(info.name, f"{where.parent} is not a directory")
                host = host_parent / where.name
                _write_member(tar, info, host, fs, base)
                written.append(str(parent / where.name))
        except tarfile.TarError as exc:
            raise UnsafeCopy("?", f"the archive is damaged: {exc}") from None
    return written


def _write_member(
    tar: tarfile.TarFile, info: tarfile.TarInfo, host: Path, fs: ContainerFS, base: PurePosixPath
) -> None:
    exists_as_dir = host.is_dir() and not host.is_symlink()
    if info.isdir():
        if not exists_as_dir:
            _remove(host)
            host.mkdir(mode=0o700)
        os.chmod(host, stat.S_IMODE(info.mode))
    else:
        if exists_as_dir:
            raise UnsafeCopy(info.name, "it would replace a directory with a file")
        _remove(host)
        if info.issym():
            os.symlink(info.linkname, host)
        elif info.islnk():
            linked = fs.resolve(str(base / info.linkname.lstrip("/")), follow_last=False)
            source = fs.host_path(linked)
            if source.is_symlink() or not source.is_file():
                raise UnsafeCopy(info.name, f"a hardlink to {info.linkname}, not a file")
            os.link(source, host)
            return
        else:
            extracted = tar.extractfile(info)
            assert extracted is not None
            fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                while chunk := extracted.read(1 << 20):
                    f.write(chunk)
            os.chmod(host, stat.S_IMODE(info.mode))
    os.lchown(host, info.uid, info.gid)
    if not info.issym():
        os.utime(host, (info.mtime, info.mtime))


def _remove(host: Path) -> None:
    if host.is_symlink() or host.exists():
        host.unlink()
