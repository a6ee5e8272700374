"""Placing files for COPY and ADD in a staging dir that becomes a layer.

Docker's rules: a source directory's contents (not the directory) are copied; a
destination ending in ``/``, or taking several sources, or already a directory
in the image, is a directory; ADD unpacks a local tar (safely, see layers.py)
and downloads a URL with mode 0600. Parent directories that the image already
has keep their owner and mode in the new layer.

A tar that ADD unpacks may expand to at most ``ADD_EXPANSION`` times its own
size (or ``ADD_MIN_CAP``, if more): a decompression bomb fails the build
instead of filling the disk.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import urllib.parse
import urllib.request
from pathlib import Path

from images.context import BuildContext
from images.errors import UnsafeArchive
from images.layers import DEFAULT_MAX_BYTES, find_in_layers, unpack

ADD_EXPANSION = 200  # gzip manages about 1000:1 on zeros; real tarballs rarely pass 20:1
ADD_MIN_CAP = 256 << 20


def add_cap(archive_bytes: int) -> int:
    """How many bytes a tar of ``archive_bytes`` may expand to under ADD.

    >>> add_cap(1 << 20) == ADD_MIN_CAP, add_cap(10 << 20) == 2000 << 20
    (True, True)
    """
    return min(DEFAULT_MAX_BYTES, max(ADD_MIN_CAP, ADD_EXPANSION * archive_bytes))


def is_dir_in(layers: list[Path], dest: str) -> bool:
    found = find_in_layers(layers, dest)
    return found is not None and found.is_dir() and not found.is_symlink()


def make_parents(staging: Path, path: Path, layers: list[Path]) -> None:
    """Create ``path`` under ``staging``, copying each existing directory's owner and mode."""
    rel_parts = path.relative_to(staging).parts
    current = staging
    staging.mkdir(parents=True, exist_ok=True)
    for part in rel_parts:
        current = current / part
        if current.exists():
            continue
        current.mkdir()
        existing = find_in_layers(layers, str(current.relative_to(staging)))
        if existing is not None and existing.is_dir():
            st = os.lstat(existing)
            os.chmod(current, st.st_mode & 0o7777)
            os.chown(current, st.st_uid, st.st_gid)


def place(src: Path, target: Path, into_dir: bool, context: BuildContext | None,
           extract: bool = False) -> None:  # fmt: skip
    """COPY one source: a dir's contents, a file, or (ADD) a local tar's contents."""
    if extract and src.is_file() and tarfile.is_tarfile(src):
        size = src.stat().st_size
        try:
            unpack(src, target, max_bytes=add_cap(size))
        except UnsafeArchive as exc:
            raise UnsafeArchive(exc.member, f"ADD {src.name}: {exc.reason}") from None
        return
    if src.is_dir() and not src.is_symlink():
        target.mkdir(parents=True, exist_ok=True)
        files = context.files(src)[1:] if context else None
        if files is None:
            shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
            return
        for path in files:
            out = target / path.relative_to(src)
            if path.is_dir() and not path.is_symlink():
                out.mkdir(exist_ok=True)
                shutil.copystat(path, out)
            else:
                shutil.copy2(path, out, follow_symlinks=False)
        return
    out = target / src.name if into_dir else target
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, out, follow_symlinks=False)


def download(url: str, target: Path, into_dir: bool) -> None:
    name = os.path.basename(urllib.parse.urlparse(url).path) or "index.html"
    out = target / name if into_dir else target
    out.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=60) as response, open(out, "wb") as f:
        shutil.copyfileobj(response, f)
    os.chmod(out, 0o600)


def below(top: Path) -> list[Path]:
    """What COPY put below ``top`` (``top`` and its parents keep their owners)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            out.append(Path(dirpath) / name)
    return out
