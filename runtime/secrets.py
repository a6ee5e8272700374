"""A function's secrets as files, on a tmpfs of their own, read-only in the container.

How it works: for a container given secrets, a tmpfs (sized to fit them,
``nosuid,nodev,noexec``) is mounted at ``<container dir>/secrets``, each secret
written there as a file the container's user alone can read (0400), then the
tmpfs is remounted read-only and bound into the container at both of the
places functions look: ``/var/openfaas/secrets/NAME`` (OpenFaaS) and
``/run/secrets/NAME`` (Docker). The values are never on disk, in the
container's environment, its config.json or its record. ``remove`` unmounts it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from runtime.errors import InvalidOption
from runtime.oci import Mount
from runtime.rootfs import MS_NODEV, MS_NOSUID, mount, unmount

TARGETS = ("/var/openfaas/secrets", "/run/secrets")
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62})$")
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_RDONLY = 1


def mount_secrets(
    path: Path, secrets: Mapping[str, bytes], uid: int, gid: int
) -> list[Mount]:
    """Mount ``secrets`` at ``path`` (a new directory); the container's mounts of them."""
    for name in secrets:
        if not NAME_RE.match(name) or name in (".", ".."):
            raise InvalidOption("secret", name, "a name is a-z, 0-9, '.', '_' and '-' (max 63)")
    size = 4096 * (len(secrets) + 1) + sum(len(v) for v in secrets.values())
    path.mkdir(mode=0o700)
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    mount("tmpfs", path, "tmpfs", flags, f"size={size},mode=0500,uid={uid},gid={gid}")
    try:
        for name, value in secrets.items():
            fd = os.open(path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
            with os.fdopen(fd, "wb") as f:
                f.write(value)
                os.fchown(f.fileno(), uid, gid)
        mount("tmpfs", path, "tmpfs", MS_REMOUNT | MS_RDONLY | flags)
    except BaseException:
        unmount(path)
        raise
    options = ("rbind", "ro", "nosuid", "nodev", "noexec")
    return [Mount(target, str(path), "bind", options) for target in TARGETS]


def unmount_secrets(path: Path) -> None:
    """Idempotent: not mounted, or gone, is fine."""
    unmount(path)
