"""Fixtures for runtime tests: a busybox layer, a Runtime on temp dirs, a test bridge."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from images.busybox import make_busybox_rootfs
from runtime.engine import Runtime, RuntimeConfig
from runtime.network import BridgeNetwork
from tests import leakcheck

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
