"""Trees in and out of tar archives, on RootDirs: the one archive reader and writer.

Every archive scow takes from outside is written by ``extract``: layers (pulled,
loaded, imported, built), build contexts, ADD's local tars, ``docker cp`` into a
container. Every tree scow reads out of a container or an image is read by
``read_tree``: ``docker cp`` out, a container's diff packed as a layer, COPY's
sources, a new volume's seed. Both stand on rootdir.py.

- ``tar_members`` reads an archive (plain, gzip, bzip2 or xz) as a stream of
  ``Member``s, each checked once (``Member.checked``): a relative name without
  ``..`` (a leading ``/`` means the root, as in Docker), components a file system
  takes, a type scow takes. Caps: the bytes all members declare, the number of
  members, the size of one header (a PAX header is read whole into memory), so
  a decompression bomb is refused before it fills a disk or the node's memory.
- ``extract`` never writes through a link. A member's parent directories are
  opened (or made) one component at a time without following symlinks: a
  symlink on the way refuses the member. The member itself replaces what was
  there (unlinked, never followed) and is created ``O_EXCL|O_NOFOLLOW``; a
  member that would replace a symlink the same archive made is refused, since
  that is how an archive tries to write through its own link. A hardlink's
  target must be a file reached the same way. Device nodes and fifos are
  refused. Files are written as sparse as they came (zero runs become holes),
  0600 until their owner and mode are set, so a setuid file is never half-made.
- ``read_tree`` walks a tree through fds (``O_NOFOLLOW`` at every step), yields
  symlinks as symlinks and files already seen as hardlinks, and opens a file
  only after checking it is still the one it stat'ed.

Layer mode translates OCI whiteouts (``.wh.NAME``, ``.wh..wh..opq``) to
overlayfs ones (a 0:0 character device, the ``trusted.overlay.opaque`` xattr)
and back. No other xattr from an archive is ever applied.

Longer than a module here usually is (~400 lines): it is the one place archives
are checked, and a review of that check should read it whole, not across files.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import IO, Any, BinaryIO, Literal

from runtime.errors import ContainerError
from runtime.rootdir import (
    NAME_MAX,
    PATH_MAX,
    RootDir,
    UnsafePath,
    clean,
    components,
    is_symlink,
    names,
)

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
CHUNK = 1 << 20
MAX_DEPTH = 512  # directories below a tree's top that read_tree follows
_O_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Kind = Literal["file", "dir", "symlink", "hardlink", "chr", "blk", "fifo", "whiteout", "opaque"]


class UnsafeArchive(ContainerError):
    """An archive member scow will not write (or an archive it cannot read): which one
    and why. Callers answer it with a 4xx."""

    def __init__(self, member: str, reason: str) -> None:
        self.member, self.reason = member, reason
        shown = member if len(member) <= 200 else member[:200] + "..."
        super().__init__(f"refusing archive member {shown!r}: {reason}")


@dataclass(frozen=True)
class Limits:
    """What one archive may make."""

    max_bytes: int = 16 << 30  # all members' data, as declared
    max_members: int = 1 << 20
    max_header: int = 1 << 20  # one PAX or GNU long-name header


@dataclass(frozen=True)
class Member:
    """One entry of a tree in transit. ``name`` is relative (``a/b``; ``""`` is the top)."""

    name: str
    kind: Kind
    mode: int = 0o644  # permission bits, setuid and sticky included
    uid: int = 0
    gid: int = 0
    mtime: float = 0.0
    size: int = 0
    linkname: str = ""  # a symlink's target as written; a hardlink's member name
    opaque: bool = False  # layer mode: a directory that hides what lower layers have there
    open: Callable[[], IO[bytes]] | None = field(default=None, compare=False, repr=False)

    def checked(self, original: str | None = None) -> Member:
        """This member with its name cleaned, or UnsafeArchive naming it."""
        shown = original if original is not None else self.name
        name = _relative(shown, self.name)
        linkname = self.linkname
        if self.kind == "hardlink":
            linkname = _relative(shown, linkname, what="its hardlink target")
            if not linkname:
                raise UnsafeArchive(shown, "a hardlink to the archive's top")
        if self.kind == "symlink" and ("\0" in linkname or len(linkname) > PATH_MAX):
            raise UnsafeArchive(shown, "its symlink target is not a path")
        if self.kind in ("chr", "blk", "fifo"):
            raise UnsafeArchive(shown, "device nodes and fifos are not allowed")
        if self.size < 0:
            raise UnsafeArchive(shown, "a negative size")
        return replace(self, name=name, linkname=linkname, mode=stat.S_IMODE(self.mode))


def _relative(shown: str, name: str, what: str = "its path") -> str:
    if "\0" in name:
        raise UnsafeArchive(shown, f"{what} contains a NUL byte")
    if len(name.encode(errors="surrogateescape")) > PATH_MAX:
        raise UnsafeArchive(shown, f"{what} is longer than {PATH_MAX} bytes")
    parts = components(name)  # a leading "/" means the archive's top, as in Docker
    if ".." in parts:
        raise UnsafeArchive(shown, f"{what} leads outside the target ('..')")
    for part in parts:
        if len(part.encode(errors="surrogateescape")) > NAME_MAX:
            raise UnsafeArchive(shown, f"{what} has a component longer than {NAME_MAX} bytes")
    return "/".join(parts)


# -- archives in ----------------------------------------------------------------------


class _GuardedTarInfo(tarfile.TarInfo):
    """tarfile reads a PAX or GNU long-name header into memory whole, and follows a run of
    them by recursion: refuse big ones before they are read."""

    max_header = Limits.max_header

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        special = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                   tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)  # fmt: skip
        if self.type in special and self.size > self.max_header:
            raise UnsafeArchive(self.name, f"a header of {self.size} bytes (the limit is "
                                f"{self.max_header})")  # fmt: skip
        return super()._proc_member(tarfile_)  # type: ignore[misc]

    def _proc_gnusparse_10(self, next_: Any, pax_headers: Any, tarfile_: Any) -> Any:
        blocks = str(pax_headers.get("GNU.sparse.numblocks", "0"))
        if not blocks.isdigit() or int(blocks) > 1 << 20:
            raise UnsafeArchive(self.name, f"a sparse map of {blocks[:20]} blocks")
        return super()._proc_gnusparse_10(next_, pax_headers, tarfile_)  # type: ignore[misc]


_KINDS: dict[bytes, Kind] = {
    tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
    tarfile.GNUTYPE_SPARSE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "chr", tarfile.BLKTYPE: "blk",
    tarfile.FIFOTYPE: "fifo",
}  # fmt: skip


def tar_members(
    fileobj: IO[bytes], *, limits: Limits = Limits(), layer: bool = False, stream: bool = True
) -> Iterator[Member]:
    """The members of a tar (compressed or not), checked, in order.

    Each member's ``open()`` must be read before the next member is asked for (it
    is a stream). ``stream=False`` seeks over data instead of reading it (a file
    checked before it is extracted). In layer mode ``.wh.`` names become whiteout
    and opaque members.
    """
    guarded = type("_Limited", (_GuardedTarInfo,), {"max_header": limits.max_header})
    try:
        tar = tarfile.open(fileobj=fileobj, mode="r|*" if stream else "r:*",  # noqa: SIM115
                           tarinfo=guarded)  # fmt: skip
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise UnsafeArchive("?", f"not a readable tar archive: {exc}") from None
    total = count = 0
    with tar:
        while True:
            try:
                info = tar.next()
            except UnsafeArchive:
                raise
            except (tarfile.TarError, EOFError, OSError, ValueError, RecursionError) as exc:
                raise UnsafeArchive("?", f"the archive is damaged: {exc!r}"[:300]) from None
            if info is None:
                return
            tar.members = []  # type: ignore[attr-defined]  # a stream: would grow without bound
            count += 1
            if count > limits.max_members:
                raise UnsafeArchive(info.name, f"more than {limits.max_members} members")
            kind = _KINDS.get(info.type)
            if kind is None:
                raise UnsafeArchive(info.name, f"unsupported member type {info.type!r}")
            if kind == "file":
                total += info.size
                if total > limits.max_bytes:
                    raise UnsafeArchive(info.name, f"the archive expands past "
                                        f"{limits.max_bytes} bytes")  # fmt: skip
            opener = (lambda i=info: _member_stream(tar, i)) if kind == "file" else None
            size = info.size if kind == "file" else 0
            member = Member(info.name, kind, info.mode, info.uid, info.gid, float(info.mtime),
                            size, info.linkname, False, opener)  # fmt: skip
            member = member.checked(info.name)
            if layer:
                member = _from_oci(member)
            yield member


def _member_stream(tar: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    f = tar.extractfile(info)
    if f is None:
        raise UnsafeArchive(info.name, "its data cannot be read")
    return f


def _from_oci(member: Member) -> Member:
    head, _, base = member.name.rpartition("/")
    if base == OPAQUE:
        return replace(member, name=head, kind="opaque", open=None, size=0)
    if base.startswith(WHITEOUT):
        target = base[len(WHITEOUT) :]
        if not target or target in (".", ".."):
            raise UnsafeArchive(member.name, "a whiteout for no name")
        return replace(member, name=f"{head}/{target}" if head else target, kind="whiteout",
                       open=None, size=0)  # fmt: skip
    return member


def decompressed(stream: IO[bytes]) -> IO[bytes]:
    """``stream`` decompressed when it is gzip, bzip2 or xz (sniffed, without needing a
    seekable stream): what an uncompressed layer's diff_id is taken over."""
    import bz2
    import gzip
    import lzma

    head = stream.read(6)
    whole = io.BufferedReader(_Prefixed(head, stream))  # type: ignore[arg-type]
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=whole)  # type: ignore[return-value]
    if head.startswith(b"BZh"):
        return bz2.BZ2File(whole)  # type: ignore[return-value]
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(whole)  # type: ignore[return-value]
    return whole  # type: ignore[return-value]


