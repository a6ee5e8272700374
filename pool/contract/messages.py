"""What crosses Redis, one type each with one encoder and one decoder.

- ``CallRequest``: a function call, queued by a gateway (a stream entry).
- ``CallResult``: its answer, sent to the gateway that asked (a stream entry).
- ``CallRecord``: what is kept of a call for an hour (a hash): written ``queued`` by
  the submit script, ``running`` by the node that took it, ``done`` with its result.
- ``CommandRequest``: work for a node that is not a call (images, containers ...); its
  answer is a ``CallResult`` whose ``error``, when it failed, is one of ``FAILURES``.
- ``event``: a container, image or function event, in Docker's shape.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pool.contract.containers import ContainerSpec
from pool.contract.keys import RECORD_BODY_LIMIT

# redis-py types stream fields loosely; this is what we put in and take out.
Fields = dict[Any, Any]

CallState = Literal["queued", "running", "done"]
# How a node command fails; the gateway answers each with its HTTP status.
Failure = Literal[
    "invalid", "unsafe_archive", "not_found", "conflict", "too_many", "not_implemented",
    "not_ready", "not_ready_in_time", "timeout", "cancelled", "unknown_command", "internal",
    "unauthorized", "registry", "node_gone",
]  # fmt: skip
FAILURES: tuple[str, ...] = get_args(Failure)


def text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


@dataclass(frozen=True)
class CallRequest:
    id: str
    function: str
    deadline: float  # epoch seconds: queue wait and run together
    method: str = "POST"
    path: str = "/"
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    enqueued: float = 0.0
    reply_to: str = ""  # a reply stream; "" for async calls (the record keeps the result)
    callback: str = ""
    keep_result: bool = False  # a sync call's record keeps its result too (idempotent calls)

    def meta(self) -> str:
        """Everything but the id, function and body, as the stream entry carries it."""
        return json.dumps({
            "method": self.method, "path": self.path, "query": self.query,
            "headers": list(self.headers), "deadline": self.deadline,
            "enqueued": self.enqueued, "reply_to": self.reply_to, "callback": self.callback,
            "keep_result": self.keep_result,
        })  # fmt: skip

    def to_fields(self) -> Fields:
        return {"id": self.id, "fn": self.function, "meta": self.meta(), "body": self.body}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> CallRequest:
        meta = json.loads(fields[b"meta"])
        return cls(
            id=text(fields[b"id"]), function=text(fields[b"fn"]), deadline=meta["deadline"],
            method=meta["method"], path=meta["path"], query=meta["query"],
            headers=tuple((k, v) for k, v in meta["headers"]), body=fields.get(b"body", b""),
            enqueued=meta["enqueued"], reply_to=meta["reply_to"], callback=meta["callback"],
            keep_result=meta.get("keep_result", False),
        )  # fmt: skip


@dataclass(frozen=True)
class CallResult:
    id: str
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    cold: bool = False
    error: str = ""  # timeout, oom, crash, bad_response, no_image, dead_letter...
    message: str = ""
    part: str = ""  # for timeouts: queue or run
    node: str = ""
    container: str = ""
    queue_seconds: float = 0.0
    run_seconds: float = 0.0
    # From the container's cgroup, over this call: what it used and how it was held back.
    cpu_seconds: float = 0.0
    throttled_seconds: float = 0.0
    start_seconds: float = 0.0  # how long its container took to start (cold or ahead)
    wait_seconds: float = 0.0  # of run_seconds: waiting for a container to be free or made

    def to_fields(self) -> Fields:
        meta = {k: v for k, v in self.__dict__.items() if k not in ("body", "headers")}
        meta["headers"] = list(self.headers)
        return {"meta": json.dumps(meta), "body": self.body}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> CallResult:
        meta = json.loads(fields[b"meta"])
        meta["headers"] = tuple((k, v) for k, v in meta["headers"])
        return cls(body=fields.get(b"body", b""), **meta)

    @classmethod
    def failure(
        cls, call_id: str, status: int, error: str, message: str, **extra: Any
    ) -> CallResult:
        body = json.dumps({"error": error, "message": message}).encode()
        headers = (("content-type", "application/json"),)
        return cls(call_id, status, headers, body, error=error, message=message, **extra)


_TIMES = ("enqueued", "finished", "queue_seconds", "run_seconds", "cpu_seconds",
          "throttled_seconds", "start_seconds", "wait_seconds")  # fmt: skip
_TEXTS = ("error", "message", "node", "container", "callback", "logs_tail")


@dataclass(frozen=True)
class CallRecord:
    """What is kept of one call for an hour, and shown at ``GET /system/calls/{id}``."""

    id: str
    function: str = ""
    state: CallState = "queued"
    attempts: int = 0  # runs started: more than one when a node died running it
    status: int | None = None
    cold: bool | None = None
    headers: tuple[tuple[str, str], ...] | None = None
    body: bytes | None = None  # async and idempotent calls', up to RECORD_BODY_LIMIT
    body_size: int | None = None
    body_dropped: bool = False
    times: dict[str, float] = field(default_factory=dict)  # _TIMES
    texts: dict[str, str] = field(default_factory=dict)  # _TEXTS

    # -- encoders: what each writer puts in the hash --------------------------------------

    @staticmethod
    def running(node: str) -> dict[str, str]:
        return {"state": "running", "node": node}  # attempts: HINCRBY beside it

    @staticmethod
    def done(result: CallResult, logs_tail: str, keep_body: bool) -> dict[str, Any]:
        """The node's write when the call ended; with ``keep_body`` the result is kept."""
        out: dict[str, Any] = {
            "state": "done", "status": result.status, "error": result.error,
            "message": result.message, "cold": int(result.cold), "node": result.node,
            "container": result.container, "queue_seconds": result.queue_seconds,
            "run_seconds": result.run_seconds, "finished": time.time(),
            "cpu_seconds": result.cpu_seconds, "throttled_seconds": result.throttled_seconds,
            "start_seconds": result.start_seconds, "wait_seconds": result.wait_seconds,
            "logs_tail": logs_tail,
        }  # fmt: skip
        if keep_body:
            out["headers"] = json.dumps(list(result.headers))
            out["body_size"] = len(result.body)
            if len(result.body) <= RECORD_BODY_LIMIT:
                out["body"] = result.body
            else:  # a callback still gets it whole
                out["body_dropped"] = 1
        return out

    # -- the decoder ------------------------------------------------------------------

    @classmethod
    def from_hash(cls, call_id: str, raw: dict[bytes, bytes]) -> CallRecord:
        data = {text(k): v for k, v in raw.items()}
        s = {k: text(v) for k, v in data.items() if k != "body"}
        state = s.get("state", "queued")
        return cls(
            id=call_id, function=s.get("function", ""),
            state=state if state in ("queued", "running", "done") else "queued",  # type: ignore[arg-type]
            attempts=int(s.get("attempts") or 0),
            status=int(s["status"]) if s.get("status") else None,
            cold=s["cold"] == "1" if "cold" in s else None,
            headers=tuple((k, v) for k, v in json.loads(s["headers"])) if "headers" in s
            else None,
            body=data.get("body"), body_size=int(s["body_size"]) if "body_size" in s else None,
            body_dropped=bool(s.get("body_dropped")),
            times={k: float(s[k]) for k in _TIMES if s.get(k)},
            texts={k: s[k] for k in _TEXTS if s.get(k)},
        )  # fmt: skip

    # -- what readers make of it ------------------------------------------------------

    def result(self) -> CallResult:
        """A done call's result, as its own reply was (for an idempotent call's replay)."""
        if self.body_dropped:
            message = (f"call {self.id}'s result was {self.body_size} bytes, more than a "
                       f"record keeps ({RECORD_BODY_LIMIT})")  # fmt: skip
            return CallResult.failure(self.id, 502, "result_not_kept", message)
        return CallResult(
            self.id, self.status or 0, self.headers or (), self.body or b"",
            cold=bool(self.cold), error=self.texts.get("error", ""),
            message=self.texts.get("message", ""), node=self.texts.get("node", ""),
            container=self.texts.get("container", ""),
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """For people and scripts: numbers as numbers, the body as text or base64."""
        out: dict[str, Any] = {"id": self.id, "function": self.function, "state": self.state}
        if self.status is not None:
            out["status"] = self.status
        out["attempts"] = self.attempts
        out.update(self.times)
        out.update(self.texts)
        if self.cold is not None:
            out["cold"] = self.cold
        if self.body_size is not None:
            out["body_size"] = self.body_size
        if self.body_dropped:
            out["body_dropped"] = True  # over what a record keeps; the callback had it whole
        if self.headers is not None:
            out["headers"] = dict(self.headers)
        if self.body is not None:
            try:
                out["body"] = self.body.decode()
            except UnicodeDecodeError:
                out["body_base64"] = base64.b64encode(self.body).decode()
        return out


@dataclass(frozen=True)
class CommandRequest:
    """Work for a node that is not a function call: images, containers, environments."""

    id: str
    name: str  # e.g. "images.list", "image.bootstrap"
    args: dict[str, Any]
    deadline: float
    reply_to: str
    blob: bytes = b""  # bulk input, such as a build context

    def to_fields(self) -> Fields:
        meta = {"name": self.name, "args": self.args, "deadline": self.deadline,
                "reply_to": self.reply_to}  # fmt: skip
        return {"id": self.id, "meta": json.dumps(meta), "blob": self.blob}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> CommandRequest:
        meta = json.loads(fields[b"meta"])
        return cls(text(fields[b"id"]), meta["name"], meta["args"], meta["deadline"],
                   meta["reply_to"], fields.get(b"blob", b""))  # fmt: skip


def event(kind: str, action: str, actor: str, attributes: dict[str, str]) -> dict[str, Any]:
    """An event as Docker's /events reports it."""
    now = time.time_ns()
    return {"Type": kind, "Action": action, "Actor": {"ID": actor, "Attributes": attributes},
            "scope": "local", "time": now // 1_000_000_000, "timeNano": now}  # fmt: skip


@dataclass(frozen=True)
class ImageSettings:
    """The runnable part of an image's config, as a container record keeps it."""

    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str = ""
    healthcheck: dict[str, Any] | None = None  # Docker's, as the image has it

    @classmethod
    def from_oci(cls, c: dict[str, Any] | None) -> ImageSettings:
        c = c or {}
        return cls(
            env=tuple(c.get("Env") or ()),
            entrypoint=tuple(c["Entrypoint"]) if c.get("Entrypoint") else None,
            cmd=tuple(c["Cmd"]) if c.get("Cmd") else None,
            working_dir=c.get("WorkingDir") or "", user=c.get("User") or "",
            exposed_ports=tuple(sorted(c.get("ExposedPorts") or {})),
            volumes=tuple(sorted(c.get("Volumes") or {})), stop_signal=c.get("StopSignal") or "",
            healthcheck=dict(c["Healthcheck"]) if c.get("Healthcheck") else None,
        )  # fmt: skip


@dataclass(frozen=True)
class Published:
    container_port: int
    host_ip: str
    host_port: int
    protocol: str = "tcp"


@dataclass(frozen=True)
class Endpoint:
    """A container on one network (``bridge`` is scow's default)."""

    network: str
    ip: str
    gateway: str
    subnet: str
    mac: str = ""
    network_id: str = ""
    aliases: tuple[str, ...] = ()
    interface: str = ""

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Endpoint:
        return cls(network=d["network"], ip=d["ip"], gateway=d["gateway"], subnet=d["subnet"],
                   mac=d.get("mac", ""), network_id=d.get("network_id", ""),
                   aliases=tuple(d.get("aliases") or ()), interface=d.get("interface", ""))


@dataclass(frozen=True)
class HealthState:
    status: str  # starting, healthy, unhealthy
    failing_streak: int = 0
    log: tuple[dict[str, Any], ...] = ()  # Start, End (epoch seconds), ExitCode, Output


@dataclass(frozen=True)
class ContainerInfo:
    """A container as its node reports it: its record, with what the node adds (the
    image's id, the bridge's address, where its volumes and log are)."""

    id: str
    name: str
    created: float
    image: str
    status: str
    spec: ContainerSpec
    image_config: ImageSettings
    hostname: str = ""
    pid: int = 0
    ip: str = ""
    ports: tuple[Published, ...] = ()
    volumes: tuple[tuple[str, str], ...] = ()  # (volume name, container path)
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int | None = None
    oom_killed: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    image_id: str = ""
    gateway: str = ""
    volume_paths: dict[str, str] = field(default_factory=dict)
    log_path: str = ""
    endpoints: tuple[Endpoint, ...] = ()
    health: HealthState | None = None
    restart_count: int = 0
    restarting: bool = False
    node: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerInfo:
        options = dict(data["options"])
        options["endpoints"] = options.pop("attachments", ())  # the runtime's word for them
        labels = dict(data.get("labels") or {})
        auto_remove = labels.pop(AUTO_REMOVE, "") == "1"  # scow's mark, shown as AutoRemove
        options["labels"] = {k: v for k, v in (options.get("labels") or {}).items()
                             if k != AUTO_REMOVE}  # fmt: skip
        spec = ContainerSpec.from_json({**options, "image": data.get("image", ""),
                                        "auto_remove": auto_remove})  # fmt: skip
        return cls(
            id=data["id"], name=data["name"], created=float(data["created"]),
            image=data.get("image", ""), status=data["status"], spec=spec,
            image_config=ImageSettings.from_oci(data.get("image_config")),
            hostname=data.get("hostname", ""), pid=int(data.get("pid") or 0),
            ip=data.get("ip", ""),
            ports=tuple(Published(**p) for p in data.get("ports") or ()),
            volumes=tuple((v[0], v[1]) for v in data.get("volumes") or ()),
            started_at=float(data.get("started_at") or 0),
            finished_at=float(data.get("finished_at") or 0),
            exit_code=data.get("exit_code"), oom_killed=bool(data.get("oom_killed")),
            labels=labels, image_id=data.get("image_id", ""), gateway=data.get("gateway", ""),
            volume_paths=dict(data.get("volume_paths") or {}), log_path=data.get("log_path", ""),
            endpoints=tuple(Endpoint.from_json(e) for e in data.get("endpoints") or ()),
            health=HealthState(h["status"], int(h.get("failing_streak") or 0),
                               tuple(h.get("log") or ())) if (h := data.get("health")) else None,
            restart_count=int(data.get("restart_count") or 0),
            restarting=bool(data.get("restarting")), node=data.get("node", ""),
        )  # fmt: skip


AUTO_REMOVE = "scow.auto-remove"  # a container's label: remove it when it exits (--rm)
NODE_LABEL = "scow.node"  # a container's label at create: the node it must run on
