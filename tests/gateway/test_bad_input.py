"""Bad input at the API: a clear 4xx (or, for builds, an error in the build's stream,
as Docker reports it) that names the value, nothing written outside its target,
nothing left half-made."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.docker.hijack import MAX_HEAD_BYTES
from pool.manager import PoolManager
from tests.gateway.conftest import RunningGateway
from tests.gateway.test_images_api import _stream, context_tar


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory an archive must not reach; empty before and after."""
    path = Path(tempfile.mkdtemp(prefix="scow-outside-"))
    yield path
    assert list(path.iterdir()) == [], "something was written outside its target"
    path.rmdir()


def tar_of(members: list[tuple[str, str, bytes | str]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
                tar.addfile(info)
            else:
                assert isinstance(data, bytes)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def gzip_bomb(expanded: int) -> bytes:
    """A .tar.gz of one file of ``expanded`` zero bytes, about 1/1000 of that in size.

    Built from gzip members (a gzip file may be several, read as one stream), so
    making it costs one compression of 1 MiB however large it expands.
    """
    info = tarfile.TarInfo("zeros")
    info.size = expanded
    mib = gzip.compress(bytes(1 << 20), compresslevel=9)
    return b"".join([gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)),
                     mib * (expanded >> 20), gzip.compress(bytes(1024))])  # fmt: skip


def disk_use(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


async def test_build_contexts_that_escape_write_nothing(
    api: httpx.AsyncClient, manager: PoolManager, outside: Path
) -> None:
    dockerfile = ("Dockerfile", b"FROM busybox\nCOPY . /x/\n")
    cases = {
        "../evil": [("file", *dockerfile), ("file", "../evil", b"x")],
        "out/pwned": [
            ("file", *dockerfile), ("sym", "out", str(outside)), ("file", "out/pwned", b"x"),
        ],
    }  # fmt: skip
    for culprit, members in cases.items():
        response = await api.post("/build", params={"t": "evil:1"},
                                  content=tar_of(members))  # type: ignore[arg-type]  # fmt: skip
        assert response.status_code == 400, response.text
        assert repr(culprit) in response.json()["message"], (culprit, response.text)
    assert (await api.get("/images/evil:1/json")).status_code == 404
    tmp = manager.runtime.config.state_dir / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == [], "a build's context was left behind"


async def test_add_of_a_decompression_bomb_fails_the_build_and_writes_nothing(
    api: httpx.AsyncClient, manager: PoolManager
) -> None:
    bomb = gzip_bomb(2 << 30)
    assert len(bomb) < 4 << 20
    state = manager.runtime.config.state_dir
    before = disk_use(state)
    context = context_tar({"Dockerfile": b"FROM busybox\nADD bomb.tar.gz /data/\n",
                           "bomb.tar.gz": bomb})  # fmt: skip
    messages = await _stream(api, "POST", "/build", params={"t": "bomb:1"}, content=context)
    errors = [m["error"] for m in messages if "error" in m]
    assert errors and "ADD bomb.tar.gz" in errors[0] and "expands past" in errors[0], messages
    assert (await api.get("/images/bomb:1/json")).status_code == 404
    grew = disk_use(state) - before
    assert grew < 64 << 20, f"the state dir grew by {grew} bytes"


def docker_archive(layer: bytes, tag: str) -> bytes:
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()  # fmt: skip
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag],
                            "Layers": ["l/layer.tar"]}]).encode()  # fmt: skip
    return tar_of([("file", "manifest.json", manifest), ("file", config_name, config),
                   ("file", "l/layer.tar", layer)])  # fmt: skip


async def test_image_archives_that_escape_are_refused(
    api: httpx.AsyncClient, manager: PoolManager, outside: Path
) -> None:
    layers = {
        "../../evil": tar_of([("file", "../../evil", b"x")]),
        "out/pwned": tar_of([("sym", "out", str(outside)), ("file", "out/pwned", b"x")]),
    }
    for culprit, layer in layers.items():
        response = await api.post("/images/load", content=docker_archive(layer, "escape:1"))
        assert response.status_code == 400, response.text
        assert repr(culprit) in response.json()["message"]
    assert (await api.get("/images/escape:1/json")).status_code == 404
    not_tar = await api.post("/images/load", content=b"not a tar at all")
    assert not_tar.status_code == 400 and "archive" in not_tar.json()["message"]


