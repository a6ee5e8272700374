"""A call's answer: its record, its reply to the gateway that asked, its log lines, its
acknowledgment, in one round trip; and the POST to its X-Callback-Url afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import redis.asyncio as aioredis

from pool.contract import keys, outbound
from pool.contract.messages import CallRecord, CallRequest, CallResult

log = logging.getLogger("scow.pool")


class Replier:
    def __init__(self, redis: aioredis.Redis, callback_allow: outbound.Allow) -> None:
        self.redis = redis
        # Where X-Callback-Url may point beyond the public internet (SCOW_CALLBACK_ALLOW).
        self.callback_allow = callback_allow
        self._callbacks: set[asyncio.Task[None]] = set()

    async def reply(
        self, req: CallRequest, result: CallResult, ack: tuple[str, bytes] | None = None,
        logs: Sequence[tuple[str, str]] = (),
    ) -> None:  # fmt: skip
        """Record the result, send it to the gateway that asked, publish the call's log
        lines, then XACK and delete the entry: one round trip."""
        tail = "\n".join(text for _, text in logs[-20:])[-2048:]
        # Async or idempotent calls: the record keeps the result too.
        record = CallRecord.done(result, tail, keep_body=not req.reply_to or req.keep_result)
        key = keys.record_key(req.id)
        # All or nothing (MULTI/EXEC): a reply that failed is sent again whole, and a
        # retry must not add the call's log lines or its invocation twice.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=record)
            pipe.expire(key, keys.RECORD_TTL)
            if req.reply_to:
                pipe.xadd(req.reply_to, result.to_fields(), maxlen=keys.REPLY_MAXLEN)
                # A gateway killed without closing leaves its stream: it goes in an hour.
                pipe.expire(req.reply_to, keys.RECORD_TTL)
            pipe.hincrby(keys.INVOCATIONS, req.function, 1)
            for stream, text in logs:
                line = {"call": req.id, "container": result.container, "stream": stream,
                        "text": text}  # fmt: skip
                pipe.xadd(keys.logs_key(req.function), line,
                          maxlen=keys.LOGS_MAXLEN, approximate=True)  # fmt: skip
            if ack is not None:
                pipe.xack(ack[0], keys.GROUP, ack[1])
                pipe.xdel(ack[0], ack[1])
            await pipe.execute()
        if req.callback:
            task = asyncio.create_task(self._post_callback(req, result))
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)

    async def _post_callback(self, req: CallRequest, result: CallResult) -> None:
        """POST an async call's result to its X-Callback-Url, as OpenFaaS does.

        Where it may go is checked at the moment of connecting (pool/outbound.py): the
        gateway checked the URL, this checks where its name leads now. Two tries; the
        outcome goes into the call record.
        """
        headers = [
            *result.headers,
            ("x-call-id", req.id),
            ("x-function-status", str(result.status)),
        ]
        outcome = ""
        for attempt in range(2):
            try:
                target = outbound.check_url(req.callback, self.callback_allow)
                address = await outbound.resolve(target, self.callback_allow)
                status = await outbound.post(target, address, result.body, headers)
                outcome = str(status)
                if status < 500:
                    break
            except outbound.OutboundRefused as exc:
                outcome = f"refused: {exc.reason}"
                break
            except (OSError, TimeoutError) as exc:
                outcome = f"error: {exc!r}"
            if attempt == 0:
                await asyncio.sleep(1.0)
        with contextlib.suppress(aioredis.RedisError):
            await self.redis.hset(keys.record_key(req.id), "callback", outcome)

    async def close(self) -> None:
        """Let the callbacks under way finish."""
        if self._callbacks:
            await asyncio.gather(*self._callbacks, return_exceptions=True)
