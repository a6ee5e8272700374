"""What a container may not do: write its rootfs, read the kernel's memory, leave
its namespaces, trace other processes, see the host's open files."""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.redisd import RedisServer
from images.store import ImageStore
from runtime.engine import Runtime
from runtime.spec import RunOptions
from tests.processes import GatewayProcess
from tests.runtime.helpers import BUSYBOX, run
from tests.utils import wait_until


async def test_rootfs_proc_and_namespaces_are_locked_down(
    runtime: Runtime, busybox_layer: Path
) -> None:
    script = (
        "exec 2>&1; "
        "touch /etc/x; "
        "if [ -e /proc/kcore ]; then echo kcore=$(wc -c < /proc/kcore); else echo kcore=0; fi; "
        "echo 3 > /proc/sys/vm/drop_caches; "
        "unshare -U -r true; echo unshare-user=$?; "
        "unshare -n true; echo unshare-net=$?; "
        "mount -t tmpfs none /mnt; echo mount=$?"
    )
    r = await run(runtime, busybox_layer, "sh", "-c", script, read_only=True)
    lines = r.out.splitlines()
    assert "touch: /etc/x: Read-only file system" in lines, r.out
    assert "kcore=0" in lines, r.out  # masked, or (on some kernels) not there at all
    assert any("/proc/sys/vm/drop_caches" in ln and "Read-only" in ln for ln in lines), r.out
    for check in ("unshare-user", "unshare-net", "mount"):
        codes = [ln.split("=", 1)[1] for ln in lines if ln.startswith(check + "=")]
        assert codes and codes[0] != "0", f"{check} succeeded:\n{r.out}"
    assert r.out.count("Operation not permitted") >= 2, r.out


async def test_no_host_file_is_open_inside(runtime: Runtime, busybox_layer: Path) -> None:
    """Only stdin, stdout and stderr, in the container's process and in its init."""
    r = await run(runtime, busybox_layer, "sh", "-c",
                  "ls -l /proc/self/fd /proc/1/fd | grep -- '->'")  # fmt: skip
    fds = {}
    for line in r.out.splitlines():
        name, target = line.split(" -> ")
        fds.setdefault(name.split()[-1], []).append(target)
    # ls's own fd 3 is the directory it lists.
    assert set(fds) <= {"0", "1", "2", "3"}, r.out
    for target in fds.get("3", []):
        assert target.startswith("/proc/"), r.out
    for fd in ("0", "1", "2"):
        for target in fds[fd]:
            assert target == "/dev/null" or target.startswith(("pipe:", "socket:")), r.out


async def test_orphans_are_reaped(runtime: Runtime, busybox_layer: Path) -> None:
    # The subshell exits at once; its sleep is orphaned to pid 1, which must reap it.
    script = "for i in 1 2 3 4 5; do (sleep 0.1 &); done; sleep 1; ps -o pid,stat,comm"
    r = await run(runtime, busybox_layer, "sh", "-c", script)
    rows = [ln.split() for ln in r.out.splitlines()[1:]]
    assert rows, r.out
    assert not [row for row in rows if row[1].startswith("Z")], r.out


PTRACE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
pid = os.fork()
if pid == 0:
    os._exit(0 if libc.ptrace(0, 0, 0, 0) == 0 else ctypes.get_errno())  # PTRACE_TRACEME
