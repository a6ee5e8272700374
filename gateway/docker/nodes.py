"""What the Docker routes share: finding the node that has a container, running a node
command there, and streaming a command's output to the client as Docker's frames.

A node answers in scow's words; its output comes tagged with its stream and becomes
Docker's multiplexed frames here (``frames``), going to the client as it comes: on
a hijacked connection (``101 UPGRADED``) when the client asked for one, as the
docker CLI does, or else as a plain streamed body.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.docker.detach import (
    DEFAULT_DETACH_KEYS,
    Detacher,
    DetachKeysError,
    parse_detach_keys,
)
from gateway.docker.frames import framed
from gateway.docker.hijack import (
    MULTIPLEXED_STREAM,
    RAW_STREAM,
    Hijacked,
    RawStream,
    can_hijack,
    hijack,
)
from gateway.http import ApiError
from gateway.state import Gateway, gateway_of
from pool.contract.messages import ContainerInfo

FOLLOW_TIMEOUT = 7 * 86400.0  # a followed stream ends with its container, not before
COMMAND_TIMEOUT = 120.0


def flag(request: Request, key: str, default: bool = False) -> bool:
    value = request.query_params.get(key)
    if value is None:
        return default
    return value.lower() in ("1", "true", "yes")


def terminal_size(request: Request) -> dict[str, int]:
    """``?h=ROWS&w=COLUMNS``, as the docker CLI sends a terminal's size."""
    out = {}
    for key in ("h", "w"):
        value = request.query_params.get(key, "")
        if not value.isdigit():
            raise ApiError(400, "bad_request", f"invalid {key} {value!r}: a whole number")
        out[key] = int(value)
    return out


async def node_of(gw: Gateway, ref: str) -> str:
    """The node that has container ``ref`` (id, name or id prefix); "" (any node) when
    that is not known or the node is not live."""
    found = ""
    prefixed = []
    for cid, info in (await gw.pool.container_nodes()).items():
        if ref in (cid, info["name"]):
            found = str(info["node"])
            break
        if cid.startswith(ref):
            prefixed.append(str(info["node"]))
    else:
        found = prefixed[0] if len(prefixed) == 1 else ""
    if found and not (await gw.nodes()).get(found, {}).get("live"):
        return ""
    return found


async def command(
    request: Request, name: str, args: dict[str, Any] | None = None, **kw: Any
) -> Any:
    gw = gateway_of(request)
    ref = request.path_params.get("id", "")
    node = await node_of(gw, ref) if ref else ""
    args = {"id": ref, **(args or {})} if ref else (args or {})
    kw.setdefault("timeout", COMMAND_TIMEOUT)
    return await gw.command(name, args, node=node, **kw)


async def containers_everywhere(
    gw: Gateway, everything: bool
) -> list[tuple[str, ContainerInfo]]:
    """Every live node's containers (all, or the running ones), with their node."""
    live = [node for node, info in (await gw.nodes()).items() if info["live"]]
    if not live:
        raise ApiError(503, "no_node", "container list: no node is up")
    parts = await asyncio.gather(*(
        gw.command("container.list", {"all": everything}, node=n, timeout=COMMAND_TIMEOUT)
        for n in live))  # fmt: skip
    return [(n, ContainerInfo.from_json(r)) for n, part in zip(live, parts, strict=True)
            for r in part]  # fmt: skip


async def frames(
    request: Request, name: str, args: dict[str, Any], *, stdin: bool = False,
    options: dict[str, bool] | None = None, detach_keys: str = "",
) -> Response:
    """Run a streaming node command; its frames go to a hijacked connection when the client
    asked for one, or else to a streamed body.

    The node sends an empty chunk once it is ready (attached, or the exec started), so
    that a failure before then (no such container) is still a proper HTTP answer, and so
    that ``docker run`` starts the container only after its output is being read. Its
    stream (``tty`` or not) says whether the output is a terminal's, sent raw, or frames.
    With ``stdin`` (on a hijacked connection) what the client sends goes to the node as
    it comes, until it closes its side or types the detach keys, which end the attach
    and leave the container running.
    """
    gw = gateway_of(request)
    ref = request.path_params.get("id", "")
    node = str(args.pop("node", "")) or (await node_of(gw, ref) if ref else "")
    if ref:
        args = {"id": ref, **args}
    if not any(n["live"] for n in (await gw.nodes()).values()):
        raise ApiError(503, "no_node", f"{name}: no node is up to do it")
    try:
        detacher = Detacher(parse_detach_keys(detach_keys or DEFAULT_DETACH_KEYS))
    except DetachKeysError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    hijacking = can_hijack(request)
    typed: asyncio.Queue[bytes | None] | None = asyncio.Queue() if stdin and hijacking else None
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=4)
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[tuple[ApiError | None, str]] = loop.create_future()

    async def output(chunk: bytes, kind: str) -> None:
        if not ready.done():
            ready.set_result((None, kind))
        if chunk and (data := framed(kind, chunk, options or {})):
            await chunks.put(data)

    async def run() -> None:
        try:
            await gw.command(name, args, node=node, timeout=FOLLOW_TIMEOUT, output=output,
                             input=typed)  # fmt: skip
        except ApiError as exc:
            if not ready.done():
                ready.set_result((exc, ""))
        finally:
            if not ready.done():
                ready.set_result((None, ""))
            await chunks.put(None)

    task = asyncio.create_task(run())

    async def body() -> AsyncIterator[bytes]:
        try:
            while (chunk := await chunks.get()) is not None:
                yield chunk
        finally:
            if not task.done():  # the client went away: the node stops following
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    failed, kind = await ready
    if failed is not None:
        raise failed
    raw = kind in ("tty", "tty-log")
    if not hijacking:
        return StreamingResponse(body(), media_type=RAW_STREAM if raw else MULTIPLEXED_STREAM)
    stream = await hijack(request, RAW_STREAM if raw else MULTIPLEXED_STREAM)
    reading = asyncio.create_task(_typed(stream, typed, detacher)) if typed else None
    try:
        sending = asyncio.ensure_future(_send_all(stream, body()))
        waits = {sending} if reading is None else {sending, reading}
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if sending not in done and detacher.detached:  # typed away: the container runs on
            sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sending
    finally:
        if reading is not None:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
        stream.close()
    return Hijacked()


async def _send_all(stream: RawStream, chunks: AsyncIterator[bytes]) -> None:
    try:
        async for chunk in chunks:
            await stream.write(chunk)
    except ConnectionError:
        pass  # the client left; body()'s cleanup stopped the command


async def _typed(
    stream: RawStream, typed: asyncio.Queue[bytes | None], detacher: Detacher
) -> None:
    """What the client sends, to ``typed``, until it closes its side (None then) or types
    the detach keys (then this returns, and the attach ends)."""
    while data := await stream.read():
        data = detacher.feed(data)
        if data:
            await typed.put(data)
        if detacher.detached:
            return
    await typed.put(None)
    await asyncio.Event().wait()  # stdin ended; the output goes on until the command ends
