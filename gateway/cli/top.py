"""`scow top`'s screen: one row per function and node, from /system/info.

TARGET is the pool's sizing decision and the rule that made it (pool/sizing.py):
``rate`` for a throwaway function whose call rate times its make time (MAKE) asks
for more than the recent peak of calls at once.
"""

from __future__ import annotations

import time
from typing import Any


def _ms(seconds: float | None) -> str:
    return "-" if not seconds else f"{seconds * 1000:.1f}"


def render(info: dict[str, Any]) -> str:
    """The screen for one /system/info answer.

    >>> screen = render({"nodes": [{"id": "n1", "live": True, "heartbeat_age": 0.2,
    ...     "functions": {"hello": {"ready": 1, "busy": 2, "creating": 0, "draining": 0,
    ...                             "target": 6, "rule": "rate", "rate": 10.0,
    ...                             "make_seconds": 0.2}},
    ...     "latency": {"hello": {"start_p50": 0.03, "start_p99": 0.09,
    ...                           "call_p50": 0.004, "call_p99": 0.02}}}],
    ...     "queues": {"hello": 3}, "functions": 1}).splitlines()
    >>> screen[2].split("  ")[6:9], screen[3].split()
    (['TARGET', 'CALLS/s', 'MAKE ms'], ['hello', 'n1', '1', '2', '0', '0', '6', 'rate', '10.0', \
'200.0', '3', '30.0/90.0', '4.0/20.0'])
    """
    header = ["FUNCTION", "NODE", "WARM", "BUSY", "CREATING", "DRAINING", "TARGET", "CALLS/s",
              "MAKE ms", "QUEUED", "START p50/p99 ms", "CALL p50/p99 ms"]  # fmt: skip
    rows = []
    queues = info.get("queues", {})
    for node in info.get("nodes", []):
        if not node.get("live"):
            continue
        for name, pool in sorted(node.get("functions", {}).items()):
            lat = node.get("latency", {}).get(name, {})
            rows.append([
                name, node["id"], str(pool.get("ready", 0)), str(pool.get("busy", 0)),
                str(pool.get("creating", 0)), str(pool.get("draining", 0)),
                f"{pool.get('target', '-')} {pool.get('rule', '')}".strip(),
                f"{pool.get('rate', 0.0):.1f}", _ms(pool.get("make_seconds")),
                str(queues.get(name, 0)),
                f"{_ms(lat.get('start_p50'))}/{_ms(lat.get('start_p99'))}",
                f"{_ms(lat.get('call_p50'))}/{_ms(lat.get('call_p99'))}",
            ])  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        f"scow top  {time.strftime('%H:%M:%S')}  functions {info.get('functions', 0)}  "
        f"nodes {sum(1 for n in info.get('nodes', []) if n.get('live'))}",
        "",
    ]
    for row in [header, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
