"""The hostile corpus through every front door that takes an archive, a Dockerfile or a
path: builds (the context, COPY and ADD destinations, ADD of a tar, COPY --from),
docker load (docker-archive and OCI), import, docker cp both ways, VOLUME seeding and
``-u NAME``. A real gateway on a real socket, a real node on runc.

After every case: the canary tree outside is byte for byte what it was, a refusal
is a 4xx naming the member, and the store holds nothing half-made.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import secrets
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from images.base import bootstrap
from images.store import ImageStore
from pool.manager import PoolManager
from runtime.engine import Runtime
from tests import hostile
from tests.utils import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store() -> Iterator[ImageStore]:
    """A store of this module's own (busybox only): what the cases add stays here."""
    with tempfile.TemporaryDirectory(prefix="scow-hostile-") as tmp:
        s = ImageStore(Path(tmp) / "images")
        s.open()
        bootstrap(s, "busybox")
        yield s


@pytest.fixture
async def node(
    redis_client: aioredis.Redis, runtime: Runtime, store: ImageStore
) -> AsyncIterator[PoolManager]:
    m = PoolManager(redis_client, runtime, store, sync_every=0.05)
    await m.start()
    yield m
    await m.stop()


@pytest.fixture
def canary() -> Iterator[hostile.Canary]:
    c = hostile.Canary()
    yield c
    c.assert_untouched()
    c.remove()


def snapshot(store: ImageStore) -> tuple[set[str], set[str], set[str], list[str]]:
    """What a refused request must leave as it found: blobs, layers, images, temp files."""
    blobs = {p.name for p in store.blobs.iterdir()}
    layers = {p.name for p in store.layers.iterdir()}
    images = {i.id for i in store.images(all_images=True)}
    return blobs, layers, images, sorted(os.listdir(store.tmp))


def tar_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def with_members(archive: bytes, files: dict[str, bytes]) -> bytes:
    """``archive`` (a plain tar) with ``files`` added at its end: its blocks up to its
    end marker, then a tar of ``files`` (which brings its own)."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.getmembers()
        end = tar.offset
    return archive[:end] + tar_of(files)


async def build(api: httpx.AsyncClient, context: bytes, tag: str) -> tuple[int, str]:
    """(status, all the text a build answered with: its progress, or its error)."""
    async with api.stream("POST", "/build", params={"t": tag}, content=context,
                          headers={"Content-Type": "application/x-tar"}) as response:  # fmt: skip
        body = (await response.aread()).decode()
    if response.status_code != 200:
        return response.status_code, body
    text = []
    for line in body.splitlines():
        message = json.loads(line)
        text.append(message.get("stream") or message.get("error") or json.dumps(message))
        if "error" in message:
            return 400, "".join(text)  # failed after its progress began: an error in the stream
    return 200, "".join(text)


def assert_refused(status: int, text: str, case: hostile.Case) -> None:
    assert 400 <= status < 500, text
    if case.expect == "refuse":
        assert case.member in text, text
    else:  # over the entry point's cap: named by the member that passes it
        assert "expands past" in text, text


def _refuses(case: hostile.Case, cap: int) -> bool:
    return case.expect == "refuse" or case.needs_cap >= cap


# -- build contexts ----------------------------------------------------------------------


BIG_CONTEXT_CAP = 1 << 30


@pytest.mark.parametrize("case", hostile.CASES, ids=hostile.case_ids())
async def test_a_hostile_build_context(
    case: hostile.Case, canary: hostile.Canary, api: httpx.AsyncClient, node: PoolManager,
    store: ImageStore,
) -> None:  # fmt: skip
    data = case.build(canary)
    if data[:2] != b"\x1f\x8b":
        data = with_members(data, {"Dockerfile": b"FROM busybox\nRUN true\n"})
    before = snapshot(store)
    status, text = await build(api, data, f"hostile/context:{case.name}")
    if _refuses(case, BIG_CONTEXT_CAP):
        assert_refused(status, text, case)
        assert snapshot(store) == before
    else:
        assert status == 200, text


# -- ADD of a tar ------------------------------------------------------------------------


ADD_CAP = 256 << 20  # a small tar's ADD cap (images/copying.py add_cap)


@pytest.mark.parametrize("case", hostile.CASES, ids=hostile.case_ids())
async def test_add_of_a_hostile_tar(
    case: hostile.Case, canary: hostile.Canary, api: httpx.AsyncClient, node: PoolManager,
    store: ImageStore,
) -> None:  # fmt: skip
    dockerfile = b"FROM busybox\nADD x.tar /out/\n"
    context = tar_of({"x.tar": case.build(canary), "Dockerfile": dockerfile})
    before_layers = {p.name for p in store.layers.iterdir()}
    status, text = await build(api, context, "hostile/add:1")
    if _refuses(case, ADD_CAP):
        assert_refused(status, text, case)
        assert {p.name for p in store.layers.iterdir()} == before_layers
        assert os.listdir(store.tmp) == []
    else:
        assert status == 200, text
        check = hostile.confined_check(case, canary)
        assert check is not None
        layer = store.layer_dirs(store.get("hostile/add:1"))[0]
        check(layer / "out")


# -- COPY destinations and sources ---------------------------------------------------------


async def test_probe_copy_to_dotdot_writes_inside_the_image_only(
    api: httpx.AsyncClient, node: PoolManager, store: ImageStore
) -> None:
    """The issue's first probe: COPY poc /../../../../../../tmp/scow-c1/."""
    where = f"/tmp/scow-c1-{secrets.token_hex(4)}"
    dockerfile = f"FROM busybox\nCOPY poc /../../../../../..{where}/\n".encode()
    status, text = await build(api, tar_of({"Dockerfile": dockerfile, "poc": b"poc\n"}),
                               "hostile/c1:1")  # fmt: skip
    assert status == 200, text
    assert not os.path.lexists(where)
    layer = store.layer_dirs(store.get("hostile/c1:1"))[0]
    assert (layer / where.lstrip("/") / "poc").read_bytes() == b"poc\n"


