"""docker cp's path resolution and tar extraction: nothing leads outside the container."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from runtime.errors import InvalidOption, NotFound
from runtime.files import ContainerFS, UnsafeCopy, extract_tar, path_stat, write_tar


@pytest.fixture
def fs(tmp_path: Path) -> ContainerFS:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("container\n")
    (root / "tmp").mkdir()
    os.symlink("/etc", root / "tmp" / "abs")  # absolute: the container's /etc
    os.symlink("../../../../../../etc", root / "tmp" / "up")  # climbs no higher than /
    (tmp_path / "volume").mkdir()
    (tmp_path / "outside").mkdir()
    return ContainerFS(root, mounts=(("/data", tmp_path / "volume"),), hidden=("/proc",))


def _tar(*members: tuple[str, bytes | None, str]) -> io.BytesIO:
    """(name, data or None for a directory, symlink target or "")."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def test_symlinks_resolve_inside_the_container(fs: ContainerFS) -> None:
    assert str(fs.resolve("/tmp/abs/passwd")) == "/etc/passwd"
    assert str(fs.resolve("/tmp/up/passwd")) == "/etc/passwd"
    assert str(fs.resolve("/../../etc/passwd")) == "/etc/passwd"
    assert fs.host_path(fs.resolve("/tmp/abs/passwd")) == fs.rootfs / "etc" / "passwd"
    assert fs.host_path(fs.resolve("/data/x")) == fs.rootfs.parent / "volume" / "x"
    with pytest.raises(InvalidOption, match="tmpfs"):
        fs.host_path(fs.resolve("/proc/1/environ"))


def test_writes_through_a_container_symlink_stay_inside(fs: ContainerFS, tmp_path: Path) -> None:
    host_etc = tmp_path / "outside"
    archive = _tar(("abs/passwd", b"written\n", ""), ("up/new", b"new\n", ""))
    extract_tar(fs, "/tmp", archive)
    assert (fs.rootfs / "etc" / "passwd").read_text() == "written\n"
    assert (fs.rootfs / "etc" / "new").read_text() == "new\n"
    assert list(host_etc.iterdir()) == []


def test_a_symlink_in_the_archive_cannot_carry_later_members_out(fs: ContainerFS) -> None:
    archive = _tar(("escape", None, "/"), ("escape/etc/shadow", b"x", ""))
    extract_tar(fs, "/tmp", archive)
    assert os.readlink(fs.rootfs / "tmp" / "escape") == "/"
    assert (fs.rootfs / "etc" / "shadow").read_bytes() == b"x"  # the container's own /etc


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ((("../evil", b"x", ""),), "'..'"),
        ((("a/../../evil", b"x", ""),), "'..'"),
    ],
)
def test_unsafe_members_are_refused(
    fs: ContainerFS, tmp_path: Path, members: tuple[tuple[str, bytes | None, str], ...], reason: str
) -> None:
    with pytest.raises(UnsafeCopy, match=reason):
        extract_tar(fs, "/tmp", _tar(*members))
    assert not (tmp_path / "evil").exists() and not (fs.rootfs / "evil").exists()


def test_a_device_node_is_refused(fs: ContainerFS) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("null")
        info.type = tarfile.CHRTYPE
        tar.addfile(info)
    out.seek(0)
    with pytest.raises(UnsafeCopy, match="device"):
        extract_tar(fs, "/tmp", out)


def test_not_a_tar_is_refused(fs: ContainerFS) -> None:
    with pytest.raises(UnsafeCopy, match="tar"):
        extract_tar(fs, "/tmp", io.BytesIO(b"not a tar at all" * 64))


def test_stat_and_tar_out(fs: ContainerFS) -> None:
    info = path_stat(fs, "/etc")
    assert info["name"] == "etc" and int(str(info["mode"])) & (1 << 31)  # Go's ModeDir
    link = path_stat(fs, "/tmp/abs")
    assert link["linkTarget"] == "/etc"
    out = io.BytesIO()
    write_tar(fs, "/etc", out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        assert sorted(tar.getnames()) == ["etc", "etc/passwd"]
    with pytest.raises(NotFound):
        path_stat(fs, "/no/such")
