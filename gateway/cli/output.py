"""How the CLI talks back: tables for people, JSON for scripts, exit codes to rely on.

Exit codes: 0 done; 1 the API refused or failed (the message says why); 2 bad
usage; 3 scow could not be reached; 4 not found.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, ParamSpec, TypeVar

import click

from gateway.client import ApiClient, ApiClientError, Endpoint
from pool.contract.errors import InvalidSpec

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND = 1, 2, 3, 4

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

format_option = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="table for people, json for scripts",
)  # fmt: skip


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"scow: {message}", err=True)
    sys.exit(code)


def exit_code(exc: ApiClientError) -> int:
    if exc.status == 0:
        return EXIT_UNREACHABLE
    if exc.status == 404:
        return EXIT_NOT_FOUND
    return EXIT_FAILED


def api_command(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn an API error into its message on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ApiClientError as exc:
            fail(exc.message, exit_code(exc))

    return wrapper


def client() -> ApiClient:
    ctx = click.get_current_context()
    root = ctx.find_root()
    found: ApiClient | None = root.meta.get("scow.client")
    if found is None:
        found = ApiClient(Endpoint.from_env())
        root.meta["scow.client"] = found
        root.call_on_close(found.close)
    return found


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def emit(value: Any, fmt: str, rows: Callable[[Any], Sequence[Sequence[Any]]],
         headers: Sequence[str]) -> None:  # fmt: skip
    if fmt == "json":
        click.echo(json.dumps(value, indent=2))
    else:
        table(rows(value), headers)


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n:.3g}TB"


def key_values(pairs: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"invalid {what} {pair!r}: expected KEY=VALUE", EXIT_USAGE)
        out[key] = value
    return out


def each(method: str, path: str, refs: Sequence[str], **params: Any) -> None:
    """The same request for each of ``refs`` (``path`` has ``{}`` for it), echoing each."""
    api = client()
    for ref in refs:
        api.request(method, path.format(ref), params=params)
        click.echo(ref)


def checked(parse: Callable[..., T], *args: Any) -> T:
    """A contract parser's value, or its error (which names the value) as a usage error."""
    try:
        return parse(*args)
    except InvalidSpec as exc:
        fail(str(exc), EXIT_USAGE)
