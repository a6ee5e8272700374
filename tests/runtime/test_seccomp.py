"""The seccomp allow-list: diffed against Docker's default profile, and tried in containers.

Docker's profile is read from Debian's golang-github-docker-docker-dev package, which
``./dev test`` fetches and unpacks (no copy of it lives in this repository); set
SCOW_DOCKER_SECCOMP to read another.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from images.store import ImageStore
from runtime import seccomp
from runtime.engine import Runtime
from runtime.spec import RunOptions

REPO = Path(__file__).resolve().parents[2]
DOCKER_PROFILE = Path(
    os.environ.get("SCOW_DOCKER_SECCOMP")
    or REPO / ".venv/share/docker-seccomp/profiles/seccomp/default.json"
)


def docker_allows(profile: dict[str, Any], caps: set[str], arch: str) -> set[str]:
    """What Docker's profile lets a container with ``caps`` on ``arch`` call with any
    arguments (its includes and excludes applied, as moby's loader does)."""
    out: set[str] = set()
    for rule in profile["syscalls"]:
        if rule["action"] != "SCMP_ACT_ALLOW" or rule.get("args"):
            continue
        inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
        if inc.get("arches") and arch not in inc["arches"]:
            continue
        if inc.get("caps") and not set(inc["caps"]) <= caps:
            continue
        if exc.get("caps") and set(exc["caps"]) & caps:
            continue
        if inc.get("minKernel"):
            pass  # every kernel scow runs on is newer than its minimums
        out.update(rule["names"])
    return out


@pytest.mark.parametrize("caps", [
    set(), {"CAP_SYS_ADMIN"}, {"CAP_SYS_PTRACE"}, {"CAP_SYS_CHROOT", "CAP_SYS_TIME"},
    set(seccomp.GATED),
], ids=["none", "sys_admin", "sys_ptrace", "chroot+time", "all"])  # fmt: skip
def test_the_table_allows_what_dockers_default_profile_allows(caps: set[str]) -> None:
    assert DOCKER_PROFILE.is_file(), f"{DOCKER_PROFILE}: run ./dev test, which fetches it"
    profile = json.loads(DOCKER_PROFILE.read_text())
    docker = docker_allows(profile, caps, "amd64")
    ours = seccomp.allowed(caps, "x86_64")
    assert ours - docker == set(), "allowed here, not by Docker"
    beyond = {n for n, (needs, _) in seccomp.DENIED_BEYOND_DOCKER.items() if needs not in caps}
    assert docker - ours == beyond, "Docker's, refused here"


def test_personality_and_clone_keep_dockers_argument_rules() -> None:
    profile = json.loads(DOCKER_PROFILE.read_text())
    docker_personas = {r["args"][0]["value"] for r in profile["syscalls"]
                       if r["names"] == ["personality"]}  # fmt: skip
    assert docker_personas == set(seccomp.PERSONAS)
    clone = next(r for r in profile["syscalls"]
                 if r["names"] == ["clone"] and not r.get("includes"))  # fmt: skip
    assert clone["args"][0]["value"] == seccomp.CLONE_NAMESPACES
    ours = seccomp.profile(set(), "x86_64")
    assert ours["defaultAction"] == "SCMP_ACT_ERRNO" and ours["defaultErrnoRet"] == 1
    assert not any(r["names"] == ["clone"] for r in seccomp.profile({"CAP_SYS_ADMIN"})["syscalls"])


PROBE = """
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
def call(n, *args):
    ctypes.set_errno(0)
    r = libc.syscall(n, *args)
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
print("io_uring_setup", call(425, 1, None))
print("personality-0x400000", call(135, ctypes.c_ulong(0x400000)))
print("personality-query", call(135, ctypes.c_ulong(0xffffffff)))
print("getpid", call(39))
"""


@pytest.mark.slow
@pytest.mark.parametrize("cap_add", [(), ("SYS_ADMIN",)], ids=["default", "sys_admin"])
async def test_io_uring_and_odd_personas_fail_with_eperm_in_a_container(
    runtime: Runtime, python_images: ImageStore, cap_add: tuple[str, ...]
) -> None:
    image = python_images.get("scow/python")
    rec = await runtime.create(
        image.run_config, python_images.layer_dirs(image),
        RunOptions(command=("python3", "-c", PROBE), cap_add=cap_add),
    )  # fmt: skip
    try:
        await runtime.start(rec.id)
        await runtime.wait(rec.id)
        out = dict(ln.text.split() for ln in runtime.logs(rec.id))
    finally:
        await runtime.remove(rec.id, force=True)
    assert out == {"io_uring_setup": "EPERM", "personality-0x400000": "EPERM",
                   "personality-query": "ok", "getpid": "ok"}, out  # fmt: skip
