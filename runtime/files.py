"""A container's files, reached from the host: ``docker cp`` in both directions.

The container's tree is a RootDir (rootdir.py): its rootfs, with its volumes
and bind mounts crossed where the container sees them, and its tmpfs mounts
refused by name (they live in its mount namespace only). A path is resolved as
the kernel would resolve it inside the container, but on fds, so neither a
path given by the client nor a symlink the container made (or swaps in while
the copy runs) leads outside it. Copies go through tarfs.py: out, links stay
links; in, nothing is written through a link and each member's parent must be
a real directory of the container.
"""

from __future__ import annotations

import stat
from pathlib import PurePosixPath
from typing import IO, BinaryIO

from runtime.errors import InvalidOption, NotFound
from runtime.rootdir import PathNotFound, RootDir, UnsafePath
from runtime.tarfs import Limits, Placement, extract_tar, read_tree
from runtime.tarfs import write_tar as pack

DEFAULT_MAX_BYTES = 4 << 30


def _absolute(path: str) -> str:
    if not path.startswith("/"):
        raise InvalidOption("path", path, "a container path must be absolute")
    return path


def path_stat(root: RootDir, path: str) -> dict[str, object]:
    """What ``docker cp`` asks of a path: name, size, mode (st_mode), mtime (epoch) and,
    for a symlink, where it leads in the container."""
    _absolute(path)
    try:
        st = root.lstat(path)
        link = root.resolve(path) if st is not None and stat.S_ISLNK(st.st_mode) else ""
    except UnsafePath as exc:
        raise InvalidOption("path", path, exc.reason) from None
    if st is None:
        raise NotFound("path", path)
    name = PurePosixPath(path).name or "/"
    return {"name": name, "size": st.st_size, "mode": st.st_mode, "mtime": st.st_mtime,
            "link": link}  # fmt: skip


def write_tar(root: RootDir, path: str, out: BinaryIO) -> None:
    """A tar of ``path`` (a file, link or whole directory), named by its last component
    as ``docker cp`` expects. Links inside are archived as links, never followed."""
    _absolute(path)
    arcname = PurePosixPath(path.rstrip("/")).name or "."
    try:
        pack(read_tree(root, path, name=arcname if arcname != "." else ""), out)
    except PathNotFound:
        raise NotFound("path", path) from None
    except UnsafePath as exc:
        raise InvalidOption("path", path, exc.reason) from None


def extract_into(
    root: RootDir, dest: str, archive: IO[bytes], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[str]:
    """Unpack a tar into the container directory ``dest``; the member names written.

    ``dest`` is resolved in the container (its symlinks followed there); below it,
    nothing is followed. A tar with a refused member writes nothing when it can
    be read twice (a request body), since it is checked whole first.
    """
    _absolute(dest)
    try:
        resolved = root.resolve(dest)
    except UnsafePath as exc:
        raise InvalidOption("path", dest, exc.reason) from None
    if not root.is_dir(resolved):
        raise InvalidOption("path", dest, "the destination is not a directory in the container")
    return extract_tar(archive, root, resolved, limits=Limits(max_bytes=max_bytes),
                       placement=Placement(replace_dirs=False))  # fmt: skip
