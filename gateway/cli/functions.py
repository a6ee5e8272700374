"""`scow fn`: deploy, list, inspect, remove, invoke, scale functions and follow their logs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from gateway.cli.output import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    api_command,
    client,
    emit,
    fail,
    format_option,
    key_values,
)
from gateway.client import ApiClientError
from pool.contract.choices import PROTOCOLS


@click.group()
def fn() -> None:
    """Functions: an image plus a spec, called over HTTP."""


def _spec_from_file(path: Path) -> dict[str, Any]:
    import yaml  # only here: the CLI starts without it

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", EXIT_USAGE)
    except yaml.YAMLError as exc:
        fail(f"{path} is not valid YAML: {exc}", EXIT_USAGE)
    if not isinstance(data, dict):
        fail(f"{path}: expected a mapping of spec fields, got {type(data).__name__}", EXIT_USAGE)
    return data


@fn.command()
@click.argument("name", required=False)
@click.option("-f", "--file", "spec_file", type=click.Path(path_type=Path),
              help="A YAML spec; flags given too override its fields")  # fmt: skip
@click.option("--image")
@click.option("--protocol", type=click.Choice(PROTOCOLS))
@click.option("--port", type=int)
@click.option("--command", help="A shell command run in place of the image's")
@click.option("-e", "--env", "env", multiple=True, help="KEY=VALUE (repeatable)")
@click.option("--memory", help="e.g. 128m")
@click.option("--cpu-shares", type=int)
@click.option("--timeout", help="e.g. 30s")
@click.option("--max-invocations", type=int, help="1: a fresh container per call; 0: unlimited")
@click.option("--concurrency", type=int)
@click.option("--pool-min", type=int)
@click.option("--pool-max", type=int)
@click.option("--auth/--no-auth", default=None, help="Calls need the API token")
@click.option("-l", "--label", multiple=True, help="KEY=VALUE (repeatable)")
@click.option("--secret", "secret_names", multiple=True,
              help="A secret's name: a file in /var/openfaas/secrets and /run/secrets "
              "(repeatable)")  # fmt: skip
@format_option
@api_command
def deploy(name: str | None, spec_file: Path | None, image: str | None, protocol: str | None,
           port: int | None, command: str | None, env: tuple[str, ...], memory: str | None,
           cpu_shares: int | None, timeout: str | None, max_invocations: int | None,
           concurrency: int | None, pool_min: int | None, pool_max: int | None,
           auth: bool | None, label: tuple[str, ...], secret_names: tuple[str, ...],
           fmt: str) -> None:  # fmt: skip
    """Create or update a function, from a YAML spec (-f) or flags."""
    spec = _spec_from_file(spec_file) if spec_file else {}
    flags = {"name": name, "image": image, "protocol": protocol, "port": port,
             "command": command, "memory": memory, "cpu_shares": cpu_shares,
             "timeout": timeout, "max_invocations": max_invocations,
             "concurrency": concurrency, "auth": auth}  # fmt: skip
    spec.update({k: v for k, v in flags.items() if v is not None})
    if env:
        spec["env"] = {**_as_map(spec.get("env")), **key_values(env, "env")}
    if label:
        spec["labels"] = {**(spec.get("labels") or {}), **key_values(label, "label")}
    if secret_names:
        spec["secrets"] = [*(spec.get("secrets") or []), *secret_names]
    if pool_min is not None or pool_max is not None:
        pool = dict(spec.get("pool") or {})
        pool.update({k: v for k, v in (("min", pool_min), ("max", pool_max)) if v is not None})
        spec["pool"] = pool
    if not spec.get("name") or not spec.get("image"):
        fail("a function needs a name and an image (NAME --image IMAGE, or -f FILE)", EXIT_USAGE)
    api = client()
    from gateway.cli.registries import registry_auth  # imported when used: see gateway/cli
    from pool.contract.references import registry_of

    registry = registry_of(str(spec["image"]))
    headers = {"X-Registry-Auth": registry_auth(registry)} if registry else {}
    try:
        result = api.json("POST", "/system/functions", json=spec, headers=headers,
                          timeout=None)  # fmt: skip
        verb = "Deployed"
    except ApiClientError as exc:
        if exc.status != 409:
            raise
        result = api.json("PUT", "/system/functions", json=spec, headers=headers, timeout=None)
        verb = "Updated"
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{verb} {result['name']} ({result['image']}, {result['protocol']})")
    nodes = result.get("nodes") or {}
    if nodes.get("ready"):
        click.echo(f"Ready on {', '.join(nodes['ready'])}")
    if nodes.get("pulling"):
        click.echo(f"Still pulling its image: {', '.join(nodes['pulling'])}")
    for node, why in (nodes.get("failed") or {}).items():
        click.echo(f"Not on {node}: {why}", err=True)
    if nodes.get("lacking_image"):
        click.echo(f"Its image is not on {', '.join(nodes['lacking_image'])}: those nodes "
                   "leave its calls to the others (push it to a registry and deploy it from "
                   "there to run it everywhere)", err=True)  # fmt: skip
    click.echo(f"Call it: POST {api.endpoint.describe()}/function/{result['name']}")


def _as_map(env: Any) -> dict[str, str]:
    if isinstance(env, dict):
        return {str(k): str(v) for k, v in env.items()}
    return key_values([str(e) for e in env or ()], "env")


@fn.command("ls")
@format_option
@api_command
def list_functions(fmt: str) -> None:
    """List functions with their calls and warm instances."""
    emit(
        client().json("GET", "/system/functions"), fmt,
        lambda fns: [(f["name"], f["image"], f["protocol"], f["invocationCount"],
                      f["availableReplicas"], f["queueLength"]) for f in fns],
        ["NAME", "IMAGE", "PROTOCOL", "INVOCATIONS", "WARM", "QUEUED"],
    )  # fmt: skip


@fn.command()
@click.argument("name")
@api_command
def inspect(name: str) -> None:
    """A function's spec and status, as JSON."""
    click.echo(json.dumps(client().json("GET", f"/system/function/{name}"), indent=2))


