"""``scow node``: the nodes of a host (``ls``), draining one (``drain``), and running one
(``run``: a machine that runs only a node, against the host's Redis)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from gateway.cli.output import api_command, client, emit, format_option
from pool.contract.config import DEFAULTS


@click.group()
def node() -> None:
    """Nodes: ls, drain, run."""


@node.command(name="ls")
@format_option
@api_command
def node_ls(fmt: str) -> None:
    """Every node: functions, warm containers, load, heartbeat."""
    nodes = client().json("GET", "/system/nodes")

    def rows(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for n in found:
            state = "draining" if n["draining"] else ("live" if n["live"] else "silent")
            out.append((n["id"], n["host"], n["functions"], n["warm"], n["containers"],
                        f"{n['load']:.2f}", f"{n['heartbeat_age']:.1f}s ago", state))  # fmt: skip
        return out

    emit(nodes, fmt, rows, ["ID", "HOST", "FUNCTIONS", "WARM", "CONTAINERS", "LOAD",
                             "HEARTBEAT", "STATE"])  # fmt: skip


@node.command(name="drain")
@click.argument("node_id")
@api_command
def node_drain(node_id: str) -> None:
    """Take no new calls or containers there; it exits once idle."""
    client().json("POST", f"/system/nodes/{node_id}/drain")
    click.echo(f"{node_id}: draining")


@node.command(name="run", context_settings={"ignore_unknown_options": True})
@click.option("--redis-url", required=True, envvar="REDIS_URL",
              help="The host's Redis (every node and gateway shares it)")  # fmt: skip
@click.option("--state-dir", type=click.Path(path_type=Path), default=DEFAULTS.state_dir,
              show_default=True)  # fmt: skip
@click.option("--run-dir", type=click.Path(path_type=Path), default=DEFAULTS.run_dir,
              show_default=True)  # fmt: skip
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
def node_run(redis_url: str, state_dir: Path, run_dir: Path, options: tuple[str, ...]) -> None:
    """Run a node in the foreground (python -m pool; its options follow, see --help
    there: --bridge, --subnet, --cgroup-parent, --insecure-registry ...)."""
    argv = [sys.executable, "-m", "pool", "--redis-url", redis_url, "--state-dir",
            str(state_dir), "--run-dir", str(run_dir), *options]  # fmt: skip
    os.execv(sys.executable, argv)
