"""Healthchecks, restart policies and docker update with docker-py and the docker CLI,
against a real `scow up` (whose node is killed once, to show the policies outlive it)."""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.hosts import Host, docker, docker_host, ok
from tests.utils import wait_until

pytestmark = [pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI"),
              pytest.mark.slow]  # fmt: skip

FAST = {"interval": 200_000_000, "timeout": 2_000_000_000}  # docker-py's nanoseconds


@pytest.fixture(scope="module")
def host(test_bridge: str) -> Iterator[Host]:
    with docker_host("scow-life-") as running:
        yield running


@pytest.fixture
def client(host: Host) -> Iterator[Any]:
    import docker as docker_py

    c = docker_py.DockerClient(base_url=f"unix://{host.run / 'scow.sock'}")
    try:
        yield c
    finally:
        for container in c.containers.list(all=True):
            container.remove(force=True)
        c.close()


def _state(container: Any) -> dict[str, Any]:
    container.reload()
    return dict(container.attrs["State"])


def test_a_dockerfile_healthcheck_reaches_healthy_and_its_events(
    host: Host, client: Any, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\n"
        "HEALTHCHECK --interval=200ms --timeout=2s --retries=2 --start-period=10s "
        "--start-interval=200ms CMD test -f /tmp/ok\n"
        'CMD ["sh", "-c", "sleep 0.5; touch /tmp/ok; exec sleep 300"]\n'
    )  # fmt: skip
    ok(docker(host, "build", "-q", "-t", "checked", str(tmp_path)))
    since = time.time()
    container = client.containers.run("checked", detach=True, name="checked")
    assert container.attrs["Config"]["Healthcheck"]["Test"] == ["CMD-SHELL", "test -f /tmp/ok"]
    wait_until(lambda: _state(container)["Health"]["Status"] == "healthy", 15, "healthy")
    log = _state(container)["Health"]["Log"]
    assert log[-1]["ExitCode"] == 0 and len(log) <= 5
    container.exec_run(["rm", "/tmp/ok"])
    wait_until(lambda: _state(container)["Health"]["Status"] == "unhealthy", 15, "unhealthy")
    health = _state(container)["Health"]
    assert health["FailingStreak"] >= 2 and health["Log"][-1]["ExitCode"] == 1
    listed = ok(docker(host, "ps", "--format", "{{.Names}} {{.Status}}", "--filter",
                       "health=unhealthy"))  # fmt: skip
    assert listed.startswith("checked Up") and "(unhealthy)" in listed
    events = client.events(decode=True, since=since, until=time.time() + 1,
                           filters={"container": container.id})  # fmt: skip
    actions = [e["Action"] for e in events if e["Action"].startswith("health_status")]
    assert actions == ["health_status: healthy", "health_status: unhealthy"]


def test_failures_in_the_start_period_do_not_count(host: Host, client: Any) -> None:
    """The docker CLI's --health-* flags: failing at first (1.5 s) inside a 10 s start period
    with retries=1 is never unhealthy, and healthy once it passes."""
    ok(docker(host, "run", "-d", "--name", "starting", "--health-cmd", "test -f /tmp/ok",
              "--health-interval", "200ms", "--health-retries", "1", "--health-start-period",
              "10s", "--health-start-interval", "200ms", "busybox", "sh", "-c",
              "sleep 1.5; touch /tmp/ok; exec sleep 300"))  # fmt: skip
    container = client.containers.get("starting")
    seen: set[str] = set()

    def healthy() -> bool:
        status = _state(container)["Health"]["Status"]
        seen.add(status)
        return bool(status == "healthy")

    wait_until(healthy, 15, "healthy after its start period's failures")
    assert "unhealthy" not in seen
    assert any(entry["ExitCode"] == 1 for entry in _state(container)["Health"]["Log"])


def test_on_failure_restarts_count_and_stop(client: Any) -> None:
    failing = client.containers.run(
        "busybox", ["sh", "-c", "sleep 0.2; exit 3"], detach=True,
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 2},
    )  # fmt: skip
    wait_until(lambda: (failing.reload(), failing.attrs["RestartCount"] == 2
                        and failing.status == "exited")[1], 20, "two restarts")  # fmt: skip
    time.sleep(1)  # no third
    failing.reload()
    assert (failing.attrs["RestartCount"], _state(failing)["ExitCode"]) == (2, 3)

    always = client.containers.run("busybox", ["sleep", "300"], detach=True,
                                   restart_policy={"Name": "always"})  # fmt: skip
    first = _state(always)["StartedAt"]
    always.kill()  # not a stop by hand: it comes back
    wait_until(lambda: _state(always)["Running"] and _state(always)["StartedAt"] != first, 15,
               "a restart after the kill")  # fmt: skip
    assert always.attrs["RestartCount"] == 1
    always.stop(timeout=1)  # by hand: it stays down
    time.sleep(1)
    assert _state(always)["Status"] == "exited" and always.attrs["RestartCount"] == 1
    always.start()  # by hand again: the count starts over
    assert _state(always)["Running"] and always.attrs["RestartCount"] == 0


