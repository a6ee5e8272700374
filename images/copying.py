"""Placing files for COPY and ADD in a staging dir that becomes a layer.

Docker's rules: a source directory's contents (not the directory) are copied; a
destination ending in ``/``, or taking several sources, or already a directory
in the image, is a directory; ADD unpacks a local tar and downloads a URL with
mode 0600. Parent directories that the image already has keep their owner and
mode in the new layer.

Where things go is decided in the image's own view (its layers mounted
read-only, a RootDir): a destination such as ``/../../tmp/x`` or one through a
symlink an earlier layer made resolves inside the image, never on the host.
What is written goes through runtime/tarfs.py's one writer into the staging
RootDir, which never writes through a link.

A tar that ADD unpacks may expand to at most ``ADD_EXPANSION`` times its own
size (or ``ADD_MIN_CAP``, if more): a decompression bomb fails the build
instead of filling the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from images.context import BuildContext
from runtime.rootdir import RootDir, clean, components
from runtime.rootfs import mount_overlay, unmount
from runtime.tarfs import (
    Limits,
    Member,
    Placement,
    UnsafeArchive,
    extract,
    extract_tar,
    read_tree,
)
from runtime.users import resolve_user

ADD_EXPANSION = 200  # gzip manages about 1000:1 on zeros; real tarballs rarely pass 20:1
ADD_MIN_CAP = 256 << 20
MAX_BYTES = Limits.max_bytes


def add_cap(archive_bytes: int) -> int:
    """How many bytes a tar of ``archive_bytes`` may expand to under ADD.

    >>> add_cap(1 << 20) == ADD_MIN_CAP, add_cap(10 << 20) == 2000 << 20
    (True, True)
    """
    return min(MAX_BYTES, max(ADD_MIN_CAP, ADD_EXPANSION * archive_bytes))


@dataclass(frozen=True)
class Destination:
    """Where one COPY writes, decided in the image's view."""

    directory: str  # in-image path of the directory written into (every symlink resolved)
    name: str  # a single file's new name there; "" when sources keep their names


def destination(view: RootDir, dest: str, *, into_dir: bool) -> Destination:
    """``dest`` (absolute, as the Dockerfile gave it with its WORKDIR) resolved in the
    image: ``..`` taken lexically from ``/`` and symlinks followed inside the image,
    as Docker does. A destination that is a directory in the image takes sources
    into it."""
    resolved = view.resolve(clean(dest))
    if into_dir or view.is_dir(resolved):
        return Destination(resolved, "")
    head, name = posixpath.split(resolved)
    return Destination(head, name)


def make_parents(out: RootDir, path: str, view: RootDir) -> None:
    """Make ``path`` in the staging dir, each directory with the owner and mode the
    image gives it (a new one: root's, 0755)."""
    done = ""
    for part in components(clean(path)):
        done = f"{done}/{part}"
        if out.lstat(done, symlinks=False) is not None:
            continue
        os.close(out.makedirs(done))
        st = view.lstat(done)
        if st is not None and stat.S_ISDIR(st.st_mode):
            fd = out.open(done, os.O_RDONLY | os.O_DIRECTORY, symlinks=False)
            try:
                os.fchown(fd, st.st_uid, st.st_gid)
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
            finally:
                os.close(fd)


def place(
    members: Iterable[Member], out: RootDir, directory: str, *, rename: str = "",
    owner: tuple[int, int] | None, mode: int | None = None,
) -> None:  # fmt: skip
    """Write one source's members into ``directory``: a single file (its member named "")
    as ``rename``, a directory's contents below it."""

    def renamed() -> Iterator[Member]:
        for m in members:
            if not m.name:
                if not rename:
                    raise UnsafeArchive(".", "a file copied with no name to give it")
                m = replace(m, name=rename)
            if mode is not None:
                m = replace(m, mode=mode)
            yield m

    extract(renamed(), out, directory, placement=Placement(owner=owner))


def is_tar(f: os.PathLike[str] | int | object) -> bool:
    """Whether ADD unpacks it: a tar, plain or compressed (gzip, bzip2, xz)."""
    try:
        return tarfile.is_tarfile(f)  # type: ignore[arg-type]
    except (OSError, tarfile.TarError):
        return False


def unpack_added(
    context: RootDir, path: str, out: RootDir, directory: str, owner: tuple[int, int] | None
) -> bool:
    """ADD of a local tar: its contents into ``directory``; False when it is no tar."""
    fd = context.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode) or not is_tar(f):
            return False
        f.seek(0)
        size = os.fstat(f.fileno()).st_size
        try:
            extract_tar(f, out, directory, limits=Limits(max_bytes=add_cap(size)),
                        placement=Placement(owner=owner))  # fmt: skip
        except UnsafeArchive as exc:
            what = f"ADD {posixpath.basename(path)}: {exc.reason}"
            raise UnsafeArchive(exc.member, what) from None
    return True


