"""Base images made offline from what the machine has.

- ``busybox``: the host's busybox-static, a link per applet, root and nobody;
- ``debian:bookworm`` (also ``debian``, ``debian:12``): debootstrap ``minbase``
  from the Debian mirror apt on this host already uses;
- ``scratch`` is no image at all: ``FROM scratch`` starts from nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from images.busybox import make_busybox_rootfs
from images.config import add_step, empty_config
from images.errors import ImageError
from images.store import Image, ImageStore

Progress = Callable[[str], None]

DEBIAN_NAMES = {"debian": "bookworm", "debian:latest": "bookworm", "debian:bookworm": "bookworm",
                "debian:12": "bookworm"}  # fmt: skip
BASE_NAMES = ("busybox", "busybox:latest", *DEBIAN_NAMES)


class BootstrapError(ImageError):
    pass


def is_base(name: str) -> bool:
    return name in BASE_NAMES


class UnknownBase(BootstrapError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"no base image called {name!r}: scow can make {', '.join(sorted(set(BASE_NAMES)))}"
        )


def bootstrap(store: ImageStore, name: str, progress: Progress = lambda line: None) -> Image:
    """Make the base image ``name`` in ``store`` and tag it."""
    if name in ("busybox", "busybox:latest"):
        return _busybox(store, progress)
    if name in DEBIAN_NAMES:
        return _debian(store, DEBIAN_NAMES[name], progress)
    raise UnknownBase(name)


def _from_dir(
    store: ImageStore, rootfs: Path, cmd: list[str], created_by: str, tags: list[str]
) -> Image:
    diff_id = store.add_layer_dir(rootfs)
    config = empty_config()
    config["config"]["Cmd"] = cmd
    add_step(config, created_by, diff_id)
    image = store.create_image(config, tag=tags[0])
    for extra in tags[1:]:
        store.tag(image.id, extra)
    return store.get(tags[0])


def _busybox(store: ImageStore, progress: Progress) -> Image:
    store.open()
    with tempfile.TemporaryDirectory(dir=store.tmp) as tmp:
        progress("making busybox from the host's busybox-static")
        make_busybox_rootfs(Path(tmp) / "rootfs")
        created_by = "scow image bootstrap busybox"
        return _from_dir(store, Path(tmp) / "rootfs", ["sh"], created_by, ["busybox:latest"])


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The first Debian mirror URI in apt's sources on this host."""
    texts = []
    for path in [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*"))]:
        if path.suffix in (".list", ".sources") or path.name == "sources.list":
            try:
                texts.append(path.read_text())
            except OSError:
                continue
    for text in texts:
        for m in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+)", text, re.MULTILINE):
            uri = m.group(1)
            if "security" not in uri and uri.startswith(("http://", "https://", "file:/")):
                return uri
    raise BootstrapError(
        "no Debian mirror found in apt's sources (/etc/apt): debootstrap needs one"
    )


def _debian(store: ImageStore, suite: str, progress: Progress) -> Image:
    if shutil.which("debootstrap") is None:
        raise BootstrapError("debootstrap is not installed (apt-get install debootstrap)")
    store.open()
    mirror = debian_mirror()
    with tempfile.TemporaryDirectory(dir=store.tmp) as tmp:
        rootfs = Path(tmp) / "rootfs"
        progress(f"debootstrap --variant=minbase {suite} from {mirror}")
        tail: list[str] = []
        with subprocess.Popen(
            ["debootstrap", "--variant=minbase", suite, str(rootfs), mirror],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ) as proc:  # fmt: skip
            assert proc.stdout is not None
            for line in proc.stdout:
                progress(line.rstrip())
                tail = [*tail[-20:], line.rstrip()]
        if proc.returncode != 0:
            detail = " | ".join(tail[-5:])
            raise BootstrapError(f"debootstrap failed (exit {proc.returncode}): {detail}")
        # runc provides /dev in every container; an image ships it empty.
        for entry in (rootfs / "dev").iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / junk).glob("*"):
                if entry.is_file() and entry.name not in ("lock",):
                    entry.unlink()
        created_by = f"scow image bootstrap debian:{suite} (debootstrap minbase)"
        return _from_dir(store, rootfs, ["bash"], created_by, [f"debian:{suite}", "debian:latest"])
