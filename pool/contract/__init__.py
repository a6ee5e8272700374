"""The Redis contract between gateways and nodes: a leaf package.

    keys.py      the key names, what each holds, and the limits both sides keep
    messages.py  CallRequest, CallResult, CallRecord, CommandRequest and events, one
                 encoder and one decoder each
    specs.py     FunctionSpec, EnvironmentSpec: checked once, at the edge
    containers.py  ContainerSpec and the docker CLI's -v, -p, --ulimit, --tmpfs
    units.py     sizes and durations as people write them
    choices.py   the closed sets of values (protocols, networks) for specs and the CLI
    errors.py    what the contract raises
    client.py    PoolClient: the gateway's only user of Redis
    outage.py    what a loop that outlives Redis errors says, and when
    outbound.py  where the host's own requests (callbacks) may go
    config.py    the host's configuration and each of its defaults, once

It imports nothing from the rest of pool/, from runtime/ or images/, and this file
imports nothing at all: the CLI reads ``config`` without loading Redis.
"""