class _Prefixed(io.RawIOBase):
    """``head`` then the rest of ``src``."""

    def __init__(self, head: bytes, src: IO[bytes]) -> None:
        self.head, self.src = head, src

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.src.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


# -- extraction -----------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """How ``extract`` places members."""

    layer: bool = False  # whiteouts and opaque markers become overlayfs ones
    owner: tuple[int, int] | None = None  # COPY --chown: every member's uid and gid
    replace_dirs: bool = True  # a non-directory may replace a directory (docker cp: no)


class _Writer:
    def __init__(self, root: RootDir, base: str, placement: Placement) -> None:
        self.root, self.placement = root, placement
        self.base = clean(base)
        self._dirs: dict[str, int] = {}  # made or opened: rel path -> O_PATH fd
        self._made_links: set[str] = set()  # symlinks this archive made
        self._dir_meta: dict[str, Member] = {}
        self.written: list[str] = []

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def _forget_dirs(self) -> None:
        self.close()

    def dir_fd(self, rel: str, member: str, *, create: bool = True) -> int:
        """The O_PATH fd of the directory ``rel`` (below the base), made when missing;
        never through a symlink."""
        if rel in self._dirs:
            return self._dirs[rel]
        parts = components(rel)
        if parts:
            parent = self.dir_fd("/".join(parts[:-1]), member, create=create)
        else:
            fd = self.root.open(self.base, _O_DIR & ~os.O_NOFOLLOW, symlinks=False)
            self._dirs[rel] = fd
            return fd
        name = parts[-1]
        here = clean(f"{self.base}/{rel}")
        mount = self.root.mounts.get(here)
        if here in self.root.hidden:
            raise UnsafeArchive(member, f"{here} is on a file system the host cannot see")
        try:
            if mount is not None:
                fd = os.open(mount, _O_DIR & ~os.O_NOFOLLOW)
            else:
                fd = os.open(name, _O_DIR, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise UnsafeArchive(member, f"{rel} does not exist") from None
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=parent)
            fd = os.open(name, _O_DIR, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                linked = mount is None and is_symlink(name, parent)
                kind = "a symbolic link" if linked else "not a directory"
                raise UnsafeArchive(member, f"it would be written through {rel}, "
                                    f"which is {kind}") from None  # fmt: skip
            raise UnsafeArchive(member, f"{rel}: {exc.strerror}") from None
        self._dirs[rel] = fd
        return fd

    def place(self, m: Member) -> None:
        owner = self.placement.owner
        if owner is not None:
            m = replace(m, uid=owner[0], gid=owner[1])
        if m.kind == "opaque":
            fd = self.dir_fd(m.name, m.name)
            if self.placement.layer:
                with _readable_dir(fd) as rd:
                    os.setxattr(rd, OPAQUE_XATTR, b"y")
            return
        if not m.name:  # the top itself: only its metadata, when it is a directory
            if m.kind == "dir":
                self.dir_fd("", m.name)
                self._dir_meta[""] = m
                return
            raise UnsafeArchive(m.name or ".", "a non-directory as the archive's top")
        head, _, name = m.name.rpartition("/")
        parent = self.dir_fd(head, m.name)
        try:
            existing = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if m.kind == "dir":
            if existing is not None and stat.S_ISDIR(existing.st_mode):
                self._dir_meta[m.name] = m
                return
            if existing is not None:
                self._remove(parent, name, existing, m)
            os.mkdir(name, 0o700, dir_fd=parent)
            self._dir_meta[m.name] = m
            self.written.append(m.name)
            return
        if existing is not None:
            self._remove(parent, name, existing, m)
        if m.kind == "whiteout":
            if not self.placement.layer:
                raise UnsafeArchive(m.name, "a whiteout outside a layer")
            os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
        elif m.kind == "symlink":
            os.symlink(m.linkname, name, dir_fd=parent)
            self._made_links.add(m.name)
        elif m.kind == "hardlink":  # the inode keeps its own owner, mode and times
            self._hardlink(m, parent, name)
            self.written.append(m.name)
            return
        elif m.kind == "file":
            self._file(m, parent, name)
            self.written.append(m.name)
            return
        else:
            raise UnsafeArchive(m.name, f"unsupported member type {m.kind}")
        os.chown(name, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
        with contextlib.suppress(OSError):  # a whiteout's time is not worth failing for
            os.utime(name, (m.mtime, m.mtime), dir_fd=parent, follow_symlinks=False)
        self.written.append(m.name)

    def _remove(self, parent: int, name: str, existing: os.stat_result, m: Member) -> None:
        rel = f"{m.name}"
        if rel in self._made_links:
            raise UnsafeArchive(m.name, "it would replace a symlink the same archive made")
        if stat.S_ISDIR(existing.st_mode):
            if m.kind == "whiteout":
                raise UnsafeArchive(m.name, "a whiteout for a directory the same layer adds")
            if not self.placement.replace_dirs:
                raise UnsafeArchive(m.name, "it would replace a directory with a non-directory")
            shutil.rmtree(name, dir_fd=parent)  # fd-based: never follows a symlink
            self._forget_dirs()
            self._dir_meta = {k: v for k, v in self._dir_meta.items()
                              if k != rel and not k.startswith(rel + "/")}  # fmt: skip
        else:
            os.unlink(name, dir_fd=parent)

    def _hardlink(self, m: Member, parent: int, name: str) -> None:
        head, _, target = m.linkname.rpartition("/")
        source = self.dir_fd(head, m.name, create=False)
        try:
            st = os.stat(target, dir_fd=source, follow_symlinks=False)
        except FileNotFoundError:
            raise UnsafeArchive(m.name, f"a hardlink to {m.linkname}, which is not in the "
                                "archive") from None  # fmt: skip
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeArchive(m.name, f"a hardlink to {m.linkname}, which is not a file")
        os.link(target, name, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)

    def _file(self, m: Member, parent: int, name: str) -> None:
        free = os.statvfs(parent)
        if m.size > free.f_bavail * free.f_frsize:
            raise UnsafeArchive(m.name, f"{m.size} bytes, more than the disk has free")
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=parent)  # fmt: skip
        try:
            if m.open is not None and m.size:
                with m.open() as src:
                    _copy_sparse(src, fd, m)
            os.ftruncate(fd, m.size)  # a trailing hole, or a reader that ended short
            os.fchown(fd, m.uid, m.gid)  # before the mode: chown clears setuid
            os.fchmod(fd, m.mode)
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)

    def finish(self) -> None:
        """Directories' owners, modes and times, once nothing more is written in them
        (deepest first: setting a parent's time must come after its children)."""
        for rel in sorted(self._dir_meta, key=lambda r: -r.count("/") - (1 if r else 0)):
            m = self._dir_meta[rel]
            try:
                fd = self.dir_fd(rel, m.name or ".", create=False)
            except UnsafeArchive:
                continue  # replaced since by a later member
            with _readable_dir(fd) as rd:
                os.fchown(rd, m.uid, m.gid)
                os.fchmod(rd, m.mode)
                os.utime(rd, (m.mtime, m.mtime))


