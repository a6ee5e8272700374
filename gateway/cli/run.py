"""``scow run`` and ``scow create``: the docker CLI's flags, made into the create body the
docker CLI sends, on the same Docker API routes.

``run`` without ``-d`` does what the docker CLI does: attach and wait (both responses
begun) before the start, stream the output (stdout frames to stdout, stderr to
stderr) and exit with the container's code.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from gateway.cli.output import api_command, checked, client, fail, key_values
from gateway.cli.streams import write_frames
from gateway.client import ApiClient, ApiClientError, error_of


def parse_publish(specs: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """``-p [IP:][HOST:]PORT`` -> (ExposedPorts, PortBindings), checked as the gateway checks
    them (pool.contract.containers.PortSpec)."""
    from pool.contract.containers import PortSpec  # imported when used: see gateway/cli

    exposed: dict[str, Any] = {}
    bindings: dict[str, list[Any]] = {}
    for text in specs:
        p = checked(PortSpec.parse, text)
        port = f"{p.container_port}/{p.protocol}"
        exposed[port] = {}
        host_port = str(p.host_port) if p.host_port else ""
        bindings.setdefault(port, []).append({"HostIp": p.host_ip, "HostPort": host_port})
    return exposed, bindings


# Everything after the image (or the container, for exec) is the command, flags included.
ARGS_AFTER_IMAGE = {"allow_interspersed_args": False}

run_options = [
    click.option("--name", default="", help="The container's name"),
    click.option("-e", "--env", multiple=True, help="KEY=VALUE"),
    click.option("-p", "--publish", multiple=True, help="[IP:][HOSTPORT:]PORT (on 127.0.0.1)"),
    click.option("-P", "--publish-all", is_flag=True, help="Publish every exposed port"),
    click.option("-v", "--volume", multiple=True, help="[NAME|/HOST:]/PATH[:ro]"),
    click.option("-m", "--memory", default="", help="Memory limit, e.g. 64m"),
    click.option("--cpu-shares", type=int, default=0, help="Relative CPU weight"),
    click.option("--pids-limit", type=int, default=0, help="Most processes"),
    click.option("--network", default="bridge", show_default=True,
                 help="bridge, none, or a network's name (scow network ls)"),
    click.option("--restart", default="no", show_default=True,
                 help="no, always, unless-stopped, on-failure[:N]"),
    click.option("--entrypoint", default=None),
    click.option("-w", "--workdir", default=""),
    click.option("-u", "--user", default=""),
    click.option("-l", "--label", multiple=True, help="KEY=VALUE"),
    click.option("--read-only", is_flag=True, help="A read-only root filesystem"),
    click.option("--rm", "auto_remove", is_flag=True, help="Remove the container when it exits"),
]


def with_run_options(fn: Any) -> Any:
    for option in reversed(run_options):
        fn = option(fn)
    return fn


def create_body(image: str, command: tuple[str, ...], o: dict[str, Any]) -> dict[str, Any]:
    from pool.contract.containers import parse_restart
    from pool.contract.units import parse_size

    exposed, bindings = parse_publish(o["publish"])
    restart, retries = checked(parse_restart, o["restart"])
    host: dict[str, Any] = {
        "Binds": list(o["volume"]), "PortBindings": bindings,
        "PublishAllPorts": o["publish_all"], "NetworkMode": o["network"],
        "ReadonlyRootfs": o["read_only"], "AutoRemove": o["auto_remove"],
        "CpuShares": o["cpu_shares"], "PidsLimit": o["pids_limit"],
        "Memory": checked(parse_size, o["memory"], "memory") if o["memory"] else 0,
        "RestartPolicy": {"Name": restart, "MaximumRetryCount": retries},
    }  # fmt: skip
    return {
        "Image": image, "Cmd": list(command) or None, "Env": list(o["env"]),
        "Entrypoint": [o["entrypoint"]] if o["entrypoint"] is not None else None,
        "WorkingDir": o["workdir"], "User": o["user"], "ExposedPorts": exposed,
        "Labels": key_values(o["label"], "label"), "HostConfig": host,
    }  # fmt: skip


def _create(api: ApiClient, image: str, command: tuple[str, ...], o: dict[str, Any]) -> str:
    """Create it; an image not here is pulled first, as the docker CLI does (here: made, for
    the base images scow can make)."""
    body = create_body(image, command, o)
    params = {"name": o["name"]}
    try:
        cid: str = api.json("POST", "/containers/create", params=params, json=body)["Id"]
    except ApiClientError as exc:
        if exc.status != 404 or "image" not in exc.message:
            raise
        click.echo(f"Unable to find image {image!r} here: pulling", err=True)
        for raw in api.stream_lines("POST", "/images/create", params={"fromImage": image}):
            message = json.loads(raw) if raw else {}
            if "error" in message:
                fail(message["error"])
        cid = api.json("POST", "/containers/create", params=params, json=body)["Id"]
    return cid


@click.command(context_settings=ARGS_AFTER_IMAGE)
@click.option("-d", "--detach", is_flag=True, help="Print the id and leave it running")
@with_run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@api_command
def run(detach: bool, image: str, command: tuple[str, ...], **o: Any) -> None:
    """Create and start a container; without -d, stream its output and exit with its code."""
    api = client()
    cid = _create(api, image, command, o)
    if detach:
        api.request("POST", f"/containers/{cid}/start")
        click.echo(cid)
        return
    params = {"stream": 1, "stdout": 1, "stderr": 1}
    condition = "removed" if o["auto_remove"] else "next-exit"
    # As the docker CLI does: attached and waiting (both responses begun) before the start,
    # so that neither the output nor the exit code of a quick --rm container is missed.
    with (
        api.stream("POST", f"/containers/{cid}/attach", params=params,
                   timeout=None) as attached,
        api.stream("POST", f"/containers/{cid}/wait", params={"condition": condition},
                   timeout=None) as waited,
    ):  # fmt: skip
        for response in (attached, waited):
            if response.status_code >= 400:
                response.read()
                raise error_of(response)
        api.request("POST", f"/containers/{cid}/start")
        write_frames(attached.iter_bytes())
        code = json.loads(waited.read())
    if code.get("Error"):
        fail(f"waiting for {cid[:12]}: {code['Error'].get('Message', code['Error'])}")
    sys.exit(int(code["StatusCode"]))


@click.command(context_settings=ARGS_AFTER_IMAGE)
@with_run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@api_command
def create(image: str, command: tuple[str, ...], **o: Any) -> None:
    """Create a container without starting it; print its id."""
    click.echo(_create(client(), image, command, o))
