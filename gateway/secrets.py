"""Secret routes, shaped like OpenFaaS's: a secret is a name and a value, given to the
functions that name it as a read-only file (never an environment variable).

``GET /system/secrets`` lists names, never values. ``POST`` creates
(``{"name", "value"}``, or ``rawValue`` in base64 for bytes), ``PUT`` replaces,
``DELETE`` removes one no function uses. Values live in Redis alone (one hash),
which is the trust boundary: whoever reads that Redis reads them.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.http import ApiError, json_object, read_json
from gateway.state import gateway_of
from pool.contract import keys
from pool.contract.errors import QueueFull
from pool.contract.specs import SECRET_NAME_RE


def _name(body: dict[str, Any]) -> str:
    name = body.get("name")
    if not isinstance(name, str) or not SECRET_NAME_RE.match(name):
        raise ApiError(400, "bad_request", f"invalid secret name {str(name)[:80]!r}: "
                       "1 to 63 of a-z, 0-9, '.', '_' and '-'")  # fmt: skip
    return name


def _value(body: dict[str, Any]) -> bytes:
    if isinstance(body.get("rawValue"), str):
        try:
            value = base64.b64decode(body["rawValue"], validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "bad_request", "rawValue is not base64") from None
    elif isinstance(body.get("value"), str):
        value = body["value"].encode()
    else:
        raise ApiError(400, "bad_request", 'give the secret as {"value": text} or '
                       '{"rawValue": base64}')  # fmt: skip
    if len(value) > keys.MAX_SECRET_BYTES:
        raise ApiError(413, "too_large", f"a secret holds at most {keys.MAX_SECRET_BYTES} "
                       f"bytes, not {len(value)}")  # fmt: skip
    return value


async def list_secrets(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    return JSONResponse([{"name": n} for n in await gw.pool.secret_names()])


async def put_secret(request: Request) -> Response:
    gw = gateway_of(request)
    body = json_object(await read_json(request, keys.MAX_SECRET_BYTES * 2))
    name, value = _name(body), _value(body)
    create = request.method == "POST"
    try:
        done = await gw.pool.set_secret(name, value, create=create)
    except QueueFull:
        raise ApiError(429, "too_many", f"this host keeps at most {keys.MAX_SECRETS} "
                       "secrets") from None  # fmt: skip
    if not done and create:
        raise ApiError(409, "exists", f"secret {name!r} exists: update it with PUT")
    if not done:
        raise ApiError(404, "not_found", f"no secret {name!r}: create it with POST")
    return JSONResponse({"name": name}, 201 if create else 200)


async def delete_secret(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    name = request.query_params.get("name") or _name(json_object(await read_json(request)))
    users = [s.name for s in await gw.pool.functions() if name in s.secrets]
    if users:
        raise ApiError(409, "in_use", f"secret {name!r} is used by function "
                       f"{', '.join(users)}")  # fmt: skip
    if not await gw.pool.remove_secret(name):
        raise ApiError(404, "not_found", f"no secret {name!r}")
    return JSONResponse({"name": name, "deleted": True})


routes = [
    Route("/system/secrets", list_secrets, methods=["GET"]),
    Route("/system/secrets", put_secret, methods=["POST", "PUT"]),
    Route("/system/secrets", delete_secret, methods=["DELETE"]),
]
