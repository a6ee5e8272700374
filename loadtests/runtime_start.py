"""Cold start: scow's runtime beside bare ``runc run`` and ``podman run --rm``.

For each variant, N sequential runs of busybox ``true``, create -> start -> wait ->
delete, timed end to end (median and p90), and for scow the time per phase.
The bare bundle uses the config.json scow generates (same init, limits, masks),
on the busybox dir itself instead of an overlay. podman (Debian's, with runc, its
own storage in a temp dir) runs the same busybox rootfs, imported; on this host
it needs ``--ulimit nofile=1024:1024 --ulimit nproc=1024:1024`` (it may not raise
rlimits past the caller's).

Through the API: a `scow up` of its own, and ``docker run --rm`` as the Docker
Engine API has it (create with AutoRemove, wait until removed, start: three
requests on the Unix socket), and the same with the docker CLI when it is
installed (its own process start included, as a user sees it).

Docker's own engine beside it: Debian's dockerd 20.10, unpacked by ``./dev loadtest``
into .venv, started here with its own data and exec roots, socket and cgroup parent,
``--iptables=false --ip-masq=false --ip-forward=false --bridge=none`` (so network none
only), the same busybox imported, and the same docker CLI running ``run --rm``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

import httpx

from images.busybox import make_busybox_rootfs
from loadtests.bench import BenchHost, bars, bench_host, stacked, verdict
from runtime.engine import Runtime, RuntimeConfig
from runtime.oci import make_config
from runtime.spec import ImageConfig, RunOptions
from runtime.users import User

BUSYBOX = ImageConfig(cmd=("true",))
BENCH_BRIDGE = "scowbench0"
BENCH_SUBNET = IPv4Network("10.215.0.0/24")
DOCKERD_PEER = Path(sys.prefix) / "share" / "dockerd-peer"  # fetch_dockerd_peer in ./dev
DOCKERD_CGROUP = "scow-bench-dockerd"


@dataclass
class Series:
    name: str
    seconds: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=dict)
    cpu: list[float] = field(default_factory=list)  # this process and its reaped children

    def p(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def bare_runc(base: Path, rootfs: Path, runs: int, init: str | None) -> Series:
    bundle = base / "bundle"
    bundle.mkdir(parents=True)
    config = make_config(
        BUSYBOX, RunOptions(read_only=True), user=User(0, 0, (), "/root"), hostname="bare",
        rootfs=rootfs, cgroups_path="/scow-bench/bare", extra_mounts=[], netns_path=None,
        init_binary=init, nofile_hard=1024,
    )  # fmt: skip
    (bundle / "config.json").write_text(json.dumps(config))
    series = Series("bare runc run")
    root = base / "runc-root"
    for i in range(runs):
        t, cpu = time.perf_counter(), cpu_seconds()
        subprocess.run(
            ["runc", "--root", str(root), "run", "--bundle", str(bundle), f"bare{i}"],
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        series.seconds.append(time.perf_counter() - t)
        series.cpu.append(cpu_seconds() - cpu)
    for d in Path("/sys/fs/cgroup").glob("*/scow-bench"):
        d.rmdir()
    return series


def cpu_seconds() -> float:
    """CPU this process and the children it reaped (runc, ip, ...) have used."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)  # fmt: skip
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def scow_runs(rt: Runtime, layer: Path, runs: int, name: str, **opts: object) -> Series:
    series = Series(name)
    options = RunOptions(read_only=True, **opts)  # type: ignore[arg-type]
    stdio = "logs" if "conmon" in name else "pipes"
    for _ in range(runs):
        t, cpu = time.perf_counter(), cpu_seconds()
        rec = await rt.create(BUSYBOX, [layer], options, stdio=stdio)  # type: ignore[arg-type]
        rec = await rt.start(rec.id)
        await rt.wait(rec.id)
        t_rm = time.perf_counter()
        await rt.remove(rec.id)
        series.seconds.append(time.perf_counter() - t)
        series.cpu.append(cpu_seconds() - cpu)
        for phase, seconds in {**rec.phases, "wait+remove": time.perf_counter() - t_rm}.items():
            series.phases.setdefault(phase, []).append(seconds)
    return series


