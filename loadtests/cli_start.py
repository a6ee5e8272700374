"""How long the CLI takes to answer, beside the docker CLI on the same socket.

``scow --help`` and ``scow fn ls`` (issue #18's goal: under 150 ms wall) and
``scow ps``, next to ``docker --help`` and ``docker ps`` against the same scow host
(its Unix socket), each run ``runs`` times in turn, so that the machine's noise
falls on both alike. Also what ``import gateway.cli`` costs, from Python's own
``-X importtime``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from loadtests.bench import MS, REPO, BenchHost, bench_host, pct, verdict

GOAL_MS = 150.0


def _timed(argv: list[str], env: dict[str, str]) -> float:
    """The wall time of one run. Waited for without subprocess's timeout, whose polling
    (sleeps of up to 50 ms) would be measured too; a watchdog kills a run that hangs."""
    clock = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        code = proc.wait()
    finally:
        watchdog.cancel()
    elapsed = time.perf_counter() - clock
    if code != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with exit code {code}")
    return elapsed


def import_ms() -> tuple[float, list[tuple[float, str]]]:
    """The cumulative import time of gateway.cli, and what it imports directly, costliest
    first (``-X importtime`` lists a module after what it imported, one level deeper)."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import gateway.cli"],
                         cwd=REPO, capture_output=True, text=True, check=True)  # fmt: skip
    rows = []
    for line in out.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m.group(1)) / 1000, (len(m.group(2)) - 1) // 2, m.group(3)))
    end = next(i for i, (_, depth, name) in enumerate(rows) if name == "gateway.cli" and not depth)
    start = max((i for i in range(end) if rows[i][1] == 0), default=-1) + 1
    children = sorted(((ms, name) for ms, depth, name in rows[start:end] if depth == 1),
                      reverse=True)  # fmt: skip
    return rows[end][0], children[:6]


def commands(host: BenchHost) -> dict[str, tuple[list[str], dict[str, str]]]:
    scow = str(Path(sys.executable).parent / "scow")
    env = {**os.environ, "SCOW_STATE_DIR": str(host.state), "SCOW_RUN_DIR": str(host.base / "run")}
    found: dict[str, tuple[list[str], dict[str, str]]] = {
        "scow --help": ([scow, "--help"], env),
        "scow fn ls": ([scow, "fn", "ls"], env),
        "scow ps": ([scow, "ps"], env),
    }
    docker = shutil.which("docker")
    if docker:
        denv = {**os.environ, "DOCKER_HOST": f"unix://{host.base / 'run' / 'scow.sock'}",
                "DOCKER_CONFIG": str(host.base / "docker-config")}  # fmt: skip
        found["docker --help"] = ([docker, "--help"], denv)
        found["docker ps"] = ([docker, "ps"], denv)
    return found


def run(runs: int, out: Path, stamp: str) -> str:
    with bench_host() as host:
        host.scow("fn", "ls")  # the first run of each pays for the page cache; not counted
        todo = commands(host)
        for argv, env in todo.values():
            _timed(argv, env)
        times: dict[str, list[float]] = {name: [] for name in todo}
        for _ in range(runs):
            for name, (argv, env) in todo.items():
                times[name].append(_timed(argv, env))
    total, top = import_ms()
    lines = [
        "## CLI start (scow beside the docker CLI, same host and socket)\n",
        f"{runs} runs of each, interleaved; wall time of the whole process.\n",
        "| command | p50 ms | p90 ms | vs docker |", "|---|---|---|---|",
    ]
    peers = {"scow --help": "docker --help", "scow fn ls": "docker ps", "scow ps": "docker ps"}
    for name, values in times.items():
        peer = peers.get(name)
        ratio = (f"{pct(values, 0.5) / pct(times[peer], 0.5):.1f}x `{peer}`"
                 if peer in times else "")  # fmt: skip
        lines.append(f"| `{name}` | {pct(values, 0.5) * MS:.0f} | {pct(values, 0.9) * MS:.0f}"
                     f" | {ratio} |")  # fmt: skip
    if "docker ps" not in times:
        lines.append("\n(no docker CLI on this machine: `./dev test` installs it)")
    goal = all(pct(times[n], 0.5) * MS < GOAL_MS for n in ("scow --help", "scow fn ls"))
    lines += [
        f"\n`scow --help` and `scow fn ls` under {GOAL_MS:.0f} ms (p50): {verdict(goal)}.",
        f"\n`python -X importtime -c 'import gateway.cli'`: {total:.1f} ms cumulative; "
        "the costliest: " + ", ".join(f"{name} {ms:.1f} ms" for ms, name in top) + ".\n",
    ]
    return "\n".join(lines) + "\n"
