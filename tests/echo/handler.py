import sys


def handle(event, context):
    """Echo the request; ``x-status`` picks the status, ``x-log`` is printed to stderr."""
    headers = {k.lower(): v for k, v in event["headers"].items()}
    if "x-log" in headers:
        print(headers["x-log"], file=sys.stderr, flush=True)
    body = {
        "method": event["method"],
        "path": event["path"],
        "query": event["query"],
        "headers": headers,
        "body": event["body"].decode(errors="replace"),
    }
    return int(headers.get("x-status", 200)), {"X-Echo": "yes"}, body
