"""The ``busybox`` base rootfs, made offline from the host's busybox-static."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PASSWD = """root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
nobody:x:65534:
"""


class BusyboxError(Exception):
    pass


def find_busybox() -> Path:
    """The host's busybox, which must be static to run inside an image."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.exists():
            return path.resolve()
    found = shutil.which("busybox")
    if found is None:
        raise BusyboxError("busybox not found: install Debian's busybox-static")
    return Path(found).resolve()


def make_busybox_rootfs(dest: Path, busybox: Path | None = None) -> None:
    """Fill ``dest`` with busybox, a link per applet, and root and nobody accounts."""
    binary = busybox or find_busybox()
    out = subprocess.run([str(binary), "--list-full"], capture_output=True, text=True, check=False)
    if out.returncode != 0 or not out.stdout.strip():
        raise BusyboxError(f"{binary} --list-full failed: {out.stderr.strip()}")
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home", "var", "dev",
              "proc", "sys", "run"):  # fmt: skip
        (dest / d).mkdir(parents=True, exist_ok=True)
    tmp = dest / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)
    shutil.copy2(binary, dest / "bin/busybox")
    for applet in out.stdout.split():
        link = dest / applet
        if applet == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    (dest / "etc/passwd").write_text(PASSWD)
    (dest / "etc/group").write_text(GROUP)
