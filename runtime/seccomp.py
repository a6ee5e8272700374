"""The seccomp filter every container gets: an allow-list, with Docker's default semantics.

One table (below) says what a container may call: every syscall of Docker's
default profile that needs no capability, those that need one (``CAP_SYS_ADMIN``
lets ``mount``, ``unshare``, ``setns`` ... through), a few per architecture, and
``personality`` with the personas Docker allows. Everything else fails with
EPERM: the default action. A test diffs the table against the default profile
that Debian's Docker package ships (tests/runtime/test_seccomp.py).

Where scow refuses more than that profile (``DENIED_BEYOND_DOCKER``): io_uring,
whose rings run syscalls the filter never sees (Docker's own profile dropped it
in 2023, after this one was cut), and ptrace without ``CAP_SYS_PTRACE``.

Two rules are about arguments: ``clone`` without ``CAP_SYS_ADMIN`` may not ask
for new namespaces (a user namespace would hand out every capability again);
``clone3`` puts its flags behind a pointer no filter can read, so it fails with
ENOSYS and libc falls back to ``clone``. runc itself answers ENOSYS for syscalls
newer than any the table names, so libc's fallbacks for them work too.
"""

from __future__ import annotations

import errno
import platform
from typing import Any

# Docker's default profile, the calls that need no capability (io_uring removed).
_ALLOWED = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir
fchmod fchmodat fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr
flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync
ftruncate ftruncate64 futex futex_time64 futex_waitv futimesat getcpu getcwd getdents
getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32
getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid
getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid getsockname
getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr inotify_add_watch
inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents
io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc kill
landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr
link linkat listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64
madvise membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock
mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl msgget
msgrcv msgsnd msync munlock munlockall munmap nanosleep newfstatat _newselect open openat
openat2 pause pidfd_open pidfd_send_signal pipe pipe2 poll ppoll ppoll_time64 prctl
pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64
pwritev pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg
recvmmsg_time64 recvmsg remap_file_pages removexattr rename renameat renameat2
restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo
rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo
sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority
setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid
setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4
sigprocmask sigreturn socket socketcall socketpair splice stat stat64 statfs statfs64
statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create
timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
"""
ALLOWED = tuple(_ALLOWED.split())

# Allowed to a container that holds the capability (``--cap-add``), as in Docker's.
GATED: dict[str, tuple[str, ...]] = {
    "CAP_SYS_ADMIN": (
        "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
        "lookup_dcookie", "mount", "mount_setattr", "move_mount", "name_to_handle_at",
        "open_tree", "perf_event_open", "quotactl", "quotactl_fd", "setdomainname",
        "sethostname", "setns", "syslog", "umount", "umount2", "unshare",
    ),
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_MODULE": ("delete_module", "init_module", "finit_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_PTRACE": ("kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv",
                       "process_vm_writev", "ptrace"),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYS_NICE": ("get_mempolicy", "mbind", "set_mempolicy"),
    "CAP_SYSLOG": ("syslog",),
}  # fmt: skip

# Per architecture (platform.machine()), and the filter's architectures there.
BY_ARCH: dict[str, tuple[str, ...]] = {
    "x86_64": ("arch_prctl", "modify_ldt"),
    "aarch64": ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
                "cacheflush", "set_tls"),
}  # fmt: skip
ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}

# personality(2) with these personas only: PER_LINUX, PER_LINUX32, UNAME26 (each with
# and without PER_LINUX32's bit), and the query 0xffffffff. Not READ_IMPLIES_EXEC
# (0x400000) or ADDR_NO_RANDOMIZE, which weaken the process's own protections.
PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

# Refused here although the profile this table follows allows them: the capability
# that lets each through after all ("" for none), and why.
DENIED_BEYOND_DOCKER: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("io_uring_setup", "io_uring_enter", "io_uring_register"),
                    ("", "io_uring rings run syscalls that no seccomp filter sees")),
    "ptrace": ("CAP_SYS_PTRACE", "a function has no debugger's business with its own or "
               "its neighbours' processes; Docker allows it on kernels from 4.8"),
}  # fmt: skip

# clone flags that make namespaces: refused without CAP_SYS_ADMIN (Docker's mask).
CLONE_NAMESPACES = 0x7E020000


def allowed(capabilities: set[str], machine: str | None = None) -> set[str]:
    """Every syscall a container holding ``capabilities`` may make with any arguments.

    >>> "ptrace" in allowed({"CAP_KILL"}), "ptrace" in allowed({"CAP_SYS_PTRACE"})
    (False, True)
    """
    names = set(ALLOWED) | set(BY_ARCH.get(machine or platform.machine(), ()))
    for cap, calls in GATED.items():
        if cap in capabilities:
            names.update(calls)
    return names


def profile(capabilities: set[str], machine: str | None = None) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object for a container holding ``capabilities``."""
    arch = machine or platform.machine()
    syscalls: list[dict[str, Any]] = [
        {"names": sorted(allowed(capabilities, arch)), "action": "SCMP_ACT_ALLOW"},
        *({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
           "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]}
          for persona in PERSONAS),
    ]  # fmt: skip
    if "CAP_SYS_ADMIN" not in capabilities:
        syscalls += [
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": CLONE_NAMESPACES, "valueTwo": 0,
                       "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
        ]  # fmt: skip
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.EPERM,
        "architectures": ARCHITECTURES.get(arch, []),
        "syscalls": syscalls,
    }
