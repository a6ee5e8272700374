"""User-defined networks, published ports and links with Docker's own clients (docker-py,
the docker CLI, testcontainers) against a real `scow up`.

Traffic goes only to 127.0.0.1 and to the containers' own bridges.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hosts import Host, docker, docker_host, ok
from tests.utils import wait_until

pytestmark = [pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI"),
              pytest.mark.slow]  # fmt: skip

NETWORK_POOL = "10.226.0.0/16"  # this host's networks, apart from any other scow's

SERVE = "mkdir -p /w && echo from-$(hostname) > /w/index.html && exec httpd -f -p 80 -h /w"
# What a name resolves to inside a container, as its programs see it (busybox has no
# getent): wget says where it connects, or "bad address".
RESOLVE = ["sh", "-c", "wget -O /dev/null http://$0:1/ 2>&1"]


def resolved(output: bytes) -> str | None:
    """The address of ``RESOLVE``'s output, or None when the name did not resolve."""
    found = re.search(rb"Connecting to \S+ \(([0-9.]+):1\)", output)
    if found is None:
        assert b"bad address" in output, output
        return None
    return found.group(1).decode()

UDP_ECHO = r"""
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) return 1;
    for (;;) {
        char buf[2048]; struct sockaddr_in p; socklen_t n = sizeof p;
        ssize_t r = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&p, &n);
        if (r > 0) sendto(s, buf, r, 0, (struct sockaddr *)&p, n);
    }
}
"""


@pytest.fixture(scope="module")
def host(test_bridge: str) -> Iterator[Host]:
    with docker_host("scow-net-", "--network-pool", NETWORK_POOL) as running:
        yield running


def _client(host: Host):  # type: ignore[no-untyped-def]
    import docker as docker_py

    return docker_py.DockerClient(base_url=f"unix://{host.run / 'scow.sock'}")


@pytest.mark.timeout(60)
def test_docker_py_networks_resolve_members_by_name_and_alias(host: Host) -> None:
    client = _client(host)
    net = client.networks.create("appnet", labels={"team": "a"})
    other = client.networks.create("othernet")
    try:
        assert net.attrs["IPAM"]["Config"][0]["Subnet"].startswith("10.226.")
        server = client.containers.run("busybox", ["sh", "-c", SERVE], detach=True, name="srv",
                                       network="appnet", hostname="srv")  # fmt: skip
        # docker-py puts a container on one network at create; aliases come with connect
        peer = client.containers.run("busybox", ["sleep", "300"], detach=True, name="peer")
        net.connect(peer, aliases=["helper"])
        fetch = "for i in $(seq 50); do wget -q -O - http://{0}/ && break; sleep 0.1; done"
        for name in ("srv", server.id[:12]):  # by name, and by its short id
            got = peer.exec_run(["sh", "-c", fetch.format(name)])
            assert got.output == b"from-srv\n", got
        hosts = server.exec_run(["cat", "/etc/hosts"]).output.decode()
        assert "helper" in hosts and "peer" in hosts  # kept current as members come
        net.reload()
        assert {c["Name"] for c in net.attrs["Containers"].values()} == {"srv", "peer"}
        peer.reload()
        endpoint = peer.attrs["NetworkSettings"]["Networks"]["appnet"]
        assert endpoint["IPAddress"].startswith("10.226.") and "helper" in endpoint["Aliases"]

        # another network is another bridge: its members reach none of appnet's
        outsider = client.containers.run("busybox", ["sleep", "300"], detach=True,
                                         name="outsider", network="othernet")  # fmt: skip
        address = server.attrs["NetworkSettings"]["Networks"]["appnet"]["IPAddress"] or (
            client.containers.get("srv").attrs["NetworkSettings"]["Networks"]["appnet"][
                "IPAddress"])  # fmt: skip
        cut_off = outsider.exec_run(["timeout", "2", "wget", "-q", "-O", "-", f"http://{address}/"])
        assert cut_off.exit_code != 0 and b"from-srv" not in cut_off.output
        assert resolved(outsider.exec_run([*RESOLVE, "srv"]).output) is None
        assert resolved(server.exec_run([*RESOLVE, "helper"]).output) == peer.attrs[
            "NetworkSettings"]["Networks"]["appnet"]["IPAddress"]  # fmt: skip

        net.disconnect(peer)
        assert resolved(peer.exec_run([*RESOLVE, "srv"]).output) is None
        assert resolved(server.exec_run([*RESOLVE, "helper"]).output) is None
        with pytest.raises(Exception, match="active endpoints"):
            net.remove()
        for c in (server, peer, outsider):
            c.remove(force=True)
    finally:
        for n in (net, other):
            n.remove()
        client.close()
    assert {n.name for n in client.networks.list()} == {"bridge", "host", "none"}


