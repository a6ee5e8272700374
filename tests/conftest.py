"""Fixtures every scow test can use: real Redis, temp state and run dirs, a runtime on
real runc with a busybox layer and a test bridge. The leak check is tests/leakcheck.py."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio as aioredis

from gateway.redisd import RedisServer
from images.base import bootstrap
from images.builder import Builder, BuildOptions
from images.busybox import make_busybox_rootfs
from images.store import ImageStore
from pool.contract.client import PoolClient
from pool.contract.connect import connect
from pool.manager import PoolManager
from runtime.engine import Runtime, RuntimeConfig
from runtime.network import BridgeNetwork
from tests import leakcheck

if TYPE_CHECKING:
    from tests.processes import GatewayProcess, Node

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "images" / "examples"

if os.geteuid() != 0:
    raise pytest.UsageError("scow's tests drive runc, cgroups and netns: run them as root")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session, on a Unix socket in a temp dir."""
    tmp = Path(tempfile.mkdtemp(prefix="scow-redis-"))
    server = RedisServer(tmp / "redis.sock", tmp / "data", persist=False)
    server.start()
    assert server.process is not None
    leakcheck.allow_pid(server.process.pid)
    try:
        yield server
    finally:
        leakcheck.disallow_pid(server.process.pid)
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def single_redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session's Redis, flushed before each test that uses it."""
    with redis.Redis(unix_socket_path=str(redis_server.socket_path)) as client:
        client.flushall()
    yield redis_server.url


@pytest.fixture
def redis_url(single_redis_url: str) -> str:
    """The Redis a test runs on: one Redis (modules that run on a Redis Cluster too
    override this with both)."""
    return single_redis_url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[str]:
    """A Redis Cluster of three masters on 127.0.0.1 for the session: its URL."""
    from tests.cluster import RedisClusterProcesses

    cluster = RedisClusterProcesses(Path(tempfile.mkdtemp(prefix="scow-cluster-")))
    cluster.start()
    for pid in cluster.pids:
        leakcheck.allow_pid(pid)
    try:
        yield cluster.url
    finally:
        for pid in cluster.pids:
            leakcheck.disallow_pid(pid)
        cluster.stop()


@pytest.fixture
def cluster_redis_url(redis_cluster: str) -> str:
    """The session's Redis Cluster, every master flushed."""
    from tests.cluster import flush

    flush(redis_cluster)
    return redis_cluster


@pytest.fixture(params=["single", "cluster"])
def single_or_cluster_redis_url(request: pytest.FixtureRequest) -> str:
    """One Redis, then a Redis Cluster: a module whose tests must pass on both overrides
    ``redis_url`` with this."""
    url: str = request.getfixturevalue(f"{request.param}_redis_url")
    return url


@pytest.fixture
def scow_dirs() -> Iterator[tuple[Path, Path]]:
    """A fresh (state dir, run dir) pair, removed afterwards.

    Short paths under /tmp rather than tmp_path: Unix socket paths are limited to
    107 bytes and runc keeps sockets under its root in the run dir.
    """
    base = Path(tempfile.mkdtemp(prefix="scow-t-"))
    leakcheck.watch_mounts_under(base)
    state, run = base / "state", base / "run"
    state.mkdir()
    run.mkdir()
    try:
        yield state, run
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def state_dir(scow_dirs: tuple[Path, Path]) -> Path:
    return scow_dirs[0]


@pytest.fixture
def run_dir(scow_dirs: tuple[Path, Path]) -> Path:
    return scow_dirs[1]


TEST_BRIDGE = "scowtest0"
TEST_SUBNET = IPv4Network("10.214.0.0/24")


@pytest.fixture(scope="session")
def busybox_layer() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="scow-bb-"))
    make_busybox_rootfs(base / "rootfs")
    try:
        yield base / "rootfs"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def test_bridge() -> Iterator[str]:
    """The bridge tests attach to; removed when the session ends."""
    yield TEST_BRIDGE
    with tempfile.TemporaryDirectory() as tmp:
        BridgeNetwork(Path(tmp), TEST_BRIDGE, TEST_SUBNET).remove_bridge()