async def scow_run_once(rt: Runtime, layer: Path, runs: int) -> Series:
    series = Series("scow run (one runc run), network none")
    for _ in range(runs):
        t = time.perf_counter()
        rec, _ = await rt.run(BUSYBOX, [layer], RunOptions(read_only=True))
        series.seconds.append(time.perf_counter() - t)
        for phase, seconds in rec.phases.items():
            series.phases.setdefault(phase, []).append(seconds)
    return series


def podman_runs(base: Path, rootfs: Path, runs: int) -> list[Series]:
    """``podman run --rm`` with network none and with podman's default bridge."""
    if shutil.which("podman") is None:
        return []
    podman = ["podman", "--root", str(base / "root"), "--runroot", str(base / "run"),
              "--storage-driver", "overlay", "--runtime", "runc", "--cgroup-manager", "cgroupfs",
              "--events-backend", "none"]  # fmt: skip
    limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
    base.mkdir(parents=True, exist_ok=True)
    tar = base / "busybox.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    image = "localhost/scow-bench-busybox:latest"
    subprocess.run([*podman, "import", str(tar), image], check=True, capture_output=True)
    out = []
    try:
        for label, network in (("none", ["--network", "none"]), ("its bridge", [])):
            argv = [*podman, "run", "--rm", *network, *limits, image, "true"]
            subprocess.run(argv, check=True, capture_output=True)  # warm-up
            series = Series(f"podman run --rm, network {label}")
            for _ in range(runs):
                t = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True)
                series.seconds.append(time.perf_counter() - t)
            out.append(series)
    finally:
        subprocess.run([*podman, "system", "reset", "--force"], capture_output=True)
        subprocess.run(["ip", "link", "del", "cni-podman0"], capture_output=True)
    return out


async def api_runs(host: BenchHost, runs: int, network: str) -> Series:
    """create (AutoRemove), wait for removal, start: ``docker run --rm`` in requests."""
    series = Series(f"scow API run --rm, network {network}")
    transport = httpx.AsyncHTTPTransport(uds=str(host.base / "run" / "scow.sock"))
    body = {"Image": "busybox", "Cmd": ["true"],
            "HostConfig": {"AutoRemove": True, "NetworkMode": network}}  # fmt: skip
    async with httpx.AsyncClient(transport=transport, base_url="http://scow", timeout=60) as api:
        for i in range(runs + 1):  # the first is a warm-up
            t = time.perf_counter()
            created = await api.post("/v1.43/containers/create", json=body)
            created.raise_for_status()
            cid = created.json()["Id"]
            # Waiting first, as the docker CLI does: a quick container is gone by the time
            # a wait sent after start would arrive. The wait's headers come at once.
            wait = f"/v1.43/containers/{cid}/wait"
            async with api.stream("POST", wait, params={"condition": "removed"}) as waited:
                (await api.post(f"/v1.43/containers/{cid}/start")).raise_for_status()
                result = json.loads(await waited.aread())
            if waited.status_code != 200 or result["StatusCode"] != 0:
                raise RuntimeError(f"run --rm {cid}: {waited.status_code} {result}")
            if i:
                series.seconds.append(time.perf_counter() - t)
    return series


def docker_cli() -> str | None:
    """The docker CLI on PATH, else the one unpacked with the dockerd peer."""
    unpacked = DOCKERD_PEER / "usr" / "bin" / "docker"
    return shutil.which("docker") or (str(unpacked) if unpacked.exists() else None)


def docker_cli_runs(socket: Path, runs: int, network: str, engine: str) -> Series | None:
    cli = docker_cli()
    if cli is None:
        return None
    series = Series(f"docker CLI run --rm on {engine}, network {network}")
    env = {**os.environ, "DOCKER_HOST": f"unix://{socket}"}
    argv = [cli, "run", "--rm", "--network", network, "busybox", "true"]
    for i in range(runs + 1):
        t = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        if i:
            series.seconds.append(time.perf_counter() - t)
    return series


