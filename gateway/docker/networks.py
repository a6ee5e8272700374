"""Network routes: the Docker Engine API's ``/networks`` (create, list, inspect, connect,
disconnect, remove, prune), and the placing of containers on their networks' node.

Records of user-defined networks live in Redis (``PoolClient.networks``); the built-in
``bridge``, ``host`` and ``none`` are listed beside them. A network's containers all
run on one node, where its bridge is: a create or connect that names a network goes
to that node, and places the network on a live node when it has none yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.docker import shapes
from gateway.docker.nodes import COMMAND_TIMEOUT, node_of
from gateway.http import ApiError, docker_filters, json_object, read_json
from gateway.state import Gateway, gateway_of
from pool.contract.containers import ContainerSpec, EndpointSpec
from pool.contract.errors import InvalidSpec
from pool.contract.messages import NODE_LABEL
from pool.contract.networks import (
    BUILTIN,
    DRIVERS,
    NetworkConflict,
    NetworkNotFound,
    NetworkSpec,
    as_attachment,
)


async def live_nodes(gw: Gateway) -> list[str]:
    return [node for node, info in (await gw.nodes()).items() if info["live"]]


async def _network(gw: Gateway, ref: str) -> NetworkSpec:
    try:
        return await gw.pool.networks.find(ref)
    except NetworkNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None


async def _place(gw: Gateway, network: NetworkSpec, wanted: str = "") -> str:
    """The node of ``network``'s containers (placing it on ``wanted``, or the least loaded
    node, when it has none that is live)."""
    live = await live_nodes(gw)
    if not live:
        raise ApiError(503, "no_node", f"network {network.name}: no node is up")
    return await gw.pool.networks.place(network, wanted or await gw.pick_node(), live)


async def placed_spec(gw: Gateway, spec: ContainerSpec) -> tuple[ContainerSpec, str]:
    """A container's spec with its networks' records filled in, and the node it runs on:
    its networks' (a network's containers share one node), or the one its label
    ``scow.node`` names, or the least loaded."""
    pinned = spec.labels.get(NODE_LABEL, "")
    if not spec.endpoints:
        return spec, await gw.pick_node(pinned)
    endpoints: list[EndpointSpec] = []
    node = pinned
    for e in spec.endpoints:
        network = await _network(gw, e.network)
        placed = await _place(gw, network, node)
        if node and placed != node:
            raise ApiError(409, "conflict", f"network {network.name}'s containers run on node "
                           f"{placed}, those of {endpoints[0].network} on {node}: a container "
                           "cannot join both")  # fmt: skip
        node = placed
        endpoints.append(EndpointSpec.from_json(as_attachment(network, e.aliases, e.ip)))
    primary = endpoints[0].network if spec.network not in ("bridge", "none") else spec.network
    return replace(spec, endpoints=tuple(endpoints), network=primary), node


def _summary(network: NetworkSpec, containers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {
        "Name": network.name, "Id": network.id, "Created": shapes.rfc3339(network.created),
        "Scope": "local", "Driver": network.driver, "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {},
                 "Config": [{"Subnet": network.subnet, "Gateway": network.gateway}]},
        "Internal": network.internal, "Attachable": network.attachable, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": dict(containers or {}),
        "Options": dict(network.options), "Labels": dict(network.labels),
    }  # fmt: skip


def _builtin(gw: Gateway, name: str) -> dict[str, Any]:
    subnet = gw.config.subnet
    config = [{"Subnet": subnet, "Gateway": subnet.rpartition(".")[0] + ".1"}] if (
        name == "bridge") else []  # fmt: skip
    return {
        "Name": name, "Id": shapes.network_id(name), "Created": shapes.ZERO_TIME,
        "Scope": "local", "Driver": {"bridge": "bridge", "host": "host", "none": "null"}[name],
        "EnableIPv6": False, "IPAM": {"Driver": "default", "Options": None, "Config": config},
        "Internal": False, "Attachable": False, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {},
        "Options": {"com.docker.network.bridge.name": gw.config.bridge} if name == "bridge"
        else {},
        "Labels": {},
    }  # fmt: skip


def _matches(row: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    for key, values in filters.items():
        if not values:
            continue
        if key == "name":
            ok = any(v in row["Name"] for v in values)
        elif key == "id":
            ok = any(row["Id"].startswith(v) for v in values)
        elif key == "label":
            ok = all(shapes.label_matches(row["Labels"], v) for v in values)
        elif key == "driver":
            ok = row["Driver"] in values
        elif key == "type":
            builtin = row["Name"] in BUILTIN
            ok = ("builtin" in values and builtin) or ("custom" in values and not builtin)
        elif key == "scope":
            ok = "local" in values
        elif key == "dangling":
            continue  # judged by the caller, who knows the members
        else:
            raise ApiError(400, "bad_request", f"invalid filter {key!r}: supported are name, "
                           "id, label, driver, type, scope, dangling")  # fmt: skip
        if not ok:
            return False
    return True


async def _members(gw: Gateway, network: NetworkSpec) -> dict[str, Any]:
    """Docker's ``Containers`` of a network: its members on its node."""
    if not network.node or network.node not in await live_nodes(gw):
        return {}
    rows = await gw.command("network.members", {"network_id": network.id}, node=network.node,
                            timeout=COMMAND_TIMEOUT)  # fmt: skip
    prefix = network.subnet.rpartition("/")[2]
    return {r["id"]: {"Name": r["name"], "EndpointID": shapes.endpoint_id(r["id"], network.name),
                      "MacAddress": r["mac"], "IPv4Address": f"{r['ip']}/{prefix}",
                      "IPv6Address": ""} for r in rows}  # fmt: skip


