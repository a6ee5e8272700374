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

import io
import json
import secrets
import shutil
import tarfile
from collections.abc import Mapping
from typing import IO, Any, BinaryIO, Literal

from images import reference
from images.config import add_step, empty_config
from images.errors import ImageError, InvalidReference
from images.store import REF_NAME, Image, ImageStore
from runtime.tarfs import UnsafeArchive, decompressed

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
    with store.adding():
        return _load(store, src, max_bytes)


def _load(store: ImageStore, src: IO[bytes], max_bytes: int | None) -> list[str]:
    """Load every image in a docker-archive or OCI archive; ``Loaded image: ...`` lines.

    An archive is hostile: its JSON is checked field by field, each layer goes in
    as every layer does (capped, checked, never written through a link) and must
    hash to the diff_id its config names. On any refusal the layers this load
    added are taken out again: nothing half-made is left in the store.
    """
    store.open()
    spool = store.tmp / f"load-{secrets.token_hex(6)}.tar"
    added: list[str] = []
    try:
        with open(spool, "wb") as f:
            shutil.copyfileobj(src, f, 1 << 20)
        try:
            with tarfile.open(spool, mode="r:*") as tar:
                names = _names(tar)
                if "manifest.json" in names:
                    return _load_docker(store, tar, max_bytes, added)
                if "index.json" in names:
                    return _load_oci(store, tar, max_bytes, added)
        except tarfile.TarError as exc:
            raise ImageError(f"not an image archive: {exc}") from None
        raise ImageError("not an image archive: neither manifest.json nor index.json in it")
    except BaseException:
        store.forget_layers(added)
        raise
    finally:
        spool.unlink(missing_ok=True)


MAX_ARCHIVE_FILES = 100_000
MAX_JSON = 4 << 20


def _names(tar: tarfile.TarFile) -> set[str]:
    names = set()
    while (info := tar.next()) is not None:
        names.add(info.name)
        if len(names) > MAX_ARCHIVE_FILES:
            raise UnsafeArchive(info.name, f"more than {MAX_ARCHIVE_FILES} files in the archive")
    return names


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    if not isinstance(name, str):
        raise UnsafeArchive(repr(name), "a member name that is not a string")
    try:
        f = tar.extractfile(name)
    except KeyError:
        f = None
    if f is None:
        raise UnsafeArchive(name, "named by the manifest but missing from the archive")
    return f


def _json(tar: tarfile.TarFile, name: str) -> tuple[Any, bytes]:
    data = _member(tar, name).read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise UnsafeArchive(name, f"more than {MAX_JSON} bytes of JSON")
    try:
        return json.loads(data), data
    except ValueError as exc:
        raise UnsafeArchive(name, f"not valid JSON: {exc}") from None


def _field(obj: Any, key: str, kind: type, where: str) -> Any:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind):
        raise UnsafeArchive(where, f"{key!r} is missing or not a {kind.__name__}")
    return value


def _blob_name(digest: Any, where: str) -> str:
    if not isinstance(digest, str) or not reference.DIGEST_RE.fullmatch(digest):
        raise UnsafeArchive(where, f"not a sha256 digest: {str(digest)[:80]!r}")
    return "blobs/sha256/" + digest[7:]


def _diff_ids(config: Any, where: str) -> list[str]:
    rootfs = _field(config, "rootfs", dict, where)
    diff_ids: list[str] = _field(rootfs, "diff_ids", list, where)
    for d in diff_ids:
        _blob_name(d, where)
    return diff_ids


def _add_layer(
    store: ImageStore, tar: tarfile.TarFile, name: str, expected: str, max_bytes: int | None,
    added: list[str],
) -> None:  # fmt: skip
    if store.layer_dir(expected).is_dir():
        return  # already here, from another image: nothing to unpack again
    diff_id = store.add_layer_stream(decompressed(_member(tar, name)), max_bytes=max_bytes)
    added.append(diff_id)
    if diff_id != expected:
        raise UnsafeArchive(name, f"its content is {diff_id}, but the config says {expected}")


def _load_docker(
    store: ImageStore, tar: tarfile.TarFile, max_bytes: int | None, added: list[str]
) -> list[str]:
    out = []
    manifest, _ = _json(tar, "manifest.json")
    if not isinstance(manifest, list):
        raise UnsafeArchive("manifest.json", "not a list of images")
    for entry in manifest:
        config_name = _field(entry, "Config", str, "manifest.json")
        layers = _field(entry, "Layers", list, "manifest.json")
        config, config_bytes = _json(tar, config_name)
        diff_ids = _diff_ids(config, config_name)
        if len(diff_ids) != len(layers):
            raise UnsafeArchive(config_name, "its layer count differs from the manifest's")
        for name, expected in zip(layers, diff_ids, strict=True):
            _add_layer(store, tar, name, expected, max_bytes, added)
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise UnsafeArchive("manifest.json", "RepoTags is not a list of names")
        out += _register(store, config_bytes, tags)
    return out


def _load_oci(
    store: ImageStore, tar: tarfile.TarFile, max_bytes: int | None, added: list[str]
) -> list[str]:
    out = []
    index, _ = _json(tar, "index.json")
    for descriptor in _field(index, "manifests", list, "index.json"):
        manifest_name = _blob_name(_field(descriptor, "digest", str, "index.json"), "index.json")
        manifest, _ = _json(tar, manifest_name)
        config_ref = _field(manifest, "config", dict, manifest_name)
        config_name = _blob_name(_field(config_ref, "digest", str, manifest_name), manifest_name)
        config, config_bytes = _json(tar, config_name)
        diff_ids = _diff_ids(config, config_name)
        layers = _field(manifest, "layers", list, manifest_name)
        if len(layers) != len(diff_ids):
            raise UnsafeArchive(config_name, "its layer count differs from the manifest's")
        for layer, expected in zip(layers, diff_ids, strict=True):
            name = _blob_name(_field(layer, "digest", str, manifest_name), manifest_name)
            _add_layer(store, tar, name, expected, max_bytes, added)
        tag = (descriptor.get("annotations") or {}).get(REF_NAME)
        out += _register(store, config_bytes, [tag] if isinstance(tag, str) and ":" in tag else [])
    return out


def _register(store: ImageStore, config_bytes: bytes, tags: list[str]) -> list[str]:
    for tag in tags:
        reference.normalize(tag)  # a bad tag is refused before the image is stored
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
    """A root filesystem tarball (plain, gzip, bzip2 or xz) as a one-layer image."""
    store.open()
    if tag:
        reference.normalize(tag)
    with store.adding():
        return _import(store, src, tag, config, message, max_bytes)


def _import(
    store: ImageStore, src: IO[bytes], tag: str | None, config: Mapping[str, Any] | None,
    message: str, max_bytes: int | None,
) -> Image:  # fmt: skip
    diff_id = store.add_layer_stream(decompressed(src), max_bytes=max_bytes)
    image_config = empty_config()
    image_config["config"].update(config or {})
    add_step(image_config, "scow import", diff_id, message or "imported from a tarball")
    try:
        return store.create_image(image_config, tag=tag)
    except BaseException:
        store.forget_layers([diff_id])
        raise
