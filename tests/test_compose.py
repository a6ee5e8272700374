"""A Compose project (Debian's docker-compose 1.29) against a real `scow up`: networks
with aliases, depends_on a healthy service, healthchecks, restart policies, a named
volume and published ports; up -d, ps, logs, exec, scale, down -v."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hosts import Host, docker, docker_env, docker_host, ok
from tests.utils import wait_until

pytestmark = [
    pytest.mark.skipif(shutil.which("docker-compose") is None, reason="no docker-compose"),
    pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI"),
    pytest.mark.slow,
]

COMPOSE = """\
services:
  db:
    image: busybox
    command: ["sh", "-c", "echo from-db > /data/index.html; exec httpd -f -p 80 -h /data"]
    volumes:
      - dbdata:/data
    networks:
      backend:
        aliases: [database]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://localhost/"]
      interval: 1s
      timeout: 2s
      retries: 3
    restart: always
  web:
    image: busybox
    command:
      - sh
      - -c
      - >-
        mkdir -p /www; echo starting > /www/index.html;
        (while true; do wget -q -O /www/index.html http://database/; sleep 0.5; done) &
        exec httpd -f -p 8080 -h /www
    depends_on:
      db:
        condition: service_healthy
    ports:
      - "127.0.0.1::8080"
    networks: [backend, front]
    restart: on-failure
networks:
  backend: {}
  front: {}
volumes:
  dbdata: {}
"""


@pytest.fixture(scope="module")
def host(test_bridge: str) -> Iterator[Host]:
    with docker_host("scow-compose-", "--network-pool", "10.228.0.0/16", busybox=False) as running:
        yield running


def compose(host: Host, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-p", "demo", *args], cwd=project, env=docker_env(host),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def done(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}: {result.stdout}{result.stderr}"
    return result.stdout + result.stderr


def _get(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


def test_compose_up_ps_logs_exec_scale_down(host: Host, tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text(COMPOSE)
    try:
        done(compose(host, tmp_path, "up", "-d"))
        rows = done(compose(host, tmp_path, "ps"))
        assert "demo_db_1" in rows and "Up (healthy)" in rows  # web waited for it
        port = int(done(compose(host, tmp_path, "port", "web", "8080")).strip().rpartition(":")[2])
        # web reaches db by its alias on the backend network, through the named volume's file
        wait_until(lambda: _get(port) == "from-db\n", 20, "web serving db's page")
        assert done(compose(host, tmp_path, "exec", "-T", "db", "cat", "/data/index.html")) == (
            "from-db\n")  # fmt: skip
        logs = done(compose(host, tmp_path, "logs", "--no-color", "web"))
        assert "demo_web_1" in logs

        done(compose(host, tmp_path, "up", "-d", "--scale", "web=2"))
        rows = done(compose(host, tmp_path, "ps"))
        assert "demo_web_2" in rows
        restart = ok(docker(host, "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}",
                            "demo_db_1"))  # fmt: skip
        assert restart == "always\n"
        networks = ok(docker(host, "network", "ls", "--format", "{{.Name}}")).split()
        assert {"demo_backend", "demo_front"} <= set(networks)
    finally:
        down = compose(host, tmp_path, "down", "-v")
    done(down)
    assert ok(docker(host, "ps", "-aq")) == ""
    assert "demo_dbdata" not in ok(docker(host, "volume", "ls", "-q")).split()
    assert "demo_backend" not in ok(docker(host, "network", "ls", "--format", "{{.Name}}"))
