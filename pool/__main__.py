"""``python -m pool``: run one pool manager (a node) until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from ipaddress import IPv4Network
from pathlib import Path

from images.store import ImageStore
from pool.contract.config import DEFAULTS
from pool.contract.connect import connect
from pool.manager import PoolManager
from runtime.engine import Runtime, RuntimeConfig


async def _main(args: argparse.Namespace) -> None:
    # Timeouts: a Redis that stopped answering (a half-open connection) is found out and
    # retried like one that went away, instead of hanging a loop forever. Generous: a
    # node command's entry may carry an image archive.
    redis = connect(args.redis_url, socket_timeout=30, socket_connect_timeout=5)
    runtime = Runtime(
        RuntimeConfig(
            state_dir=args.state_dir,
            run_dir=args.run_dir,
            cgroup_parent=args.cgroup_parent,
            bridge=args.bridge,
            subnet=IPv4Network(args.subnet),
        )
    )
    images = ImageStore(args.images or args.state_dir / "images")
    images.open()
    port = None if args.metrics_port < 0 else args.metrics_port
    manager = PoolManager(
        redis, runtime, images, node_id=args.node_id, metrics_port=port,
        response_limit=args.response_limit, max_environments=args.max_environments,
        insecure_registries=[r for item in args.insecure_registry for r in item.split(",")],
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await manager.run(stop)
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pool", description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--state-dir", type=Path, default=DEFAULTS.state_dir)
    parser.add_argument("--run-dir", type=Path, default=DEFAULTS.run_dir)
    parser.add_argument("--node-id", default=None, help="default: host name and a random suffix")
    parser.add_argument("--images", type=Path, default=None, help="default: STATE_DIR/images")
    parser.add_argument("--cgroup-parent", default="scow")
    parser.add_argument("--bridge", default=DEFAULTS.bridge)
    parser.add_argument("--subnet", default=DEFAULTS.subnet)
    parser.add_argument(
        "--metrics-port", type=int, default=DEFAULTS.node_metrics_port,
        help="Prometheus /metrics on 127.0.0.1 (0: any free port, -1: none)",
    )  # fmt: skip
    parser.add_argument("--response-limit", type=int, default=DEFAULTS.response_limit,
                        help="Bytes of a function's reply; more is a 502")  # fmt: skip
    parser.add_argument("--max-environments", type=int, default=DEFAULTS.max_environments,
                        help="Environments this node holds at once")  # fmt: skip
    parser.add_argument(
        "--insecure-registry", action="append", default=[DEFAULTS.insecure_registries],
        help="A registry (HOST[:PORT] or a CIDR) reached over plain HTTP if HTTPS fails; "
        "loopback ones always are",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per call otherwise
    try:
        asyncio.run(_main(args))
    except OSError as exc:
        print(f"scow pool: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
