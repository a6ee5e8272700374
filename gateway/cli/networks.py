"""``scow network``: ls, create, inspect, connect, disconnect, rm, prune, as ``docker
network`` has them."""

from __future__ import annotations

import json

import click

from gateway.cli.output import api_command, client, each, emit, format_option, key_values


@click.group()
def network() -> None:
    """Networks: ls, create, connect, rm, prune."""


@network.command(name="ls")
@click.option("-q", "--quiet", is_flag=True)
@format_option
@api_command
def network_ls(quiet: bool, fmt: str) -> None:
    """List networks (the built-in bridge, host and none too)."""
    found = client().json("GET", "/networks")
    if quiet:
        for n in found:
            click.echo(n["Id"][:12])
        return

    def rows(ns: list[dict[str, object]]) -> list[tuple[str, ...]]:
        return [(str(n["Id"])[:12], str(n["Name"]), str(n["Driver"]),
                 ",".join(c["Subnet"] for c in n["IPAM"]["Config"])) for n in ns]  # type: ignore[index]  # fmt: skip

    emit(found, fmt, rows, ["NETWORK ID", "NAME", "DRIVER", "SUBNET"])


@network.command(name="create")
@click.option("--subnet", default="", help="CIDR; default: a free /24 of the host's pool")
@click.option("-l", "--label", multiple=True, help="KEY=VALUE")
@click.option("--internal", is_flag=True, help="Marked internal (no network here has NAT)")
@click.argument("name")
@api_command
def network_create(subnet: str, label: tuple[str, ...], internal: bool, name: str) -> None:
    """Make a network: a bridge and subnet of its own; print its id."""
    body = {"Name": name, "Labels": key_values(label, "label"), "Internal": internal,
            "IPAM": {"Config": [{"Subnet": subnet}] if subnet else []}}  # fmt: skip
    click.echo(client().json("POST", "/networks/create", json=body)["Id"])


@network.command(name="inspect")
@click.argument("refs", nargs=-1, required=True)
@api_command
def network_inspect(refs: tuple[str, ...]) -> None:
    """A network's details, its containers too."""
    click.echo(json.dumps([client().json("GET", f"/networks/{r}") for r in refs], indent=4))


@network.command(name="connect")
@click.option("--alias", multiple=True, help="Another name the members know it by")
@click.option("--ip", default="", help="Its address on the network")
@click.argument("ref")
@click.argument("container")
@api_command
def network_connect(alias: tuple[str, ...], ip: str, ref: str, container: str) -> None:
    """Put a container on a network (at once, running or not)."""
    config: dict[str, object] = {"Aliases": list(alias)}
    if ip:
        config["IPAMConfig"] = {"IPv4Address": ip}
    client().request("POST", f"/networks/{ref}/connect",
                     json={"Container": container, "EndpointConfig": config})  # fmt: skip


@network.command(name="disconnect")
@click.argument("ref")
@click.argument("container")
@api_command
def network_disconnect(ref: str, container: str) -> None:
    """Take a container off a network."""
    client().request("POST", f"/networks/{ref}/disconnect", json={"Container": container})


@network.command(name="rm")
@click.argument("refs", nargs=-1, required=True)
@api_command
def network_rm(refs: tuple[str, ...]) -> None:
    """Remove networks (not while a container is on them)."""
    each("DELETE", "/networks/{}", refs)


@network.command(name="prune")
@api_command
def network_prune() -> None:
    """Remove the networks no container is on."""
    for name in client().json("POST", "/networks/prune")["NetworksDeleted"] or []:
        click.echo(name)