@contextlib.contextmanager
def _readable_dir(path_fd: int) -> Iterator[int]:
    """An O_RDONLY fd of the same directory (metadata calls refuse O_PATH fds)."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=path_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _copy_sparse(src: IO[bytes], fd: int, m: Member) -> None:
    left = m.size
    while left > 0:
        chunk = src.read(min(CHUNK, left))
        if not chunk:
            raise UnsafeArchive(m.name, "its data ends early")
        left -= len(chunk)
        if _ZERO_BLOCK not in chunk:
            _write_all(fd, chunk)
            continue
        for i in range(0, len(chunk), len(_ZERO_BLOCK)):  # zero blocks become holes
            block = chunk[i : i + len(_ZERO_BLOCK)]
            if block.count(0) == len(block):
                os.lseek(fd, len(block), os.SEEK_CUR)
            else:
                _write_all(fd, block)


_ZERO_BLOCK = bytes(4096)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def extract(
    members: Iterable[Member], root: RootDir, dest: str = "/", *,
    placement: Placement = Placement(),
) -> list[str]:  # fmt: skip
    """Write ``members`` below ``dest`` (an in-root directory, every component a real
    directory) of ``root``; the member names written. See the module's docstring."""
    writer = _Writer(root, dest, placement)
    try:
        try:
            writer.dir_fd("", dest)
        except UnsafePath as exc:
            raise UnsafeArchive(dest, f"the destination: {exc.reason}") from None
        for member in members:
            try:
                writer.place(member)
            except UnsafePath as exc:
                raise UnsafeArchive(member.name, exc.reason) from None
            except OSError as exc:
                raise UnsafeArchive(member.name, exc.strerror or str(exc)) from None
        writer.finish()
    finally:
        writer.close()
    return writer.written


