"""Layer tars with OCI whiteouts, unpacked into overlay lowerdirs, and unsafe archives."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from images.layers import pack, unpack
from images.store import Image, ImageStore
from runtime.engine import Runtime
from runtime.spec import RunOptions
from runtime.tarfs import OPAQUE_XATTR, UnsafeArchive
from tests.runtime.helpers import run


def make_tar(*members: tuple[str, str, bytes | str]) -> io.BytesIO:
    """(kind, name, data-or-linkname) with kind file, dir, sym, link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                         "link": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE}[kind]  # fmt: skip
            if kind == "dir":
                info.mode = 0o755
            if kind in ("sym", "link"):
                assert isinstance(data, str)
                info.linkname = data
            tar.addfile(info)
    buf.seek(0)
    return buf


def test_whiteouts_round_trip(tmp_path: Path) -> None:
    layer = make_tar(
        ("dir", "etc", b""), ("file", "etc/.wh.motd", b""), ("dir", "var/cache", b""),
        ("file", "var/cache/.wh..wh..opq", b""), ("file", "var/cache/new", b"n"),
        ("sym", "bin/sh", "/bin/busybox"),
    )  # fmt: skip
    unpack(layer, tmp_path / "u")
    motd = os.lstat(tmp_path / "u/etc/motd")
    assert stat.S_ISCHR(motd.st_mode) and motd.st_rdev == 0
    assert os.getxattr(tmp_path / "u/var/cache", OPAQUE_XATTR) == b"y"
    assert os.readlink(tmp_path / "u/bin/sh") == "/bin/busybox"

    out = io.BytesIO()
    digest, size = pack(tmp_path / "u", out)
    assert size == len(out.getvalue()) and len(digest) == 64
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        names = tar.getnames()
    assert "etc/.wh.motd" in names and "var/cache/.wh..wh..opq" in names


@pytest.mark.parametrize(
    ("members", "culprit", "reason"),
    [
        ([("file", "../evil", b"x")], "../evil", "outside"),
        ([("file", "a/../../evil", b"x")], "a/../../evil", "outside"),
        (
            [("sym", "out", "/etc"), ("file", "out/passwd", b"x")],
            "out/passwd",
            "through the symlink",
        ),
        ([("sym", "up", "../.."), ("file", "up/x", b"x")], "up/x", "through the symlink"),
        ([("link", "hl", "../../etc/shadow")], "hl", "outside"),
        ([("chr", "dev/mem", "")], "dev/mem", "device nodes"),
    ],
)
def test_unsafe_archives_write_nothing(
    tmp_path: Path, members: list[tuple[str, str, bytes | str]], culprit: str, reason: str
) -> None:
    with pytest.raises(UnsafeArchive, match=reason) as info:
        unpack(make_tar(*members), tmp_path / "dest")
    assert info.value.member == culprit
    assert not (tmp_path / "dest").exists()  # made by the unpack, removed with it
    assert not (tmp_path / "evil").exists()


def test_decompression_bomb_is_capped(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchive, match="expands past 1000 bytes"):
        unpack(make_tar(("file", "big", b"0" * 2000)), tmp_path / "d", max_bytes=1000)


async def test_deleted_file_is_hidden_in_a_container_and_kept_below(
    store: ImageStore, busybox: Image, runtime: Runtime, tmp_path: Path
) -> None:
    upper = tmp_path / "upper"
    unpack(make_tar(("dir", "etc", b""), ("file", "etc/.wh.group", b"")), upper)
    diff_id = store.add_layer_dir(upper)
    config = dict(busybox.config)
    config["rootfs"] = {"type": "layers", "diff_ids": [*busybox.diff_ids, diff_id]}
    config["history"] = [*busybox.config["history"], {"created_by": "rm /etc/group"}]
    image = store.create_image(config, tag="deleted:1")

    r = await run(runtime, store.layer_dirs(image)[-1], "cat", "/etc/group")
    assert r.code == 0  # the lower layer alone still has it
    rec = await runtime.create(
        image.run_config, store.layer_dirs(image), RunOptions(command=("ls", "/etc"))
    )
    await runtime.start(rec.id)
    await runtime.wait(rec.id)
    assert "group" not in [ln.text for ln in runtime.logs(rec.id)]
    assert "passwd" in [ln.text for ln in runtime.logs(rec.id)]
    await runtime.remove(rec.id)
    assert [row["created_by"] for row in store.history(image)] == [
        "rm /etc/group", "scow image bootstrap busybox"
    ]  # fmt: skip
    assert all(row["size"] > 0 for row in store.history(image))
