"""Images in and out of the store as tar archives.

- docker-archive, what ``docker save`` writes and ``docker load`` reads:
  ``manifest.json`` ([{Config, RepoTags, Layers}]), ``<config hex>.json`` and
  ``<diff_id hex>/layer.tar`` per layer (plus the legacy ``repositories``);
- OCI image layout archives: ``oci-layout``, ``index.json``, ``blobs/sha256/``;
- ``import``: a root filesystem tarball becomes a one-layer image.

Loading checks each layer against the diff_id its config names, so an image id
(its config digest) survives ``save`` then ``load`` on any host, and a tampered
archive is refused naming the member.
"""

from __future__ import annotations

import gzip
import io
import json
import secrets
import shutil
import tarfile
from collections.abc import Mapping
from typing import IO, Any, BinaryIO, Literal, cast

from images import reference
from images.config import add_step, empty_config
from images.errors import ImageError, InvalidReference, UnsafeArchive
from images.store import REF_NAME, Image, ImageStore

Format = Literal["docker", "oci"]


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def save(store: ImageStore, refs: list[str], out: BinaryIO, fmt: Format = "docker") -> None:
    """Write the images ``refs`` names (tags kept when named by tag) to ``out``."""
    chosen: list[tuple[Image, list[str]]] = []
    for ref in refs:
        image = store.get(ref)
        chosen.append((image, _tag_named(image, ref)))
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        (_save_docker if fmt == "docker" else _save_oci)(store, chosen, tar)


def _tag_named(image: Image, ref: str) -> list[str]:
    """The tag ``ref`` names, when it names one (``docker save busybox`` keeps the tag)."""
    try:
        tag = reference.normalize(ref)
    except InvalidReference:
        return []
    return [tag] if tag in image.tags else []


def _save_docker(
    store: ImageStore, chosen: list[tuple[Image, list[str]]], tar: tarfile.TarFile
) -> None:
    manifest = []
    repositories: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    for image, tags in chosen:
        config_name = image.id.removeprefix("sha256:") + ".json"
        if config_name not in written:
            _add_bytes(tar, config_name, store.read_blob(image.id))
            written.add(config_name)
        layers = []
        for diff_id in image.diff_ids:
            name = f"{diff_id.removeprefix('sha256:')}/layer.tar"
            if name not in written:
                tar.add(str(store.blob_path(diff_id)), arcname=name)
                written.add(name)
            layers.append(name)
        manifest.append({"Config": config_name, "RepoTags": tags or None, "Layers": layers})
        for tag in tags:
            repo, _, t = tag.rpartition(":")
            if layers:
                repositories.setdefault(repo, {})[t] = layers[-1].split("/")[0]
    _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    _add_bytes(tar, "repositories", json.dumps(repositories).encode())


def _save_oci(
    store: ImageStore, chosen: list[tuple[Image, list[str]]], tar: tarfile.TarFile
) -> None:
    _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
    index: dict[str, Any] = {"schemaVersion": 2, "manifests": []}
    written: set[str] = set()
    for image, tags in chosen:
        manifest = json.loads(store.read_blob(image.manifest))
        digests = [image.manifest, manifest["config"]["digest"]]
        digests += [layer["digest"] for layer in manifest["layers"]]
        for digest in digests:
            if digest not in written:
                tar.add(str(store.blob_path(digest)), arcname=f"blobs/sha256/{digest[7:]}")
                written.add(digest)
        size = store.blob_path(image.manifest).stat().st_size
        descriptor = {"mediaType": manifest["mediaType"], "digest": image.manifest, "size": size}
        for tag in tags or [""]:
            annotations = {REF_NAME: tag} if tag else {}
            index["manifests"].append({**descriptor, "annotations": annotations})
    _add_bytes(tar, "index.json", json.dumps(index).encode())


