"""The image store: an OCI image layout under ``<state>/images``, plus unpacked layers.

    images/oci-layout, index.json   manifests; tags as org.opencontainers.image.ref.name
    images/blobs/sha256/<hex>       layer tars (uncompressed), configs, manifests
    images/layers/<hex>/            each layer unpacked by diff_id: an overlay lowerdir

An image's id is the digest of its config (as Docker's), so the same config bytes
give the same id on any host: ``save`` then ``load`` keeps it. Writes go to a
temp name and are renamed into place; the index changes under an exclusive lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from images import reference
from images.errors import ImageInUse, ImageNotFound, InvalidReference
from images.layers import DEFAULT_MAX_BYTES, pack, unpack
from runtime.spec import ImageConfig
from runtime.tarfs import UnsafeArchive

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"
INTERMEDIATE = "io.scow.intermediate"


@dataclass(frozen=True)
class Image:
    id: str  # sha256:<hex of the config blob>
    manifest: str
    config: dict[str, Any]
    tags: tuple[str, ...]

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config.get("rootfs", {}).get("diff_ids", []))

    @property
    def run_config(self) -> ImageConfig:
        return ImageConfig.from_oci(self.config.get("config"))

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]

    @property
    def repo_tags(self) -> list[str]:
        """Its names (``name:tag``), without its digest references."""
        return [t for t in self.tags if "@" not in t]

    @property
    def repo_digests(self) -> list[str]:
        """Where a registry has it (``name@sha256:...``, from a pull or a push)."""
        return [t for t in self.tags if "@" in t]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.layers = root / "layers"
        self.tmp = root / "tmp"

    def open(self) -> None:
        # Root-only: layers hold an image's setuid files, which no host user may run.
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        for d in (self.blobs, self.layers, self.tmp):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            layout.write_text('{"imageLayoutVersion": "1.0.0"}')

    # -- blobs and layers -----------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.removeprefix("sha256:")

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise ImageNotFound(digest) from None

    def put_blob(self, data: bytes) -> str:
        digest = digest_of(data)
        path = self.blob_path(digest)
        if not path.exists():
            tmp = self.tmp / secrets.token_hex(8)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return digest

    def layer_dir(self, diff_id: str) -> Path:
        return self.layers / diff_id.removeprefix("sha256:")

    def add_layer_tar(self, tar: Path, *, max_bytes: int | None = None) -> str:
        """Take a layer tar (moved into the store) and unpack it; its diff_id."""
        h = hashlib.sha256()
        with open(tar, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        diff_id = "sha256:" + h.hexdigest()
        target = self.layer_dir(diff_id)
        if not target.exists():
            staging = self.tmp / f"layer-{secrets.token_hex(8)}"
            try:
                kwargs = {"max_bytes": max_bytes} if max_bytes else {}
                unpack(tar, staging, **kwargs)
                os.rename(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        if self.blob_path(diff_id).exists():
            tar.unlink()
        else:
            os.replace(tar, self.blob_path(diff_id))
        return diff_id

    def add_layer_dir(self, src: Path) -> str:
        """Pack a dir (overlay whiteouts, e.g. a container's upperdir) as a new layer."""
        tmp = self.tmp / f"pack-{secrets.token_hex(8)}.tar"
        try:
            with open(tmp, "wb") as out:
                pack(src, out)
            return self.add_layer_tar(tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def add_layer_stream(self, stream: IO[bytes], *, max_bytes: int | None = None) -> str:
        """A layer from a stream (already decompressed by the caller), spooled to disk
        with a cap: a stream that expands past what its layer may hold, or past the
        disk's free space, is refused before it fills the disk."""
        cap = max_bytes or DEFAULT_MAX_BYTES
        cap += cap // 8 + (64 << 20)  # room for headers and padding beyond the data cap
        tmp = self.tmp / f"in-{secrets.token_hex(8)}.tar"
        try:
            with open(tmp, "wb") as out:
                free = os.statvfs(self.tmp)
                room = min(cap, free.f_bavail * free.f_frsize - (256 << 20))
                copied = 0
                while chunk := stream.read(1 << 20):
                    copied += len(chunk)
                    if copied > room:
                        what = "its cap" if room == cap else "the disk's free space"
                        raise UnsafeArchive("?", f"the layer expands past {room} bytes "
                                            f"({what})")  # fmt: skip
                    out.write(chunk)
            return self.add_layer_tar(tmp, max_bytes=max_bytes)
        finally:
            tmp.unlink(missing_ok=True)

    def layer_size(self, diff_id: str) -> int:
        try:
            return self.blob_path(diff_id).stat().st_size
        except FileNotFoundError:
            return 0

    # -- images ---------------------------------------------------------------------

    def create_image(
        self, config: dict[str, Any], *, tag: str | None = None, intermediate: bool = False
    ) -> Image:
        """Store an image whose layers (config rootfs.diff_ids) are already in the store."""
        data = json.dumps(config, separators=(",", ":")).encode()
        return self.add_image(data, tag=tag, intermediate=intermediate)

    def add_image(
        self, config_bytes: bytes, *, tag: str | None = None, intermediate: bool = False
    ) -> Image:
        """Store an image from its exact config bytes (``load`` keeps ids this way)."""
        config = json.loads(config_bytes)
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        for diff_id in diff_ids:
            if not self.layer_dir(diff_id).is_dir():
                raise ImageNotFound(f"layer {diff_id}")
        config_digest = self.put_blob(config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": [
                {"mediaType": LAYER, "digest": d, "size": self.layer_size(d)} for d in diff_ids
            ],
        }
        manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
        manifest_digest = self.put_blob(manifest_bytes)
        descriptor = {"mediaType": MANIFEST, "digest": manifest_digest, "size": len(manifest_bytes)}
        with self._index() as index:
            annotations = {INTERMEDIATE: "true"} if intermediate else {}
            index["manifests"].append({**descriptor, "annotations": annotations})
            index["manifests"] = _normalized(index["manifests"])
            if tag:
                _set_tag(index["manifests"], reference.normalize(tag), descriptor)
        return self.get(tag or config_digest)

    @contextlib.contextmanager
    def _index(self) -> Iterator[dict[str, Any]]:
        self.open()
        path = self.root / "index.json"
        with open(self.root / "index.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                index = json.loads(path.read_text())
            except FileNotFoundError:
                index = {"schemaVersion": 2, "manifests": []}
            before = json.dumps(index)
            yield index
            if json.dumps(index) != before:
                tmp = self.tmp / f"index-{secrets.token_hex(4)}"
                tmp.write_text(json.dumps(index, indent=1))
                os.replace(tmp, path)

    def _entries(self) -> list[dict[str, Any]]:
        try:
            return list(json.loads((self.root / "index.json").read_text())["manifests"])
        except FileNotFoundError:
            return []

    def _image(self, manifest_digest: str, entries: list[dict[str, Any]]) -> Image:
        manifest = json.loads(self.read_blob(manifest_digest))
        config_digest = manifest["config"]["digest"]
        tags = tuple(
            sorted(
                e["annotations"][REF_NAME]
                for e in entries
                if e["digest"] == manifest_digest and REF_NAME in e.get("annotations", {})
            )
        )
        config = json.loads(self.read_blob(config_digest))
        return Image(config_digest, manifest_digest, config, tags)

    def get(self, ref: str) -> Image:
        """By tag (``name[:tag]``), then by full id or an unambiguous id prefix.

        Names come first, as in Docker: an image may be called ``cafe``.
        """
        entries = self._entries()
        try:
            wanted = reference.normalize(ref)
        except InvalidReference:
            wanted = ""
        for e in entries:
            if wanted and e.get("annotations", {}).get(REF_NAME) == wanted:
                return self._image(e["digest"], entries)
        if not reference.ID_RE.match(ref):
            raise ImageNotFound(ref)
        prefix = "sha256:" + ref.removeprefix("sha256:")
        matches = {}
        for e in entries:
            image = self._image(e["digest"], entries)
            if image.id.startswith(prefix):
                matches[image.id] = image
        if len(matches) != 1:
            raise ImageNotFound(ref)
        return next(iter(matches.values()))

    def images(self, *, all_images: bool = False) -> list[Image]:
        """Tagged and dangling images; intermediate build steps too with ``all_images``."""
        entries = self._entries()
        seen: dict[str, Image] = {}
        for e in entries:
            if e["digest"] in seen:
                continue
            if e.get("annotations", {}).get(INTERMEDIATE) and not all_images:
                continue
            seen[e["digest"]] = self._image(e["digest"], entries)
        return sorted(seen.values(), key=lambda i: i.config.get("created", ""), reverse=True)

    def tag(self, ref: str, new: str) -> Image:
        image = self.get(ref)
        descriptor = {"mediaType": MANIFEST, "digest": image.manifest}
        with self._index() as index:
            _set_tag(index["manifests"], reference.normalize(new), descriptor)
        return self.get(new)

    def remove(self, ref: str, *, force: bool = False, in_use_by: Sequence[str] = ()) -> list[str]:
        """Untag, or delete the image; what was untagged and deleted, as Docker lists it.

        Removing one of several tags only untags; a digest reference (``name@sha256:...``,
        from a pull or push) does not keep an image whose last tag goes. Deleting refuses an
        image that a container uses, unless ``force``. Blobs go with ``gc``.
        """
        image = self.get(ref)
        by_tag = not reference.ID_RE.match(ref) or ref in image.tags
        wanted = reference.normalize(ref) if by_tag else ""
        others = [t for t in image.tags if t != wanted and "@" not in t]
        if by_tag and others:
            with self._index() as index:
                index["manifests"] = [
                    e for e in index["manifests"]
                    if e.get("annotations", {}).get(REF_NAME) != wanted
                ]  # fmt: skip
            return [f"Untagged: {wanted}"]
        if in_use_by and not force:
            raise ImageInUse(ref, list(in_use_by))
        with self._index() as index:
            index["manifests"] = [e for e in index["manifests"] if e["digest"] != image.manifest]
        return [f"Untagged: {t}" for t in image.tags] + [f"Deleted: {image.id}"]

    def layer_dirs(self, image: Image) -> list[Path]:
        """The image's unpacked layers, top first (overlay lowerdir order)."""
        return [self.layer_dir(d) for d in reversed(image.diff_ids)]

    def history(self, image: Image) -> list[dict[str, Any]]:
        """One row per build step, newest first, with the size of the layer it made."""
        layers = iter(image.diff_ids)
        rows = []
        for step in image.config.get("history", []):
            size = 0 if step.get("empty_layer") else self.layer_size(next(layers, ""))
            rows.append({**step, "size": size})
        return list(reversed(rows))

    def forget_layers(self, diff_ids: Collection[str]) -> None:
        """Remove the layers ``diff_ids`` (dir and blob) that no image references: what a
        load or import that failed half-way had added."""
        if not diff_ids:
            return
        with self._index() as index:
            used: set[str] = set()
            for e in index["manifests"]:
                manifest = json.loads(self.read_blob(e["digest"]))
                used.update(layer["digest"] for layer in manifest["layers"])
            for diff_id in set(diff_ids) - used:
                shutil.rmtree(self.layer_dir(diff_id), ignore_errors=True)
                self.blob_path(diff_id).unlink(missing_ok=True)

    @contextlib.contextmanager
    def adding(self) -> Iterator[None]:
        """Held while layers are added that no image references yet (a pull, build, load,
        import or commit under way): ``gc`` waits for every such holder to be done."""
        self.open()
        with open(self.root / "gc.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            yield

    def gc(self, in_use_layers: Collection[Path] = ()) -> tuple[int, int]:
        """Remove blobs and layer dirs nothing references; (blobs, layers) removed. It
        waits for what is being added (``adding``), whose layers no image references yet."""
        keep_blobs: set[str] = set()
        keep_layers: set[str] = {p.name for p in in_use_layers}
        self.open()
        with open(self.root / "gc.lock", "a") as gc_lock:
            fcntl.flock(gc_lock, fcntl.LOCK_EX)  # first: an adder holds it, then the index
            return self._collect(keep_blobs, keep_layers)

    def _collect(self, keep_blobs: set[str], keep_layers: set[str]) -> tuple[int, int]:
        with self._index() as index:
            for e in index["manifests"]:
                manifest = json.loads(self.read_blob(e["digest"]))
                keep_blobs.add(e["digest"].removeprefix("sha256:"))
                keep_blobs.add(manifest["config"]["digest"].removeprefix("sha256:"))
                for layer in manifest["layers"]:
                    keep_blobs.add(layer["digest"].removeprefix("sha256:"))
                    keep_layers.add(layer["digest"].removeprefix("sha256:"))
            blobs = [p for p in self.blobs.iterdir() if p.name not in keep_blobs]
            layers = [p for p in self.layers.iterdir() if p.name not in keep_layers]
            for p in blobs:
                p.unlink()
            for p in layers:
                shutil.rmtree(p)
        return len(blobs), len(layers)


def _set_tag(entries: list[dict[str, Any]], tag: str, descriptor: dict[str, Any]) -> None:
    """Point ``tag`` at ``descriptor``, moving it off any other image."""
    for e in entries:
        if e.get("annotations", {}).get(REF_NAME) == tag:
            del e["annotations"][REF_NAME]
    entries.append({**descriptor, "annotations": {REF_NAME: tag}})
    entries[:] = _normalized(entries)


def _normalized(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per tag of an image; an untagged image keeps one bare entry, marked
    intermediate only if every entry it had was."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        groups.setdefault(e["digest"], []).append(e)
    out = []
    for group in groups.values():
        base = {k: v for k, v in group[0].items() if k != "annotations"}
        tags = [e["annotations"][REF_NAME] for e in group if REF_NAME in e.get("annotations", {})]
        if tags:
            out += [{**base, "annotations": {REF_NAME: t}} for t in dict.fromkeys(tags)]
        elif all(e.get("annotations", {}).get(INTERMEDIATE) for e in group):
            out.append({**base, "annotations": {INTERMEDIATE: "true"}})
        else:
            out.append({**base, "annotations": {}})
    return out
