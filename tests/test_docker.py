"""Docker's own clients against a real `scow up`: the docker CLI, docker-py, testcontainers.

DOCKER_HOST points at the host's Unix socket; every command is the real client
talking to the gateway, the node and runc underneath.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from images import archive
from images.store import ImageStore
from tests.hosts import Host, docker, docker_env, docker_host, ok
from tests.utils import free_port, wait_until

pytestmark = pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")

WEB_DOCKERFILE = """\
FROM busybox
RUN mkdir /www && echo hello from web > /www/index.html
EXPOSE 8080
CMD ["sh", "-c", "echo web is up; exec httpd -f -p 8080 -h /www"]
"""


@pytest.fixture(scope="module")
def host(test_bridge: str) -> Iterator[Host]:
    with docker_host("scow-docker-", busybox=False) as running:
        yield running


def test_version_and_run_rm(host: Host) -> None:
    version = ok(docker(host, "version", "--format", "{{json .Server}}"))
    server = json.loads(version)
    assert server["ApiVersion"] == "1.50" and server["MinAPIVersion"] == "1.24"
    assert server["Os"] == "linux"
    # busybox is not there yet: the docker CLI pulls it, which makes it here.
    run = docker(host, "run", "--rm", "busybox", "echo", "hi")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "hi\n"
    failed = docker(host, "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (failed.returncode, failed.stdout, failed.stderr) == (3, "out\n", "err\n")
    assert ok(docker(host, "ps", "-aq")) == ""  # --rm removed both


def test_web_container_lifecycle(host: Host, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(WEB_DOCKERFILE)
    built = docker(host, "build", "-t", "web", str(tmp_path))
    assert built.returncode == 0 and "Successfully tagged web" in built.stdout, built.stderr
    assert "web" in ok(docker(host, "images", "--format", "{{.Repository}}")).split()
    history = ok(docker(host, "history", "--no-trunc", "web"))
    assert "mkdir /www" in history and "EXPOSE 8080" in history

    port = free_port()
    cid = ok(docker(host, "run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:8080", "web"))
    try:
        wait_until(lambda: _get(port) == "hello from web\n", 10, "the web container's answer")
        listed = ok(docker(host, "ps", "-a", "--format", "{{.Names}} {{.Status}} {{.Ports}}"))
        assert "web Up" in listed and f"127.0.0.1:{port}->8080/tcp" in listed
        assert ok(docker(host, "logs", "web")) == "web is up\n"
        assert ok(docker(host, "exec", "web", "cat", "/etc/hostname")) == cid.strip()[:12] + "\n"
        assert ok(docker(host, "inspect", "-f", "{{.State.Running}}", "web")) == "true\n"
        ok(docker(host, "stop", "web"))
        state = ok(docker(host, "inspect", "-f", "{{.State.Status}} {{.State.Running}}", "web"))
        assert state == "exited false\n"
        assert _get(port) is None  # the port went with the container's process
    finally:
        ok(docker(host, "rm", "-f", "web"))
    gone = docker(host, "container", "inspect", "web")
    assert gone.returncode == 1 and "no such container" in gone.stderr.lower()

    saved = subprocess.run(
        "docker save web | docker load", shell=True, env=docker_env(host), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert saved.returncode == 0 and "Loaded image: web:latest" in saved.stdout, saved.stderr
    image = json.loads(ok(docker(host, "inspect", "web")))  # no container: the image
    assert image[0]["Config"]["ExposedPorts"] == {"8080/tcp": {}}


def _get(port: int) -> str | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text
    except httpx.HTTPError:
        return None


def test_memory_limit_oom_is_reported(host: Host) -> None:
    hog = 'x=$(head -c 67108864 /dev/zero | tr "\\0" a); echo survived'
    run = docker(host, "run", "--name", "hog", "-m", "32m", "busybox", "sh", "-c", hog)
    try:
        assert run.returncode == 137 and "survived" not in run.stdout
        assert ok(docker(host, "inspect", "-f", "{{.State.OOMKilled}}", "hog")) == "true\n"
    finally:
        docker(host, "rm", "-f", "hog")


def test_cp_both_ways(host: Host, tmp_path: Path) -> None:
    ok(docker(host, "run", "-d", "--name", "files", "busybox", "sleep", "300"))
    try:
        (tmp_path / "in.txt").write_text("into the container\n")
        ok(docker(host, "cp", str(tmp_path / "in.txt"), "files:/tmp/"))
        assert ok(docker(host, "exec", "files", "cat", "/tmp/in.txt")) == "into the container\n"
        ok(docker(host, "exec", "files", "sh", "-c", "mkdir /out && echo out > /out/a"))
        ok(docker(host, "cp", "files:/out", str(tmp_path / "copied")))
        assert (tmp_path / "copied" / "a").read_text() == "out\n"
        missing = docker(host, "cp", "files:/no/such", str(tmp_path / "x"))
        assert missing.returncode == 1 and not (tmp_path / "x").exists()
    finally:
        ok(docker(host, "rm", "-f", "files"))


def test_named_volume_keeps_data(host: Host) -> None:
    try:
        ok(docker(host, "run", "--rm", "-v", "keep:/data", "busybox", "sh", "-c",
                  "echo kept > /data/x"))  # fmt: skip
        assert ok(docker(host, "run", "--rm", "-v", "keep:/data", "busybox", "cat",
                         "/data/x")) == "kept\n"  # fmt: skip
        assert "keep" in ok(docker(host, "volume", "ls", "-q")).split()
    finally:
        ok(docker(host, "volume", "rm", "keep"))
    assert "keep" not in ok(docker(host, "volume", "ls", "-q")).split()


def test_docker_py(host: Host) -> None:
    import docker as docker_py

    client = docker_py.DockerClient(base_url=f"unix://{host.run / 'scow.sock'}")
    try:
        output = client.containers.run("busybox", ["sh", "-c", "echo hello; echo oops >&2"],
                                       stderr=True, remove=True)  # fmt: skip
        assert output == b"hello\noops\n"
        with pytest.raises(docker_py.errors.ContainerError) as failed:
            client.containers.run("busybox", ["sh", "-c", "exit 5"], remove=True)
        assert failed.value.exit_status == 5

        container = client.containers.run("busybox", ["sh", "-c", "echo started; sleep 300"],
                                          detach=True, name="pyc")  # fmt: skip
        wait_until(lambda: container.logs() == b"started\n", 10, "the container's first line")
        result = container.exec_run(["sh", "-c", "echo from exec; exit 4"])
        assert (result.exit_code, result.output) == (4, b"from exec\n")
        assert [c.name for c in client.containers.list()] == ["pyc"]
        container.kill()
        assert container.wait()["StatusCode"] == 137
        container.remove()
        assert client.containers.list(all=True) == []

        client.images.get("busybox").tag("pytag")
        assert "pytag:latest" in [t for i in client.images.list() for t in i.tags]
        client.images.remove("pytag")
        assert "pytag:latest" not in [t for i in client.images.list() for t in i.tags]
    finally:
        client.close()


def test_testcontainers_redis(
    host: Host, redis_images: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Redis example as a testcontainers container, reached through its exposed port."""
    tar = tmp_path / "redis.tar"
    with open(tar, "wb") as f:
        archive.save(redis_images, ["examples/redis"], f, "docker")
    ok(docker(host, "load", "-i", str(tar)))

    # This machine is itself a container (/.dockerenv), which would make testcontainers
    # guess Docker-in-Docker and dial the bridge's gateway; on a plain host it needs no mode.
    # Its settings are read once, at import: set on its config object, undone after.
    from testcontainers.core.config import ConnectionMode, testcontainers_config

    monkeypatch.setenv("DOCKER_HOST", docker_env(host)["DOCKER_HOST"])
    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    monkeypatch.setattr(testcontainers_config, "connection_mode_override",
                        ConnectionMode.docker_host)  # fmt: skip
    from testcontainers.community.redis import RedisContainer

    with RedisContainer("examples/redis") as redis:
        cid = redis.get_wrapped_container().id
        client = redis.get_client()
        client.set("scow", "works")
        assert client.get("scow") == b"works"
        client.close()
        assert int(redis.get_exposed_port(6379)) != 6379
        assert cid in ok(docker(host, "ps", "-q", "--no-trunc"))
    assert cid not in ok(docker(host, "ps", "-aq", "--no-trunc"))


