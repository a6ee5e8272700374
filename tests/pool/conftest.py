"""Fixtures for pool tests: example images built once, a pool manager, a client."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from images.base import bootstrap
from images.builder import Builder, BuildOptions
from images.store import ImageStore
from pool.contract import PoolClient
from pool.functions import FunctionSpec, parse_spec
from pool.manager import PoolManager
from runtime.engine import Runtime, RuntimeConfig

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "images" / "examples"


async def _build(store: ImageStore, base: Path, builds: list[tuple[Path, str]]) -> None:
    rt = Runtime(RuntimeConfig(state_dir=base / "state", run_dir=base / "run",
                               cgroup_parent="scow-test-build"))  # fmt: skip
    await rt.open()
    try:
        builder = Builder(store, rt, progress=lambda line: None)
        for context, tag in builds:
            await builder.build(BuildOptions(context, tag=tag))
    finally:
        await rt.reap()


@pytest.fixture(scope="session")
def image_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="scow-img-"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def function_images(image_dir: Path) -> ImageStore:
    """busybox and the busybox wc example (seconds)."""
    store = ImageStore(image_dir / "images")
    store.open()
    bootstrap(store, "busybox")
    asyncio.run(_build(store, image_dir, [(EXAMPLES / "busybox-wc", "examples/busybox-wc")]))
    return store


@pytest.fixture(scope="session")
def python_images(function_images: ImageStore, image_dir: Path) -> ImageStore:
    """debian, scow/python and the python hello example (about a minute, once)."""
    asyncio.run(_build(function_images, image_dir, [
        (REPO / "images" / "runtimes" / "python", "scow/python"),
        (EXAMPLES / "python-hello", "examples/python-hello"),
    ]))  # fmt: skip
    return function_images


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def manager(
    redis_client: aioredis.Redis, runtime: Runtime, function_images: ImageStore
) -> AsyncIterator[PoolManager]:
    m = PoolManager(redis_client, runtime, function_images, sync_every=0.05)
    await m.start()
    yield m
    await m.stop()


@pytest.fixture
async def client(redis_client: aioredis.Redis) -> AsyncIterator[PoolClient]:
    c = PoolClient(redis_client)
    await c.start()
    yield c
    await c.close()


def spec(**fields: object) -> FunctionSpec:
    return parse_spec(fields)