async def list_networks(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    filters = docker_filters(request.query_params.get("filters", ""))
    rows = [_builtin(gw, name) for name in BUILTIN]
    for n in await gw.pool.networks.all():
        rows.append(_summary(n))
    rows = [r for r in rows if _matches(r, filters)]
    if dangling := filters.get("dangling"):
        want = dangling[0].lower() in ("1", "true")
        used = {r["Id"] for r in rows if r["Name"] in BUILTIN}
        for n in await gw.pool.networks.all():
            if await _members(gw, n):
                used.add(n.id)
        rows = [r for r in rows if (r["Id"] not in used) == want]
    return JSONResponse(rows)


async def inspect_network(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    ref = request.path_params["id"]
    for name in BUILTIN:
        if ref in (name, shapes.network_id(name)):
            return JSONResponse(_builtin(gw, name))
    network = await _network(gw, ref)
    return JSONResponse(_summary(network, await _members(gw, network)))


def _ipam(body: Mapping[str, Any]) -> tuple[str, str]:
    ipam = body.get("IPAM") or {}
    if not isinstance(ipam, Mapping):
        raise ApiError(400, "invalid", "IPAM must be an object")
    if ipam.get("Driver") not in (None, "", "default"):
        raise ApiError(501, "not_implemented", f"IPAM driver {ipam['Driver']!r} is not supported")
    configs = ipam.get("Config") or []
    if len(configs) > 1:
        raise ApiError(501, "not_implemented", "a network has one subnet here")
    config = configs[0] if configs else {}
    if config.get("IPRange") or config.get("AuxiliaryAddresses"):
        raise ApiError(501, "not_implemented", "IPRange and AuxiliaryAddresses are not supported")
    return str(config.get("Subnet") or ""), str(config.get("Gateway") or "")


async def create_network(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    body = json_object(await read_json(request))
    driver = body.get("Driver") or "bridge"
    if driver not in DRIVERS:
        raise ApiError(501, "not_implemented", f"network driver {driver!r} is not supported "
                       "(bridge is)")  # fmt: skip
    if body.get("EnableIPv6"):
        raise ApiError(501, "not_implemented", "IPv6 networks are not supported")
    subnet, gateway = _ipam(body)
    name = body.get("Name")
    try:
        network = await gw.pool.networks.create(
            str(name or ""), pool=gw.config.network_pool, reserved=[gw.config.subnet],
            subnet=subnet, gateway=gateway, internal=bool(body.get("Internal")),
            attachable=bool(body.get("Attachable")),
            labels={str(k): str(v) for k, v in (body.get("Labels") or {}).items()},
            options={str(k): str(v) for k, v in (body.get("Options") or {}).items()},
        )  # fmt: skip
    except InvalidSpec as exc:
        raise ApiError(400, "invalid", str(exc)) from None
    except NetworkConflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    await gw.pool.publish([_event("create", network)])
    return JSONResponse({"Id": network.id, "Warning": ""}, 201)


def _event(action: str, network: NetworkSpec, container: str = "") -> dict[str, Any]:
    from pool.contract.messages import event

    attributes = {"name": network.name, "type": network.driver}
    if container:
        attributes["container"] = container
    return event("network", action, network.id, attributes)


async def _container_node(gw: Gateway, ref: str) -> str:
    node = await node_of(gw, ref)
    if not node:
        raise ApiError(404, "not_found", f"no such container: {ref}")
    return node


async def connect(request: Request) -> Response:
    gw = gateway_of(request)
    network = await _network(gw, request.path_params["id"])
    body = json_object(await read_json(request))
    ref = str(body.get("Container") or "")
    node = await _container_node(gw, ref)
    placed = await _place(gw, network, node)
    if placed != node:
        raise ApiError(409, "conflict", f"container {ref} runs on node {node}, network "
                       f"{network.name}'s containers on {placed}")  # fmt: skip
    config = body.get("EndpointConfig") or {}
    aliases = config.get("Aliases") or []
    ip = str((config.get("IPAMConfig") or {}).get("IPv4Address") or "")
    try:
        endpoint = as_attachment(network, EndpointSpec(network.name, aliases=tuple(aliases),
                                                       ip=ip).aliases, ip)  # fmt: skip
    except InvalidSpec as exc:
        raise ApiError(400, "invalid", str(exc)) from None
    await gw.command("network.connect", {"id": ref, "endpoint": endpoint}, node=node,
                     timeout=COMMAND_TIMEOUT)  # fmt: skip
    await gw.pool.publish([_event("connect", network, ref)])
    return Response(status_code=200)


async def disconnect(request: Request) -> Response:
    gw = gateway_of(request)
    ref_network = request.path_params["id"]
    body = json_object(await read_json(request))
    ref = str(body.get("Container") or "")
    node = await _container_node(gw, ref)
    name = ref_network if ref_network in BUILTIN else (await _network(gw, ref_network)).name
    await gw.command("network.disconnect", {"id": ref, "network": name}, node=node,
                     timeout=COMMAND_TIMEOUT)  # fmt: skip
    if name not in BUILTIN:
        await gw.pool.publish([_event("disconnect", await _network(gw, name), ref)])
    return Response(status_code=200)


async def _remove(gw: Gateway, network: NetworkSpec) -> None:
    """Its bridge on its node (refused while a container is on it), then its record. Only
    its node has its bridge: another node on the same machine must not take it."""
    if network.node and network.node in await live_nodes(gw):
        await gw.command("network.remove", {"network_id": network.id, "bridge": network.bridge,
                                            "name": network.name}, node=network.node,
                         timeout=COMMAND_TIMEOUT)  # fmt: skip
    await gw.pool.networks.remove(network)
    await gw.pool.publish([_event("destroy", network)])


async def remove_network(request: Request) -> Response:
    gw = gateway_of(request)
    ref = request.path_params["id"]
    if ref in BUILTIN:
        raise ApiError(403, "forbidden", f"{ref} is a pre-defined network and cannot be removed")
    await _remove(gw, await _network(gw, ref))
    return Response(status_code=204)


async def prune(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    filters = docker_filters(request.query_params.get("filters", ""))
    removed = []
    for network in await gw.pool.networks.all():
        if not _matches(_summary(network), {k: v for k, v in filters.items() if k == "label"}):
            continue
        if await _members(gw, network):
            continue
        try:
            await _remove(gw, network)
        except ApiError as exc:
            if exc.status != 409:
                raise
            continue  # a container joined it meanwhile
        removed.append(network.name)
    return JSONResponse({"NetworksDeleted": removed})


routes = [
    Route("/networks", list_networks, methods=["GET"]),
    Route("/networks/create", create_network, methods=["POST"]),
    Route("/networks/prune", prune, methods=["POST"]),
    Route("/networks/{id}", inspect_network, methods=["GET"]),
    Route("/networks/{id}", remove_network, methods=["DELETE"]),
    Route("/networks/{id}/connect", connect, methods=["POST"]),
    Route("/networks/{id}/disconnect", disconnect, methods=["POST"]),
]