def load(store: ImageStore, src: IO[bytes], *, max_bytes: int | None = None) -> list[str]:
    """Load every image in a docker-archive or OCI archive; ``Loaded image: ...`` lines."""
    store.open()
    spool = store.tmp / f"load-{secrets.token_hex(6)}.tar"
    try:
        with open(spool, "wb") as f:
            shutil.copyfileobj(src, f, 1 << 20)
        try:
            with tarfile.open(spool, mode="r:*") as tar:
                names = set(tar.getnames())
                if "manifest.json" in names:
                    return _load_docker(store, tar, max_bytes)
                if "index.json" in names:
                    return _load_oci(store, tar, max_bytes)
        except tarfile.TarError as exc:
            raise ImageError(f"not an image archive: {exc}") from None
        raise ImageError("not an image archive: neither manifest.json nor index.json in it")
    finally:
        spool.unlink(missing_ok=True)


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    try:
        f = tar.extractfile(name)
    except KeyError:
        f = None
    if f is None:
        raise UnsafeArchive(name, "named by the manifest but missing from the archive")
    return f


def _add_layer(
    store: ImageStore, tar: tarfile.TarFile, name: str, expected: str, max_bytes: int | None
) -> None:
    stream = _member(tar, name)
    head = stream.read(2)
    stream.seek(0)
    layer = cast(IO[bytes], gzip.GzipFile(fileobj=stream)) if head == b"\x1f\x8b" else stream
    diff_id = store.add_layer_stream(layer, max_bytes=max_bytes)
    if diff_id != expected:
        raise UnsafeArchive(name, f"its content is {diff_id}, but the config says {expected}")


def _load_docker(store: ImageStore, tar: tarfile.TarFile, max_bytes: int | None) -> list[str]:
    out = []
    for entry in json.load(_member(tar, "manifest.json")):
        config_bytes = _member(tar, entry["Config"]).read()
        diff_ids = json.loads(config_bytes).get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(entry["Layers"]):
            raise UnsafeArchive(entry["Config"], "its layer count differs from the manifest's")
        for name, expected in zip(entry["Layers"], diff_ids, strict=True):
            _add_layer(store, tar, name, expected, max_bytes)
        out += _register(store, config_bytes, entry.get("RepoTags") or [])
    return out


def _load_oci(store: ImageStore, tar: tarfile.TarFile, max_bytes: int | None) -> list[str]:
    out = []
    for descriptor in json.load(_member(tar, "index.json"))["manifests"]:
        manifest = json.load(_member(tar, "blobs/sha256/" + descriptor["digest"][7:]))
        config_bytes = _member(tar, "blobs/sha256/" + manifest["config"]["digest"][7:]).read()
        diff_ids = json.loads(config_bytes).get("rootfs", {}).get("diff_ids", [])
        for layer, expected in zip(manifest["layers"], diff_ids, strict=True):
            _add_layer(store, tar, "blobs/sha256/" + layer["digest"][7:], expected, max_bytes)
        tag = (descriptor.get("annotations") or {}).get(REF_NAME)
        out += _register(store, config_bytes, [tag] if tag and ":" in tag else [])
    return out


def _register(store: ImageStore, config_bytes: bytes, tags: list[str]) -> list[str]:
    image = store.add_image(config_bytes)
    for tag in tags:
        store.tag(image.id, tag)
    return [f"Loaded image: {t}" for t in tags] or [f"Loaded image ID: {image.id}"]


def import_rootfs(
    store: ImageStore,
    src: IO[bytes],
    *,
    tag: str | None = None,
    config: Mapping[str, Any] | None = None,
    message: str = "",
    max_bytes: int | None = None,
) -> Image:
    """A root filesystem tarball (plain or gzip) as a one-layer image."""
    store.open()
    head = src.read(2)
    rest = io.BufferedReader(_Prefixed(head, src))
    stream = cast(IO[bytes], gzip.GzipFile(fileobj=rest) if head == b"\x1f\x8b" else rest)
    diff_id = store.add_layer_stream(stream, max_bytes=max_bytes)
    image_config = empty_config()
    image_config["config"].update(config or {})
    add_step(image_config, "scow import", diff_id, message or "imported from a tarball")
    return store.create_image(image_config, tag=tag)


class _Prefixed(io.RawIOBase):
    """``head`` then the rest of ``src``: sniffing without needing a seekable stream."""

    def __init__(self, head: bytes, src: IO[bytes]) -> None:
        self.head, self.src = head, src

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.src.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
