"""What the scenarios share: percentiles, a scow host of their own, plots."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
BENCH_BRIDGE = "scowbench0"
BENCH_SUBNET = "10.215.0.0/24"
MS = 1000


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``.

    >>> pct([4.0, 1.0, 3.0, 2.0], 0.5)
    3.0
    """
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def verdict(met: bool) -> str:
    """How a summary line says whether a goal of issue #10 was reached."""
    return "met" if met else "**missed**"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class BenchHost:
    """A `scow up` in temp dirs on the bench bridge, for scenarios through the gateway."""

    base: Path
    port: int
    token: str
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state(self) -> Path:
        return self.base / "state"

    def scow(self, *args: str) -> None:
        env = {**os.environ, "SCOW_STATE_DIR": str(self.state),
               "SCOW_RUN_DIR": str(self.base / "run")}  # fmt: skip
        subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=env, cwd=REPO,
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip


@contextlib.contextmanager
def bench_host(*options: str) -> Iterator[BenchHost]:
    base = Path(tempfile.mkdtemp(prefix="scow-bench-host-"))
    port = free_port()
    log = open(base / "up.log", "wb")  # noqa: SIM115
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SCOW_TOKEN")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "up", "--state-dir", str(base / "state"),
         "--run-dir", str(base / "run"), "--port", str(port), "--bridge", BENCH_BRIDGE,
         "--subnet", BENCH_SUBNET, "--node-metrics-port", "0", *options],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while b"scow is up" not in (base / "up.log").read_bytes():  # the node is live too
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((base / "up.log").read_text(errors="replace"))
            time.sleep(0.05)
        token = (base / "state" / "token").read_text().strip()
        yield BenchHost(base, port, token, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        log.close()
        subprocess.run(["ip", "link", "del", BENCH_BRIDGE], stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", str(base)], check=False)


@contextlib.contextmanager
def _figure(path: Path, title: str, width: float = 7) -> Iterator[Any]:
    """Axes to draw on; on leaving, titled and saved as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, 4))
    try:
        yield ax
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)


def plot(
    path: Path, title: str, xlabel: str, ylabel: str,
    series: dict[str, tuple[Sequence[float], Sequence[float]]], log_y: bool = False,
) -> str:  # fmt: skip
    """A line plot as PNG; the markdown that shows it."""
    with _figure(path, title) as ax:
        for label, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o", label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return f"![{title}]({path.name})"


def cdf(path: Path, title: str, series: dict[str, Sequence[float]]) -> str:
    """Latency CDFs (ms, log x) as PNG; the markdown that shows it."""
    with _figure(path, title) as ax:
        for label, values in series.items():
            xs = sorted(values)
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=label)
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of calls answered within")
        ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return f"![{title}]({path.name})"


def stacked(path: Path, title: str, xlabel: str, rows: dict[str, dict[str, float]]) -> str:
    """Horizontal bars, each split into its parts (phases), as PNG; the markdown."""
    parts = list(dict.fromkeys(part for row in rows.values() for part in row))
    with _figure(path, title, width=8) as ax:
        left = [0.0] * len(rows)
        for part in parts:
            widths = [row.get(part, 0.0) for row in rows.values()]
            ax.barh(list(rows), widths, left=left, label=part)
            left = [a + b for a, b in zip(left, widths, strict=True)]
        ax.set_xlabel(xlabel)
        ax.invert_yaxis()
        ax.grid(True, axis="x", alpha=0.3)
        ax.legend(fontsize=8)
    return f"![{title}]({path.name})"


def bars(path: Path, title: str, ylabel: str, values: dict[str, float]) -> str:
    """Horizontal bars as PNG; the markdown that shows it."""
    with _figure(path, title, width=8) as ax:
        ax.barh(list(values), list(values.values()))
        ax.set_xlabel(ylabel)
        ax.invert_yaxis()
        ax.grid(True, axis="x", alpha=0.3)
    return f"![{title}]({path.name})"
