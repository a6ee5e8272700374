"""A container's root filesystem: an overlay of its image's layers.

How it works: the image's unpacked layer dirs become overlayfs lowerdirs (top
layer first), above them a small per-container ``skeleton`` layer holding the
mount points runc needs (/etc/hosts, volume targets...), so that runc never has
to create anything in a read-only rootfs.

- read-only containers get no upperdir at all: ``lowerdir=skel:L3:L2:L1``;
  writes fail with EROFS and /tmp, /run are tmpfs mounts in config.json;
- writable containers get ``upperdir`` and ``workdir`` next to the mount point;
  the upperdir is the container's diff (for ``diff`` and ``commit``), with
  deletions recorded by overlayfs as whiteouts.

Mounting goes through mount(2) directly: spawning mount(8) costs milliseconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from runtime.errors import ContainerError, NotFound
from runtime.rootdir import RootDir, UnsafePath
from runtime.tarfs import read_tree

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
MNT_DETACH = 2
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MAX_OPTIONS = 4000  # the kernel takes one page of mount options


def mount(source: str, target: Path, fstype: str, flags: int = 0, data: str = "") -> None:
    rc = _libc.mount(
        source.encode(), str(target).encode(), fstype.encode(), flags, data.encode() or None
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} on {target} failed: {os.strerror(err)} ({data})")


def unmount(target: Path) -> None:
    """Lazily unmount ``target``; not mounted or missing is fine."""
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount {target} failed: {os.strerror(err)}")


def is_mounted(target: Path) -> bool:
    text = str(target)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == text for line in f)


def mount_overlay(
    target: Path, lowers: list[Path], upper: Path | None = None, work: Path | None = None
) -> None:
    """Mount ``lowers`` (top first) on ``target``; with ``upper`` and ``work``, writable."""
    for layer in lowers:
        if not layer.is_dir():
            raise NotFound("layer", str(layer))
    if upper is None and len(lowers) < 2:
        # overlayfs needs two lowerdirs without an upperdir; an empty one changes nothing.
        empty = target.parent / "empty"
        empty.mkdir(exist_ok=True)
        lowers = [*lowers, empty]
    options = "lowerdir=" + ":".join(str(p) for p in lowers)
    if upper is not None and work is not None:
        options += f",upperdir={upper},workdir={work}"
    if len(options) > MAX_OPTIONS:
        raise ContainerError(
            f"the image has too many layers ({len(lowers)}) for one overlay mount; "
            "squash it into fewer layers"
        )
    target.mkdir(parents=True, exist_ok=True)
    # nosuid: an image's setuid files (or a container's own, in its upperdir) give no
    # host user anything, whatever the directories above allow; containers run with
    # no_new_privileges, so inside them nothing changes.
    flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if upper is None else 0)
    mount("overlay", target, "overlay", flags, options)


def is_whiteout(path: Path) -> bool:
    """overlayfs marks a deleted file with a 0:0 character device of the same name."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _in_lowers(rel: str, lowers: list[RootDir]) -> bool:
    for layer in lowers:  # top first: the first layer that has the path decides
        try:
            st = layer.lstat(rel, symlinks=False)
        except UnsafePath:
            continue  # through a symlink in this layer: not this layer's path
        if st is not None:
            return not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0)
    return False


def changes(upper: Path, lowers: list[Path]) -> list[tuple[str, str]]:
    """A writable container's diff as ``docker diff`` shows it: (A|C|D, path), sorted.

    ``upper`` is the overlay's upperdir, ``lowers`` the image layers, top first. The
    upperdir is the container's to change while this runs: it is read through fds.
    """
    out: list[tuple[str, str]] = []
    with contextlib.ExitStack() as stack:
        roots = [stack.enter_context(RootDir(layer)) for layer in lowers]
        upper_root = stack.enter_context(RootDir(upper))
        for m in read_tree(upper_root, layer=True):
            if not m.name:
                continue
            if m.kind == "whiteout":
                out.append(("D", "/" + m.name))
            else:
                out.append(("C" if _in_lowers(m.name, roots) else "A", "/" + m.name))
    return sorted(out, key=lambda c: c[1])


SKELETON_DIRS = {"proc": 0o555, "sys": 0o555, "dev": 0o755, "tmp": 0o1777, "run": 0o755,
                 "etc": 0o755}  # fmt: skip


def make_skeleton(root: Path, mount_points: list[str], layers: Sequence[Path]) -> None:
    """Empty mount points above the image, so runc never writes into a read-only rootfs.

    Files such as /etc/hosts must exist as files to be bind-mounted on. Every
    directory made takes the owner and mode the image gives it, if it has it.
    """
    root.mkdir(parents=True, exist_ok=True)
    for d, mode in SKELETON_DIRS.items():
        _mirror_dir(root, d, layers, mode)
    for name in ("hosts", "resolv.conf", "hostname"):
        (root / "etc" / name).touch()
    for point in mount_points:
        parts = Path(point.lstrip("/")).parts
        for i in range(1, len(parts) + 1):
            _mirror_dir(root, str(Path(*parts[:i])), layers, 0o755)


def _mirror_dir(root: Path, rel: str, layers: Sequence[Path], default_mode: int) -> None:
    target = root / rel
    if target.exists():
        return
    target.mkdir()
    st = _layer_stat(layers, rel)
    if st is not None and stat.S_ISDIR(st.st_mode):
        os.chown(target, st.st_uid, st.st_gid)
        os.chmod(target, st.st_mode & 0o7777)
    else:
        os.chmod(target, default_mode)


def _layer_stat(layers: Sequence[Path], rel: str) -> os.stat_result | None:
    """What the topmost layer that has ``rel`` has there, looked up inside each layer
    without following its symlinks (an image's link never leads to a host path)."""
    for layer in layers:
        with RootDir(layer) as root:
            try:
                st = root.lstat(rel, symlinks=False)
            except UnsafePath:
                return None  # behind a symlink: the merged view has no directory here
        if st is not None:
            return st
    return None
