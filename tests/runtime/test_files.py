"""docker cp's path resolution and tar extraction: nothing leads outside the container.

The destination is resolved inside the container (its symlinks followed there);
below it nothing is followed: a member whose parent is a symlink is refused,
whoever made the link.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.errors import InvalidOption, NotFound
from runtime.files import extract_into, path_stat, write_tar
from runtime.rootdir import RootDir
from runtime.tarfs import UnsafeArchive


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[RootDir]:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("container\n")
    (root / "tmp").mkdir()
    os.symlink("/etc", root / "tmp" / "abs")  # absolute: the container's /etc
    os.symlink("../../../../../../etc", root / "tmp" / "up")  # climbs no higher than /
    (tmp_path / "volume").mkdir()
    (tmp_path / "outside").mkdir()
    with RootDir(root, mounts={"/data": tmp_path / "volume"}, hidden=("/proc",)) as fs:
        yield fs


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


def test_symlinks_resolve_inside_the_container(fs: RootDir) -> None:
    assert fs.resolve("/tmp/abs/passwd") == "/etc/passwd"
    assert fs.resolve("/tmp/up/passwd") == "/etc/passwd"
    assert fs.resolve("/../../etc/passwd") == "/etc/passwd"
    assert fs.resolve("/data/x") == "/data/x"
    with pytest.raises(InvalidOption, match="cannot see"):
        path_stat(fs, "/proc/1/environ")


def test_a_destination_through_a_container_symlink_resolves_inside(
    fs: RootDir, tmp_path: Path
) -> None:
    extract_into(fs, "/tmp/abs", _tar(("new", b"new\n", "")))
    assert (fs.path / "etc" / "new").read_text() == "new\n"
    assert list((tmp_path / "outside").iterdir()) == []


def test_members_are_never_written_through_a_link(fs: RootDir, tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchive, match="through abs"):
        extract_into(fs, "/tmp", _tar(("abs/passwd", b"written\n", "")))
    assert (fs.path / "etc" / "passwd").read_text() == "container\n"
    with pytest.raises(UnsafeArchive, match="escape"):
        extract_into(fs, "/tmp", _tar(("escape", None, "/"), ("escape/etc/shadow", b"x", "")))
    assert not (fs.path / "etc" / "shadow").exists()
    assert not (fs.path / "tmp" / "escape").exists()  # checked whole before any write


def test_a_volume_is_written_where_the_container_sees_it(fs: RootDir, tmp_path: Path) -> None:
    extract_into(fs, "/data", _tar(("v", b"volume\n", "")))
    assert (tmp_path / "volume" / "v").read_text() == "volume\n"


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ((("../evil", b"x", ""),), "'..'"),
        ((("a/../../evil", b"x", ""),), "'..'"),
    ],
)
def test_unsafe_members_are_refused(
    fs: RootDir, tmp_path: Path, members: tuple[tuple[str, bytes | None, str], ...], reason: str
) -> None:
    with pytest.raises(UnsafeArchive, match=reason):
        extract_into(fs, "/tmp", _tar(*members))
    assert not (tmp_path / "evil").exists() and not (fs.path / "evil").exists()


def test_a_device_node_is_refused(fs: RootDir) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("null")
        info.type = tarfile.CHRTYPE
        tar.addfile(info)
    out.seek(0)
    with pytest.raises(UnsafeArchive, match="device"):
        extract_into(fs, "/tmp", out)


def test_not_a_tar_is_refused(fs: RootDir) -> None:
    with pytest.raises(UnsafeArchive, match="tar"):
        extract_into(fs, "/tmp", io.BytesIO(b"not a tar at all" * 64))


def test_stat_and_tar_out(fs: RootDir) -> None:
    info = path_stat(fs, "/etc")
    assert info["name"] == "etc" and stat.S_ISDIR(int(str(info["mode"])))
    link = path_stat(fs, "/tmp/abs")
    assert link["link"] == "/etc" and stat.S_ISLNK(int(str(link["mode"])))
    out = io.BytesIO()
    write_tar(fs, "/etc", out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        assert sorted(tar.getnames()) == ["etc", "etc/passwd"]
    with pytest.raises(NotFound):
        path_stat(fs, "/no/such")
