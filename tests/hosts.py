"""`scow up` as a child process on the test bridge, for tests that drive the real CLI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests import leakcheck
from tests.conftest import TEST_BRIDGE, TEST_SUBNET
from tests.utils import free_port, wait_until

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Host:
    process: subprocess.Popen[str]
    state: Path
    run: Path
    port: int

    @property
    def env(self) -> dict[str, str]:
        """What a CLI needs to reach this host over its Unix socket."""
        keep = {k: v for k, v in os.environ.items() if not k.startswith("SCOW_")}
        return {**keep, "SCOW_STATE_DIR": str(self.state), "SCOW_RUN_DIR": str(self.run)}

    def scow(
        self, *args: str, env: dict[str, str] | None = None, input: str | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args], env=env or self.env, input=input,
            capture_output=True, text=True, timeout=timeout, cwd=REPO,
        )  # fmt: skip


@contextmanager
def scow_up(state: Path, run: Path, *options: str) -> Iterator[Host]:
    """The host's output goes to a file beside ``state`` (a pipe nobody reads would fill
    up and block its logging), and its tail is shown when the host did not stop cleanly."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SCOW_TOKEN")}
    log_path = state.parent / "up.log"
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "up", "--state-dir", str(state), "--run-dir",
         str(run), "--port", str(port), "--bridge", TEST_BRIDGE, "--subnet", str(TEST_SUBNET),
         "--node-metrics-port", "0", *options],
        stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        wait_until(  # "scow is up": the gateway listens and the node is live
            lambda: "scow is up" in log_path.read_text() or proc.poll() is not None, 60, "scow up"
        )
        assert proc.poll() is None, log_path.read_text()
        yield Host(proc, state, run, port)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        log.close()
        assert proc.returncode == 0, log_path.read_text()[-4000:]


@contextmanager
def scratch_host(prefix: str, *options: str) -> Iterator[Host]:
    """``scow up`` on dirs of its own under /tmp, removed after."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    leakcheck.watch_mounts_under(base)
    (base / "state").mkdir()
    (base / "run").mkdir()
    try:
        with scow_up(base / "state", base / "run", *options) as running:
            yield running
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def docker_host(prefix: str, *options: str, busybox: bool = True) -> Iterator[Host]:
    """A ``scratch_host`` for the docker CLI's tests: busybox made (no registry), and on
    the way out its containers and networks removed (containers outlive their node, as
    Docker's outlive dockerd)."""
    with scratch_host(prefix, *options) as running:
        try:
            if busybox:
                ok(docker(running, "pull", "busybox"))
            yield running
        finally:
            left = docker(running, "ps", "-aq").stdout.split()
            if left:
                docker(running, "rm", "-f", *left)
            docker(running, "network", "prune", "-f")


def docker_env(host: Host) -> dict[str, str]:
    """The docker CLI's environment for ``host``: its Unix socket, a config dir of its own."""
    return {**host.env, "DOCKER_HOST": f"unix://{host.run / 'scow.sock'}",
            "DOCKER_CONFIG": str(host.state.parent / "docker-config")}  # fmt: skip


def docker(
    host: Host, *args: str, input: bytes | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The real docker CLI against ``host``."""
    return subprocess.run(
        ["docker", *args], env=docker_env(host), capture_output=True, text=input is None,
        input=input, timeout=timeout,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}: {result.stderr}"
    return result.stdout