async def test_copy_through_a_symlink_an_earlier_layer_or_source_made(
    api: httpx.AsyncClient, node: PoolManager, store: ImageStore, canary: hostile.Canary
) -> None:
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in {"poc": b"poc\n", "Dockerfile": (
            f"FROM busybox\nRUN ln -s / /h\nCOPY poc /h{canary.root}/dir/\n"
            f"COPY d /dst/\nCOPY poc /dst/lnk/\n"
        ).encode()}.items():  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("d/lnk")  # inside a copied directory: copied as a link
        link.type, link.linkname = tarfile.SYMTYPE, str(canary.root / "dir")
        tar.addfile(link)
    status, text = await build(api, context.getvalue(), "hostile/through:1")
    assert status == 200, text
    canary.assert_untouched()
    top = store.layer_dirs(store.get("hostile/through:1"))
    # Both landed where the image's own links lead, inside the image.
    assert (top[0] / str(canary.root).lstrip("/") / "dir" / "poc").read_bytes() == b"poc\n"
    assert (top[2] / str(canary.root).lstrip("/") / "dir" / "poc").read_bytes() == b"poc\n"


async def test_probe_copy_from_through_an_image_symlink_never_reads_the_host(
    api: httpx.AsyncClient, node: PoolManager, runtime: Runtime
) -> None:
    """The issue's third probe: RUN ln -s / /h, then COPY --from=stage /h/<token> /t."""
    token = runtime.config.state_dir / "token"
    token.write_text("the host's API token\n")
    dockerfile = (f"FROM busybox AS stage\nRUN ln -s / /h\n"
                  f"FROM busybox\nCOPY --from=stage /h{token} /t\n").encode()  # fmt: skip
    status, text = await build(api, tar_of({"Dockerfile": dockerfile}), "hostile/c3:1")
    assert status == 400 and "not found in stage" in text, text
    assert "API token" not in text


# -- load and import ----------------------------------------------------------------------


def docker_archive(layer: bytes) -> bytes:
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()  # fmt: skip
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["hostile/loaded:1"],
                            "Layers": ["layer/layer.tar"]}]).encode()  # fmt: skip
    return tar_of({config_name: config, "layer/layer.tar": layer, "manifest.json": manifest})


