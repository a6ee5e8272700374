"""OCI runtime-spec config.json for a container, as a plain function of its inputs.

Everything here is pure: the caller resolves the user, lays out the rootfs and
the network namespace, then asks for the config. The security defaults follow
runc's own ``runc spec`` and DESIGN.md: three capabilities, no_new_privileges,
masked and read-only /proc paths, a seccomp filter (runtime/seccomp.py), and
memory, cpu shares and pids always set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import seccomp
from runtime.errors import InvalidOption
from runtime.spec import RLIMITS, ImageConfig, RunOptions, merge_env
from runtime.users import User

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CAPABILITIES = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
INIT_PATH = "/dev/init"  # where the init binary is bound; /dev is a tmpfs, so even
# a read-only rootfs has room for it (podman's choice too).

MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]  # fmt: skip
READONLY_PATHS = [
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
]  # fmt: skip


@dataclass(frozen=True)
class Mount:
    destination: str
    source: str
    type: str = "bind"
    options: tuple[str, ...] = ()

    def to_oci(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "type": self.type,
            "source": self.source,
            "options": list(self.options),
        }


def resolve_args(image: ImageConfig, opts: RunOptions) -> list[str]:
    """Entrypoint + cmd as Docker combines them.

    An entrypoint override drops the image's cmd unless a command is also given.

    >>> resolve_args(ImageConfig(entrypoint=("a",), cmd=("b",)), RunOptions(command=("c",)))
    ['a', 'c']
    """
    if opts.entrypoint is not None:
        entrypoint = list(opts.entrypoint)
        cmd = list(opts.command) if opts.command is not None else []
    else:
        entrypoint = list(image.entrypoint or ())
        cmd = list(opts.command if opts.command is not None else image.cmd or ())
    return entrypoint + cmd


def base_mounts(read_only: bool, tmpfs: dict[str, int]) -> list[Mount]:
    """/proc, /dev, /sys and friends; tmpfs on /tmp and /run for read-only containers."""
    nosuid = ("nosuid", "noexec", "nodev")
    mounts = [
        Mount("/proc", "proc", "proc", nosuid),
        Mount("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
        Mount("/dev/pts", "devpts", "devpts",
              ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")),
        Mount("/dev/shm", "shm", "tmpfs", (*nosuid, "mode=1777", "size=65536k")),
        Mount("/dev/mqueue", "mqueue", "mqueue", nosuid),
        Mount("/sys", "sysfs", "sysfs", (*nosuid, "ro")),
        Mount("/sys/fs/cgroup", "cgroup", "cgroup", (*nosuid, "relatime", "ro")),
    ]  # fmt: skip
    sizes = dict(tmpfs)
    if read_only:
        sizes.setdefault("/tmp", 64 << 20)
        sizes.setdefault("/run", 16 << 20)
    for path, size in sorted(sizes.items()):
        mode = "1777" if path == "/tmp" else "755"
        mounts.append(
            Mount(path, "tmpfs", "tmpfs", ("nosuid", "nodev", f"mode={mode}", f"size={size}"))
        )
    return mounts


def make_config(
    image: ImageConfig,
    opts: RunOptions,
    *,
    user: User,
    hostname: str,
    rootfs: Path,
    cgroups_path: str,
    extra_mounts: list[Mount],
    netns_path: str | None,
    init_binary: str | None,
    nofile_hard: int = 1 << 20,
) -> dict[str, Any]:
    args = resolve_args(image, opts)
    if not args:
        raise InvalidOption("command", "", "the image has no command and none was given")
    if opts.init and init_binary:
        args = [INIT_PATH, "--", *args]
        extra_mounts = [*extra_mounts, Mount(INIT_PATH, init_binary, "bind", ("bind", "ro"))]
    env = merge_env(
        [DEFAULT_PATH, f"HOSTNAME={hostname}", f"HOME={user.home}"], image.env, opts.env
    )
    dropped = {"CAP_" + c.upper().removeprefix("CAP_") for c in opts.cap_drop}
    base = set() if "CAP_ALL" in dropped else set(CAPABILITIES) - dropped
    caps = sorted(base | {"CAP_" + c.upper().removeprefix("CAP_") for c in opts.cap_add})
    rlimits = {"RLIMIT_NOFILE": (min(1024, nofile_hard), nofile_hard)}
    for u in opts.ulimits:
        rlimits[RLIMITS[u.name]] = (u.soft, u.hard)

    namespaces: list[dict[str, str]] = [
        {"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup")
    ]
    if opts.network != "host":
        namespaces.append(
            {"type": "network", "path": netns_path} if netns_path else {"type": "network"}
        )

    resources: dict[str, Any] = {
        "devices": [{"allow": False, "access": "rwm"}],
        "memory": {"limit": opts.memory},
        "cpu": {"shares": opts.cpu_shares},
        "pids": {"limit": opts.pids_limit},
    }
    if opts.cpuset_cpus:
        resources["cpu"]["cpus"] = opts.cpuset_cpus
    if opts.cpu_quota:
        resources["cpu"]["quota"] = opts.cpu_quota
        resources["cpu"]["period"] = opts.cpu_period or 100_000

    mounts = base_mounts(opts.read_only, dict(opts.tmpfs)) + extra_mounts
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": opts.tty,
            **({"consoleSize": {"height": opts.console[0], "width": opts.console[1]}}
               if opts.tty and all(opts.console) else {}),
            "user": {
                "uid": user.uid,
                "gid": user.gid,
                **({"additionalGids": list(user.additional_gids)} if user.additional_gids else {}),
            },
            "args": args,
            "env": env,
            "cwd": opts.workdir or image.working_dir or "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": [
                {"type": name, "soft": soft, "hard": hard}
                for name, (soft, hard) in sorted(rlimits.items())
            ],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": opts.read_only},
        "hostname": hostname,
        "mounts": [m.to_oci() for m in mounts],
        "linux": {
            "resources": resources,
            "cgroupsPath": cgroups_path,
            "namespaces": namespaces,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": seccomp.profile(set(caps)),
        },
    }