def extract_tar(
    fileobj: IO[bytes], root: RootDir, dest: str = "/", *, limits: Limits = Limits(),
    placement: Placement = Placement(),
) -> list[str]:  # fmt: skip
    """``extract`` of a tar (plain or compressed): what every archive from outside goes
    through. A seekable archive is read whole first, so that one over its caps (a
    decompression bomb) or with a member scow refuses writes nothing at all."""
    layer = placement.layer
    if fileobj.seekable():
        start = fileobj.tell()
        links: set[str] = set()
        for m in tar_members(fileobj, limits=limits, layer=layer, stream=False):
            _check_own_links(m, links)
        fileobj.seek(start)
    return extract(tar_members(fileobj, limits=limits, layer=layer), root, dest,
                   placement=placement)  # fmt: skip


def _check_own_links(m: Member, links: set[str]) -> None:
    """What the writer would refuse of the archive's own symlinks, found before it writes:
    a member below one of them, one replacing one, a hardlink through one."""
    for path, what in ((m.name, "it"), (m.linkname if m.kind == "hardlink" else "", "its target")):
        parts = components(path)
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise UnsafeArchive(m.name, f"{what} would be written through the symlink "
                                    f"{'/'.join(parts[:i])} the same archive made")  # fmt: skip
    if m.name in links:
        raise UnsafeArchive(m.name, "it would replace a symlink the same archive made")
    if m.kind == "symlink":
        links.add(m.name)