def oci_archive(layer: bytes) -> bytes:
    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    rootfs = {"type": "layers", "diff_ids": [digest(layer)]}
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": rootfs}).encode()  # fmt: skip
    manifest = json.dumps({"schemaVersion": 2, "config": {"digest": digest(config)},
                           "layers": [{"digest": digest(layer)}]}).encode()  # fmt: skip
    named = {"org.opencontainers.image.ref.name": "hostile/oci:1"}
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"digest": digest(manifest), "annotations": named}]}).encode()  # fmt: skip
    blobs = {f"blobs/sha256/{digest(b)[7:]}": b for b in (layer, config, manifest)}
    return tar_of({"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', **blobs,
                   "index.json": index})  # fmt: skip


@pytest.mark.parametrize("shape", ["docker-archive", "oci", "import"])
@pytest.mark.parametrize("case", hostile.CASES, ids=hostile.case_ids())
async def test_a_hostile_layer_loaded_or_imported(
    case: hostile.Case, shape: str, canary: hostile.Canary, api: httpx.AsyncClient,
    node: PoolManager, store: ImageStore,
) -> None:  # fmt: skip
    layer = case.build(canary)
    before = snapshot(store)
    if shape == "import":
        params = {"fromSrc": "-", "repo": "hostile/imported", "tag": "1"}
        response = await api.post("/images/create", params=params, content=layer)
    else:
        archive = docker_archive(layer) if shape == "docker-archive" else oci_archive(layer)
        response = await api.post("/images/load", content=archive)
    if case.expect == "refuse":
        assert_refused(response.status_code, response.text, case)
        assert snapshot(store) == before
        return
    assert response.status_code == 200, response.text
    tag = {"import": "hostile/imported:1", "oci": "hostile/oci:1"}.get(shape, "hostile/loaded:1")
    image = store.get(tag)
    check = hostile.confined_check(case, canary)
    assert check is not None
    check(store.layer_dirs(image)[0])
    (await api.delete(f"/images/{image.id}")).raise_for_status()
    store.gc()


async def test_probe_import_of_a_symlink_then_a_file_writes_nothing_on_the_host(
    api: httpx.AsyncClient, node: PoolManager
) -> None:
    """The issue's second probe: x -> /tmp/scow-c2, then a regular file x."""
    where = f"/tmp/scow-c2-{secrets.token_hex(4)}"

    def members(tar: tarfile.TarFile) -> None:
        hostile._link(tar, "x", where)
        hostile._file(tar, "x")

    response = await api.post("/images/create", params={"fromSrc": "-"},
                              content=hostile._tar(members))  # fmt: skip
    assert response.status_code == 400 and "'x'" in response.text, response.text
    assert not os.path.lexists(where)


# -- docker cp -----------------------------------------------------------------------------


async def running(api: httpx.AsyncClient, script: str, **config: object) -> str:
    created = await api.post("/containers/create", json={
        "Image": "busybox", "Cmd": ["sh", "-c", script], **config})  # fmt: skip
    assert created.status_code == 201, created.text
    cid = str(created.json()["Id"])
    (await api.post(f"/containers/{cid}/start")).raise_for_status()
    return cid


async def _until_present(api: httpx.AsyncClient, cid: str, path: str) -> None:
    """Started is not the same as done with its first command: wait for ``path``."""
    for _ in range(200):
        if (await api.head(f"/containers/{cid}/archive", params={"path": path})).status_code == 200:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{path} never appeared in {cid}")


@pytest.mark.parametrize("case", hostile.CASES, ids=hostile.case_ids())
async def test_docker_cp_of_a_hostile_tar_into_a_container(
    case: hostile.Case, canary: hostile.Canary, api: httpx.AsyncClient, node: PoolManager
) -> None:
    cid = await running(api, "mkdir -p /in; exec sleep 60")
    try:
        await _until_present(api, cid, "/in")
        response = await api.put(f"/containers/{cid}/archive", params={"path": "/in"},
                                 content=case.build(canary))  # fmt: skip
        if _refuses(case, 4 << 30):
            assert_refused(response.status_code, response.text, case)
            listing = await api.get(f"/containers/{cid}/archive", params={"path": "/in"})
            with tarfile.open(fileobj=io.BytesIO(listing.content)) as tar:
                assert tar.getnames() == ["in"]  # checked whole: nothing was written
        else:
            assert response.status_code == 200, response.text
    finally:
        await api.delete(f"/containers/{cid}", params={"force": "1"})