def test_exec_with_stdin_and_exit_codes(host: Host) -> None:
    ok(docker(host, "run", "-d", "--name", "shell", "busybox", "sleep", "300"))
    try:
        piped = docker(host, "exec", "-i", "shell", "tr", "a-z", "A-Z", input=b"piped in\n")
        assert (piped.returncode, piped.stdout) == (0, b"PIPED IN\n")
        assert docker(host, "exec", "shell", "sh", "-c", "exit 7").returncode == 7
        top = ok(docker(host, "top", "shell"))
        assert "sleep 300" in top
    finally:
        ok(docker(host, "rm", "-f", "shell"))


def test_scow_container_verbs(host: Host) -> None:
    """The scow CLI's docker verbs, on the same routes."""
    run = host.scow("run", "--rm", "busybox", "sh", "-c", "echo to out; echo to err >&2; exit 2")
    assert (run.returncode, run.stdout) == (2, "to out\n")
    assert run.stderr.endswith("to err\n")  # after a note that busybox was pulled (made)
    cid = host.scow("run", "-d", "--name", "sv", "-e", "GREETING=hi", "busybox", "sh", "-c",
                    'echo "$GREETING"; sleep 300').stdout.strip()  # fmt: skip
    try:
        assert len(cid) == 64
        assert "sv" in host.scow("ps").stdout
        wait_until(lambda: host.scow("logs", "sv").stdout == "hi\n", 10, "the first log line")
        assert host.scow("exec", "sv", "cat", "/etc/hostname").stdout == cid[:12] + "\n"
        assert host.scow("exec", "sv", "false").returncode == 1
        running = host.scow("inspect", "-f", "{{.State.Running}} {{json .Config.Cmd}}", "sv")
        assert running.stdout == 'true ["sh", "-c", "echo \\"$GREETING\\"; sleep 300"]\n'
        assert host.scow("stop", "-t", "1", "sv").returncode == 0
        assert host.scow("wait", "sv").stdout.strip() in ("137", "143")
    finally:
        assert host.scow("rm", "-f", "sv").returncode == 0
    missing = host.scow("inspect", "sv")
    assert missing.returncode == 4 and "no such container" in missing.stderr
    assert host.scow("volume", "create", "sv-vol").stdout == "sv-vol\n"
    assert "sv-vol" in host.scow("volume", "ls", "-q").stdout.split()
    assert host.scow("volume", "rm", "sv-vol").returncode == 0
    assert host.scow("network", "create", "sv-net").returncode == 0
    made = host.scow("run", "-d", "--name", "sv-on", "--network", "sv-net", "--restart",
                     "unless-stopped", "busybox", "sleep", "300")  # fmt: skip
    assert made.returncode == 0, made.stderr
    policy = host.scow("inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", "sv-on")
    assert policy.stdout == "unless-stopped\n"
    assert "sv-net" in host.scow("network", "ls").stdout
    busy = host.scow("network", "rm", "sv-net")
    assert busy.returncode == 1 and "active endpoints" in busy.stderr
    assert host.scow("rm", "-f", "sv-on").returncode == 0
    assert host.scow("network", "rm", "sv-net").stdout == "sv-net\n"
    bad = host.scow("run", "--restart", "sometimes", "busybox", "true")
    assert bad.returncode == 2 and "sometimes" in bad.stderr


def test_what_scow_lacks_is_a_501_that_names_it(host: Host) -> None:
    swarm = docker(host, "swarm", "init")
    assert swarm.returncode == 1 and "does not offer swarm mode" in swarm.stderr
    on_host = docker(host, "run", "--rm", "--network", "host", "busybox", "true")
    assert on_host.returncode != 0 and "host's network" in on_host.stderr
    overlay = docker(host, "network", "create", "-d", "overlay", "mine")
    assert overlay.returncode == 1 and "driver 'overlay' is not supported" in overlay.stderr
    search = docker(host, "search", "busybox")
    assert search.returncode == 1 and "does not offer searching a registry" in search.stderr
    assert ok(docker(host, "ps", "-aq")) == ""  # the refused create left nothing