# -- trees out ------------------------------------------------------------------------


def read_tree(
    root: RootDir, path: str = "/", *, name: str = "", follow: bool = False,
    layer: bool = False,
) -> Iterator[Member]:  # fmt: skip
    """The tree at ``path`` in ``root`` as members named below ``name``.

    ``follow`` follows ``path`` itself when it is a symlink (COPY's sources); links
    below it are never followed. In layer mode overlayfs whiteouts and opaque
    directories come out as such.
    """
    fd = root.open(path, os.O_PATH, follow=follow)
    seen: dict[tuple[int, int], str] = {}
    where = root.locate(path, follow=follow) if root.mounts or root.hidden else clean(path)
    try:
        yield from _tree(root, fd, os.fstat(fd), name, where, seen, layer, 0)
    finally:
        os.close(fd)


def _tree(
    root: RootDir, fd: int, st: os.stat_result, name: str, where: str,
    seen: dict[tuple[int, int], str], layer: bool, depth: int,
) -> Iterator[Member]:  # fmt: skip
    base = Member(name, "file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime)
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        opaque = False
        if layer:
            with _readable_dir(fd) as rd, contextlib.suppress(OSError):
                opaque = os.getxattr(rd, OPAQUE_XATTR) == b"y"
        yield replace(base, kind="dir", opaque=opaque)
        if depth >= MAX_DEPTH:
            raise UnsafeArchive(name, f"directories nested deeper than {MAX_DEPTH}")
        for child in names(fd):
            here = clean(f"{where}/{child}")
            if here in root.hidden:
                continue  # a tmpfs: its files are in the container's mount namespace only
            mount = root.mounts.get(here)
            cfd = os.open(mount, os.O_PATH | os.O_CLOEXEC) if mount is not None else os.open(
                child, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)  # fmt: skip
            try:
                cname = f"{name}/{child}" if name else child
                yield from _tree(root, cfd, os.fstat(cfd), cname, here, seen, layer, depth + 1)
            finally:
                os.close(cfd)
        return
    if stat.S_ISLNK(mode):
        yield replace(base, kind="symlink", linkname=os.readlink("", dir_fd=fd))
    elif stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in seen:
            yield replace(base, kind="hardlink", linkname=seen[key])
            return
        if st.st_nlink > 1:
            seen[key] = name
        yield replace(base, size=st.st_size, open=lambda: _reopen(fd, st, name))
    elif stat.S_ISCHR(mode) and st.st_rdev == 0 and layer:
        yield replace(base, kind="whiteout")
    elif stat.S_ISCHR(mode):
        yield replace(base, kind="chr")
    elif stat.S_ISBLK(mode):
        yield replace(base, kind="blk")
    elif stat.S_ISFIFO(mode):
        yield replace(base, kind="fifo")


def _reopen(path_fd: int, st: os.stat_result, name: str) -> IO[bytes]:
    """The file behind an O_PATH fd, opened for reading (through the fd itself, so no
    name is looked up again), and checked to be the file that was stat'ed."""
    fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
                 | os.O_CLOEXEC)  # fmt: skip
    now = os.fstat(fd)
    if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise UnsafeArchive(name, "it changed while it was read")
    return os.fdopen(fd, "rb")


