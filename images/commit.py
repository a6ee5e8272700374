"""``commit``: a writable container's changes become a new image on top of its own."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from images.config import add_step, child_config
from images.errors import ImageError, ImageNotFound
from images.store import Image, ImageStore
from runtime.engine import Runtime
from runtime.spec import image_config_to_json


async def commit(
    store: ImageStore,
    runtime: Runtime,
    container: str,
    *,
    tag: str | None = None,
    author: str = "",
    message: str = "",
    changes: Mapping[str, Any] | None = None,
    pause: bool = True,
) -> Image:
    """The container's upperdir as a layer over its image; ``changes`` edit the config
    (``{"Cmd": [...], "Env": [...]}``, as ``docker commit --change`` does)."""
    record = runtime.get(container)
    if record.options.read_only:
        raise ImageError(f"container {record.name} has a read-only rootfs: nothing to commit")
    diff_ids = [f"sha256:{Path(p).name}" for p in reversed(record.layers)]
    parent = _parent(store, record.image, diff_ids)
    config = child_config(parent.config if parent else None)
    if parent is None:  # its image is gone: rebuild the history from the layers it ran on
        config["rootfs"]["diff_ids"] = []
        config["config"] = image_config_to_json(record.image_config)
        for diff_id in diff_ids:
            add_step(config, "layer of a removed image", diff_id)
    paused = pause and record.status == "running"
    with store.adding():
        if paused:
            await runtime.pause(record.id)
        try:
            diff_id = store.add_layer_dir(runtime.paths(record.id).upper)
        finally:
            if paused:
                await runtime.resume(record.id)
        config["config"].update(changes or {})
        if author:
            config["author"] = author
        add_step(config, f"scow commit {record.name}", diff_id, message)
        return store.create_image(config, tag=tag)


def _parent(store: ImageStore, ref: str, diff_ids: list[str]) -> Image | None:
    if not ref:
        return None
    try:
        image = store.get(ref)
    except ImageNotFound:
        return None
    return image if image.diff_ids == diff_ids else None
