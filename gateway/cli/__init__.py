"""The `scow` command: the host (`up`, `gateway`) and a client of its API for the rest.

The subcommands' modules are imported when one of them runs: `scow fn ls` loads the
functions' module and no other, and `scow --help` none (their one-line help is in
``SUBCOMMANDS``). That, and an HTTP client on the standard library, keeps the CLI's
start near the interpreter's own.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import click

from gateway import __version__
from gateway.cli.output import EXIT_USAGE, api_command, client, fail, format_option
from pool.contract.config import DEFAULTS, LOG_LEVELS, HostConfig

_C, _I = "gateway.cli.containers", "gateway.cli.images"
# name -> (module:attribute, its line in `scow --help`). tests/test_cli.py checks that
# each names its command and that no command of these modules is left out.
SUBCOMMANDS: Mapping[str, tuple[str, str]] = {
    "fn": ("gateway.cli.functions:fn", "Deploy, call, scale and watch functions"),
    "env": ("gateway.cli.environments:env", "Throwaway test environments"),
    "secret": ("gateway.cli.secrets:secret", "Secrets, given to functions as files"),
    "build": (f"{_I}:build", "Build an image from a Dockerfile"),
    "commit": (f"{_I}:commit", "Make an image of a container's changes"),
    "history": (f"{_I}:history", "Show the steps an image was made of"),
    "image": (f"{_I}:image", "Images: bootstrap base images, inspect"),
    "images": (f"{_I}:images", "List images"),
    "import": (f"{_I}:import_", "Make an image of a root filesystem tarball"),
    "load": (f"{_I}:load", "Load images from a docker-archive or OCI tar"),
    "rmi": (f"{_I}:rmi", "Remove images, or untag them"),
    "save": (f"{_I}:save", "Write images to a docker-archive tar"),
    "tag": (f"{_I}:tag", "Give an image another name"),
    "run": ("gateway.cli.run:run", "Create and start a container"),
    "create": ("gateway.cli.run:create", "Create a container without starting it"),
    "container": (f"{_C}:container", "Containers, as docker container has them"),
    "cp": (f"{_C}:cp", "Copy files between a container and this host"),
    "diff": (f"{_C}:diff", "Show what a container changed in its files"),
    "exec": (f"{_C}:exec_", "Run a command in a running container"),
    "inspect": (f"{_C}:inspect", "Show a container's full description"),
    "kill": (f"{_C}:kill", "Send a signal to containers"),
    "logs": (f"{_C}:logs", "Show a container's output"),
    "pause": (f"{_C}:pause", "Freeze every process of containers"),
    "port": (f"{_C}:port", "Show a container's published ports"),
    "ps": (f"{_C}:ps", "List containers"),
    "rename": (f"{_C}:rename", "Give a container a new name"),
    "restart": (f"{_C}:restart", "Stop containers, then start them again"),
    "rm": (f"{_C}:rm", "Remove containers"),
    "start": (f"{_C}:start", "Start created or stopped containers"),
    "stats": (f"{_C}:stats", "Show a container's memory, CPU and processes"),
    "stop": (f"{_C}:stop", "Stop containers"),
    "unpause": (f"{_C}:unpause", "Thaw paused containers"),
    "node": ("gateway.cli.nodes:node", "Nodes: ls, drain, run"),
    "network": ("gateway.cli.networks:network", "Networks: ls, create, connect, rm, prune"),
    "volume": ("gateway.cli.volumes:volume", "Volumes: ls, create, inspect, rm"),
    "login": ("gateway.cli.registries:login", "Log in to a registry"),
    "logout": ("gateway.cli.registries:logout", "Forget a registry's login"),
    "pull": ("gateway.cli.registries:pull", "Fetch an image from a registry"),
    "push": ("gateway.cli.registries:push", "Send an image to a registry"),
    "wait": (f"{_C}:wait", "Wait until containers stop; print their exit codes"),
}


class LazyGroup(click.Group):
    """A group whose ``SUBCOMMANDS`` are imported when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SUBCOMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return super().get_command(ctx, name)
        module, _, attribute = SUBCOMMANDS[name][0].partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))  # as click's own group has it
        rows = []
        for name in names:
            if name in SUBCOMMANDS:
                rows.append((name, SUBCOMMANDS[name][1]))
            elif (command := super().get_command(ctx, name)) is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """scow: functions on throwaway containers.

    The client commands talk to the API on the Unix socket /run/scow/scow.sock,
    or over TCP when SCOW_HOST is set (tcp://127.0.0.1:8080), with the token
    from SCOW_TOKEN or the state dir's token file.
    """


@main.command()
@click.option("--client-only", is_flag=True, help="Do not ask the server")
@api_command
def version(client_only: bool) -> None:
    """Print the versions of this client and of the server."""
    click.echo(f"client  {__version__}")
    if not client_only:
        click.echo(f"server  {client().json('GET', '/system/version')['version']}")