@contextlib.asynccontextmanager
async def opened_runtime(config: RuntimeConfig) -> AsyncIterator[Runtime]:
    """A runtime on ``config``'s dirs; what it made is removed after, and anything left
    under its dirs fails the test."""
    leakcheck.watch_runc_root(config.run_dir / "runc")
    rt = Runtime(config)
    await rt.open()
    try:
        yield rt
    finally:
        for record in rt.store.all():
            await rt.destroy(record.id, remove_volumes=True)
        await rt.reap()
    left = leakcheck.scow_leftovers(config.state_dir, config.run_dir)
    assert not left, f"the runtime left these behind: {left}"


def runtime_config_for(state: Path, run: Path, **kw: Any) -> RuntimeConfig:
    return RuntimeConfig(state_dir=state, run_dir=run, bridge=TEST_BRIDGE, subnet=TEST_SUBNET,
                         cgroup_parent=f"scow-test-{secrets.token_hex(3)}", **kw)  # fmt: skip


@pytest.fixture
async def runtime(scow_dirs: tuple[Path, Path], test_bridge: str) -> AsyncIterator[Runtime]:
    async with opened_runtime(runtime_config_for(*scow_dirs)) as rt:
        yield rt


# -- images built once per session, a pool manager and a client ------------------


async def _build(store: ImageStore, base: Path, builds: list[tuple[Path, str]]) -> None:
    rt = Runtime(RuntimeConfig(state_dir=base / "state", run_dir=base / "run",
                               cgroup_parent="scow-test-build", bridge=TEST_BRIDGE,
                               subnet=TEST_SUBNET))  # fmt: skip
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
    client = connect(redis_url)
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


@pytest.fixture(scope="session")
def echo_images(python_images: ImageStore, image_dir: Path) -> ImageStore:
    """tests/echo: an http function that answers with what it was sent."""
    asyncio.run(_build(python_images, image_dir, [(REPO / "tests" / "echo", "tests/echo")]))
    return python_images


@pytest.fixture(scope="session")
def redis_images(python_images: ImageStore, image_dir: Path) -> ImageStore:
    """examples/redis on the session's debian (apt-get install redis-server: seconds)."""
    asyncio.run(_build(python_images, image_dir, [(EXAMPLES / "redis", "examples/redis")]))
    return python_images


# -- daemons as processes, for fault tests ------------------------------------------

PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def not_subreaper() -> Iterator[None]:
    """Orphans of a killed node go to init, not to pytest (which would have to reap them)."""
    libc = ctypes.CDLL(None)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@pytest.fixture
async def nodes(
    redis_url: str, scow_dirs: tuple[Path, Path], function_images: ImageStore, not_subreaper: None
) -> AsyncIterator[Callable[..., Node]]:
    """Makes pool managers as processes (on ``redis_url`` unless told another Redis)."""
    from tests.processes import Node

    made: list[Node] = []

    def make(url: str = redis_url) -> Node:
        node = Node(url, scow_dirs[0].parent / f"node{len(made)}", function_images)
        made.append(node)
        return node

    yield make
    stuck = []
    for node in made:
        try:
            node.stop_if_running()
        except AssertionError as exc:  # killed by now: what it left is cleaned all the same
            stuck.append(exc)
        await node.clean()
    if stuck:
        raise stuck[0]


@pytest.fixture
def gateways(
    redis_url: str, scow_dirs: tuple[Path, Path]
) -> Iterator[Callable[..., GatewayProcess]]:
    """Makes gateways as processes (on ``redis_url`` unless told another Redis)."""
    from tests.processes import GatewayProcess

    made: list[GatewayProcess] = []

    def make(url: str = redis_url) -> GatewayProcess:
        gateway = GatewayProcess(url, scow_dirs[0].parent / f"gateway{len(made)}")
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.stop_if_running()
