import socket


def handle(event, context):
    name = event["body"].decode() or "world"
    return {"hello": name, "hostname": socket.gethostname(), "path": event["path"]}
