"""Containers on the bridge reach each other; published ports reach them from 127.0.0.1."""

from __future__ import annotations

import asyncio
import secrets
from ipaddress import IPv4Network
from pathlib import Path

import httpx

from runtime.engine import Runtime
from runtime.network import BridgeNetwork, bridge_mac
from runtime.spec import ImageConfig, Port, RunOptions
from tests.runtime.helpers import BUSYBOX, run

SERVE = "mkdir -p /tmp/www && echo hello-from-$(hostname) > /tmp/www/index.html && " \
        "exec httpd -f -p 8080 -h /tmp/www"  # fmt: skip


async def get_when_up(url: str, attempts: int = 50) -> httpx.Response:
    """GET ``url`` once the server inside the container listens (bounded retries)."""
    async with httpx.AsyncClient() as client:
        for _ in range(attempts - 1):
            try:
                return await client.get(url)
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        return await client.get(url)


async def test_containers_reach_each_other_by_ip_and_link_alias(
    runtime: Runtime, busybox_layer: Path
) -> None:
    server = await runtime.create(
        BUSYBOX, [busybox_layer],
        RunOptions(command=("sh", "-c", SERVE), network="bridge", name="srv", hostname="srv"),
    )  # fmt: skip
    await runtime.start(server.id)
    try:
        fetch = (
            f"for i in $(seq 50); do wget -q -O - http://{server.ip}:8080/ && break; "
            "sleep 0.1; done; wget -q -O - http://web:8080/; cat /etc/hosts"
        )
        r = await run(
            runtime, busybox_layer, "sh", "-c", fetch, network="bridge",
            links=(("srv", "web"), ("srv", "www")),
        )
        lines = r.out.splitlines()
        assert lines[:2] == ["hello-from-srv", "hello-from-srv"], r
        assert f"{server.ip}\tweb srv www" in lines  # one container, every alias
    finally:
        await runtime.remove(server.id, force=True)


async def test_network_none_has_only_loopback(runtime: Runtime, busybox_layer: Path) -> None:
    r = await run(runtime, busybox_layer, "ls", "/sys/class/net")
    assert r.out.split() == ["lo"]


async def test_published_port_reaches_server(runtime: Runtime, busybox_layer: Path) -> None:
    server = await runtime.create(
        BUSYBOX, [busybox_layer],
        RunOptions(command=("sh", "-c", SERVE), network="bridge", hostname="pub",
                   ports=(Port(8080),)),
    )  # fmt: skip
    await runtime.start(server.id)
    try:
        # On 127.0.0.1 and on the bridge's address (for clients in containers), one port.
        loopback, bridge = server.ports
        assert (loopback.host_ip, bridge.host_ip) == ("127.0.0.1", str(runtime.network.gateway))
        assert loopback.host_port == bridge.host_port > 0
        for published in server.ports:
            response = await get_when_up(f"http://{published.host_ip}:{published.host_port}/")
            assert response.text == "hello-from-pub\n"
    finally:
        await runtime.remove(server.id, force=True)


async def test_publish_all_exposed_ports(runtime: Runtime, busybox_layer: Path) -> None:
    image = ImageConfig(cmd=("sh", "-c", SERVE), exposed_ports=("8080/tcp",))
    rec = await runtime.create(
        image, [busybox_layer], RunOptions(network="bridge", publish_all=True, hostname="all")
    )
    await runtime.start(rec.id)
    try:
        gateway = str(runtime.network.gateway)
        assert [(p.container_port, p.host_ip) for p in rec.ports] == [
            (8080, "127.0.0.1"), (8080, gateway)]  # fmt: skip
        response = await get_when_up(f"http://127.0.0.1:{rec.ports[0].host_port}/")
        assert response.text == "hello-from-all\n"
    finally:
        await runtime.remove(rec.id, force=True)


async def test_host_network_sees_the_host_interfaces(runtime: Runtime, busybox_layer: Path) -> None:
    import os

    r = await run(runtime, busybox_layer, "ls", "/sys/class/net", network="host")
    assert sorted(r.out.split()) == sorted(os.listdir("/sys/class/net"))


def test_the_bridge_keeps_its_mac_as_ports_come_and_go(tmp_path: Path) -> None:
    """Containers cache the bridge's MAC: had it followed its ports (the kernel's default),
    replies to the host went to a MAC gone by and connections stalled for seconds."""
    net = BridgeNetwork(tmp_path, "scowmac0", IPv4Network("10.216.0.0/24"))
    cids = [secrets.token_hex(32) for _ in range(3)]
    address = Path("/sys/class/net/scowmac0/address")
    try:
        net.ensure_bridge()
        assert address.read_text().strip() == bridge_mac("scowmac0")
        for cid in cids:
            net.attach(cid)
            assert address.read_text().strip() == bridge_mac("scowmac0")
        for cid in cids:
            net.detach(cid)
            assert address.read_text().strip() == bridge_mac("scowmac0")
    finally:
        for cid in cids:
            net.detach(cid)
        net.remove_bridge()


async def test_isolated_containers_reach_the_host_but_not_each_other(
    runtime: Runtime, busybox_layer: Path
) -> None:
    """Functions run isolated: another tenant's container is out of reach both ways."""
    server = await runtime.create(
        BUSYBOX, [busybox_layer],
        RunOptions(command=("sh", "-c", SERVE), network="bridge", hostname="iso",
                   isolated=True),
    )  # fmt: skip
    await runtime.start(server.id)
    try:
        # The host reaches it (that is how the node calls a function) ...
        assert (await get_when_up(f"http://{server.ip}:8080/")).text == "hello-from-iso\n"
        probe = f"timeout 3 wget -q -O - http://{server.ip}:8080/ && echo reached || echo refused"
        # ... an isolated neighbour does not, and an ordinary one still does.
        isolated = await run(runtime, busybox_layer, "sh", "-c", probe, network="bridge",
                             isolated=True)  # fmt: skip
        assert isolated.out.strip().splitlines()[-1] == "refused", isolated
        ordinary = await run(runtime, busybox_layer, "sh", "-c", probe, network="bridge")
        assert ordinary.out.strip().splitlines()[-1] == "reached", ordinary
    finally:
        await runtime.remove(server.id, force=True)
