"""Paths from outside, resolved inside a root: the one way scow does it.

Every path that comes from a hostile source (an image, a layer, a Dockerfile,
an archive member, a container's own symlinks, a client's ``docker cp``) and
names something inside a tree on the host goes through a ``RootDir``. Nobody
joins such a path to a host directory by hand.

How it works. A RootDir holds an ``O_PATH`` fd of its directory and resolves
every path against that fd as the kernel would if the directory were ``/``:
``..`` stops at it, an absolute symlink means it, and a symlink is followed
inside it, never above it.

- Plain roots use ``openat2(2)`` with ``RESOLVE_IN_ROOT`` (Linux 5.6): one
  syscall, and the kernel itself refuses a walk that a concurrent rename would
  carry outside (``EAGAIN``, retried).
- Roots with mounts (a container's rootfs with its volumes), kernels without
  openat2, and ``resolve`` (which needs the in-root path as text) use
  ``Walk``: one component at a time, each opened ``O_PATH|O_NOFOLLOW`` relative
  to the fd of the one before, symlinks read with ``readlinkat`` on the link's
  own fd. No string is ever re-walked, so a container that swaps a directory
  for a symlink mid-copy cannot lead the walk out: at worst it lands elsewhere
  inside its own root.

What comes back is an fd; callers read, write and ``*at()`` through it, never
through a path string rebuilt from it. ``symlinks=False`` refuses any symlink
on the way (``LinkRefused``): writers use it, since extraction must never write
through a link, whoever made it.

A little over the ~400 lines a module here keeps to: the two resolvers (openat2 and
``Walk``) must agree on every rule, and they are easiest to hold side by side.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from runtime.errors import ContainerError

MAX_LINKS = 40  # the kernel's limit before ELOOP
NAME_MAX = 255
PATH_MAX = 4096

_SYS_OPENAT2 = 437  # the same number on every architecture (added after the unified table)
_RESOLVE_NO_XDEV = 0x01
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_IN_ROOT = 0x10
_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]  # fmt: skip


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# None until tried once: whether this kernel has openat2 (tests force False to cover Walk).
OPENAT2: bool | None = None


class UnsafePath(ContainerError):
    """A path that cannot be used inside its root, with the reason."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"refusing path {_shown(path)}: {reason}")


class LinkRefused(UnsafePath):
    """The path goes through a symlink where none may be followed (a write)."""


class PathNotFound(UnsafePath):
    pass


def _shown(path: str) -> str:
    return repr(path if len(path) <= 200 else path[:200] + "...")


def components(path: str) -> list[str]:
    """The components of ``path``, ``.`` and empty ones dropped (``..`` kept).

    >>> components("/a//b/./../c/")
    ['a', 'b', '..', 'c']
    """
    return [p for p in path.split("/") if p not in ("", ".")]


def clean(path: str) -> str:
    """``path`` as an absolute in-root path with ``..`` taken lexically, as Docker's
    ``filepath.Clean("/" + path)`` does for destinations.

    >>> clean("../../../tmp/x/"), clean("a/./b/../c"), clean("")
    ('/tmp/x', '/a/c', '/')
    """
    out: list[str] = []
    for part in components(path):
        if part == "..":
            if out:
                out.pop()
        else:
            out.append(part)
    return "/" + "/".join(out)


def check_name(path: str) -> None:
    """Refuse what no file system takes: NUL, over-long components and paths."""
    if "\0" in path:
        raise UnsafePath(path, "it contains a NUL byte")
    if len(path.encode(errors="surrogateescape")) > PATH_MAX:
        raise UnsafePath(path, f"it is longer than {PATH_MAX} bytes")
    for part in components(path):
        if len(part.encode(errors="surrogateescape")) > NAME_MAX:
            raise UnsafePath(path, f"a component is longer than {NAME_MAX} bytes")


def _openat2(dirfd: int, path: str, flags: int, mode: int, resolve: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, resolve)
    encoded = os.fsencode(path)
    for _ in range(32):  # EAGAIN: a rename raced the walk; the kernel asks us to try again
        fd = _libc.syscall(_SYS_OPENAT2, dirfd, encoded, ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.EINTR):
            raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, "the path kept changing while it was resolved", path)


def _has_openat2() -> bool:
    global OPENAT2
    if OPENAT2 is None:
        try:
            os.close(_openat2(-100, "/", _O_PATH_DIR, 0, 0))  # AT_FDCWD
            OPENAT2 = True
        except OSError as exc:
            OPENAT2 = exc.errno not in (errno.ENOSYS, errno.EPERM)  # EPERM: a seccomp filter
    return OPENAT2


