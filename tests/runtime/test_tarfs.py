"""tarfs: the one archive writer and tree reader, against the hostile corpus.

The corpus (tests/hostile.py) runs here straight into a target directory; the
entry points (layers, builds, load, import, docker cp) run it again through
their own front doors in their own tests.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.rootdir import RootDir
from runtime.tarfs import (
    Limits,
    Placement,
    UnsafeArchive,
    extract_tar,
    read_tree,
    write_tar,
)
from tests import hostile


@pytest.fixture
def canary() -> Iterator[hostile.Canary]:
    c = hostile.Canary()
    yield c
    c.assert_untouched()
    c.remove()


@pytest.mark.parametrize("case", hostile.CASES, ids=hostile.case_ids())
def test_the_hostile_corpus_never_leaves_its_target(
    case: hostile.Case, canary: hostile.Canary, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    target.mkdir()
    data = case.build(canary)
    with RootDir(target) as root:
        if case.expect == "refuse":
            with pytest.raises(UnsafeArchive) as refused:
                extract_tar(io.BytesIO(data), root, placement=Placement(layer=True))
            assert case.member in refused.value.member, str(refused.value)
        else:
            extract_tar(io.BytesIO(data), root, placement=Placement(layer=True))
            check = hostile.confined_check(case, canary)
            assert check is not None
            check(target)
    canary.assert_untouched()


def test_an_archive_over_its_cap_is_refused_at_the_member_that_passes_it(
    tmp_path: Path,
) -> None:
    data = hostile._tar(lambda t: [hostile._file(t, f"f{i}", b"x" * 600) for i in range(3)])
    with RootDir(tmp_path) as root, pytest.raises(UnsafeArchive, match="expands past") as exc:
        extract_tar(io.BytesIO(data), root, limits=Limits(max_bytes=1000))
    assert exc.value.member == "f1"


def test_too_many_members_and_huge_headers_are_refused(tmp_path: Path) -> None:
    many = hostile._tar(lambda t: [hostile._file(t, f"f{i}", b"") for i in range(5)])
    with RootDir(tmp_path) as root, pytest.raises(UnsafeArchive, match="more than 4 members"):
        extract_tar(io.BytesIO(many), root, limits=Limits(max_members=4))

    def pax(t: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("p")
        info.pax_headers = {"comment": "c" * 5000}
        t.addfile(info)

    with RootDir(tmp_path) as root, pytest.raises(UnsafeArchive, match="a header of"):
        extract_tar(io.BytesIO(hostile._tar(pax)), root, limits=Limits(max_header=4096))


def test_layer_whiteouts_and_opaque_dirs_round_trip(tmp_path: Path) -> None:
    def build(t: tarfile.TarFile) -> None:
        hostile._file(t, "keep/file")
        hostile._file(t, "gone/.wh.old")
        info = tarfile.TarInfo("opaque")
        info.type = tarfile.DIRTYPE
        t.addfile(info)
        hostile._file(t, "opaque/.wh..wh..opq", b"")

    layer = tmp_path / "layer"
    layer.mkdir()
    with RootDir(layer) as root:
        extract_tar(io.BytesIO(hostile._tar(build)), root, placement=Placement(layer=True))
        whiteout = os.lstat(layer / "gone" / "old")
        assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
        assert os.getxattr(layer / "opaque", "trusted.overlay.opaque") == b"y"
        out = io.BytesIO()
        write_tar(read_tree(root, layer=True), out, layer=True)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        names = tar.getnames()
    assert "gone/.wh.old" in names and "opaque/.wh..wh..opq" in names


def test_a_plain_extraction_refuses_whiteouts_and_keeps_wh_names_as_files(
    tmp_path: Path,
) -> None:
    data = hostile._tar(lambda t: hostile._file(t, ".wh.x"))
    with RootDir(tmp_path) as root:
        extract_tar(io.BytesIO(data), root)
    assert (tmp_path / ".wh.x").read_bytes() == b"pwned\n"


def test_an_existing_symlink_in_the_target_is_replaced_never_followed(
    tmp_path: Path, canary: hostile.Canary
) -> None:
    """docker cp into a container whose /x is a symlink to the host: the file replaces
    the link; a member below it is refused."""
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(str(canary.root / "secret"), target / "x")
    os.symlink(str(canary.root), target / "d")
    with RootDir(target) as root:
        extract_tar(io.BytesIO(hostile._tar(lambda t: hostile._file(t, "x"))), root)
        assert not (target / "x").is_symlink()
        with pytest.raises(UnsafeArchive, match="through d"):
            extract_tar(io.BytesIO(hostile._tar(lambda t: hostile._file(t, "d/y"))), root)


def test_no_replacing_a_directory_when_told_so(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    data = hostile._tar(lambda t: hostile._file(t, "dir"))
    with RootDir(tmp_path) as root, pytest.raises(UnsafeArchive, match="replace a directory"):
        extract_tar(io.BytesIO(data), root, placement=Placement(replace_dirs=False))


def test_owners_modes_times_and_hardlinks_are_kept(tmp_path: Path) -> None:
    def build(t: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("d")
        info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, 0o750, 7, 8, 1000
        t.addfile(info)
        info = tarfile.TarInfo("d/f")
        info.size, info.mode, info.uid, info.gid, info.mtime = 3, 0o640, 9, 10, 2000
        t.addfile(info, io.BytesIO(b"abc"))
        hostile._link(t, "d/g", "d/f", tarfile.LNKTYPE)

    with RootDir(tmp_path) as root:
        extract_tar(io.BytesIO(hostile._tar(build)), root)
    d, f = os.lstat(tmp_path / "d"), os.lstat(tmp_path / "d" / "f")
    assert (stat.S_IMODE(d.st_mode), d.st_uid, d.st_gid, int(d.st_mtime)) == (0o750, 7, 8, 1000)
    assert (stat.S_IMODE(f.st_mode), f.st_uid, f.st_gid, int(f.st_mtime)) == (0o640, 9, 10, 2000)
    assert os.lstat(tmp_path / "d" / "g").st_ino == f.st_ino


def test_chown_placement_owns_every_member(tmp_path: Path) -> None:
    data = hostile._tar(lambda t: hostile._file(t, "a/b"))
    (tmp_path / "dest").mkdir()
    with RootDir(tmp_path) as root:
        extract_tar(io.BytesIO(data), root, "/dest", placement=Placement(owner=(1000, 1001)))
    st = os.lstat(tmp_path / "dest" / "a" / "b")
    assert (st.st_uid, st.st_gid) == (1000, 1001)


def test_read_tree_keeps_links_as_links_and_files_seen_as_hardlinks(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("f\n")
    os.link(tmp_path / "f", tmp_path / "g")
    os.symlink("/etc/shadow", tmp_path / "s")
    with RootDir(tmp_path) as root:
        members = {m.name: m for m in read_tree(root, "/", name="top")}
    assert members["top/s"].kind == "symlink" and members["top/s"].linkname == "/etc/shadow"
    kinds = sorted((members["top/f"].kind, members["top/g"].kind))
    assert kinds == ["file", "hardlink"]