@contextlib.asynccontextmanager
async def image_view(tmp: Path, layers: list[Path]) -> AsyncIterator[RootDir]:
    """An image's merged layers (top first) mounted read-only, as a RootDir: where its
    paths, symlinks and /etc/passwd are looked up (scratch: an empty directory)."""
    base = Path(tempfile.mkdtemp(dir=tmp, prefix="view-"))
    root = base / "root"
    mounted = False
    try:
        if layers:
            await asyncio.to_thread(mount_overlay, root, layers)
            mounted = True
        else:
            root.mkdir()
        with RootDir(root) as view:
            yield view
    finally:
        if mounted:
            await asyncio.to_thread(unmount, root)
        await asyncio.to_thread(shutil.rmtree, base, True)


@dataclass(frozen=True)
class CopyStep:
    """One COPY or ADD, its words substituted."""

    sources: tuple[str, ...]
    dest: str  # absolute: the Dockerfile's, with the WORKDIR applied
    into_dir: bool  # the syntax says a directory: a trailing "/", or several sources
    add: bool = False  # ADD: local tars are unpacked, URLs downloaded
    chown: str | None = None
    chmod: int | None = None


Fetch = Callable[[str, BinaryIO], None]  # download a URL into a file (ADD)
URL_RE = re.compile(r"^https?://")


def copy_into(
    step: CopyStep, base: RootDir, out: RootDir, *, context: BuildContext | None,
    source: RootDir | None, fetch: Fetch | None,
) -> None:  # fmt: skip
    """Place ``step``'s sources in the staging dir ``out``, deciding where in ``base``
    (the image being built on). Sources come from the build ``context``, or from
    ``source`` (COPY --from: another image's view). Blocking: run it in a thread."""
    owner = _owner(step.chown, base) if step.chown else None
    urls = [s for s in step.sources if step.add and URL_RE.match(s)]
    into_dir = step.into_dir or len(step.sources) > 1
    where = destination(base, step.dest, into_dir=into_dir)
    if context is not None:
        found = [s for name in step.sources if name not in urls for s in context.select(name)]
        into_dir = into_dir or len(found) + len(urls) > 1
        where = destination(base, step.dest, into_dir=into_dir)
        for src in found:
            name = posixpath.basename(src.path)
            if step.add and not src.is_dir:
                tar_dir = where.directory if not where.name else clean(
                    f"{where.directory}/{where.name}")  # fmt: skip
                make_parents(out, tar_dir, base)
                if unpack_added(context.root, src.path, out, tar_dir, owner):
                    continue
            make_parents(out, where.directory, base)
            place(context.members(src), out, where.directory, rename=where.name or name,
                  owner=owner or (0, 0), mode=step.chmod)  # fmt: skip
    elif source is not None:
        for name in step.sources:
            path = clean(name)
            if source.lstat(path) is None:
                raise ValueError(f"{name} not found")
            is_dir = source.is_dir(path)
            make_parents(out, where.directory, base)
            members = (m for m in read_tree(source, path, follow=True) if m.name or not is_dir)
            place(members, out, where.directory,
                  rename=where.name or posixpath.basename(source.resolve(path)),
                  owner=owner, mode=step.chmod)  # fmt: skip
    for url in urls:
        if fetch is None:
            raise ValueError(f"{url}: this node does not download ADD URLs")
        make_parents(out, where.directory, base)
        name = where.name or posixpath.basename(urllib.parse.urlparse(url).path) or "index.html"
        dirfd = out.open(where.directory, os.O_PATH | os.O_DIRECTORY, symlinks=False)
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                         dir_fd=dirfd)  # fmt: skip
        finally:
            os.close(dirfd)
        with os.fdopen(fd, "wb") as f:
            fetch(url, f)
            if owner is not None:
                os.fchown(f.fileno(), *owner)


def _owner(spec: str, view: RootDir) -> tuple[int, int]:
    """``--chown``: looked up in the image's own /etc/passwd and /etc/group; a user
    without a group takes the same number as its gid (Docker's rule)."""
    user = resolve_user(spec, view.read_text("/etc/passwd"), view.read_text("/etc/group"))
    return (user.uid, user.gid) if ":" in spec else (user.uid, user.uid)


def ensure_dir(view: RootDir, out: RootDir, path: str) -> bool:
    """WORKDIR: make ``path`` when the image lacks it; whether anything was made."""
    resolved = view.resolve(clean(path))
    if view.is_dir(resolved):
        return False
    make_parents(out, resolved, view)
    return True
