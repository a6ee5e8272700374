"""A call's answer: its record, its reply to the gateway that asked, its log lines, its
acknowledgment, in one round trip; and the POST to its X-Callback-Url afterwards.

What is in the function's slot (record, count, log lines, the entry's acknowledgment)
is one script, at most once: a retry after a reply that failed finds the record done
and adds no log line or count again. The reply goes to the asking gateway's stream in
the same pipeline (another slot, on a Redis Cluster another shard).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from pool.contract import keys, outbound
from pool.contract.messages import CallRecord, CallRequest, CallResult

log = logging.getLogger("scow.pool")

# KEYS: the record, the invocations counter, the log stream, the calls stream. ARGV: the
# record's TTL, the entry to acknowledge ("": none), the logs' maxlen, the record's field
# count N, its N field-value pairs, then (call, container, stream, text) per log line.
_DONE = """
local n = tonumber(ARGV[4])
local first = redis.call('HGET', KEYS[1], 'state') ~= 'done'
local fields = {}
for i = 5, 4 + 2 * n do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[1])
if first then
  redis.call('INCR', KEYS[2])
  for i = 5 + 2 * n, #ARGV, 4 do
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'call', ARGV[i],
               'container', ARGV[i + 1], 'stream', ARGV[i + 2], 'text', ARGV[i + 3])
  end
end
if ARGV[2] ~= '' then
  redis.call('XACK', KEYS[4], 'nodes', ARGV[2])
  redis.call('XDEL', KEYS[4], ARGV[2])
end
return first and 1 or 0
"""
_DONE_SHA = hashlib.sha1(_DONE.encode()).hexdigest()


class Replier:
    def __init__(self, redis: aioredis.Redis, callback_allow: outbound.Allow) -> None:
        self.redis = redis
        # Where X-Callback-Url may point beyond the public internet (SCOW_CALLBACK_ALLOW).
        self.callback_allow = callback_allow
        self._callbacks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        """Load the reply's script (a first reply would otherwise load it on the way)."""
        await self.redis.script_load(_DONE)

    async def reply(
        self, req: CallRequest, result: CallResult, ack: tuple[str, bytes] | None = None,
        logs: Sequence[tuple[str, str]] = (),
    ) -> None:  # fmt: skip
        """Record the result, send it to the gateway that asked, publish the call's log
        lines, then XACK and delete the entry: one round trip."""
        tail = "\n".join(text for _, text in logs[-20:])[-2048:]
        # Async or idempotent calls: the record keeps the result too.
        record = CallRecord.done(result, tail, keep_body=not req.reply_to or req.keep_result)
        fn = req.function
        argv: list[Any] = [keys.RECORD_TTL, ack[1] if ack is not None else "",
                           keys.LOGS_MAXLEN, len(record)]  # fmt: skip
        for field, value in record.items():
            argv += [field, value]
        for stream, text in logs:
            argv += [req.id, result.container, stream, text]
        script_keys = [keys.record_key(req.id), keys.invocations_key(fn), keys.logs_key(fn),
                       ack[0] if ack is not None else keys.calls_key(fn)]  # fmt: skip
        for attempt in (0, 1):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.evalsha(_DONE_SHA, len(script_keys), *script_keys, *argv)
                    if req.reply_to:
                        pipe.xadd(req.reply_to, result.to_fields(), maxlen=keys.REPLY_MAXLEN)
                        # A gateway killed without closing leaves its stream: gone in an hour.
                        pipe.expire(req.reply_to, keys.RECORD_TTL)
                    await pipe.execute()
                break
            except aioredis.ResponseError as exc:
                if "NOSCRIPT" not in str(exc) or attempt:
                    raise
                # A Redis that restarted (or a shard new to it) lacks the script: load it
                # and send again (the script adds nothing twice; the reply, if it went,
                # is ignored the second time by the gateway).
                await self.redis.script_load(_DONE)
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
