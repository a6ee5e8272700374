"""A function worker's deadlines and its patience with Redis: on fakes (no containers,
no Redis). What is checked is what the gateway is told, and what is left for the
take-over."""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis

from images.errors import ImageNotFound
from pool.contract import keys
from pool.contract.messages import CallRequest, CallResult
from pool.contract.specs import FunctionSpec
from pool.instances import Instance, InstanceError
from pool.registries import Registries
from pool.worker import FunctionWorker, WorkerParts

SPEC = FunctionSpec(name="f", image="img")


@dataclass
class Replies:
    """The replier: what the gateway would be told; fails its first ``failing`` tries."""

    failing: int = 0
    sent: list[tuple[CallRequest, CallResult, Any]] = field(default_factory=list)
    tries: int = 0

    async def reply(self, req: CallRequest, result: CallResult, ack: Any = None,
                    logs: Any = ()) -> None:  # fmt: skip
        self.tries += 1
        if self.tries <= self.failing:
            raise aioredis.ConnectionError("Redis is away")
        self.sent.append((req, result, ack))


class Pipeline:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.commands: list[tuple[str, Any]] = []

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def hset(self, *args: Any, **kw: Any) -> None:
        self.commands.append(("hset", args))

    def hincrby(self, *args: Any) -> None:
        self.commands.append(("hincrby", args))

    async def execute(self) -> None:
        if self.fail:
            raise aioredis.ConnectionError("Redis is away")


class FakeRedis:
    def __init__(self, fail: bool = False) -> None:
        self.pipelines: list[Pipeline] = []
        self.fail = fail

    def pipeline(self, transaction: bool = True) -> Pipeline:
        self.pipelines.append(Pipeline(self.fail))
        return self.pipelines[-1]


class Images:
    def __init__(self, missing: bool = False) -> None:
        self.missing = missing

    def get(self, ref: str) -> Any:
        if self.missing:
            raise ImageNotFound(ref)
        return SimpleNamespace(run_config=None)

    def layer_dirs(self, image: Any) -> list[Any]:
        return []


class Metrics:
    def __init__(self) -> None:
        self.answered_with: list[CallResult] = []

    def answered(self, function: str, result: CallResult) -> None:
        self.answered_with.append(result)

    def started(self, inst: Instance) -> None:
        pass


class StuckPool:
    """A warm pool whose instances never come, or whose cold starts fail."""

    def __init__(self, error: str = "") -> None:
        self.error = error

    async def acquire(self, after: object = None) -> Instance:
        if self.error:
            raise InstanceError(self.error)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


Made = tuple[FunctionWorker, Replies, Metrics, FakeRedis]


def worker(
    *, redis: FakeRedis | None = None, replies: Replies | None = None, missing_image: bool = False
) -> Made:
    replies, redis, metrics = replies or Replies(), redis or FakeRedis(), Metrics()
    parts = WorkerParts(
        node_id="node-1", redis=redis, reads=redis, runtime=None, images=Images(missing_image),  # type: ignore[arg-type]
        replier=replies, metrics=metrics, http=None, response_limit=1 << 20,  # type: ignore[arg-type]
        slots=asyncio.Semaphore(1), handling=set(), stopping=asyncio.Event(),
        draining=collections.Counter(), registries=Registries(),
        others_serve=lambda function: False,
    )  # fmt: skip
    return FunctionWorker(SPEC, {}, parts), replies, metrics, redis


def fields(seconds: float) -> dict[bytes, bytes]:
    now = time.time()
    req = CallRequest(keys.new_call_id("f"), "f", deadline=now + seconds, enqueued=now - 1,
                      reply_to="r")  # fmt: skip
    return {k.encode(): v if isinstance(v, bytes) else v.encode()
            for k, v in req.to_fields().items()}  # fmt: skip


async def test_a_call_whose_deadline_passed_in_the_queue_is_a_504_and_never_runs() -> None:
    w, replies, metrics, redis = worker()
    await w._handle(b"1-0", fields(-0.5))
    ((_, result, ack),) = replies.sent
    assert (result.status, result.error, result.part) == (504, "timeout", "queue")
    assert "before a node took the call" in result.message
    assert ack == (keys.calls_key("f"), b"1-0")  # answered, so acknowledged
    assert redis.pipelines == []  # never marked running
    assert result.node == "node-1" and result.queue_seconds >= 1.0
    assert metrics.answered_with == [result]


async def test_no_instance_before_the_deadline_is_a_504_in_time() -> None:
    w, replies, _, redis = worker()
    w.pool = StuckPool()  # type: ignore[assignment]
    clock = time.monotonic()
    await w._handle(b"1-0", fields(0.3))
    (_, result, _), = replies.sent
    assert (result.status, result.part) == (504, "queue")
    assert "no instance was ready" in result.message
    assert time.monotonic() - clock < 3
    commands = [name for name, _ in redis.pipelines[0].commands]
    assert commands == ["hset", "hincrby"]  # marked running, its attempt counted


async def test_a_cold_start_that_fails_is_a_502_naming_why() -> None:
    w, replies, _, _ = worker()
    w.pool = StuckPool("image has no /bin/sh")  # type: ignore[assignment]
    await w._handle(b"1-0", fields(5))
    (_, result, _), = replies.sent
    assert (result.status, result.error) == (502, "cold_start")
    assert "image has no /bin/sh" in result.message


async def test_a_function_whose_image_is_gone_answers_502_without_running() -> None:
    w, replies, _, redis = worker(missing_image=True)
    await w._handle(b"1-0", fields(5))
    (_, result, _), = replies.sent
    assert (result.status, result.error) == (502, "no_image") and "img" in result.message
    assert redis.pipelines == []


async def test_redis_away_before_the_run_leaves_the_call_for_the_take_over() -> None:
    w, replies, _, _ = worker(redis=FakeRedis(fail=True))
    w.pool = StuckPool()  # type: ignore[assignment]
    await w._handle(b"1-0", fields(5))
    assert replies.sent == []  # not answered, not acknowledged: still pending


async def test_a_result_waits_for_redis_to_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "RETRY_EVERY", 0.01)
    w, replies, _, _ = worker(replies=Replies(failing=3))
    await w._handle(b"1-0", fields(-1))
    assert replies.tries == 4 and len(replies.sent) == 1


async def test_a_stopping_node_gives_up_on_redis_sooner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "RETRY_EVERY", 0.01)
    monkeypatch.setattr("pool.worker.STOPPING_PATIENCE", 0.1)
    w, replies, _, _ = worker(replies=Replies(failing=10**6))
    w.parts.stopping.set()
    clock = time.monotonic()
    await w._handle(b"1-0", fields(-1))
    assert replies.sent == [] and time.monotonic() - clock < 2  # not REPLY_PATIENCE (60 s)
