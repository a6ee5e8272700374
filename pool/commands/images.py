"""Image commands on a node: list, inspect, bootstrap, tag, remove, build, save, load,
import, and commit of a container's changes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from images import archive, reference
from images.base import bootstrap
from images.builder import Builder, BuildOptions
from images.commit import commit
from images.copying import Fetch
from images.distribution import Remote
from images.errors import ImageNotFound, InvalidReference
from images.store import Image, ImageStore
from pool.commands import OUTPUT_CHUNK, Command, CommandError, Handler, required, strings
from pool.contract.messages import event
from pool.events import EventSink
from pool.registries import Registries
from runtime.engine import Runtime
from runtime.rootdir import RootDir
from runtime.tarfs import Limits, extract_tar


def _disk_use(root: Path) -> int:
    total = 0
    for base, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(base, name)).st_blocks * 512
    return total


def _image_json(image: Image, store_size: Callable[[str], int]) -> dict[str, Any]:
    labels = (image.config.get("config") or {}).get("Labels") or {}
    return {
        "id": image.id, "tags": image.repo_tags, "digests": image.repo_digests,
        "created": image.config.get("created", ""),
        "size": sum(store_size(d) for d in image.diff_ids), "layers": len(image.diff_ids),
        "labels": labels,
    }  # fmt: skip


class ImageCommands:
    def __init__(
        self, images: ImageStore, runtime: Runtime, events: EventSink, fetch: Fetch | None = None,
        registries: Registries | None = None,
    ) -> None:  # fmt: skip
        self.images, self.runtime, self.events, self.fetch = images, runtime, events, fetch
        self.registries = registries or Registries()

    @property
    def commands(self) -> dict[str, Handler]:
        return {
            "images.list": self.images_list, "image.inspect": self.image_inspect,
            "image.bootstrap": self.image_bootstrap, "image.remove": self.image_remove,
            "image.tag": self.image_tag, "image.build": self.image_build,
            "image.save": self.image_save, "image.load": self.image_load,
            "image.import": self.image_import, "container.commit": self.container_commit,
            "image.pull": self.image_pull, "image.push": self.image_push,
            "image.has": self.image_has, "registry.login": self.registry_login,
            "registry.resolve": self.registry_resolve, "images.prune": self.images_prune,
        }  # fmt: skip

    # -- registries -------------------------------------------------------------------

    def _remote(self, cmd: Command, key: str = "ref") -> Remote:
        try:
            return Remote.parse(required(cmd.args, key))
        except InvalidReference as exc:
            raise CommandError("invalid", str(exc)) from None

    async def image_pull(self, cmd: Command) -> Any:
        """``docker pull``: from a registry (progress as Docker's JSON objects, one a line),
        or a base image scow makes (busybox, debian) when the name has no registry."""
        ref = required(cmd.args, "ref")
        if not reference.registry_of(reference.parse(ref)[0]):
            image = await asyncio.to_thread(bootstrap, self.images, ref,
                                            lambda line: cmd.progress(json.dumps(
                                                {"status": line})))  # fmt: skip
            return _image_json(image, self.images.layer_size)
        remote = self._remote(cmd)
        image = await self.registries.pull(self.images, remote, cmd.args.get("auth"),
                                           lambda o: cmd.progress(json.dumps(o)))  # fmt: skip
        self._event("pull", image, str(remote))
        return _image_json(image, self.images.layer_size)

    async def image_push(self, cmd: Command) -> Any:
        remote = self._remote(cmd, "target")
        image = self.images.get(required(cmd.args, "ref"))
        digest, size = await self.registries.push(
            self.images, image.id, remote, cmd.args.get("auth"),
            lambda o: cmd.progress(json.dumps(o)),
        )  # fmt: skip
        self._event("push", image, str(remote))
        return {"id": image.id, "digest": digest, "size": size}

    async def image_has(self, cmd: Command) -> Any:
        try:
            return {"id": self.images.get(required(cmd.args, "ref")).id}
        except ImageNotFound:
            return {"id": ""}

    async def registry_login(self, cmd: Command) -> Any:
        await self.registries.login(required(cmd.args, "server"), cmd.args.get("auth"))
        return {"status": "Login Succeeded"}

    async def registry_resolve(self, cmd: Command) -> Any:
        """The digest a registry has for a tag now (a function is pinned to it)."""
        remote = self._remote(cmd)
        return {"digest": await self.registries.resolve(remote, cmd.args.get("auth")),
                "name": remote.name}  # fmt: skip

    async def images_list(self, cmd: Command) -> Any:
        store = self.images
        all_images = bool(cmd.args.get("all"))
        return [_image_json(i, store.layer_size) for i in store.images(all_images=all_images)]

    async def image_inspect(self, cmd: Command) -> Any:
        image = self.images.get(required(cmd.args, "ref"))
        return {**_image_json(image, self.images.layer_size), "config": image.config,
                "history": self.images.history(image)}  # fmt: skip

    async def images_prune(self, cmd: Command) -> Any:
        """``docker image prune``: the untagged images (every one with ``all``) no container
        uses, then the blobs and layers nothing references any more."""
        store = self.images
        containers = self.runtime.containers()
        used = {r.image for r in containers}
        removed: list[str] = []
        for image in store.images():
            names = {image.id, *image.tags}
            if names & used or (image.repo_tags and not cmd.args.get("all")):
                continue
            removed += store.remove(image.id, force=True)
        before = _disk_use(store.root)
        in_use = [Path(p) for r in containers for p in r.layers]
        await asyncio.to_thread(store.gc, in_use)
        return {"removed": removed, "reclaimed": max(before - _disk_use(store.root), 0)}

    async def image_bootstrap(self, cmd: Command) -> Any:
        name = required(cmd.args, "name")
        reference.normalize(name)  # a malformed name is a 400; a well-formed unknown one, a 404
        image = await asyncio.to_thread(bootstrap, self.images, name, cmd.progress)
        return _image_json(image, self.images.layer_size)

    async def image_remove(self, cmd: Command) -> Any:
        ref = required(cmd.args, "ref")
        image = self.images.get(ref)
        names = (ref, image.id, *image.tags)
        users = [r.name for r in self.runtime.containers() if r.image in names]
        lines = self.images.remove(ref, force=bool(cmd.args.get("force")), in_use_by=users)
        for line in lines:
            action, _, what = line.partition(": ")
            self.events.emit(event("image", action.lower(), image.id, {"name": what}))
        return lines

    async def image_tag(self, cmd: Command) -> Any:
        image = self.images.tag(required(cmd.args, "ref"), required(cmd.args, "tag"))
        self.events.emit(event("image", "tag", image.id, {"name": cmd.args["tag"]}))
        return _image_json(image, self.images.layer_size)

    async def image_build(self, cmd: Command) -> Any:
        """Build from a tar of the context (``blob``), as ``docker build`` uploads it."""
        args = cmd.args
        if args.get("tag"):  # refused before anything is built, as docker build does
            reference.normalize(args["tag"])
        network = args.get("network") or "host"
        if network not in ("host", "none", "default", "bridge"):
            raise CommandError("invalid", f"invalid build network {network!r}: host or none")
        tmp = self.runtime.config.state_dir / "tmp"
        tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        context = Path(tempfile.mkdtemp(prefix="build-", dir=tmp))
        try:
            # The context is the client's: unpacked as every archive from outside is.
            limits = Limits(max_bytes=min(Limits.max_bytes, max(1 << 30, 20 * len(cmd.blob))))
            with RootDir(context) as root:
                await asyncio.to_thread(extract_tar, io.BytesIO(cmd.blob), root, limits=limits)
            opts = BuildOptions(
                context, dockerfile=str(args.get("dockerfile") or "Dockerfile"),
                tag=args.get("tag") or None, build_args=strings(args, "build_args"),
                no_cache=bool(args.get("no_cache")), target=args.get("target") or None,
                labels=strings(args, "labels"), network="none" if network == "none" else "host",
            )  # fmt: skip
            image = await Builder(self.images, self.runtime, cmd.progress, self.fetch).build(opts)
        finally:
            await asyncio.to_thread(shutil.rmtree, context, True)
        self._event("build", image)
        return _image_json(image, self.images.layer_size)

    def _event(self, action: str, image: Image, name: str = "") -> None:
        name = name or (image.repo_tags[0] if image.repo_tags else image.id)
        self.events.emit(event("image", action, image.id, {"name": name}))

    def _spool(self) -> Path:
        tmp = self.runtime.config.state_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkstemp(prefix="archive-", dir=tmp)[1])

    async def image_save(self, cmd: Command) -> Any:
        """A docker-archive (or OCI archive) of ``refs``, sent in chunks."""
        refs = cmd.args.get("refs")
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise CommandError("invalid", "argument 'refs' must list images")
        fmt = cmd.args.get("format", "docker")
        if fmt not in ("docker", "oci"):
            raise CommandError("invalid", f"invalid format {fmt!r}: docker or oci")
        for ref in refs:
            self.images.get(ref)  # a missing one fails before any byte is sent
        spool = self._spool()
        try:
            with open(spool, "wb") as out:
                await asyncio.to_thread(archive.save, self.images, refs, out, fmt)
            size = 0
            with open(spool, "rb") as f:
                while chunk := await asyncio.to_thread(f.read, OUTPUT_CHUNK):
                    await cmd.send(chunk, "")
                    size += len(chunk)
        finally:
            spool.unlink(missing_ok=True)
        return {"size": size}

    async def image_load(self, cmd: Command) -> Any:
        lines = await asyncio.to_thread(archive.load, self.images, io.BytesIO(cmd.blob))
        for line in lines:
            name = line.rpartition(": ")[2]
            self.events.emit(event("image", "load", name, {"name": name}))
        return lines

    async def image_import(self, cmd: Command) -> Any:
        image = await asyncio.to_thread(
            archive.import_rootfs, self.images, io.BytesIO(cmd.blob),
            tag=cmd.args.get("tag") or None, message=str(cmd.args.get("message") or ""),
        )  # fmt: skip
        self._event("import", image)
        return _image_json(image, self.images.layer_size)

    async def container_commit(self, cmd: Command) -> Any:
        image = await commit(
            self.images, self.runtime, self._container(required(cmd.args, "container")),
            tag=cmd.args.get("tag") or None, author=str(cmd.args.get("author") or ""),
            message=str(cmd.args.get("message") or ""), pause=bool(cmd.args.get("pause", True)),
        )  # fmt: skip
        return _image_json(image, self.images.layer_size)

    def _container(self, ref: str) -> str:
        """A container by id, name or id prefix; an environment's by the environment id."""
        for record in self.runtime.containers():
            if record.labels.get("scow.environment") == ref:
                return record.id
        return self.runtime.get(ref).id