@pytest.mark.parametrize(
    ("method", "url", "kw", "named"),
    [
        ("POST", "/images/create", {"params": {"fromImage": "../../etc", "tag": "x"}}, "../../etc"),
        ("POST", "/images/busybox/tag", {"params": {"repo": "../../x", "tag": "1"}}, "../../x"),
        ("POST", "/images/busybox/tag", {"params": {"repo": "Upper/Case"}}, "Upper/Case"),
        ("POST", "/build", {"params": {"t": "../up:1"}}, "../up:1"),
        ("POST", "/containers/create", {"params": {"name": "../x"}, "json": {"Image": "busybox"}},
         "../x"),
        ("POST", "/containers/create", {"json": {"Image": "busybox",
                                                 "HostConfig": {"Binds": ["../x:/data"]}}}, "../x"),
        ("POST", "/containers/create", {"json": {"Image": "busybox", "HostConfig": {
            "Mounts": [{"Type": "bind", "Source": "rel/x", "Target": "/d"}]}}}, "rel/x"),
        ("POST", "/containers/create", {"json": {"Image": "../../x"}}, "../../x"),
        ("POST", "/volumes/create", {"json": {"Name": "../../etc"}}, "../../etc"),
        ("POST", "/system/functions", {"json": {"name": "../x", "image": "busybox"}}, "../x"),
        ("POST", "/system/functions", {"json": {"name": "ok", "image": "busybox", "bogus": 1}},
         "bogus"),
        ("POST", "/system/environments", {"json": {"image": "busybox", "ports": ["../1"]}},
         "../1"),
    ],
)  # fmt: skip
async def test_invalid_names_and_paths_are_4xx_naming_the_value(
    api: httpx.AsyncClient, manager: PoolManager, method: str, url: str, kw: dict[str, object],
    named: str,
) -> None:  # fmt: skip
    if url == "/build":
        kw = {**kw, "content": context_tar({"Dockerfile": b"FROM busybox\n"})}
    images_before = (await api.get("/images/json")).json()
    response = await api.request(method, url, **kw)  # type: ignore[arg-type]
    assert 400 <= response.status_code < 500, response.text
    assert named in response.json()["message"], response.text
    # Nothing was made on the way.
    assert (await api.get("/containers/json", params={"all": "1"})).json() == []
    assert (await api.get("/volumes")).json()["Volumes"] == []
    assert (await api.get("/system/functions")).json() == []
    assert (await api.get("/images/json")).json() == images_before


@pytest.mark.parametrize(
    "url", ["/system/functions", "/containers/create", "/volumes/create", "/system/environments"]
)
async def test_malformed_json_is_400(
    api: httpx.AsyncClient, manager: PoolManager, url: str
) -> None:
    for body in (b"{not json", b"[1, 2]", b'"a string"', b"\xff\xfe"):
        response = await api.post(url, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, (url, body, response.text)
        assert response.json()["error"], response.text


async def test_huge_headers_are_431_and_the_gateway_keeps_serving(
    gateway: RunningGateway,
) -> None:
    port = int(gateway.url.rsplit(":", 1)[1])

    async def raw(head_bytes: int) -> bytes:
        request = (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * head_bytes
                   + b"\r\nConnection: close\r\n\r\n")  # fmt: skip
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            with contextlib.suppress(ConnectionError):  # refused before all of it was sent
                await writer.drain()
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    assert (await raw(1 << 20)).startswith(b"HTTP/1.1 431 ")
    assert (await raw(MAX_HEAD_BYTES * 4)).startswith(b"HTTP/1.1 431 ")
    assert (await raw(MAX_HEAD_BYTES // 2)).startswith(b"HTTP/1.1 200 ")
    async with gateway.tcp() as api:
        big_body = await api.post("/function/nope", content=os.urandom(1 << 20))
    assert big_body.status_code == 404  # a body is not a head: not counted