def dockerd_runs(base: Path, rootfs: Path, runs: int) -> list[Series]:
    """``docker run --rm --network none busybox true`` against Docker's own engine."""
    dockerd = DOCKERD_PEER / "usr" / "sbin" / "dockerd"
    if not dockerd.exists() or docker_cli() is None:
        return []
    with running_dockerd(dockerd, base) as socket:
        env = {**os.environ, "DOCKER_HOST": f"unix://{socket}"}
        tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], check=True,
                             capture_output=True).stdout  # fmt: skip
        subprocess.run([str(docker_cli()), "import", "-", "busybox:latest"], input=tar,
                       env=env, check=True, capture_output=True)  # fmt: skip
        series = docker_cli_runs(socket, runs, "none", "dockerd 20.10")
        return [series] if series is not None else []


@contextlib.contextmanager
def running_dockerd(dockerd: Path, base: Path) -> Iterator[Path]:
    """dockerd (and the containerd it starts) on roots under ``base``, stopped after,
    with what it made outside them (its cgroup parents, /run dirs) removed."""
    base.mkdir(parents=True)
    socket = base / "docker.sock"
    made_run = [d for d in (Path("/run/docker"), Path("/run/containerd")) if not d.exists()]
    bins = f"{DOCKERD_PEER / 'usr' / 'bin'}:{DOCKERD_PEER / 'usr' / 'sbin'}"
    argv = [str(dockerd), "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
            "--host", f"unix://{socket}", "--pidfile", str(base / "dockerd.pid"),
            "--iptables=false", "--ip-masq=false", "--ip-forward=false", "--bridge=none",
            "--cgroup-parent", DOCKERD_CGROUP, "--storage-driver", "overlay2"]  # fmt: skip
    env = {**os.environ, "PATH": f"{bins}:{os.environ['PATH']}"}
    with open(base / "dockerd.log", "wb") as log:
        daemon = subprocess.Popen(argv, stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([str(docker_cli()), "-H", f"unix://{socket}", "version"],
                             capture_output=True).returncode != 0:  # fmt: skip
            if daemon.poll() is not None or time.monotonic() > deadline:
                tail = (base / "dockerd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"dockerd did not start (exit {daemon.poll()}):\n{tail}")
            time.sleep(0.2)
        yield socket
    finally:
        daemon.send_signal(signal.SIGTERM)  # it stops its containerd and containers
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        root = Path("/sys/fs/cgroup")  # v2: the parent is here; v1: under each controller
        for controller in [root, *(d for d in root.iterdir() if d.is_dir())]:
            parent = controller / DOCKERD_CGROUP
            for d in sorted(parent.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    d.rmdir()
        for d in made_run:
            shutil.rmtree(d, ignore_errors=True)


def through_the_api(runs: int) -> list[Series]:
    with bench_host() as host:
        host.scow("image", "bootstrap", "busybox")
        out = [asyncio.run(api_runs(host, runs, net)) for net in ("none", "bridge")]
        for net in ("none", "bridge"):
            cli = docker_cli_runs(host.base / "run" / "scow.sock", runs, net, "scow")
            if cli is not None:
                out.append(cli)
        return out


async def measure(runs: int) -> list[Series]:
    base = Path(tempfile.mkdtemp(prefix="scow-bench-"))
    try:
        layer = base / "busybox"
        make_busybox_rootfs(layer)
        config = RuntimeConfig(
            state_dir=base / "state", run_dir=base / "run", cgroup_parent="scow-bench-rt",
            bridge=BENCH_BRIDGE, subnet=BENCH_SUBNET,
        )  # fmt: skip
        rt = Runtime(config)
        await rt.open()
        try:
            # One warm-up each, so first-use costs (bridge creation, page cache) are not counted.
            await scow_runs(rt, layer, 1, "warmup", network="bridge")
            bare_runc(base / "warmup", layer, 1, config.init_binary)
            out = [bare_runc(base / "bare", layer, runs, config.init_binary)]
            out.append(await scow_run_once(rt, layer, runs))
            out.append(await scow_runs(rt, layer, runs, "scow, network none"))
            out.append(await scow_runs(rt, layer, runs, "scow, network none, conmon logs"))
            out.append(await scow_runs(rt, layer, runs, "scow, bridge", network="bridge"))
            out += await asyncio.to_thread(podman_runs, base / "podman", layer, runs)
            out += await asyncio.to_thread(dockerd_runs, base / "dockerd", layer, runs)
            return out
        finally:
            await rt.reap()
            await asyncio.to_thread(rt.network.remove_bridge)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def report(series: list[Series], runs: int, out: Path, stamp: str) -> str:
    bare = series[0]
    ms = 1000
    podman = {s.name: s for s in series if s.name.startswith("podman")}
    lines = [
        f"## Cold start: busybox `true`, create+start+wait+delete, {runs} runs each",
        "",
        "| variant | median ms | p90 ms | median vs bare runc | median vs podman, same network |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in series:
        ratio = s.median / bare.median
        peer = podman.get("podman run --rm, network its bridge" if "bridge" in s.name
                          else "podman run --rm, network none")  # fmt: skip
        vs_podman = "-"
        if peer is not None and peer is not s:
            x = peer.median / s.median
            vs_podman = f"{x:.1f}x faster" if x >= 1 else f"{1 / x:.1f}x slower"
        lines.append(
            f"| {s.name} | {s.median * ms:.1f} | {s.p(0.9) * ms:.1f} | {ratio:.2f}x | {vs_podman} |"
        )
    if not podman:
        lines.append("\npodman is not installed (`apt-get install podman`): no podman rows.")
    if not any("on dockerd" in s.name for s in series):
        lines.append("\nDocker's engine is not unpacked (./dev loadtest does it): no dockerd row.")
    lines += ["", summary(series)]
    lines += ["", bars(out / f"{stamp}-cold-start.png", "Cold start, median ms", "ms",
                       {s.name: s.median * ms for s in series})]  # fmt: skip
    lines += [
        "",
        "Median ms per phase (scow), and the CPU each container cost (this process and the "
        "children it reaped: runc, ip; a container's own process is not counted):",
        "",
        "| variant | " + " | ".join(PHASES) + " | CPU ms per container |",
        "|---|" + "---:|" * (len(PHASES) + 1),
    ]
    phased: dict[str, dict[str, float]] = {}
    for s in series:
        if not s.phases and not s.cpu:
            continue
        cells = [f"{statistics.median(s.phases[p]) * ms:.1f}" if p in s.phases else "-"
                 for p in PHASES]  # fmt: skip
        cpu = f"{statistics.median(s.cpu) * ms:.1f}" if s.cpu else "-"
        lines.append(f"| {s.name} | " + " | ".join(cells) + f" | {cpu} |")
        if s.phases:
            phased[s.name] = {p: statistics.median(s.phases[p]) * ms for p in PHASES
                              if p in s.phases}  # fmt: skip
    lines += ["", stacked(out / f"{stamp}-phases.png", "A container's life by phase, median ms",
                          "ms", phased)]  # fmt: skip
    return "\n".join(lines) + "\n"


PHASES = ("rootfs", "netns", "create", "start", "run", "wait+remove")


def summary(series: list[Series]) -> str:
    """One line: the goals (network none within 1.5x of bare runc; bridge 4x faster than
    podman's bridge), through the API where it was measured, else the runtime's."""
    by = {s.name: s for s in series}
    bare = series[0].median
    none = by.get("scow API run --rm, network none") or by["scow, network none"]
    bridge = by.get("scow API run --rm, network bridge") or by["scow, bridge"]
    text = (f"Summary: {none.name}: {none.median * 1000:.0f} ms, {none.median / bare:.2f}x bare "
            f"runc (goal 1.5x: {verdict(none.median / bare <= 1.5)}).")
    peer = by.get("podman run --rm, network its bridge")
    if peer is not None:
        faster = peer.median / bridge.median
        text += (f" {bridge.name}: {bridge.median * 1000:.0f} ms, {faster:.1f}x faster than "
                 f"podman with its bridge (goal 4x: {verdict(faster >= 4)}).")
    ours = by.get("docker CLI run --rm on scow, network none")
    theirs = next((s for s in series if "on dockerd" in s.name), None)
    if ours is not None and theirs is not None:
        text += (f" The docker CLI's `run --rm --network none busybox true`: "
                 f"{ours.median * 1000:.0f} ms on scow, {theirs.median * 1000:.0f} ms on "
                 f"Docker's own engine ({theirs.median / ours.median:.1f}x).")
    return text


def run(runs: int, out: Path, stamp: str) -> str:
    series = asyncio.run(measure(runs))
    peers = [s for s in series if s.name.startswith("podman") or "dockerd" in s.name]
    series = [s for s in series if s not in peers] + through_the_api(runs) + peers
    return report(series, runs, out, stamp)
