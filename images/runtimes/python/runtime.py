"""The scow python function runtime (stdlib only; runs inside the function's container).

It imports the handler module (``$SCOW_HANDLER``, default /function/handler.py)
before listening, so a container counts as warm only once the handler loaded.
Each request calls ``handle(event, context)``:

    event   = {"method", "path", "query", "headers": {...}, "body": bytes}
    context = {"call_id", "function"}

``handle`` returns a body (bytes, str, or anything JSON can encode), or a tuple
``(status, headers, body)``. An exception answers 500; its traceback goes to
stderr, which is the function's log.
"""

import importlib.util
import json
import os
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def load_handler(path):
    spec = importlib.util.spec_from_file_location("handler", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"scow runtime: cannot load the handler {path}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(path))
    spec.loader.exec_module(module)
    if not callable(getattr(module, "handle", None)):
        raise SystemExit(f"scow runtime: {path} has no handle(event, context) function")
    return module.handle


def encode(result):
    status, headers, body = 200, {}, result
    if isinstance(result, tuple):
        status, headers, body = [*result, None, None][:3]
        headers = dict(headers or {})
    if isinstance(body, bytes):
        headers.setdefault("Content-Type", "application/octet-stream")
    elif isinstance(body, str):
        body = body.encode()
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
    elif body is None:
        body = b""
    else:
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    return int(status), headers, body


def make_server(handle, port):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave as separate writes: with Nagle on, a keep-alive
        # caller waits for the delayed ACK (40 ms) on every call.
        disable_nagle_algorithm = True

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            path, _, query = self.path.partition("?")
            event = {
                "method": self.command,
                "path": path,
                "query": query,
                "headers": dict(self.headers.items()),
                "body": self.rfile.read(length),
            }
            context = {
                "call_id": self.headers.get("X-Call-Id", ""),
                "function": os.environ.get("SCOW_FUNCTION", ""),
            }
            try:
                status, headers, body = encode(handle(event, context))
            except Exception:
                traceback.print_exc()
                status, headers = 500, {"Content-Type": "application/json"}
                body = json.dumps(
                    {"error": "handler_error", "message": "the handler raised"}
                ).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

        def log_message(self, format, *args):
            pass  # the gateway logs calls; stdout and stderr belong to the handler

    return ThreadingHTTPServer(("0.0.0.0", port), Handler)


def main():
    handle = load_handler(os.environ.get("SCOW_HANDLER", "/function/handler.py"))
    server = make_server(handle, int(os.environ.get("PORT", "8080")))
    server.serve_forever()


if __name__ == "__main__":
    main()
