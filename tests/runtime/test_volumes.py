"""Volumes: anonymous, named, bind and volumes-from, on read-only containers too."""

from __future__ import annotations

from pathlib import Path

from runtime.engine import Runtime
from runtime.spec import ImageConfig, RunOptions, Volume
from tests.runtime.helpers import BUSYBOX, run


async def test_named_volume_outlives_container_and_volumes_from_sees_it(
    runtime: Runtime, busybox_layer: Path
) -> None:
    vol = (Volume("/data", "data"),)
    w = await run(runtime, busybox_layer, "sh", "-c", "echo kept > /data/f", volumes=vol,
                  read_only=True)  # fmt: skip
    assert w.code == 0, w
    r = await run(runtime, busybox_layer, "cat", "/data/f", volumes=vol)
    assert r.out == "kept\n"

    holder = await runtime.create(
        BUSYBOX, [busybox_layer], RunOptions(command=("true",), volumes=vol, name="holder")
    )
    seen = await run(runtime, busybox_layer, "cat", "/data/f", volumes_from=("holder",))
    assert seen.out == "kept\n"
    await runtime.remove(holder.id)
    assert [v.name for v in runtime.volumes.all()] == ["data"]


async def test_bind_mount_read_only(runtime: Runtime, busybox_layer: Path, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from host\n")
    r = await run(
        runtime, busybox_layer, "sh", "-c", "cat /mnt/in.txt; touch /mnt/x 2>&1",
        volumes=(Volume("/mnt", str(tmp_path), read_only=True),),
    )  # fmt: skip
    assert r.out.splitlines() == ["from host", "touch: /mnt/x: Read-only file system"]
    assert not (tmp_path / "x").exists()


async def test_image_volume_is_anonymous_and_seeded(runtime: Runtime, busybox_layer: Path) -> None:
    image = ImageConfig(cmd=("sh",), volumes=("/etc",))
    rec = await runtime.create(image, [busybox_layer], RunOptions(command=("cat", "/etc/group")))
    await runtime.start(rec.id)
    await runtime.wait(rec.id)
    assert runtime.logs(rec.id)[0].text == "root:x:0:"
    (name,) = rec.anonymous_volumes
    assert (runtime.volumes.get(name).path / "passwd").exists()
    await runtime.remove(rec.id, volumes=True)
    assert runtime.volumes.all() == []


async def test_writable_container_diff(runtime: Runtime, busybox_layer: Path) -> None:
    rec = await runtime.create(
        BUSYBOX, [busybox_layer],
        RunOptions(command=("sh", "-c", "echo n > /root/added; echo x >> /etc/group; rm /bin/vi")),
    )  # fmt: skip
    await runtime.start(rec.id)
    assert (await runtime.wait(rec.id)).code == 0
    changes = runtime.changes(rec.id)
    assert ("A", "/root/added") in changes
    assert ("C", "/etc/group") in changes and ("C", "/etc") in changes
    assert ("D", "/bin/vi") in changes
    assert (busybox_layer / "bin/vi").is_symlink()  # the image layer is untouched
    await runtime.remove(rec.id)
