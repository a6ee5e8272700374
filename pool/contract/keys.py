"""The Redis keys of the contract, what each holds, and the limits both sides keep.

Version 1. Every key starts with ``scow:v1:``. Keys used together carry one hash tag
(``{...}``), so that every script and transaction touches one slot and the same code
runs on a single Redis and on a Redis Cluster: a function's keys carry ``{f<tag>}``,
where the tag is six hex digits of the SHA-1 of its name, and so do its calls' records
(a call id starts with its function's tag); the node commands' streams share ``{cmd}``
(a node reads the shared one and its own in one XREADGROUP); a gateway's reply stream
its own. The rest are used one at a time.

    functions              hash   name -> FunctionSpec JSON: the list of functions
    {f}:spec:<fn>          string the function's FunctionSpec JSON, as a call is judged on
    {f}:calls:<fn>         stream one entry per call; consumer group "nodes"
    {f}:call:<id>          hash   the call record (messages.CallRecord), with a TTL
    {f}:calls:index:<fn>   list   the function's latest call ids, newest first
    {f}:invocations:<fn>   string calls answered
    {f}:logs:<fn>          stream the function's log lines, tagged with call and container
    {f}:idempotency:<fn>:<key>  string "<call id> <request fingerprint>", for an hour
    {f}:idempotency-count:<fn>  string keys the function took this hour (capped)
    {g<gateway>}:replies   stream results for the gateway instance that asked
    {cmd}:commands         stream node commands any node may take; group "nodes"
    {cmd}:node:<id>        stream node commands for one node; group "nodes"
    nodes                  hash   node id -> {heartbeat, pid, host, functions: pool sizes, load,
                                  containers, draining}
    draining               hash   node id -> when it was asked to drain (it then takes no new
                                  calls and exits once idle)
    dead                   stream calls that killed their node too often
    progress:<id>          stream a node command's progress lines or output chunks, then
                                  {end: 1} just before its result
    input:<id>             stream what a command's asker sends while it runs (a container's
                                  stdin): {data} entries, then {eof: 1}
    cancel:<id>            string set when the asker of a command stopped waiting for it
    environments           hash   environment id -> its lease and where it runs
    containers             hash   Docker-API container id -> {"node", "name"}
    exec:<id>              string an exec's state, as Docker's exec inspect shows it
    events                 stream container, image and function events (Docker's shape)
    secrets                hash   name -> value: the one place a secret's value is kept
    networks               hash   network id -> NetworkSpec JSON (user-defined networks)
    logins                 hash   registry host -> its credentials (X-Registry-Auth form), kept
                                  by docker login for the nodes' pulls of functions' images

A call's entry is deleted once it is answered, so a stream's length is the
number of calls waiting or running: the gateway's queue cap reads it.
"""

from __future__ import annotations

import hashlib
import secrets

VERSION = 1
PREFIX = f"scow:v{VERSION}"
GROUP = "nodes"

FUNCTIONS = f"{PREFIX}:functions"
NODES = f"{PREFIX}:nodes"
DRAINING = f"{PREFIX}:draining"
DEAD = f"{PREFIX}:dead"
ENVIRONMENTS = f"{PREFIX}:environments"
EVENTS = f"{PREFIX}:events"
CONTAINERS = f"{PREFIX}:containers"
COMMANDS = f"{PREFIX}:{{cmd}}:commands"
SECRETS = f"{PREFIX}:secrets"
NETWORKS = f"{PREFIX}:networks"
LOGINS = f"{PREFIX}:logins"

LOGS_MAXLEN = 10_000  # lines kept per function
EVENTS_MAXLEN = 10_000
EXEC_TTL = 3600  # how long an exec's record is kept after it ends
CALLS_INDEXED = 1000  # call ids kept per function for `scow fn calls`
OUTPUT_WINDOW = 16  # chunks of a command's output that may wait for its reader
INPUT_WINDOW = 64  # chunks of a command's input that may wait for the node
RECORD_TTL = 3600
RECORD_BODY_LIMIT = 1 << 20  # a result body a call record keeps (async, idempotent calls)
MAX_IDEMPOTENCY_KEYS = 100_000  # per function and hour: each is a Redis key for an hour
REPLY_MAXLEN = 10_000
MAX_DELIVERIES = 3  # a call delivered this often has crashed nodes: dead-letter it
HEARTBEAT_EVERY = 1.0
HEARTBEAT_STALE = 4.0  # a node silent this long is dead: its calls are taken over
RETRY_EVERY = 0.5  # what failed because Redis is away is tried again this often
MAX_SECRET_BYTES = 512 << 10  # Docker's swarm secrets hold 500 KB
MAX_SECRETS = 1024
MAX_QUEUE = 1024  # calls waiting or running per function before 429


def function_tag(function: str) -> str:
    """Six hex digits from the function's name: the hash tag of its keys and the start of
    its calls' ids."""
    return hashlib.sha1(function.encode()).hexdigest()[:6]


def _slot(function: str) -> str:
    return f"{PREFIX}:{{f{function_tag(function)}}}"


def calls_key(function: str) -> str:
    return f"{_slot(function)}:calls:{function}"


def spec_key(function: str) -> str:
    """The function's spec, beside its queue: the submit script judges a call on it."""
    return f"{_slot(function)}:spec:{function}"


def invocations_key(function: str) -> str:
    return f"{_slot(function)}:invocations:{function}"


def replies_key(gateway: str) -> str:
    return f"{PREFIX}:{{g{gateway}}}:replies"


def node_commands_key(node: str) -> str:
    return f"{PREFIX}:{{cmd}}:node:{node}"


def is_call_id(text: str) -> bool:
    """Whether ``text`` has a call id's shape (24 lowercase hex digits).

    >>> is_call_id(new_call_id("wc")), is_call_id("}abcdef" + "0" * 17), is_call_id("A" * 24)
    (True, False, False)
    """
    return len(text) == 24 and all(c in "0123456789abcdef" for c in text)


def record_key(call_id: str) -> str:
    """A call's record, in its function's slot (its id starts with the function's tag)."""
    if not is_call_id(call_id):
        raise ValueError(f"not a call id: {call_id!r}")
    return f"{PREFIX}:{{f{call_id[:6]}}}:call:{call_id}"


def calls_index_key(function: str) -> str:
    return f"{_slot(function)}:calls:index:{function}"


def idempotency_key(function: str, key: str) -> str:
    return f"{_slot(function)}:idempotency:{function}:{key}"


def idempotency_count_key(function: str) -> str:
    """How many idempotency keys the function took this hour (their cap)."""
    return f"{_slot(function)}:idempotency-count:{function}"


def logs_key(function: str) -> str:
    return f"{_slot(function)}:logs:{function}"


def progress_key(command_id: str) -> str:
    return f"{PREFIX}:progress:{command_id}"


def input_key(command_id: str) -> str:
    """What the asker of a command sends it while it runs (an attached client's stdin)."""
    return f"{PREFIX}:input:{command_id}"


def cancel_key(command_id: str) -> str:
    """Set when the asker of a command stopped waiting for it (its client went away)."""
    return f"{PREFIX}:cancel:{command_id}"


def exec_key(exec_id: str) -> str:
    return f"{PREFIX}:exec:{exec_id}"


def new_call_id(function: str) -> str:
    """A call's id: its function's tag, then 18 random hex digits (24 in all)."""
    return function_tag(function) + secrets.token_hex(9)


def new_command_id() -> str:
    return secrets.token_hex(12)