@main.command()
@format_option
@api_command
def info(fmt: str) -> None:
    """Where the API listens, its limits, and each node with its pools."""
    import json

    data = client().json("GET", "/system/info")
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"api        {client().endpoint.describe()}")
    click.echo(f"version    {data['version']['release']}")
    click.echo(f"functions  {data['functions']}")
    limits = data["limits"]
    click.echo(
        f"limits     body {limits['body_bytes']} bytes, queue {limits['queue']} per function"
    )
    for node in data["nodes"]:
        state = "live" if node["live"] else f"silent for {node['heartbeat_age']:.0f}s"
        metrics = f", metrics http://{node['metrics']}/metrics" if node.get("metrics") else ""
        click.echo(f"node       {node['id']} (pid {node['pid']}, {state}{metrics})")
        for name, pool in sorted(node["functions"].items()):
            click.echo(
                f"  {name:<24} ready {pool['ready']}  busy {pool['busy']}  "
                f"creating {pool['creating']}"
            )


@main.command()
@click.option("--state-dir", type=click.Path(path_type=Path),
              help=f"[default: {DEFAULTS.state_dir}]")  # fmt: skip
@click.option("--run-dir", type=click.Path(path_type=Path), help=f"[default: {DEFAULTS.run_dir}]")
@click.option("--host", default=DEFAULTS.http_host, show_default=True,
              help="TCP address of the API")  # fmt: skip
@click.option("--port", default=DEFAULTS.http_port, show_default=True, type=int)
@click.option("--redis-url", help="Use this Redis instead of starting one [env: REDIS_URL]")
@click.option("--bridge", default=DEFAULTS.bridge, show_default=True,
              help="The containers' bridge")  # fmt: skip
@click.option("--subnet", default=DEFAULTS.subnet, show_default=True, help="Its addresses")
@click.option("--network-pool", default=DEFAULTS.network_pool, show_default=True,
              help="Where user-defined networks' subnets come from (a /24 each)")  # fmt: skip
@click.option(
    "--node-metrics-port", default=DEFAULTS.node_metrics_port, show_default=True,
    help="The node's Prometheus /metrics on 127.0.0.1 (0: any free port)",
)  # fmt: skip
@click.option(
    "--redis-maxmemory", default=DEFAULTS.redis_maxmemory, show_default=True,
    help="The memory of the Redis started here; when full, calls get 503, nothing is evicted",
)  # fmt: skip
@click.option(
    "--gateway-workers", default=DEFAULTS.gateway_workers, show_default=True,
    type=click.IntRange(1, 64), help="Gateway processes on the same sockets (one per core)",
)  # fmt: skip
@click.option(
    "--insecure-registry", "insecure_registries", multiple=True, metavar="HOST[:PORT]|CIDR",
    help="A registry the node may reach over plain HTTP (loopback ones always may)",
)  # fmt: skip
def up(
    state_dir: Path | None, run_dir: Path | None, host: str, port: int, redis_url: str | None,
    bridge: str, subnet: str, network_pool: str, node_metrics_port: int, redis_maxmemory: str,
    gateway_workers: int, insecure_registries: tuple[str, ...],
) -> None:  # fmt: skip
    """Run the whole host in the foreground: Redis, a node, the gateway. One that dies is
    started again; Ctrl-C stops them all."""
    from gateway.redisd import RedisServerError
    from gateway.up import Host, HostError

    config = HostConfig.from_env(
        state_dir=state_dir, run_dir=run_dir, http_host=host, http_port=port, redis_url=redis_url,
        bridge=bridge, subnet=subnet, network_pool=network_pool,
        node_metrics_port=node_metrics_port, redis_maxmemory=redis_maxmemory,
        gateway_workers=gateway_workers, insecure_registries=",".join(insecure_registries),
    )  # fmt: skip
    try:
        code = Host(config, out=click.echo).run()
    except (HostError, RedisServerError) as exc:
        click.echo(f"scow up: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)


@main.command()
@click.option("--redis-url", required=True, envvar="REDIS_URL")
@click.option("--host", default=DEFAULTS.http_host, show_default=True)
@click.option("--port", default=DEFAULTS.http_port, show_default=True, type=int)
@click.option("--socket", "socket_path", type=click.Path(path_type=Path), help="Unix socket path")
@click.option(
    "--token-file", type=click.Path(path_type=Path), default=DEFAULTS.token_file,
    show_default=True, help="Made on first start; SCOW_TOKEN overrides it",
)  # fmt: skip
@click.option("--body-limit", default=DEFAULTS.body_limit, show_default=True, help="Bytes")
@click.option(
    "--max-queue", default=DEFAULTS.max_queue, show_default=True,
    help="Calls waiting or running per function before 429 (0: no cap)",
)  # fmt: skip
@click.option(
    "--allowed-hosts", envvar="SCOW_ALLOWED_HOSTS", default=DEFAULTS.allowed_hosts,
    help="Host names (comma-separated, *.example.com allowed) the TCP API answers besides "
    "IP addresses and localhost [env: SCOW_ALLOWED_HOSTS]",
)  # fmt: skip
@click.option(
    "--callback-allow", envvar="SCOW_CALLBACK_ALLOW", default=DEFAULTS.callback_allow,
    help="Addresses, networks or names X-Callback-Url may reach besides public ones "
    "(loopback and link-local are refused by default) [env: SCOW_CALLBACK_ALLOW]",
)  # fmt: skip
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default=DEFAULTS.log_level,
              show_default=True)  # fmt: skip