@fn.command("rm")
@click.argument("names", nargs=-1, required=True)
@api_command
def remove(names: tuple[str, ...]) -> None:
    """Delete functions (their queued calls go too)."""
    for name in names:
        client().json("DELETE", "/system/functions", params={"name": name})
        click.echo(name)


@fn.command()
@click.argument("name")
@click.argument("replicas", type=int)
@api_command
def scale(name: str, replicas: int) -> None:
    """Keep REPLICAS instances warm on each node."""
    result = client().json("POST", f"/system/scale-function/{name}", json={"replicas": replicas})
    click.echo(f"{name}: {result['replicas']} warm (pool.max {result['pool']['max']})")


@fn.command()
@click.argument("name")
@click.option("-d", "--data", help="The request body ('-' or none: read stdin when piped)")
@click.option("-X", "--method", default="POST", show_default=True)
@click.option("--path", default="/", show_default=True, help="Path after /function/NAME")
@click.option("-H", "--header", multiple=True, help="'Name: value' (repeatable)")
@click.option("--async", "is_async", is_flag=True, help="Queue it; print the call id")
@click.option("--callback-url", help="With --async: where the node POSTs the result")
@click.option("-i", "--include", is_flag=True, help="Print the status and headers too")
@api_command
def invoke(name: str, data: str | None, method: str, path: str, header: tuple[str, ...],
           is_async: bool, callback_url: str | None, include: bool) -> None:  # fmt: skip
    """Call a function; its body goes to stdout. Exit 1 when it answers 400 or more."""
    if data is None or data == "-":
        body = sys.stdin.buffer.read() if (data == "-" or not sys.stdin.isatty()) else b""
    else:
        body = data.encode()
    headers = {}
    for h in header:
        key, sep, value = h.partition(":")
        if not sep:
            fail(f"invalid header {h!r}: expected 'Name: value'", EXIT_USAGE)
        headers[key.strip()] = value.strip()
    if callback_url:
        headers["X-Callback-Url"] = callback_url
    route = "async-function" if is_async else "function"
    url = f"/{route}/{name}/{path.lstrip('/')}" if path.strip("/") else f"/{route}/{name}"
    api = client()
    # The API token goes on a function's route only when the function needs it (deployed
    # with auth): a function must never be handed a token that would let it run the host.
    needs_token = bool(api.endpoint.token) and bool(
        api.json("GET", f"/system/function/{name}").get("auth")
    )
    try:
        response = api.open("POST" if is_async else method, url, content=body, headers=headers,
                            timeout=None, token=needs_token)  # fmt: skip
        response.read()
    except ApiClientError as exc:
        fail(exc.message, EXIT_UNREACHABLE if exc.status == 0 else EXIT_FAILED)
    if is_async and response.status_code == 202:
        click.echo(response.headers["x-call-id"])
        return
    if include:
        click.echo(f"HTTP {response.status_code} {response.reason_phrase}")
        for k, v in response.headers.multi_items():
            click.echo(f"{k}: {v}")
        click.echo()
    sys.stdout.buffer.write(response.content)
    sys.stdout.flush()
    if response.status_code >= 400:
        if not include:
            click.echo(f"scow: {name} answered {response.status_code}", err=True)
        sys.exit(EXIT_NOT_FOUND if response.status_code == 404 else EXIT_FAILED)


@fn.command()
@click.argument("name")
@click.option("--tail", type=int, help="Only the last N lines")
@click.option("--since", help="Epoch seconds, RFC 3339, or a duration ago such as 5m")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines")
@format_option
@api_command
def logs(name: str, tail: int | None, since: str | None, follow: bool, fmt: str) -> None:
    """A function's log lines, each with its call id."""
    params: dict[str, Any] = {"name": name, "follow": int(follow)}
    if tail is not None:
        params["tail"] = tail
    if since:
        params["since"] = since
    api = client()
    try:
        for line in api.stream_lines("GET", "/system/logs", params=params, timeout=None):
            if not line:
                continue
            if fmt == "json":
                click.echo(line)
            else:
                entry = json.loads(line)
                click.echo(f"{entry['time']} {entry['call_id'][:12]} {entry['text']}")
    except KeyboardInterrupt:
        pass


@fn.command()
@click.argument("name")
@click.option("-n", "--limit", default=20, show_default=True, help="How many, newest first")
@format_option
@api_command
def calls(name: str, limit: int, fmt: str) -> None:
    """A function's latest calls: status, timings, container and node."""
    records = client().json("GET", "/system/calls", params={"function": name, "limit": limit})
    emit(
        records, fmt,
        lambda rows: [(r["id"], r["state"], r.get("status", ""), _ms(r.get("queue_seconds")),
                       _ms(r.get("run_seconds")), "cold" if r.get("cold") else "",
                       r.get("error", ""), r.get("container", "")[:12]) for r in rows],
        ["CALL", "STATE", "STATUS", "QUEUE", "RUN", "COLD", "ERROR", "CONTAINER"],
    )  # fmt: skip


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.1f}ms"