def write_tar(members: Iterable[Member], out: BinaryIO, *, layer: bool = False) -> None:
    """Pack ``members`` as a PAX tar; in layer mode whiteouts and opaque directories
    become OCI's ``.wh.`` entries. Device nodes are refused in layers."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for m in members:
            _add(tar, m, layer)


def _add(tar: tarfile.TarFile, m: Member, layer: bool) -> None:
    name = m.name or "."
    if m.kind == "whiteout":
        head, _, base = m.name.rpartition("/")
        info = tarfile.TarInfo(f"{head}/{WHITEOUT}{base}" if head else WHITEOUT + base)
        info.mtime = int(m.mtime)
        tar.addfile(info)
        return
    if m.kind in ("chr", "blk", "fifo") and layer:
        raise UnsafeArchive(name, "device nodes and fifos are not allowed in layers")
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.mtime = m.mode, m.uid, m.gid, int(m.mtime)
    info.uname = info.gname = ""  # ids only: names mean nothing across hosts
    if m.kind == "file":
        info.size = m.size
        assert m.open is not None
        with m.open() as f:
            tar.addfile(info, _Exactly(f, m.size, name))
        return
    info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                 "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE,
                 "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[m.kind]  # fmt: skip
    info.linkname = m.linkname
    tar.addfile(info)
    if m.kind == "dir" and m.opaque and layer:
        marker = tarfile.TarInfo(f"{m.name}/{OPAQUE}" if m.name else OPAQUE)
        marker.mtime = int(m.mtime)
        tar.addfile(marker)


class _Exactly(io.RawIOBase):
    """A file read as exactly ``size`` bytes: one that grew or shrank since it was
    stat'ed must not shift the rest of the archive."""

    def __init__(self, f: IO[bytes], size: int, name: str) -> None:
        self.f, self.left, self.name = f, size, name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.left <= 0:
            return 0
        data = self.f.read(min(len(buffer), self.left))
        if not data:
            raise UnsafeArchive(self.name, "it shrank while it was read")
        buffer[: len(data)] = data
        self.left -= len(data)
        return len(data)
