"""The hostile corpus: archives built to escape their target, one small generator each.

Every case aims at a canary tree outside the target (``Canary``): an escape
writes or changes something there, which ``Canary.assert_untouched`` finds byte
for byte. Each case says what scow must do with it: ``refuse`` (an error that
names ``member``) or ``confine`` (accepted, and ``check`` holds inside the target).
Entry points (layers, build contexts, ADD, load, import, docker cp) run the same
cases through their own front doors.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class Canary:
    """A tree outside every target, hashed before and compared after."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="scow-canary-"))
        (self.root / "secret").write_text("host secret\n")
        (self.root / "dir").mkdir()
        (self.root / "dir" / "file").write_text("host file\n")
        self.before = self.digest()

    def digest(self) -> dict[str, str]:
        out = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in sorted(dirnames + filenames):
                path = Path(dirpath) / name
                st = os.lstat(path)
                data = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
                out[str(path.relative_to(self.root))] = (
                    f"{st.st_mode:o} {hashlib.sha256(data).hexdigest()}"
                )
        return out

    def assert_untouched(self) -> None:
        now = self.digest()
        assert now == self.before, f"the canary changed: {sorted(set(now) ^ set(self.before))}"

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _tar(build: Callable[[tarfile.TarFile], None], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        build(tar)
    return out.getvalue()


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"pwned\n", mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _link(tar: tarfile.TarFile, name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


def _special(tar: tarfile.TarFile, name: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = kind, 8, 0
    tar.addfile(info)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Canary], bytes]
    expect: str  # "refuse" or "confine"
    member: str = ""  # what the refusal names
    # For "confine": a check of the target (a directory) after extraction.
    check: Callable[[Path], None] | None = None
    # The least size cap under which the case is accepted (the sparse file).
    needs_cap: int = 0


UP = "../" * 24  # from any target scow uses, more than enough to reach /


def _dotdot(c: Canary) -> bytes:
    return _tar(lambda t: _file(t, f"{UP}{str(c.root).lstrip('/')}/pwned"))


def _absolute(c: Canary) -> bytes:
    return _tar(lambda t: _file(t, f"{c.root}/pwned"))


def _absolute_lands_inside(c: Canary) -> Callable[[Path], None]:
    def check(target: Path) -> None:
        assert (target / str(c.root).lstrip("/") / "pwned").read_bytes() == b"pwned\n"

    return check


def _symlink_then_file(c: Canary) -> bytes:
    def build(t: tarfile.TarFile) -> None:
        _link(t, "x", str(c.root / "secret"))
        _file(t, "x")

    return _tar(build)


def _file_through_symlink_dir(c: Canary) -> bytes:
    def build(t: tarfile.TarFile) -> None:
        _link(t, "d", str(c.root))
        _file(t, "d/pwned")

    return _tar(build)


def _hardlink_outside(c: Canary) -> bytes:
    return _tar(lambda t: _link(t, "h", f"{UP}{str(c.root).lstrip('/')}/secret", tarfile.LNKTYPE))


def _hardlink_absolute(c: Canary) -> bytes:
    return _tar(lambda t: _link(t, "h", str(c.root / "secret"), tarfile.LNKTYPE))


def _hardlink_through_symlink(c: Canary) -> bytes:
    def build(t: tarfile.TarFile) -> None:
        _link(t, "s", str(c.root))
        _link(t, "h", "s/secret", tarfile.LNKTYPE)

    return _tar(build)


def _symlink_chain(c: Canary) -> bytes:
    def build(t: tarfile.TarFile) -> None:
        _link(t, "a", "b")
        _link(t, "b", "c")
        _link(t, "c", str(c.root / "dir"))
        _file(t, "a/pwned")

    return _tar(build)


def _symlink_loop(c: Canary) -> bytes:
    def build(t: tarfile.TarFile) -> None:
        _link(t, "l1", "l2")
        _link(t, "l2", "l1")
        _file(t, "l1/pwned")

    return _tar(build)


def _device(c: Canary) -> bytes:
    return _tar(lambda t: _special(t, "dev/sda", tarfile.BLKTYPE))


def _char_device(c: Canary) -> bytes:
    return _tar(lambda t: _special(t, "dev/mem", tarfile.CHRTYPE))


def _fifo(c: Canary) -> bytes:
    return _tar(lambda t: _special(t, "fifo", tarfile.FIFOTYPE))


def _setuid(c: Canary) -> bytes:
    return _tar(lambda t: _file(t, "bin/su", b"#!/bin/sh\nid\n", mode=0o4755))


def _setuid_kept_inside(target: Path) -> None:
    st = os.lstat(target / "bin" / "su")
    assert stat.S_IMODE(st.st_mode) == 0o4755


SPARSE_SIZE = 1 << 30


def _sparse(c: Canary) -> bytes:
    """A GNU sparse file of 1 GiB: a few bytes of data at its end, holes before."""

    def build(t: tarfile.TarFile) -> None:
        data = b"end\n"
        info = tarfile.TarInfo("sparse")
        info.size = len(data)
        info.pax_headers = {
            "GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "sparse",
            "GNU.sparse.realsize": str(SPARSE_SIZE),
        }  # fmt: skip
        # PAX 1.0 sparse: the map is a text block before the data: count, offset, size.
        sparse_map = f"1\n{SPARSE_SIZE - len(data)}\n{len(data)}\n".encode()
        block = sparse_map + b"\0" * (512 - len(sparse_map))
        info.size = len(block) + len(data)
        t.addfile(info, io.BytesIO(block + data))

    return _tar(build)


def _sparse_stays_sparse(target: Path) -> None:
    st = os.stat(target / "sparse")
    assert st.st_size == SPARSE_SIZE
    assert st.st_blocks * 512 < 1 << 20, f"{st.st_blocks * 512} bytes on disk"
    with open(target / "sparse", "rb") as f:
        f.seek(SPARSE_SIZE - 4)
        assert f.read() == b"end\n"


def _gzip_bomb(c: Canary) -> bytes:
    """A gzip'd tar whose one file says 64 GiB; a few MB of zeros follow, compressed to
    a few KB. Refused at its header, before a byte of it is written."""
    info = tarfile.TarInfo("bomb")
    info.size = 64 << 30
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [compressor.compress(header)]
    zeros = bytes(1 << 20)
    for _ in range(16):
        out.append(compressor.compress(zeros))
    out.append(compressor.flush())
    return b"".join(out)


def _long_name(c: Canary) -> bytes:
    return _tar(lambda t: _file(t, "a" * 4096))


def _long_component(c: Canary) -> bytes:
    return _tar(lambda t: _file(t, "d/" + "b" * 300))


CASES = [
    Case("dotdot", _dotdot, "refuse", "pwned"),
    Case("absolute", _absolute, "confine"),
    Case("symlink-then-file", _symlink_then_file, "refuse", "x"),
    Case("file-through-symlink-dir", _file_through_symlink_dir, "refuse", "d/pwned"),
    Case("hardlink-outside", _hardlink_outside, "refuse", "h"),
    Case("hardlink-absolute", _hardlink_absolute, "refuse", "h"),
    Case("hardlink-through-symlink", _hardlink_through_symlink, "refuse", "h"),
    Case("symlink-chain", _symlink_chain, "refuse", "a/pwned"),
    Case("symlink-loop", _symlink_loop, "refuse", "l1/pwned"),
    Case("block-device", _device, "refuse", "dev/sda"),
    Case("char-device", _char_device, "refuse", "dev/mem"),
    Case("fifo", _fifo, "refuse", "fifo"),
    Case("setuid", _setuid, "confine", check=_setuid_kept_inside),
    Case("sparse-1gib", _sparse, "confine", "sparse", _sparse_stays_sparse, needs_cap=1 << 30),
    Case("gzip-bomb", _gzip_bomb, "refuse", "bomb"),
    Case("name-4096-bytes", _long_name, "refuse", "aaaa"),
    Case("component-300-bytes", _long_component, "refuse", "d/bbb"),
]


def case_ids() -> list[str]:
    return [c.name for c in CASES]


def confined_check(case: Case, canary: Canary) -> Callable[[Path], None] | None:
    if case.name == "absolute":
        return _absolute_lands_inside(canary)
    return case.check


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1)