def test_docker_update_changes_limits_and_policy_of_a_running_container(host: Host) -> None:
    ok(docker(host, "run", "-d", "--name", "upd", "-m", "64m", "busybox", "sleep", "300"))
    try:
        ok(docker(host, "update", "--memory", "96m", "--memory-swap", "96m", "--cpu-shares",
                  "512", "--pids-limit", "77", "--restart", "unless-stopped", "upd"))
        shown = ok(docker(host, "inspect", "-f", "{{.HostConfig.Memory}} {{.HostConfig.CpuShares}}"
                          " {{.HostConfig.PidsLimit}} {{.HostConfig.RestartPolicy.Name}}", "upd"))
        assert shown.split() == [str(96 << 20), "512", "77", "unless-stopped"]
        inside = ok(docker(host, "exec", "upd", "sh", "-c",
                           "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || "
                           "cat /sys/fs/cgroup/memory.max; cat /sys/fs/cgroup/pids/pids.max "
                           "2>/dev/null || cat /sys/fs/cgroup/pids.max"))  # fmt: skip
        assert inside.split() == [str(96 << 20), "77"]  # applied to the running container
        ok(docker(host, "update", "--cpus", "0.25", "upd"))
        quota = ok(docker(host, "exec", "upd", "sh", "-c",
                          "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || "
                          "cut -d' ' -f1 /sys/fs/cgroup/cpu.max"))  # fmt: skip
        assert quota == "25000\n"
        refused = docker(host, "update", "--blkio-weight", "500", "upd")
        assert refused.returncode != 0 and "BlkioWeight" in refused.stderr
    finally:
        ok(docker(host, "rm", "-f", "upd"))


def _node(host: Host) -> psutil.Process | None:
    """The host's node process (None between its death and its restart)."""
    for child in psutil.Process(host.process.pid).children():
        try:
            if "pool" in child.cmdline()[1:3]:
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_restart_policies_outlive_a_node_killed(
    host: Host, client: Any, not_subreaper: None
) -> None:
    """kill -9 the node; while it is down its containers die; `scow up` starts it again,
    and it starts again the ones their policy keeps up (and not one stopped by hand)."""
    kept = client.containers.run("busybox", ["sleep", "300"], detach=True, name="kept",
                                 restart_policy={"Name": "always"})  # fmt: skip
    down = client.containers.run("busybox", ["sleep", "300"], detach=True, name="down",
                                 restart_policy={"Name": "unless-stopped"})  # fmt: skip
    down.stop(timeout=1)
    pid = _state(kept)["Pid"]
    node = _node(host)
    assert node is not None
    node.send_signal(signal.SIGKILL)
    node.wait(10)
    psutil.Process(pid).kill()  # the container dies while no node watches it
    wait_until(lambda: (_node(host) or node).pid != node.pid, 30, "the node started again")
    new = _node(host)
    assert new is not None

    def registered() -> bool:  # the dead node's heartbeat has gone stale, the new one's is in
        info = json.loads(host.scow("info", "--format", "json").stdout or "{}")
        return [n["pid"] for n in info.get("nodes", []) if n["live"]] == [new.pid]

    wait_until(registered, 30, "the new node alone live")

    def back() -> bool:
        state = _state(kept)
        return bool(state["Running"] and state["Pid"] != pid)

    wait_until(back, 30, "the always container running again")
    assert _state(down)["Status"] == "exited"  # stopped by hand: unless-stopped keeps it down


def test_more_run_flags_people_type(host: Host) -> None:
    """--cpus, --add-host (and host-gateway), --dns, --cap-drop, and a 501 naming --device."""
    script = ("cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 "
              "/sys/fs/cgroup/cpu.max; grep -E 'db.local|gw' /etc/hosts; "
              "cat /etc/resolv.conf; grep CapEff /proc/self/status")  # fmt: skip
    out = ok(docker(host, "run", "--rm", "--cpus", "0.5", "--add-host", "db.local:10.1.2.3",
                    "--add-host", "gw:host-gateway", "--dns", "10.0.0.53", "--dns-search",
                    "corp", "--cap-drop", "ALL", "busybox", "sh", "-c", script))  # fmt: skip
    lines = out.splitlines()
    gateway = ok(docker(host, "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}",
                        "bridge"))  # fmt: skip
    assert lines[0] == "50000"  # half of each 100 ms period
    assert "10.1.2.3\tdb.local" in lines and f"{gateway.strip()}\tgw" in lines
    assert "nameserver 10.0.0.53" in lines and "search corp" in lines
    assert lines[-1].split() == ["CapEff:", "0000000000000000"]
    device = docker(host, "run", "--rm", "--device", "/dev/null:/dev/x", "busybox", "true")
    assert device.returncode != 0 and "devices (--device) (Devices)" in device.stderr

