"""``GET /events``: Docker's event stream, for containers, images and functions.

``since`` and ``until`` are Unix times; ``filters`` is Docker's JSON
(``{"type": ["container"], "event": ["die"], "container": [...], "image": [...],
"label": ["k=v"]}``). Without ``until`` the stream stays open until the client leaves.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from gateway.http import ApiError, docker_filters
from gateway.state import gateway_of

_FILTERS = {"type", "event", "container", "image", "label", "function"}


def parse_filters(raw: str) -> dict[str, list[str]]:
    return docker_filters(raw, _FILTERS)


def matches(e: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    """Whether event ``e`` passes every filter (values of one filter are alternatives).

    >>> e = {"Type": "container", "Action": "die", "Actor": {"ID": "abc", "Attributes": {
    ...     "name": "web", "image": "busybox", "team": "a"}}}
    >>> matches(e, {"type": ["container"], "event": ["start", "die"], "label": ["team=a"]})
    True
    >>> matches(e, {"container": ["other"]})
    False
    """
    return all(any(_check(e, key, v) for v in values) for key, values in filters.items())


def _check(e: dict[str, Any], key: str, value: str) -> bool:
    kind, actor = e["Type"], e["Actor"]["ID"]
    attrs: dict[str, str] = e["Actor"].get("Attributes", {})
    if key == "type":
        return bool(kind == value)
    if key == "event":
        return bool(e["Action"] == value)
    if key == "container":
        return kind == "container" and (actor.startswith(value) or attrs.get("name") == value)
    if key == "image":
        named = kind == "image" and value in (attrs.get("name"), actor)
        return attrs.get("image") == value or named
    if key == "label":
        label, eq, wanted = value.partition("=")
        return attrs.get(label) == wanted if eq else label in attrs
    return attrs.get("scow.function") == value or (kind == "function" and actor == value)


def _stream_id(seconds: str, name: str) -> str:
    try:
        return str(int(float(seconds) * 1000))
    except ValueError:
        raise ApiError(400, "bad_request", f"invalid {name} {seconds!r}: Unix seconds") from None


async def events(request: Request) -> StreamingResponse:
    gw = gateway_of(request)
    q = request.query_params
    filters = parse_filters(q.get("filters", ""))
    start = _stream_id(q["since"], "since") if q.get("since") else None
    until = float(_stream_id(q["until"], "until")) / 1000 if q.get("until") else None

    def wanted(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> tuple[list[bytes], bool]:
        """The matching events of a batch, and whether ``until`` has passed."""
        out: list[bytes] = []
        for _, fields in entries:
            e = json.loads(fields[b"event"])
            if until is not None and e["time"] > until:
                return out, True
            if matches(e, filters):
                out.append(json.dumps(e).encode() + b"\n")
        return out, False

    now = await gw.pool.events_end()  # before answering: no event after this is lost

    async def body() -> AsyncIterator[bytes]:
        cursor = now
        batches = []
        if start is not None:
            batches.append(await gw.pool.events_since(start))
        for entries in batches:
            if entries:
                cursor = entries[-1][0]
            lines, over = wanted(entries)
            for line in lines:
                yield line
            if over:
                return
        async for entries in gw.pool.follow_events(cursor):
            lines, over = wanted(entries)
            for line in lines:
                yield line
            if over or (until is not None and time.time() >= until):
                return

    return StreamingResponse(body(), media_type="application/json")


routes = [Route("/events", events, methods=["GET"])]