@click.option(
    "--workers", default=DEFAULTS.gateway_workers, show_default=True, type=click.IntRange(1, 64),
    help="Processes accepting on the same sockets, each with its own reply stream",
)  # fmt: skip
@click.option("--subnet", default=DEFAULTS.subnet, show_default=True,
              help="The nodes' default bridge subnet (no network may overlap it)")  # fmt: skip
@click.option("--network-pool", default=DEFAULTS.network_pool, show_default=True,
              help="Where user-defined networks' subnets come from (a /24 each)")  # fmt: skip
def gateway(
    redis_url: str, host: str, port: int, socket_path: Path | None, token_file: Path,
    body_limit: int, max_queue: int, allowed_hosts: str, callback_allow: str, log_level: str,
    workers: int, subnet: str, network_pool: str,
) -> None:  # fmt: skip
    """Run one gateway against a Redis (to scale out beside `scow up`)."""
    import os

    from gateway.auth import load_or_create_token
    from gateway.serve import serve

    try:
        token = os.environ.get("SCOW_TOKEN") or load_or_create_token(token_file)
        config = HostConfig.from_env(
            redis_url=redis_url, http_host=host, http_port=port, body_limit=body_limit,
            max_queue=max_queue, allowed_hosts=allowed_hosts, callback_allow=callback_allow,
            log_level=log_level, subnet=subnet, network_pool=network_pool,
        )  # fmt: skip
        serve(config, token, socket_path, workers)
    except OSError as exc:
        click.echo(f"scow gateway: {exc}", err=True)
        sys.exit(1)


@main.command()
@click.option("--since", help="Unix seconds, or a duration ago such as 10m")
@click.option("--until", help="Unix seconds, or a duration from now such as 30s")
@click.option(
    "-f", "--filter", "filters", multiple=True,
    help="type=container, event=die, container=ID, image=REF, label=k=v, function=F",
)  # fmt: skip
@format_option
@api_command
def events(since: str | None, until: str | None, filters: tuple[str, ...], fmt: str) -> None:
    """Container, image and function events as they happen (Ctrl-C stops)."""
    import json

    grouped: dict[str, list[str]] = {}
    for f in filters:
        key, eq, value = f.partition("=")
        if not eq:
            fail(f"invalid filter {f!r}: expected KEY=VALUE", EXIT_USAGE)
        grouped.setdefault(key, []).append(value)
    params = {"filters": json.dumps(grouped)} if grouped else {}
    if since:
        params["since"] = str(_when(since, -1))
    if until:
        params["until"] = str(_when(until, +1))
    try:
        for line in client().stream_lines("GET", "/events", params=params, timeout=None):
            if not line:
                continue
            if fmt == "json":
                click.echo(line)
                continue
            e = json.loads(line)
            attrs = ", ".join(f"{k}={v}" for k, v in sorted(e["Actor"]["Attributes"].items()))
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(e["time"]))
            click.echo(f"{when} {e['Type']} {e['Action']} {e['Actor']['ID'][:12]} ({attrs})")
    except KeyboardInterrupt:
        pass


def _when(text: str, direction: int) -> float:
    """Unix seconds from ``text``: a number, or a duration before (-1) or after (+1) now."""
    try:
        return float(text)
    except ValueError:
        pass
    units = {"s": 1, "m": 60, "h": 3600}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() + direction * float(text[:-1]) * units[text[-1]]
    fail(f"invalid time {text!r}: Unix seconds or a duration such as 10m", EXIT_USAGE)


@main.command()
@click.option("--once", is_flag=True, help="Print one screen and exit")
@click.option("-n", "--interval", default=1.0, show_default=True, help="Seconds between screens")
@api_command
def top(once: bool, interval: float) -> None:
    """A live view of pools, queues and recent start and call latency (Ctrl-C stops)."""
    from gateway.cli.top import render

    try:
        while True:
            screen = render(client().json("GET", "/system/info"))
            if not once:
                click.echo("\x1b[H\x1b[2J", nl=False)  # home, clear: refresh in place
            click.echo(screen)
            if once:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
