"""The image store: tags, ids, removal, garbage collection."""

from __future__ import annotations

import pytest

from images.errors import ImageInUse, ImageNotFound, InvalidReference
from images.store import Image, ImageStore
from runtime.engine import Runtime
from runtime.spec import RunOptions


def test_bootstrap_busybox_is_tagged_and_runnable(store: ImageStore, busybox: Image) -> None:
    assert busybox.tags == ("busybox:latest",)
    assert busybox.run_config.cmd == ("sh",)
    assert store.get("busybox").id == busybox.id
    assert store.get(busybox.short_id).id == busybox.id
    assert store.get(busybox.id).id == busybox.id
    (layer,) = store.layer_dirs(busybox)
    assert (layer / "bin/busybox").is_file()


def test_names_that_look_like_ids_are_names_first(store: ImageStore, busybox: Image) -> None:
    store.tag("busybox", "cafe")
    assert store.get("cafe").id == busybox.id
    assert store.get(busybox.id[7:11]).id == busybox.id  # a short id prefix still works


def test_tag_untag_and_remove(store: ImageStore, busybox: Image) -> None:
    store.tag("busybox", "mine:v1")
    assert store.get("mine:v1").tags == ("busybox:latest", "mine:v1")
    assert store.remove("mine:v1") == ["Untagged: mine:v1"]
    assert store.get("busybox").tags == ("busybox:latest",)
    with pytest.raises(ImageInUse, match="in use by container web"):
        store.remove("busybox", in_use_by=["web"])
    removed = store.remove("busybox", in_use_by=["web"], force=True)
    assert removed == ["Untagged: busybox:latest", f"Deleted: {busybox.id}"]
    with pytest.raises(ImageNotFound):
        store.get("busybox")
    assert store.gc() == (3, 1)  # config, manifest and layer blobs; one layer dir
    assert list(store.blobs.iterdir()) == [] and list(store.layers.iterdir()) == []


def test_moving_a_tag_leaves_the_old_image_dangling(store: ImageStore, busybox: Image) -> None:
    config = dict(busybox.config, created="2030-01-01T00:00:00Z")
    newer = store.create_image(config, tag="busybox")
    assert newer.id != busybox.id
    listed = {i.id: i.tags for i in store.images()}
    assert listed == {newer.id: ("busybox:latest",), busybox.id: ()}


@pytest.mark.parametrize("bad", ["../etc/passwd", "UPPER", "a//b", "x:", "x@sha256:00"])
def test_bad_references_are_refused(store: ImageStore, busybox: Image, bad: str) -> None:
    with pytest.raises(InvalidReference, match="invalid image reference"):
        store.tag("busybox", bad)


@pytest.mark.slow
async def test_debian_base_by_debootstrap(store: ImageStore, runtime: Runtime) -> None:
    from images.base import bootstrap

    lines: list[str] = []
    image = bootstrap(store, "debian:bookworm", lines.append)
    assert image.tags == ("debian:bookworm", "debian:latest")
    assert any("debootstrap" in line for line in lines)  # progress was shown
    (layer,) = store.layer_dirs(image)
    assert list((layer / "dev").iterdir()) == []
    rec = await runtime.create(
        image.run_config, store.layer_dirs(image),
        RunOptions(command=("sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME; id -un")),
    )  # fmt: skip
    await runtime.start(rec.id)
    await runtime.wait(rec.id)
    assert [ln.text for ln in runtime.logs(rec.id)] == ["bookworm", "root"]
    await runtime.remove(rec.id)
