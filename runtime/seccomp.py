"""The seccomp filter every container gets: the syscalls a container has no business making.

Capabilities already stop most of these (mount needs CAP_SYS_ADMIN, which no
container has), but not all: an unprivileged process may create a user
namespace with ``unshare(CLONE_NEWUSER)`` or ``clone``, and inside it holds every
capability again, over new mount and network namespaces; ``ptrace`` and
``process_vm_readv`` need no capability for a process of the same user; ``bpf``,
``userfaultfd``, ``keyctl`` and ``perf_event_open`` are the kernel's usual attack
surface. Docker's default profile refuses the same calls; its allowlist is
longer to keep up to date, so this is a denylist under a default of allow.

A refused call fails with EPERM, as it does under Docker, except ``clone3``:
its flags are behind a pointer a filter cannot read, so it fails with ENOSYS
and libc falls back to ``clone``, whose flags the filter can see.

Adding a capability (``--cap-add SYS_ADMIN``, ``SYS_PTRACE``...) lets through the
calls that capability is about, as Docker does.
"""

from __future__ import annotations

import errno
import platform
from typing import Any

# Syscalls refused unless the container holds the capability named.
_GATED: dict[str, tuple[str, ...]] = {
    "CAP_SYS_ADMIN": (
        "mount", "umount", "umount2", "pivot_root", "unshare", "setns", "mount_setattr",
        "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "quotactl",
        "name_to_handle_at", "lookup_dcookie", "bpf", "perf_event_open", "fanotify_init",
        "setdomainname", "sethostname", "vm86", "vm86old", "syslog",
    ),
    "CAP_SYS_PTRACE": ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp"),
    "CAP_SYS_MODULE": ("init_module", "finit_module", "delete_module", "create_module",
                       "query_module", "get_kernel_syms"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex"),
    "CAP_SYS_BOOT": ("reboot", "kexec_load", "kexec_file_load"),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
}  # fmt: skip
# Refused whatever the capabilities: old or dangerous interfaces with no use in a container.
_ALWAYS = ("add_key", "keyctl", "request_key", "userfaultfd", "uselib", "ustat", "_sysctl",
           "nfsservctl", "swapon", "swapoff")  # fmt: skip
# clone flags that make namespaces; CLONE_NEWUSER is the one that hands out capabilities.
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}  # fmt: skip
_ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def refused(capabilities: set[str]) -> list[str]:
    """The syscalls refused to a container holding ``capabilities`` (``CAP_*`` names).

    >>> "ptrace" in refused({"CAP_KILL"}), "ptrace" in refused({"CAP_SYS_PTRACE"})
    (True, False)
    """
    names = set(_ALWAYS)
    for cap, calls in _GATED.items():
        if cap not in capabilities:
            names.update(calls)
    return sorted(names)


def profile(capabilities: set[str], machine: str | None = None) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object for a container holding ``capabilities``."""
    syscalls: list[dict[str, Any]] = [
        {"names": refused(capabilities), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
    ]
    if "CAP_SYS_ADMIN" not in capabilities:
        # One rule per flag: the conditions of one rule must all hold, and any one of
        # these flags is reason enough. MASKED_EQ compares (arg & value) == valueTwo.
        syscalls.extend(
            {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
             "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]}
            for flag in CLONE_NAMESPACE_FLAGS.values()
        )  # fmt: skip
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": _ARCHITECTURES.get(machine or platform.machine(), []),
        "syscalls": syscalls,
    }
