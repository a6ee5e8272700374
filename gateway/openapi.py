"""The OpenAPI 3.1 document of the native routes (the Docker-compatible ones follow Docker's)."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {400: "Invalid input", 401: "Missing or wrong token", 404: "Not found",
               409: "Exists", 410: "Gone", 413: "Body too large",
               422: "Idempotency-Key reused for a different request",
               429: "Queue full (see Retry-After)",
               502: "The function or node failed", 503: "Redis or every node is down",
               504: "Deadline passed"}  # fmt: skip
    return {str(c): _json(_ref("Error"), reasons[c]) for c in codes}


_NAME = {"name": "name", "in": "path", "required": True,
         "schema": {"type": "string", "pattern": "^[a-z0-9-]{1,63}$"}}  # fmt: skip
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "schema": {
    "type": "string", "minLength": 1, "maxLength": 255},
    "description": "The call runs once per key (per function, for an hour); a retry "
                   "answers with the first call's id and result"}  # fmt: skip
_BODY = {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
_CALL_HEADERS = {
    "X-Call-Id": {"schema": {"type": "string"}},
    "X-Duration-Seconds": {"schema": {"type": "string"}},
    "X-Scow-Cold": {"schema": {"type": "string", "enum": ["0", "1"]}},
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error", "message"],
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    },
    "FunctionSpec": {
        "type": "object", "required": ["name", "image"], "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9-]{1,63}$"},
            "image": {"type": "string", "minLength": 1},
            "protocol": {"type": "string", "enum": ["http", "stdio"]},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "command": {"oneOf": [{"type": "array", "items": {"type": "string"}},
                                  {"type": "string"}, {"type": "null"}]},
            "env": {"oneOf": [{"type": "array", "items": {"type": "string"}},
                              {"type": "object", "additionalProperties": {"type": "string"}}]},
            "workdir": {"type": "string"}, "user": {"type": "string"},
            "memory": {"oneOf": [{"type": "integer", "minimum": 4194304}, {"type": "string"}]},
            "cpu_shares": {"type": "integer", "minimum": 2, "maximum": 262144},
            "pids": {"type": "integer", "minimum": 1},
            "timeout": {"oneOf": [{"type": "number"}, {"type": "string"}]},
            "max_invocations": {"type": "integer", "minimum": 0},
            "idle_ttl": {"oneOf": [{"type": "number"}, {"type": "string"}]},
            "concurrency": {"type": "integer", "minimum": 1, "maximum": 1024},
            "pool": {"type": "object", "properties": {
                "min": {"type": "integer", "minimum": 0, "maximum": 1024},
                "max": {"type": "integer", "minimum": 1, "maximum": 1024}}},
            "read_only": {"type": "boolean"}, "auth": {"type": "boolean"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "Function": {
        "allOf": [_ref("FunctionSpec"), {"type": "object", "properties": {
            "replicas": {"type": "integer"}, "availableReplicas": {"type": "integer"},
            "invocationCount": {"type": "integer"}, "queueLength": {"type": "integer"}}}],
    },
    "CallRecord": {
        "type": "object", "required": ["id", "function", "state"],
        "properties": {
            "id": {"type": "string"}, "function": {"type": "string"},
            "state": {"type": "string", "enum": ["queued", "running", "done"]},
            "status": {"type": "integer"}, "error": {"type": "string"},
            "attempts": {"type": "integer", "minimum": 0,
                         "description": "runs started; above 1 when a node died mid-run"},
            "message": {"type": "string"}, "cold": {"type": "boolean"},
            "node": {"type": "string"}, "container": {"type": "string"},
            "enqueued": {"type": "number"}, "finished": {"type": "number"},
            "queue_seconds": {"type": "number"}, "run_seconds": {"type": "number"},
            "headers": {"type": "object"}, "body": {"type": "string"},
            "body_base64": {"type": "string"}, "callback": {"type": "string"},
            "cpu_seconds": {"type": "number"}, "throttled_seconds": {"type": "number"},
            "start_seconds": {"type": "number"}, "wait_seconds": {"type": "number"},
            "logs_tail": {"type": "string"},
        },
    },
    "Node": {
        "type": "object", "required": ["id", "live", "draining"],
        "properties": {
            "id": {"type": "string"}, "host": {"type": "string"}, "pid": {"type": "integer"},
            "live": {"type": "boolean"}, "heartbeat_age": {"type": "number"},
            "draining": {"type": "boolean"}, "functions": {"type": "integer"},
            "warm": {"type": "integer"}, "busy": {"type": "integer"},
            "containers": {"type": "integer"}, "load": {"type": "number"},
            "bridge": {"type": "string"}, "subnet": {"type": "string"},
        },
    },
    "EnvironmentRequest": {
        "type": "object", "required": ["image"], "additionalProperties": False,
        "properties": {
            "image": {"type": "string"},
            "cmd": {"oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "ports": {"type": "array", "items": {"type": "integer", "minimum": 1,
                                                 "maximum": 65535}},
            "ttl": {"oneOf": [{"type": "number"}, {"type": "string"}]},
            "wait": {"type": "object", "properties": {
                "port": {"type": "integer"}, "log": {"type": "string"},
                "http": {"type": "string"}, "cmd": {"type": "array", "items": {"type": "string"}},
                "timeout": {"oneOf": [{"type": "number"}, {"type": "string"}]}}},
            "memory": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
            "cpu_shares": {"type": "integer", "minimum": 2, "maximum": 262144},
        },
    },
    "Environment": {
        "type": "object", "required": ["id", "ip", "ports", "expires_at"],
        "properties": {
            "id": {"type": "string"}, "container": {"type": "string"},
            "node": {"type": "string"}, "image": {"type": "string"}, "ip": {"type": "string"},
            "ports": {"type": "object", "additionalProperties": {"type": "integer"}},
            "created": {"type": "string", "format": "date-time"},
            "expires_at": {"type": "string", "format": "date-time"},
            "expires_in": {"type": "number"},
        },
    },
}  # fmt: skip


def openapi(version: str) -> dict[str, Any]:
    fn_list = {"type": "array", "items": _ref("Function")}
    call = {
        "summary": "Call a function: method, path, query, headers and body reach it",
        "parameters": [_NAME, _IDEMPOTENCY], "requestBody": _BODY,
        "responses": {"200": {"description": "The function's response", "headers": _CALL_HEADERS},
                      **_errors(400, 401, 404, 410, 413, 422, 429, 502, 503, 504)},
    }  # fmt: skip
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Redis reachable", "security": [],
                             "responses": {"200": {"description": "OK"}, **_errors(503)}}},
        "/system/info": {"get": {"summary": "Version, nodes and their pools",
                                 "responses": {"200": _json({"type": "object"}, "Info")}}},
        "/system/nodes": {"get": {"summary": "The nodes: pools, load, heartbeat, draining",
                                  "responses": {"200": _json({"type": "array", "items":
                                                              _ref("Node")}, "Nodes")}}},
        "/system/nodes/{id}/drain": {"post": {
            "summary": "The node takes no new calls nor containers, finishes its calls, exits",
            "parameters": [_ID], "responses": {"202": _json(_ref("Node"), "Draining"),
                                                **_errors(404, 409)}}},
        "/system/version": {"get": {"responses": {"200": _json({"type": "object"}, "Version")}}},
        "/openapi.json": {"get": {"summary": "This document",
                                  "responses": {"200": _json({"type": "object"}, "OpenAPI")}}},
        "/metrics": {"get": {"summary": "Prometheus text",
                             "responses": {"200": {"description": "Metrics"}}}},
        "/system/functions": {
            "get": {"responses": {"200": _json(fn_list, "Functions")}},
            "post": {"summary": "Deploy a new function",
                     "requestBody": _json(_ref("FunctionSpec"), "Spec"),
                     "responses": {"201": _json(_ref("Function"), "Deployed"),
                                   **_errors(400, 409, 413)}},
            "put": {"summary": "Replace a function's spec",
                    "requestBody": _json(_ref("FunctionSpec"), "Spec"),
                    "responses": {"200": _json(_ref("Function"), "Updated"),
                                  **_errors(400, 404, 413)}},
            "delete": {"summary": "Delete a function",
                       "parameters": [{"name": "name", "in": "query",
                                       "schema": {"type": "string"}}],
                       "requestBody": _json({"type": "object", "properties": {
                           "functionName": {"type": "string"}}}, "Which"),
                       "responses": {"200": _json({"type": "object"}, "Deleted"),
                                     **_errors(400, 404)}},
        },
        "/system/function/{name}": {"get": {"parameters": [_NAME], "responses": {
            "200": _json(_ref("Function"), "The function"), **_errors(404)}}},
        "/system/scale-function/{name}": {"post": {
            "parameters": [_NAME],
            "requestBody": _json({"type": "object", "required": ["replicas"], "properties": {
                "replicas": {"type": "integer", "minimum": 0, "maximum": 1024}}}, "Replicas"),
            "responses": {"202": _json(_ref("Function"), "Scaled"), **_errors(400, 404)}}},
        "/function/{name}": {
            m: {**call, "security": []} for m in ("get", "post", "put", "patch", "delete")
        },
        "/async-function/{name}": {"post": {
            "summary": "Queue a call; the result goes to the call record and X-Callback-Url",
            "security": [], "parameters": [_NAME, _IDEMPOTENCY], "requestBody": _BODY,
            "responses": {"202": {"description": "Queued", "headers": {
                "X-Call-Id": {"schema": {"type": "string"}}}},
                **_errors(400, 404, 413, 422, 429, 503)}}},
        "/system/calls": {"get": {
            "summary": "A function's latest calls, newest first",
            "parameters": [
                {"name": "function", "in": "query", "required": True,
                 "schema": {"type": "string"}},
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
            "responses": {"200": _json({"type": "array", "items": _ref("CallRecord")}, "Calls"),
                          **_errors(400)}}},
        "/system/calls/{id}": {"get": {"parameters": [_ID], "responses": {
            "200": _json(_ref("CallRecord"), "The call"), **_errors(404)}}},
        "/system/logs": {"get": {
            "summary": "A function's log lines as NDJSON",
            "parameters": [
                {"name": "name", "in": "query", "required": True, "schema": {"type": "string"}},
                {"name": "tail", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {"name": "since", "in": "query", "schema": {"type": "string"}},
                {"name": "follow", "in": "query", "schema": {"type": "boolean"}}],
            "responses": {"200": {"description": "NDJSON", "content": {
                "application/x-ndjson": {"schema": {"type": "string"}}}}, **_errors(400)}}},
        "/system/environments": {
            "get": {"responses": {"200": _json({"type": "array", "items": _ref("Environment")},
                                               "Environments")}},
            "post": {"summary": "Create an environment; answers once it is ready",
                     "requestBody": _json(_ref("EnvironmentRequest"), "What to run"),
                     "responses": {"201": _json(_ref("Environment"), "Ready"),
                                   **_errors(400, 404, 502, 503, 504)}},
        },
        "/system/environments/{id}": {
            "get": {"parameters": [_ID], "responses": {
                "200": _json(_ref("Environment"), "The environment"), **_errors(404)}},
            "patch": {"summary": "Extend the lease: it now ends ttl from now",
                      "parameters": [_ID],
                      "requestBody": _json({"type": "object", "required": ["ttl"], "properties": {
                          "ttl": {"oneOf": [{"type": "number"}, {"type": "string"}]}}}, "TTL"),
                      "responses": {"200": _json(_ref("Environment"), "Extended"),
                                    **_errors(400, 404)}},
            "delete": {"parameters": [_ID], "responses": {
                "200": _json({"type": "object"}, "Deleted"), **_errors(404, 503)}},
        },
        "/system/images/bootstrap": {"post": {
            "summary": "Make a base image (busybox, debian:bookworm); progress streamed",
            "parameters": [{"name": "name", "in": "query", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "JSON lines"}, **_errors(400, 404, 503)}}},
    }  # fmt: skip
    for operations in paths.values():
        for op in operations.values():
            if op.get("security") != []:  # the bearer token: refused without it on TCP
                op.setdefault("responses", {}).setdefault("401", _json(_ref("Error"), "Token"))
    return {
        "openapi": "3.1.0",
        "info": {"title": "scow", "version": version,
                 "description": "Functions on throwaway containers. Docker Engine API routes "
                                "(/images, /build, ...) are served too, as Docker documents them."},
        "components": {"schemas": _SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }  # fmt: skip
