"""Volumes: directories under the state dir that outlive containers.

``<root>/<name>/_data`` is what containers mount (Docker's layout). Anonymous
volumes get a random 64-hex name; named ones are made on first use. A volume in
use by a container cannot be removed.

``volume_mounts`` plans a container's bind mounts from ``-v``, the image's
VOLUMEs and ``--volumes-from``; ``seed_new_volumes`` gives an empty new volume a
copy of what the image has at its path (as Docker does).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import Conflict, InvalidOption, NotFound
from runtime.oci import Mount
from runtime.records import ContainerRecord
from runtime.rootdir import RootDir, UnsafePath
from runtime.spec import Volume
from runtime.tarfs import UnsafeArchive, extract, read_tree

VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$")


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    path: Path
    created: float
    anonymous: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)


class VolumeStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _meta(self, name: str) -> Path:
        return self.root / name / "volume.json"

    def create(
        self, name: str = "", *, labels: Mapping[str, str] | None = None, anonymous: bool = False
    ) -> VolumeInfo:
        """Make a volume; an existing one of that name is returned as it is."""
        if not name:
            name, anonymous = secrets.token_hex(32), True
        if not VOLUME_NAME.match(name):
            raise InvalidOption("volume name", name, "use letters, digits, '_', '.' and '-'")
        if self._meta(name).exists():
            return self.get(name)
        data = self.root / name / "_data"
        data.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(data.parent, 0o700)  # the volume's own files are root's and the container's
        os.chmod(data, 0o755)
        info = VolumeInfo(name, data, time.time(), anonymous, dict(labels or {}))
        meta = {"created": info.created, "anonymous": anonymous, "labels": dict(info.labels)}
        self._meta(name).write_text(json.dumps(meta))
        return info

    def get(self, name: str) -> VolumeInfo:
        if not VOLUME_NAME.match(name):
            raise NotFound("volume", name)
        try:
            meta = json.loads(self._meta(name).read_text())
        except FileNotFoundError:
            raise NotFound("volume", name) from None
        return VolumeInfo(
            name, self.root / name / "_data", meta["created"], meta["anonymous"], meta["labels"]
        )

    def all(self) -> list[VolumeInfo]:
        if not self.root.is_dir():
            return []
        return [
            self.get(p.name) for p in sorted(self.root.iterdir()) if (p / "volume.json").exists()
        ]

    def remove(self, name: str, *, in_use_by: list[str] | None = None) -> None:
        self.get(name)
        if in_use_by:
            raise Conflict(f"volume {name} is in use by container {', '.join(in_use_by)}")
        shutil.rmtree(self.root / name)


def volume_mounts(
    store: VolumeStore, record: ContainerRecord, sources: list[ContainerRecord]
) -> tuple[list[Mount], list[tuple[str, str]], list[str], set[str]]:
    """Mounts for -v, the image's VOLUMEs and --volumes-from: the mounts, the volumes
    (name, container path), the new anonymous ones, and those never to be seeded from the
    image (``nocopy``)."""
    opts = record.options
    mounts: list[Mount] = []
    named: list[tuple[str, str]] = []
    unseeded: set[str] = set()  # nocopy: mounted, never seeded from the image
    anonymous: list[str] = []
    targets = {v.target for v in opts.volumes}
    wanted = list(opts.volumes)
    wanted += [Volume(target=t) for t in record.image_config.volumes if t not in targets]
    for v in wanted:
        mode = "ro" if v.read_only else "rw"
        if v.kind == "bind":
            propagation = (v.propagation,) if v.propagation else ()
            mounts.append(Mount(v.target, v.source, "bind", ("rbind", mode, *propagation)))
            continue
        vol = store.create(v.source, anonymous=v.kind == "anonymous")
        if vol.anonymous:
            anonymous.append(vol.name)
        named.append((vol.name, v.target))
        if v.nocopy:
            unseeded.add(vol.name)
        mounts.append(Mount(v.target, str(vol.path), "bind", ("rbind", mode)))
    for src in sources:
        for vol_name, target in src.volumes:
            if target not in targets:
                path = str(store.get(vol_name).path)
                mounts.append(Mount(target, path, "bind", ("rbind", "rw")))
                named.append((vol_name, target))
        for v in src.options.volumes:
            if v.kind == "bind" and v.target not in targets:
                mode = "ro" if v.read_only else "rw"
                mounts.append(Mount(v.target, v.source, "bind", ("rbind", mode)))
    return mounts, named, anonymous, unseeded


def seed_new_volumes(image: RootDir, volumes: list[tuple[str, str]], store: VolumeStore) -> None:
    """An empty volume mounted where the image has a directory starts with a copy of it
    (its owner and mode too), as Docker does. The image's path is resolved inside the
    image (a VOLUME behind an image's symlink to / is the image's /, never the host's),
    and copied through fds, links kept as links."""
    for name, target in volumes:
        data = store.get(name).path
        if any(data.iterdir()):
            continue
        try:
            if not image.is_dir(image.resolve(target)):
                continue
            with RootDir(data) as volume:
                extract(read_tree(image, target, follow=True), volume)
        except (UnsafePath, UnsafeArchive) as exc:
            raise InvalidOption("volume", target, f"cannot seed it from the image: {exc}") from None