def test_network_flags_of_the_docker_cli(host: Host) -> None:
    ok(docker(host, "network", "create", "--subnet", "10.227.5.0/24", "fixed"))
    try:
        listed = ok(docker(host, "network", "ls", "--format", "{{.Name}} {{.Driver}}"))
        assert "fixed bridge" in listed and "bridge bridge" in listed
        taken = docker(host, "network", "create", "--subnet", "10.227.5.0/25", "overlapping")
        assert taken.returncode == 1 and "overlap" in taken.stderr
        ok(docker(host, "run", "-d", "--name", "pinned", "--network", "fixed", "--ip",
                  "10.227.5.77", "--network-alias", "api", "busybox", "sh", "-c", SERVE))
        ip = ok(docker(host, "inspect", "-f", "{{.NetworkSettings.Networks.fixed.IPAddress}}",
                       "pinned"))  # fmt: skip
        assert ip == "10.227.5.77\n"
        got = ok(docker(host, "run", "--rm", "--network", "fixed", "busybox", "sh", "-c",
                        "for i in $(seq 50); do wget -q -O - http://api/ && break; sleep 0.1;"
                        " done"))  # fmt: skip
        assert got.startswith("from-")
        busy = docker(host, "run", "--rm", "--network", "fixed", "--ip", "10.227.5.77",
                      "busybox", "true")  # fmt: skip
        assert busy.returncode != 0 and "10.227.5.77 is already in use" in busy.stderr
        missing = docker(host, "run", "--rm", "--network", "nosuch", "busybox", "true")
        assert missing.returncode != 0 and "network nosuch not found" in missing.stderr
    finally:
        docker(host, "rm", "-f", "pinned")
        ok(docker(host, "network", "rm", "fixed"))


def test_two_links_to_one_container_keep_both_aliases(host: Host) -> None:
    ok(docker(host, "run", "-d", "--name", "cache", "busybox", "sleep", "300"))
    try:
        hosts = ok(docker(host, "run", "--rm", "--link", "cache:redis", "--link", "cache:kv",
                          "busybox", "cat", "/etc/hosts"))  # fmt: skip
        row = next(line for line in hosts.splitlines() if "redis" in line)
        assert row.split()[1:] == ["redis", "cache", "kv"]
    finally:
        ok(docker(host, "rm", "-f", "cache"))


def _udp_image(host: Host, tmp: Path) -> None:
    (tmp / "udpecho.c").write_text(UDP_ECHO)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(tmp / "udpecho"), str(tmp / "udpecho.c")],
                   check=True, capture_output=True)  # fmt: skip
    (tmp / "Dockerfile").write_text(
        'FROM scratch\nCOPY udpecho /udpecho\nENTRYPOINT ["/udpecho"]\n')
    ok(docker(host, "build", "-q", "-t", "udpecho", str(tmp)))


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc to build the UDP echo")
def test_udp_published_on_loopback_and_the_bridge(host: Host, tmp_path: Path) -> None:
    _udp_image(host, tmp_path)
    client = _client(host)
    echo = client.containers.run("udpecho", ["5353"], detach=True, name="udp",
                                 ports={"5353/udp": None})  # fmt: skip
    try:
        echo.reload()
        bindings = echo.attrs["NetworkSettings"]["Ports"]["5353/udp"]
        gateway = echo.attrs["NetworkSettings"]["Networks"]["bridge"]["Gateway"]
        assert [b["HostIp"] for b in bindings] == ["127.0.0.1", gateway]
        for b in bindings:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(1)

                def echoed(s: socket.socket = s, b: dict[str, str] = b) -> bool:
                    s.sendto(b"ping", (b["HostIp"], int(b["HostPort"])))
                    try:
                        return s.recvfrom(64)[0] == b"ping"
                    except TimeoutError:
                        return False

                wait_until(echoed, 10, f"a UDP echo through {b['HostIp']}")
    finally:
        echo.remove(force=True)
        client.close()


def test_testcontainers_network_and_its_default_connection_mode(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No TESTCONTAINERS_CONNECTION_MODE: this machine has /.dockerenv, so over a TCP Docker
    host on 127.0.0.1 testcontainers dials the container's gateway address (the bridge's),
    as in a CI runner; the token goes in the Docker config's HttpHeaders."""
    config = tmp_path / "docker-config"
    config.mkdir()
    token = (host.state / "token").read_text().strip()
    (config / "config.json").write_text(json.dumps(
        {"HttpHeaders": {"Authorization": f"Bearer {token}"}}))  # fmt: skip
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network

    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{host.port}")
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    # Its settings are read once, at import: set on its config object, undone after.
    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    monkeypatch.setattr(testcontainers_config, "connection_mode_override", None)

    with Network() as net:
        server = DockerContainer("busybox").with_command(["sh", "-c", SERVE])
        with server.with_network(net).with_network_aliases("alpha"):
            client = DockerContainer("busybox").with_command(["sleep", "300"])
            with client.with_network(net).with_network_aliases("beta"):
                code, out = client.exec(["sh", "-c", "for i in $(seq 50); do "
                                         "wget -q -O - http://alpha/ && break; sleep 0.1; done"])
                assert (code, out.startswith(b"from-")) == (0, True)
                _, out = server.exec([*RESOLVE, "beta"])
                assert resolved(out) is not None

    web = DockerContainer("busybox").with_command(["sh", "-c", SERVE]).with_exposed_ports(80)
    with web:
        mode = web.get_docker_client().get_connection_mode().value
        address, port = web.get_container_host_ip(), int(web.get_exposed_port(80))
        assert mode == "gateway_ip"
        assert address == web.get_docker_client().gateway_ip(web.get_wrapped_container().id)

        def answers() -> bool:
            try:
                with socket.create_connection((address, port), timeout=1) as s:
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    return b"from-" in s.recv(4096)
            except OSError:
                return False

        wait_until(answers, 10, f"the container through {address}:{port}")
