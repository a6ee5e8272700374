"""save/load (docker-archive and OCI), import and commit."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from images.archive import import_rootfs, load, save
from images.commit import commit
from images.store import Image, ImageStore
from runtime.engine import Runtime
from runtime.spec import ImageConfig, RunOptions
from runtime.tarfs import UnsafeArchive


async def output(runtime: Runtime, store: ImageStore, image: Image, *cmd: str) -> list[str]:
    rec = await runtime.create(
        image.run_config, store.layer_dirs(image), RunOptions(command=cmd or None)
    )
    await runtime.start(rec.id)
    await runtime.wait(rec.id)
    lines = [ln.text for ln in runtime.logs(rec.id)]
    await runtime.remove(rec.id)
    return lines


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_save_then_load_into_a_fresh_store_keeps_the_id(
    store: ImageStore, busybox: Image, tmp_path: Path, fmt: str
) -> None:
    archive = io.BytesIO()
    save(store, ["busybox"], archive, fmt)  # type: ignore[arg-type]
    fresh = ImageStore(tmp_path / "fresh")
    archive.seek(0)
    assert load(fresh, archive) == ["Loaded image: busybox:latest"]
    loaded = fresh.get("busybox")
    assert loaded.id == busybox.id
    assert loaded.diff_ids == busybox.diff_ids


def docker_archive_from_known_bytes() -> tuple[bytes, str]:
    """A docker-archive made by hand: one layer with a static binary-free shell script."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for name, data in [("hello.txt", b"known bytes\n")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["cat", "/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "hand made"}],
    }).encode()  # fmt: skip
    config_hex = hashlib.sha256(config).hexdigest()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in [
            (f"{config_hex}.json", config),
            ("abc/layer.tar", layer_bytes),
            ("manifest.json", json.dumps([{"Config": f"{config_hex}.json",
              "RepoTags": ["known:1"], "Layers": ["abc/layer.tar"]}]).encode()),
        ]:  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue(), "sha256:" + config_hex


async def test_docker_archive_from_known_bytes_loads_and_runs(
    store: ImageStore, busybox: Image, runtime: Runtime
) -> None:
    data, image_id = docker_archive_from_known_bytes()
    assert load(store, io.BytesIO(data)) == ["Loaded image: known:1"]
    known = store.get("known:1")
    assert known.id == image_id
    # The layer has no programs of its own: run it on top of busybox to read the file.
    rec = await runtime.create(
        ImageConfig(cmd=("cat", "/hello.txt")),
        store.layer_dirs(known) + store.layer_dirs(busybox), RunOptions(),
    )  # fmt: skip
    await runtime.start(rec.id)
    await runtime.wait(rec.id)
    assert [ln.text for ln in runtime.logs(rec.id)] == ["known bytes"]
    await runtime.remove(rec.id)


def test_tampered_archive_is_refused_naming_the_member(store: ImageStore) -> None:
    data, _ = docker_archive_from_known_bytes()
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=out, mode="w") as tar:
        for member in src.getmembers():
            body = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "abc/layer.tar":
                body = body.replace(b"known bytes", b"other bytes")
            member.size = len(body)
            tar.addfile(member, io.BytesIO(body))
    with pytest.raises(UnsafeArchive, match=r"'abc/layer\.tar'.*the config says"):
        load(store, io.BytesIO(out.getvalue()))
    assert store.images() == []


async def test_import_rootfs_tarball(
    store: ImageStore, busybox: Image, runtime: Runtime, tmp_path: Path
) -> None:
    rootfs = io.BytesIO()
    save(store, ["busybox"], rootfs)
    rootfs.seek(0)
    with tarfile.open(fileobj=rootfs) as tar:
        layer = tar.extractfile(f"{busybox.diff_ids[0][7:]}/layer.tar").read()  # type: ignore[union-attr]
    image = import_rootfs(
        store, io.BytesIO(layer), tag="imported:1", config={"Cmd": ["echo", "ok"]}
    )
    assert image.tags == ("imported:1",)
    assert await output(runtime, store, image) == ["ok"]


async def test_commit_a_writable_container(
    store: ImageStore, busybox: Image, runtime: Runtime
) -> None:
    rec = await runtime.create(
        busybox.run_config, store.layer_dirs(busybox),
        RunOptions(command=("sh", "-c", "echo committed > /root/note")), image="busybox",
    )  # fmt: skip
    await runtime.start(rec.id)
    await runtime.wait(rec.id)
    changes = {"Cmd": ["cat", "/root/note"]}
    image = await commit(store, runtime, rec.id, tag="noted:1", changes=changes, message="a note")
    await runtime.remove(rec.id)
    assert image.diff_ids[:-1] == busybox.diff_ids
    assert await output(runtime, store, image) == ["committed"]
    assert store.history(image)[0]["comment"] == "a note"