class RootDir:
    """A directory as the root of the paths resolved in it.

    ``mounts`` maps in-root directories (``/data``) to the host directories seen
    there (a container's volumes); ``hidden`` are in-root paths the host cannot
    see (a container's tmpfs mounts), refused by name.
    """

    def __init__(
        self, path: Path | str, *, mounts: Mapping[str, Path] | None = None,
        hidden: Sequence[str] = (),
    ) -> None:  # fmt: skip
        self.path = Path(path)
        self.mounts = {clean(k): Path(v) for k, v in (mounts or {}).items()}
        self.hidden = tuple(clean(h) for h in hidden)
        try:
            self.fd = os.open(self.path, _O_PATH_DIR)
        except OSError as exc:
            raise UnsafePath(str(path), f"cannot open the root: {exc.strerror}") from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RootDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- opening ------------------------------------------------------------------------

    def open(
        self, path: str, flags: int = os.O_RDONLY, mode: int = 0o600, *,
        follow: bool = True, symlinks: bool = True,
    ) -> int:  # fmt: skip
        """An fd of ``path`` in the root (``O_CLOEXEC``; the caller closes it).

        ``follow=False`` opens a final symlink itself (with ``O_PATH``) or refuses
        it; ``symlinks=False`` refuses a symlink anywhere on the way.
        """
        check_name(path)
        if not follow:
            flags |= os.O_NOFOLLOW
        if not self.mounts and _has_openat2():
            resolve = _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS | _RESOLVE_NO_XDEV
            if not symlinks:
                resolve |= _RESOLVE_NO_SYMLINKS
            try:
                return _openat2(self.fd, path or ".", flags, mode, resolve)
            except OSError as exc:
                raise self._error(path, exc, symlinks) from None
        with Walk(self) as walk:
            walk.to(path, follow_last=follow, symlinks=symlinks, parent_only=True)
            name = walk.last_name
            if name is None:  # the root itself, or a mount's own root (a file, maybe):
                # reopened through its fd, so that no name is looked up again
                return os.open(f"/proc/self/fd/{walk.fd}", flags | os.O_CLOEXEC, mode)
            try:  # O_NOFOLLOW: a name swapped for a symlink since it was looked at fails
                return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=walk.fd)
            except OSError as exc:
                raise self._error(path, exc, symlinks) from None

    def parent(self, path: str, *, symlinks: bool = True) -> tuple[int, str]:
        """The fd (``O_PATH``) of the directory holding ``path``, and its last name.

        For creating, renaming or removing that name with ``*at()`` calls: the name
        itself is not looked at, so a symlink there is never followed.
        """
        parts = components(clean(path))
        if not parts:
            raise UnsafePath(path, "it names the root itself")
        head = "/" + "/".join(parts[:-1])
        return self.open(head, _O_PATH_DIR, symlinks=symlinks), parts[-1]

    def locate(self, path: str, *, follow: bool = False) -> str:
        """The in-root path of what ``path`` names (its final symlink followed with
        ``follow``): which mount or tmpfs it is on."""
        check_name(path)
        with Walk(self) as walk:
            return walk.to(path, follow_last=follow, symlinks=True)

    def resolve(self, path: str) -> str:
        """``path`` with every symlink followed inside the root, as text (what Go's
        securejoin gives): components that do not exist are kept as given."""
        check_name(path)
        with Walk(self) as walk:
            return walk.to(path, follow_last=True, symlinks=True, missing_ok=True)

    def makedirs(self, path: str, mode: int = 0o755, *, symlinks: bool = False) -> int:
        """The fd (``O_PATH``) of directory ``path``, made with its missing parents.

        ``path`` is cleaned lexically first. With ``symlinks=False`` an existing
        symlink on the way is refused, never followed.
        """
        check_name(path)
        fd = os.dup(self.fd)
        try:
            done: list[str] = []
            for part in components(clean(path)):
                done.append(part)
                try:
                    nxt = os.open(part, _O_PATH_DIR | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, mode, dir_fd=fd)
                    nxt = os.open(part, _O_PATH_DIR | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    so_far = "/" + "/".join(done)
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise self._error(so_far, exc, symlinks) from None
                    if not is_symlink(part, fd):
                        raise UnsafePath(so_far, "not a directory") from None
                    if not symlinks:
                        raise LinkRefused(so_far, "it is a symbolic link") from None
                    nxt = self.open(so_far, _O_PATH_DIR)
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    # -- reading ------------------------------------------------------------------------

    def lstat(self, path: str, *, symlinks: bool = True) -> os.stat_result | None:
        """The path's own status (a final symlink not followed); None when it is absent."""
        try:
            fd = self.open(path, os.O_PATH, follow=False, symlinks=symlinks)
        except PathNotFound:
            return None
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def read_bytes(self, path: str, limit: int = 1 << 20) -> bytes | None:
        """The regular file at ``path`` (symlinks followed inside the root), at most
        ``limit`` bytes; None when there is none."""
        try:
            fd = self.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        except PathNotFound:
            return None
        except UnsafePath as exc:
            if exc.reason.startswith("not a directory"):
                return None
            raise
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            return f.read(limit)

    def read_text(self, path: str, limit: int = 1 << 20) -> str:
        """The text of a regular file inside the root ("" when absent): what /etc/passwd
        lookups read, never a host file an image's symlink points at."""
        data = self.read_bytes(path, limit)
        return data.decode(errors="replace") if data is not None else ""

    def is_dir(self, path: str) -> bool:
        try:
            fd = self.open(path, _O_PATH_DIR)
        except UnsafePath:
            return False
        os.close(fd)
        return True

    # -- errors -------------------------------------------------------------------------

    def _error(self, path: str, exc: OSError, symlinks: bool) -> UnsafePath:
        if exc.errno == errno.ENOENT:
            return PathNotFound(path, "no such file or directory")
        if exc.errno == errno.ELOOP:
            if not symlinks:
                return LinkRefused(path, "it goes through a symbolic link")
            return UnsafePath(path, "too many levels of symbolic links")
        if exc.errno == errno.ENOTDIR:
            return UnsafePath(path, "not a directory on the way")
        if exc.errno == errno.EXDEV:
            return UnsafePath(path, "it crosses a mount point")
        return UnsafePath(path, exc.strerror or str(exc))


class Walk:
    """One resolution, a component at a time on fds (see the module's docstring).

    A stack of (fd, in-root path) pairs: ``..`` pops, a mount point pushes the
    mount's own root, an absolute symlink goes back to the bottom.
    """

    def __init__(self, root: RootDir) -> None:
        self.root = root
        self.stack: list[tuple[int, str]] = [(os.dup(root.fd), "/")]
        self.last_name: str | None = None

    def __enter__(self) -> Walk:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd, _ in self.stack:
            os.close(fd)
        self.stack.clear()

    @property
    def fd(self) -> int:
        return self.stack[-1][0]

    def _push(self, fd: int, where: str) -> None:
        self.stack.append((fd, where))

    def _pop_to(self, depth: int) -> None:
        while len(self.stack) > depth:
            os.close(self.stack.pop()[0])

    def to(
        self, path: str, *, follow_last: bool, symlinks: bool, parent_only: bool = False,
        missing_ok: bool = False,
    ) -> str:  # fmt: skip
        """Walk to ``path``; its in-root path. With ``parent_only`` it stops at the
        directory holding the last component (left in ``last_name``), having followed
        what that component is, when it is a symlink to be followed."""
        todo = list(reversed(components(path)))
        links = 0
        missing: list[str] = []
        self.last_name = None
        while todo:
            part = todo.pop()
            fd, where = self.stack[-1]
            if part == "..":
                if missing:
                    missing.pop()
                elif len(self.stack) > 1:
                    self._pop_to(len(self.stack) - 1)
                continue
            if missing:
                missing.append(part)
                continue
            here = str(PurePosixPath(where) / part)
            if here in self.root.hidden or any(here.startswith(h + "/") for h in self.root.hidden):
                raise UnsafePath(path, f"it is on a file system the host cannot see ({here})")
            mount = self.root.mounts.get(here)
            if mount is not None:  # a directory or a file bound there (/etc/hosts)
                try:
                    self._push(os.open(mount, os.O_PATH | os.O_CLOEXEC), here)
                except OSError as exc:
                    raise UnsafePath(path, f"the mount at {here}: {exc.strerror}") from None
                continue
            last = not todo
            try:
                child = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if last and parent_only:
                    self.last_name = part
                    return here
                if missing_ok:
                    missing.append(part)
                    continue
                raise PathNotFound(path, "no such file or directory") from None
            except OSError as exc:
                raise self.root._error(path, exc, symlinks) from None
            mode = os.fstat(child).st_mode
            if stat.S_ISLNK(mode) and (follow_last or not last):
                if not symlinks:
                    os.close(child)
                    raise LinkRefused(path, f"it goes through the symbolic link {here}")
                links += 1
                if links > MAX_LINKS:
                    os.close(child)
                    raise UnsafePath(path, "too many levels of symbolic links")
                target = os.readlink("", dir_fd=child)  # the link's own fd: no second lookup
                os.close(child)
                if target.startswith("/"):
                    self._pop_to(1)
                todo.extend(reversed(components(target)))
                continue
            if last and parent_only:
                os.close(child)
                self.last_name = part
                return here
            if not last and not stat.S_ISDIR(mode):
                os.close(child)
                raise UnsafePath(path, f"not a directory on the way ({here})")
            self._push(child, here)
        where = self.stack[-1][1]
        return str(PurePosixPath(where, *missing)) if missing else where


def is_symlink(name: str, dirfd: int) -> bool:
    """Whether ``name`` in the directory ``dirfd`` is a symlink (O_DIRECTORY|O_NOFOLLOW
    on one fails with ENOTDIR, as on a file: this tells them apart)."""
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def names(dirfd: int) -> list[str]:
    """The names in an open directory (an ``O_PATH`` fd will do), sorted."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)
