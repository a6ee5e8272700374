"""The runtime's exceptions: one root, subclasses that carry what went wrong."""

from __future__ import annotations

from collections.abc import Sequence


class ContainerError(Exception):
    """Root of everything runtime/ raises on purpose."""


class InvalidOption(ContainerError):
    """A run option or image field that cannot be used, with the value and the reason."""

    def __init__(self, option: str, value: object, reason: str) -> None:
        self.option, self.value, self.reason = option, value, reason
        super().__init__(f"invalid {option} {value!r}: {reason}")


class NotFound(ContainerError):
    def __init__(self, kind: str, name: str) -> None:
        self.kind, self.name = kind, name
        super().__init__(f"no such {kind}: {name}")


class Conflict(ContainerError):
    """The request is well-formed but clashes with the host's state (a name or port in use)."""


class RuncError(ContainerError):
    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        self.args_, self.returncode, self.stderr = list(args), returncode, stderr.strip()
        verb = " ".join(a for a in args[1:3] if not a.startswith("-"))
        super().__init__(f"runc {verb} failed (exit {returncode}): {self.stderr}")


class CgroupError(ContainerError):
    def __init__(self, path: str, data: str, reason: str) -> None:
        self.path, self.data = path, data
        super().__init__(f"failed to write {data!r} to {path}: {reason}")


class NetworkError(ContainerError):
    pass