async def test_docker_cp_against_a_container_that_swaps_a_directory_for_a_symlink(
    api: httpx.AsyncClient, node: PoolManager, canary: hostile.Canary
) -> None:
    """The container flips /d between its own directory and a symlink to the host's canary
    path while we copy out of it and into it: we see its file or nothing, never the host's,
    and the host's canary is never written."""
    script = (f"mkdir -p /real; echo container > /real/secret; while true; do "
              f"ln -sfn /real /d; usleep 2000; ln -sfn {canary.root} /d; usleep 2000; done")
    cid = await running(api, script)
    seen: set[str] = set()
    try:
        for _ in range(60):
            try:
                out = await api.get(f"/containers/{cid}/archive", params={"path": "/d/secret"})
            except httpx.RemoteProtocolError:  # stat'ed, then swapped away: a cut stream
                seen.add("cut short")
                continue
            if out.status_code == 200:
                with tarfile.open(fileobj=io.BytesIO(out.content)) as tar:
                    member = tar.extractfile("secret")
                    assert member is not None
                    seen.add(member.read().decode())
            else:
                assert out.status_code in (400, 404), out.text
                seen.add(str(out.status_code))
            put = await api.put(f"/containers/{cid}/archive", params={"path": "/d"},
                                content=tar_of({"secret": b"pwned\n"}))  # fmt: skip
            assert put.status_code in (200, 400, 404), put.text
        assert "host secret\n" not in seen
        assert seen & {"container\n", "pwned\n"}  # the copy ran (ours came in, or its own)
        canary.assert_untouched()
    finally:
        await api.delete(f"/containers/{cid}", params={"force": "1"})


# -- VOLUME seeding and -u NAME -------------------------------------------------------------


async def test_volume_seeding_never_copies_the_host(
    api: httpx.AsyncClient, node: PoolManager, canary: hostile.Canary, runtime: Runtime
) -> None:
    """VOLUME /h/<canary> after RUN ln -s / /h: the new volume starts as the image has that
    path (nothing), not with the host's files."""
    dockerfile = f"FROM busybox\nRUN ln -s / /h\nVOLUME /h{canary.root}\n".encode()
    status, text = await build(api, tar_of({"Dockerfile": dockerfile}), "hostile/volume:1")
    assert status == 200, text
    created = await api.post("/containers/create", json={"Image": "hostile/volume:1",
                                                         "Cmd": ["true"]})  # fmt: skip
    assert created.status_code == 201, created.text
    cid = created.json()["Id"]
    try:
        record = runtime.get(cid)
        (name, _), = record.volumes
        assert list(runtime.volumes.get(name).path.iterdir()) == []
    finally:
        await api.delete(f"/containers/{cid}", params={"force": "1", "v": "1"})


async def test_user_lookup_reads_the_images_passwd_never_the_hosts(
    api: httpx.AsyncClient, node: PoolManager, canary: hostile.Canary
) -> None:
    (canary.root / "passwd").write_text("hostuser:x:4242:4242::/:/bin/sh\n")
    canary.before = canary.digest()
    dockerfile = (f"FROM busybox\nRUN ln -sf /../../../../../..{canary.root}/passwd "
                  f"/etc/passwd\n").encode()  # fmt: skip
    status, text = await build(api, tar_of({"Dockerfile": dockerfile}), "hostile/user:1")
    assert status == 200, text
    created = await api.post("/containers/create", json={
        "Image": "hostile/user:1", "Cmd": ["id"], "User": "hostuser"})  # fmt: skip
    assert created.status_code == 400, created.text
    assert "no user 'hostuser'" in created.text


async def test_a_refused_request_leaves_no_container_behind(
    api: httpx.AsyncClient, node: PoolManager, runtime: Runtime
) -> None:
    before = {r.id for r in runtime.containers()}
    created = await api.post("/containers/create", json={"Image": "busybox", "User": "nosuch"})
    assert created.status_code == 400
    await asyncio.sleep(0)
    wait_until(lambda: {r.id for r in runtime.containers()} == before, 5, "no container left")
