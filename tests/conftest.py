"""Fixtures every scow test can use: real Redis, temp state and run dirs, a runtime on
real runc with a busybox layer and a test bridge. The leak check is tests/leakcheck.py."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest
import redis

from gateway.redisd import RedisServer
from images.busybox import make_busybox_rootfs
from runtime.engine import Runtime, RuntimeConfig
from runtime.network import BridgeNetwork
from tests import leakcheck

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
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session's Redis, flushed before each test that uses it."""
    with redis.Redis(unix_socket_path=str(redis_server.socket_path)) as client:
        client.flushall()
    yield redis_server.url


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


@pytest.fixture
async def runtime(scow_dirs: tuple[Path, Path], test_bridge: str) -> AsyncIterator[Runtime]:
    state, run = scow_dirs
    config = RuntimeConfig(
        state_dir=state,
        run_dir=run,
        cgroup_parent=f"scow-test-{secrets.token_hex(3)}",
        bridge=test_bridge,
        subnet=TEST_SUBNET,
    )
    leakcheck.watch_runc_root(run / "runc")
    rt = Runtime(config)
    await rt.open()
    try:
        yield rt
    finally:
        for record in rt.store.all():
            await rt.destroy(record.id, remove_volumes=True)
        await rt.reap()
