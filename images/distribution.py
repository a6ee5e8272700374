"""Images to and from a registry: pull (``docker pull HOST/repo:tag``) and push.

A pull resolves the reference to a manifest (from an index or manifest list, the one
for this host's platform), fetches the image's config, then each layer the store
lacks: a layer is known by the config's diff_ids, so one already here (from any
image) is never fetched again. Every byte is checked on the way in: a manifest and
a blob against their digests while they stream, a layer's unpacked content against
its diff_id, its size against a cap; a pull that fails anywhere takes out the layers
it added, and stores no image.

A push sends each layer gzipped (deterministically: the same layer gives the same
blob, so pushes again dedupe), after asking whether the registry has it already or
can mount it from another of its repositories where this store pushed it; then the
config, then a Docker schema 2 manifest. What was pushed where is remembered
(``distribution.json`` in the store) so that the next push need not compress again.

Progress goes to a callback as Docker's JSON stream objects (``status``, ``id``,
``progressDetail``), which the docker CLI draws its bars from.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import platform
import secrets
import shutil
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from images import reference
from images.errors import ImageNotFound, InvalidReference
from images.registry import (
    INDEX_TYPES,
    Credentials,
    DigestMismatch,
    Registry,
    RegistryError,
)
from images.store import Image, ImageStore
from runtime.tarfs import UnsafeArchive

Progress = Callable[[dict[str, Any]], None]

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
GZIP_LAYERS = (DOCKER_LAYER, "application/vnd.oci.image.layer.v1.tar+gzip")
PLAIN_LAYERS = ("application/vnd.oci.image.layer.v1.tar",
                "application/vnd.docker.image.rootfs.diff.tar")  # fmt: skip
LAYER_LIMIT = 8 << 30  # a layer blob bigger than this is refused as it streams
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


@dataclass(frozen=True)
class Remote:
    """An image in a registry: ``HOST[:PORT]/repo[:tag|@digest]``."""

    registry: str
    repository: str
    tag: str = "latest"
    digest: str = ""

    @classmethod
    def parse(cls, ref: str) -> Remote:
        name, tag = reference.parse(ref)
        registry = reference.registry_of(name)
        if not registry:
            raise InvalidReference(ref, "names no registry (HOST[:PORT]/repository)")
        repository = name.partition("/")[2]
        if tag.startswith("sha256:"):
            return cls(registry, repository, tag="", digest=tag)
        return cls(registry, repository, tag=tag)

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What the registry is asked for: the digest, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"


def host_platform() -> tuple[str, str]:
    return "linux", _ARCH.get(platform.machine(), platform.machine())


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


# -- what this store pushed where --------------------------------------------------------


class Provenance:
    """``distribution.json``: for each layer (by diff_id) its gzipped blob's digest and
    size, and for each blob the repositories of each registry it was pushed to or pulled
    from (a push mounts it from one of them)."""

    def __init__(self, store: ImageStore) -> None:
        self.path = store.root / "distribution.json"
        self.lock = store.root / "distribution.lock"

    @contextlib.contextmanager
    def _edit(self) -> Iterator[dict[str, Any]]:
        with open(self.lock, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = json.loads(self.path.read_text())
            except (FileNotFoundError, ValueError):
                data = {}
            data.setdefault("compressed", {})
            data.setdefault("seen", {})
            before = json.dumps(data)
            yield data
            if json.dumps(data) != before:
                tmp = self.path.with_suffix(f".{secrets.token_hex(4)}")
                tmp.write_text(json.dumps(data))
                os.replace(tmp, self.path)

    def read(self) -> dict[str, Any]:
        with self._edit() as data:
            copied: dict[str, Any] = json.loads(json.dumps(data))
            return copied

    def note(self, blob: str, registry: str, repository: str, diff_id: str = "",
             size: int = 0) -> None:  # fmt: skip
        with self._edit() as data:
            seen = data["seen"].setdefault(blob, [])
            if [registry, repository] not in seen:
                seen.append([registry, repository])
                del seen[:-8]  # a few places are enough to mount from
            if diff_id:
                data["compressed"][diff_id] = {"digest": blob, "size": size}


# -- pull -----------------------------------------------------------------------------


async def resolve(
    remote: Remote, credentials: Credentials, insecure: Iterable[str] = ()
) -> str:
    """The digest the registry has for ``remote`` now (of its index, or its manifest)."""
    if remote.digest:
        return remote.digest
    async with Registry(remote.registry, credentials, list(insecure)) as registry:
        _, _, digest = await registry.manifest(remote.repository, remote.reference)
    return digest


async def pull(
    store: ImageStore, remote: Remote, credentials: Credentials, progress: Progress,
    insecure: Iterable[str] = (), tmp: Path | None = None,
) -> Image:  # fmt: skip
    """Fetch ``remote`` into ``store`` (see the module's docstring); the image, tagged with
    the reference and its digest."""
    added: list[str] = []
    work = tmp or store.tmp
    async with Registry(remote.registry, credentials, list(insecure)) as registry:
        repo = remote.repository
        progress({"status": f"Pulling from {remote.repository}", "id": remote.reference})
        data, media, digest = await registry.manifest(repo, remote.reference)
        tag_digest = digest
        if media in INDEX_TYPES:
            chosen = _platform_manifest(json.loads(data), str(remote))
            data, media, digest = await registry.manifest(repo, chosen)
        manifest = _checked_manifest(data, str(remote))
        config_digest = manifest["config"]["digest"]
        config_bytes = await registry.blob_bytes(repo, config_digest)
        config = json.loads(config_bytes)
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        layers = manifest["layers"]
        if len(diff_ids) != len(layers):
            raise RegistryError(f"{remote}: its config has {len(diff_ids)} layers, its "
                                f"manifest {len(layers)}")  # fmt: skip
        with store.adding():
            try:
                for layer, diff_id in zip(layers, diff_ids, strict=True):
                    if store.layer_dir(diff_id).is_dir():
                        progress({"status": "Already exists", "progressDetail": {},
                                  "id": _short(layer["digest"])})  # fmt: skip
                        continue
                    progress({"status": "Pulling fs layer", "progressDetail": {},
                              "id": _short(layer["digest"])})  # fmt: skip
                    await _fetch_layer(store, registry, repo, layer, diff_id, progress, work)
                    added.append(diff_id)
                    Provenance(store).note(layer["digest"], remote.registry, repo, diff_id,
                                           int(layer.get("size") or 0))  # fmt: skip
                image = store.add_image(config_bytes)
            except BaseException:
                store.forget_layers(added)  # nothing half-stored
                raise
    names = [f"{remote.name}@{tag_digest}"] + ([f"{remote.name}:{remote.tag}"]
                                                if remote.tag else [])  # fmt: skip
    for name in names:
        store.tag(image.id, name)
    progress({"status": f"Digest: {tag_digest}"})
    fetched = "Downloaded newer image" if added else "Image is up to date"
    progress({"status": f"Status: {fetched} for {remote}"})
    return store.get(image.id)


def _platform_manifest(index: dict[str, Any], what: str) -> str:
    os_name, arch = host_platform()
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise RegistryError(f"{what}: its index lists no manifests")
    for entry in entries:
        p = (entry or {}).get("platform") or {}
        if p.get("os") == os_name and p.get("architecture") == arch:
            digest = entry.get("digest")
            if isinstance(digest, str) and reference.DIGEST_RE.fullmatch(digest):
                return digest
    raise RegistryError(f"{what} has no image for {os_name}/{arch}")


def _checked_manifest(data: bytes, what: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
        config = manifest["config"]
        layers = manifest["layers"]
        assert isinstance(layers, list) and isinstance(config, dict)
        for d in [config, *layers]:
            assert isinstance(d["digest"], str) and reference.DIGEST_RE.fullmatch(d["digest"])
    except (ValueError, KeyError, TypeError, AssertionError):
        raise RegistryError(f"{what}: not an image manifest this store can read") from None
    for layer in layers:
        media = layer.get("mediaType", "")
        if media not in GZIP_LAYERS + PLAIN_LAYERS:
            raise RegistryError(f"{what}: layer {layer['digest']} is {media!r}, which this "
                                "store cannot unpack (gzip or plain tar)")  # fmt: skip
    return dict(manifest)


async def _fetch_layer(
    store: ImageStore, registry: Registry, repo: str, layer: dict[str, Any], diff_id: str,
    progress: Progress, work: Path,
) -> None:  # fmt: skip
    """Download one layer to a temp file, its digest checked as it streams, then unpack it
    (checked against ``diff_id``); the temp file goes either way."""
    digest, size = layer["digest"], int(layer.get("size") or 0)
    limit = min(size, LAYER_LIMIT) if size > 0 else LAYER_LIMIT
    spool = work / f"pull-{secrets.token_hex(8)}"
    h = hashlib.sha256()
    got = 0
    try:
        with open(spool, "wb") as out:
            async for chunk in registry.blob(repo, digest, limit):
                out.write(chunk)
                h.update(chunk)
                got += len(chunk)
                progress({"status": "Downloading", "id": _short(digest),
                          "progressDetail": {"current": got, "total": size}})  # fmt: skip
        if "sha256:" + h.hexdigest() != digest:
            raise DigestMismatch("blob", digest, "sha256:" + h.hexdigest())
        progress({"status": "Verifying Checksum", "progressDetail": {}, "id": _short(digest)})
        progress({"status": "Extracting", "progressDetail": {}, "id": _short(digest)})
        gzipped = layer.get("mediaType") in GZIP_LAYERS
        got_id = await asyncio.to_thread(_add_layer, store, spool, gzipped)
        if got_id != diff_id:
            store.forget_layers([got_id])
            raise UnsafeArchive(digest, f"its content is {got_id}, but the image's config "
                                f"says {diff_id}")  # fmt: skip
        progress({"status": "Pull complete", "progressDetail": {}, "id": _short(digest)})
    finally:
        spool.unlink(missing_ok=True)


def _add_layer(store: ImageStore, spool: Path, gzipped: bool) -> str:
    with open(spool, "rb") as f:
        stream: IO[bytes] = gzip.GzipFile(fileobj=f) if gzipped else f  # type: ignore[assignment]
        try:
            return store.add_layer_stream(stream)
        except (OSError, EOFError, zlib.error) as exc:
            if isinstance(exc, UnsafeArchive):
                raise
            raise UnsafeArchive(spool.name, f"not a layer this store can unpack: {exc}") from None


# -- push -----------------------------------------------------------------------------


async def push(
    store: ImageStore, local: str, remote: Remote, credentials: Credentials,
    progress: Progress, insecure: Iterable[str] = (), tmp: Path | None = None,
) -> tuple[str, int]:  # fmt: skip
    """Send image ``local`` to ``remote`` (a tag); the manifest's digest and size."""
    if remote.digest:
        raise InvalidReference(str(remote), "a push names a tag, not a digest")
    image = store.get(local)
    work = tmp or store.tmp
    repo = remote.repository
    provenance = Provenance(store)
    layers = []
    async with Registry(remote.registry, credentials, list(insecure)) as registry:
        progress({"status": f"The push refers to repository [{remote.name}]"})
        for diff_id in image.diff_ids:
            known = provenance.read()["compressed"].get(diff_id)
            progress({"status": "Preparing", "progressDetail": {}, "id": _short(diff_id)})
            if known and await registry.has_blob(repo, known["digest"]):
                progress({"status": "Layer already exists", "progressDetail": {},
                          "id": _short(diff_id)})  # fmt: skip
                layers.append((known["digest"], known["size"]))
                continue
            if known and await _mount_from_elsewhere(registry, provenance, remote, known):
                layers.append((known["digest"], known["size"]))
                progress({"status": f"Mounted from {known['mounted']}", "progressDetail": {},
                          "id": _short(diff_id)})  # fmt: skip
                continue
            spool = work / f"push-{secrets.token_hex(8)}.gz"
            try:
                blob, size = await asyncio.to_thread(_gzip_layer, store, diff_id, spool)
                if not await registry.has_blob(repo, blob):
                    progress({"status": "Pushing", "id": _short(diff_id),
                              "progressDetail": {"current": 0, "total": size}})  # fmt: skip
                    await registry.upload(repo, blob, spool, size)
                    progress({"status": "Pushed", "progressDetail": {}, "id": _short(diff_id)})
                else:
                    progress({"status": "Layer already exists", "progressDetail": {},
                              "id": _short(diff_id)})  # fmt: skip
            finally:
                spool.unlink(missing_ok=True)
            provenance.note(blob, remote.registry, repo, diff_id, size)
            layers.append((blob, size))
        config_bytes = store.read_blob(image.id)
        if not await registry.has_blob(repo, image.id):
            await registry.upload_bytes(repo, image.id, config_bytes)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config_bytes), "digest": image.id},
            "layers": [{"mediaType": DOCKER_LAYER, "size": size, "digest": digest}
                       for digest, size in layers],
        }, indent=3).encode()  # fmt: skip
        digest = await registry.put_manifest(repo, remote.tag, manifest, DOCKER_MANIFEST)
    store.tag(image.id, str(remote))
    store.tag(image.id, f"{remote.name}@{digest}")
    progress({"status": f"{remote.tag}: digest: {digest} size: {len(manifest)}",
              "progressDetail": {}})  # fmt: skip
    progress({"progressDetail": {},
              "aux": {"Tag": remote.tag, "Digest": digest, "Size": len(manifest)}})  # fmt: skip
    return digest, len(manifest)


async def _mount_from_elsewhere(
    registry: Registry, provenance: Provenance, remote: Remote, known: dict[str, Any]
) -> bool:
    """Mount the blob from another repository of the same registry it went to before."""
    places = provenance.read()["seen"].get(known["digest"], [])
    for host, repo in places:
        if host != remote.registry or repo == remote.repository:
            continue
        if await registry.mount(remote.repository, known["digest"], repo):
            known["mounted"] = repo
            provenance.note(known["digest"], remote.registry, remote.repository)
            return True
    return False


def _gzip_layer(store: ImageStore, diff_id: str, out: Path) -> tuple[str, int]:
    """The layer's tar gzipped to ``out``, the same bytes every time (no name or time in
    the header): its digest and size."""
    source = store.blob_path(diff_id)
    if not source.exists():
        raise ImageNotFound(f"layer {diff_id}")
    with (
        open(source, "rb") as src,
        open(out, "wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz,
    ):
        shutil.copyfileobj(src, gz, 1 << 20)
    h = hashlib.sha256()
    with open(out, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest(), out.stat().st_size