print("ptrace", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print("unshare", libc.unshare(0x10000000), ctypes.get_errno())  # CLONE_NEWUSER
"""


async def test_ptrace_and_user_namespaces_are_refused_unless_granted(
    runtime: Runtime, python_images: ImageStore
) -> None:
    image = python_images.get("scow/python")
    layers = python_images.layer_dirs(image)

    async def probe(**opts: object) -> list[str]:
        from runtime.spec import RunOptions

        options = RunOptions(command=("python3", "-c", PTRACE), **opts)  # type: ignore[arg-type]
        rec = await runtime.create(image.run_config, layers, options)
        try:
            await runtime.start(rec.id)
            await runtime.wait(rec.id)
            return [ln.text for ln in runtime.logs(rec.id)]
        finally:
            await runtime.remove(rec.id, force=True)

    assert await probe() == ["ptrace 1", "unshare -1 1"]  # EPERM, both
    # The capability lets its own calls through, as under Docker.
    assert (await probe(cap_add=("SYS_PTRACE",)))[0] == "ptrace 0"


async def test_a_function_container_reaches_neither_the_api_nor_redis(
    runtime: Runtime, busybox_layer: Path, gateways: Callable[..., GatewayProcess],
    redis_server: RedisServer,
) -> None:  # fmt: skip
    """The gateway listens on 127.0.0.1 and Redis on a Unix socket: from the bridge, the
    host's address has neither. A server of the test's own on the host's bridge address
    shows that the probe does reach what is there."""
    gateway = gateways()
    gateway.start()
    await asyncio.to_thread(runtime.network.ensure_bridge)  # made by the first attach else
    host = str(runtime.network.gateway)
    control = await asyncio.start_server(lambda r, w: w.close(), host, 0)
    control_port = control.sockets[0].getsockname()[1]
    probe = " ".join(
        f"nc -w 2 {addr} {port} </dev/null >/dev/null 2>&1; echo {name}=$?;"
        for name, addr, port in (("control", host, control_port), ("api", host, gateway.port),
                                 ("api-loopback", "127.0.0.1", gateway.port))
    )  # fmt: skip
    probe += f" ls {redis_server.socket_path} >/dev/null 2>&1; echo redis-socket=$?"
    try:
        r = await run(runtime, busybox_layer, "sh", "-c", probe, network="bridge",
                      isolated=True)  # fmt: skip
    finally:
        control.close()
        await control.wait_closed()
    codes = dict(line.split("=") for line in r.out.split())
    assert codes["control"] == "0", r.out
    assert codes["api"] != "0" and codes["api-loopback"] != "0", r.out
    assert codes["redis-socket"] != "0", r.out


@pytest.fixture
def host_user() -> Iterator[str]:
    """An unprivileged user of the host's own, removed afterwards."""
    name = f"scowprobe{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", name],
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=True, capture_output=True)


async def test_a_host_user_cannot_read_the_state_or_run_a_containers_setuid_file(
    runtime: Runtime, busybox_layer: Path, host_user: str
) -> None:
    """A root container plants a setuid-root copy of busybox in its upperdir: no host user
    can run it, or read anything under the state dir."""
    rec = await runtime.create(BUSYBOX, [busybox_layer], RunOptions(
        command=("sh", "-c", "cp /bin/busybox /suid && chmod 4755 /suid && sleep 30")))  # fmt: skip
    try:
        await runtime.start(rec.id)
        paths = runtime.paths(rec.id)
        planted_file = paths.upper / "suid"
        wait_until(lambda: planted_file.exists() and os.stat(planted_file).st_mode & 0o4000,
                   10, "the setuid file")  # fmt: skip

        def as_user(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["runuser", "-u", host_user, "--", *argv],
                                  capture_output=True, text=True, timeout=30)  # fmt: skip

        for path in (runtime.config.state_dir, runtime.config.run_dir, paths.upper):
            listed = as_user("ls", str(path))
            assert listed.returncode != 0 and "Permission denied" in listed.stderr, listed
        for planted in (paths.upper / "suid", paths.rootfs / "suid"):
            ran = as_user(str(planted), "id", "-u")
            assert ran.returncode != 0 and "0" not in ran.stdout.split(), ran
        mounted = Path("/proc/self/mountinfo").read_text()
        line = next(ln for ln in mounted.splitlines() if f" {paths.rootfs} " in ln)
        assert "nosuid" in line.split()[5] and "nodev" in line.split()[5], line
        for path in (runtime.config.state_dir, runtime.config.run_dir, paths.root):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
        assert stat.S_IMODE(os.stat(paths.bundle / "config.json").st_mode) == 0o600
    finally:
        await runtime.remove(rec.id, force=True)
