"""RootDir: paths resolved inside a root, as openat2(RESOLVE_IN_ROOT) does, on fds.

Every test runs twice: with openat2, and with the fd walker that kernels before
5.6 (and roots with mounts) use, so both give the same answers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import rootdir
from runtime.rootdir import LinkRefused, PathNotFound, RootDir, UnsafePath


@pytest.fixture(params=["openat2", "walk"])
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    saved = rootdir.OPENAT2
    rootdir.OPENAT2 = None if request.param == "openat2" else False
    if request.param == "openat2" and not rootdir._has_openat2():
        pytest.skip("this kernel has no openat2")
    yield request.param
    rootdir.OPENAT2 = saved


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with an image's kinds of links, and a host secret beside it."""
    (tmp_path / "secret").write_text("host\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("app:x:1000:1000::/home/app:/bin/sh\n")
    (root / "data").mkdir()
    (root / "data" / "f").write_text("inside\n")
    os.symlink("/", root / "h")  # RUN ln -s / /h
    os.symlink("../../../../secret", root / "up")
    os.symlink("/etc", root / "abs-etc")
    os.symlink("data", root / "rel-data")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    return root


def read(root: RootDir, path: str) -> bytes:
    fd = root.open(path)
    try:
        return os.read(fd, 100)
    finally:
        os.close(fd)


def test_symlinks_resolve_inside_the_root_never_above(tree: Path, mode: str) -> None:
    with RootDir(tree) as root:
        assert read(root, "/h/etc/passwd").startswith(b"app:")
        assert read(root, "abs-etc/passwd").startswith(b"app:")
        assert read(root, "rel-data/f") == b"inside\n"
        assert read(root, "/../../../etc/passwd").startswith(b"app:")
        with pytest.raises(PathNotFound):
            root.open("up")  # ../../../../secret from inside is /secret of the root
        with pytest.raises(UnsafePath, match="too many levels"):
            root.open("loop1")


def test_the_host_token_behind_an_image_symlink_is_not_reached(tree: Path, mode: str) -> None:
    """COPY --from=stage /h/var/lib/scow/token /t, after RUN ln -s / /h."""
    with RootDir(tree) as root, pytest.raises(PathNotFound):
        root.open("/h/var/lib/scow/token")


def test_no_symlinks_refuses_a_link_anywhere_on_the_way(tree: Path, mode: str) -> None:
    with RootDir(tree) as root:
        with pytest.raises(LinkRefused):
            root.open("rel-data/f", symlinks=False)
        with pytest.raises(LinkRefused):
            root.parent("h/tmp/x", symlinks=False)
        assert read(root, "data/f") == b"inside\n"


def test_a_final_symlink_is_opened_itself_without_follow(tree: Path, mode: str) -> None:
    with RootDir(tree) as root:
        fd = root.open("h", os.O_PATH, follow=False)
        try:
            assert os.readlink("", dir_fd=fd) == "/"
        finally:
            os.close(fd)


def test_resolve_gives_the_in_root_path_and_keeps_missing_parts(tree: Path, mode: str) -> None:
    with RootDir(tree) as root:
        assert root.resolve("/h/h/etc/new/../x") == "/etc/x"
        assert root.resolve("abs-etc/passwd") == "/etc/passwd"
        assert root.resolve("/../../up") == "/secret"


def test_makedirs_refuses_to_go_through_a_symlink(tree: Path, mode: str) -> None:
    with RootDir(tree) as root:
        os.close(root.makedirs("/a/b/c"))
        assert (tree / "a" / "b" / "c").is_dir()
        with pytest.raises(LinkRefused):
            root.makedirs("/h/tmp/escape")
        assert not (tree.parent / "tmp").exists()
        os.close(root.makedirs("/rel-data/sub", symlinks=True))
        assert (tree / "data" / "sub").is_dir()


def test_read_text_reads_the_images_passwd_never_the_hosts(tree: Path, mode: str) -> None:
    os.unlink(tree / "etc" / "passwd")
    os.symlink("/../../../../../etc/shadow", tree / "etc" / "passwd")
    with RootDir(tree) as root:
        assert root.read_text("/etc/passwd") == ""


def test_mounts_are_crossed_like_the_container_sees_them(tmp_path: Path) -> None:
    rootfs, volume = tmp_path / "rootfs", tmp_path / "volume"
    (rootfs / "srv").mkdir(parents=True)
    volume.mkdir()
    (volume / "v").write_text("volume\n")
    os.symlink("/srv/vol", rootfs / "link")
    with RootDir(rootfs, mounts={"/srv/vol": volume}, hidden=["/tmp"]) as root:
        assert read(root, "/link/v") == b"volume\n"
        assert read(root, "/srv/vol/../vol/v") == b"volume\n"
        assert root.resolve("/link/v") == "/srv/vol/v"
        with pytest.raises(UnsafePath, match="cannot see"):
            root.open("/tmp/x")


def test_a_directory_swapped_for_a_symlink_mid_walk_never_leads_out(tmp_path: Path) -> None:
    """A container that flips /d between a directory and a symlink to / while we read
    /d/f: every read gets the container's file or an error, never the host's."""
    root_dir = tmp_path / "root"
    (root_dir / "real").mkdir(parents=True)
    (root_dir / "real" / "f").write_text("container\n")
    (tmp_path / "f").write_text("HOST\n")
    stop = threading.Event()

    def flip() -> None:
        d, spare = root_dir / "d", root_dir / "d.new"
        while not stop.is_set():
            for make in (lambda p: os.symlink("/real", p), lambda p: os.symlink("/..", p)):
                make(spare)
                os.replace(spare, d)

    flipper = threading.Thread(target=flip)
    flipper.start()
    seen = set()
    try:
        for walk in (None, False):
            rootdir.OPENAT2 = walk
            with RootDir(root_dir) as root:
                for _ in range(2000):
                    try:
                        seen.add(read(root, "/d/f"))
                    except UnsafePath:
                        seen.add(b"refused")
    finally:
        stop.set()
        flipper.join()
        rootdir.OPENAT2 = None
    assert b"HOST\n" not in seen
    assert b"container\n" in seen


def test_names_that_no_file_system_takes_are_refused_by_name() -> None:
    with pytest.raises(UnsafePath, match="longer than 4096"):
        rootdir.check_name("a" * 4097)
    with pytest.raises(UnsafePath, match="component is longer than 255"):
        rootdir.check_name("x/" + "b" * 256)
    with pytest.raises(UnsafePath, match="NUL"):
        rootdir.check_name("a\0b")
