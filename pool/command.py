"""What every node command is given and may raise (see commands.py for the commands)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pool.contract.messages import Failure

if TYPE_CHECKING:
    from pool.manager import PoolManager


async def _never() -> bool:
    return False


async def _nowhere(chunk: bytes) -> None:
    raise CommandError("invalid", "this command's output has nowhere to go")


@dataclass(frozen=True)
class Command:
    """One command's input: JSON arguments, bulk bytes, and where progress lines go."""

    args: dict[str, Any]
    blob: bytes = b""
    # Thread-safe: bootstraps and builds report from worker threads too.
    progress: Callable[[str], None] = lambda line: None
    # Bulk output (an image archive), in order, at the pace the caller reads it.
    send: Callable[[bytes], Awaitable[None]] = _nowhere
    # True once the caller went away or the node is stopping: commands that follow or
    # wait (logs -f, attach, wait) check it between steps and end.
    cancelled: Callable[[], Awaitable[bool]] = _never


OUTPUT_CHUNK = 1 << 20


Handler = Callable[["PoolManager", Command], Awaitable[Any]]


class CommandError(Exception):
    """A command that failed, and how (one of pool.contract.messages.FAILURES): the
    gateway answers each way with its HTTP status."""

    def __init__(self, error: Failure, message: str) -> None:
        self.error, self.message = error, message
        super().__init__(message)


def required(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise CommandError("invalid", f"argument {key!r} is required")
    return value


def strings(args: dict[str, Any], key: str) -> dict[str, str]:
    value = args.get(key) or {}
    if not isinstance(value, dict):
        raise CommandError("invalid", f"argument {key!r} must be an object")
    return {str(k): str(v) for k, v in value.items()}
