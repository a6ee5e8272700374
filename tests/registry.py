"""A real OCI registry for the tests (Debian's docker-registry, distribution 2.8) on
127.0.0.1, with its own storage and config; optionally behind basic auth (htpasswd)
or a token service (the test's own, signing tokens with a certificate the registry
trusts); and a proxy in front of it that can spoil what it sends back."""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import re
import secrets
import shutil
import socketserver
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.utils import free_port, wait_until

REGISTRY = shutil.which("docker-registry")
_ACCESS = re.compile(r'"GET /v2/(?P<repo>[^ ]+)/blobs/(?P<digest>sha256:[0-9a-f]{64}) '
                     r'HTTP/1\.1" (?P<status>\d+) (?P<size>\d+)')  # fmt: skip


@dataclass
class Registry:
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blob_bytes(self, digests: set[str] | None = None) -> int:
        """Bytes of blobs the registry sent so far (of ``digests`` only, when given),
        from its access log."""
        total = 0
        for m in _ACCESS.finditer(self.log.read_text(errors="replace")):
            if m["status"] == "200" and (digests is None or m["digest"] in digests):
                total += int(m["size"])
        return total


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/v2/")
        conn.getresponse().read()
        conn.close()
        return True
    except OSError:
        return False


@contextmanager
def registry(base: Path, *, users: dict[str, str] | None = None,
             token: TokenService | None = None) -> Iterator[Registry]:  # fmt: skip
    """A registry with storage under ``base``; ``users`` (name -> password) for basic auth
    through an htpasswd file, or ``token`` for its token flow."""
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = ""
    if users:
        lines = [subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                                capture_output=True, text=True).stdout.strip()
                 for user, password in users.items()]  # fmt: skip
        (base / "htpasswd").write_text("\n".join(lines) + "\n")
        auth = f"auth:\n  htpasswd:\n    realm: scow-test\n    path: {base / 'htpasswd'}\n"
    elif token is not None:
        auth = (f"auth:\n  token:\n    realm: http://127.0.0.1:{token.port}/token\n"
                f"    service: {token.service}\n    issuer: {token.issuer}\n"
                f"    rootcertbundle: {token.cert_path}\n")  # fmt: skip
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {base / 'data'}\n  delete:\n"
        f"    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: {secrets.token_hex(8)}\n"
        + auth
    )  # fmt: skip
    log = base / "registry.log"
    with open(log, "wb") as out:
        assert REGISTRY is not None
        proc = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_until(lambda: _answers(port) or proc.poll() is not None, 20, "the registry")
        assert proc.poll() is None, log.read_text()
        yield Registry(port, log, proc)
    finally:
        proc.terminate()
        proc.wait(10)


class TokenService:
    """The registry's token service (``WWW-Authenticate: Bearer realm=...``): for a known
    user it signs a JWT granting what the scope asks; the registry trusts its certificate
    (in the token's ``x5c`` header)."""

    def __init__(self, base: Path, users: dict[str, str]) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        base.mkdir(parents=True, exist_ok=True)
        self.users, self.service, self.issuer = users, "scow-test", "scow-test-tokens"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scow test tokens")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))  # fmt: skip
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.cert_path = base / "tokens.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.issued = 0
        service = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                head = self.rfile.readline().decode()
                headers = {}
                while (line := self.rfile.readline().decode().strip()):
                    key, _, value = line.partition(":")
                    headers[key.lower()] = value.strip()
                target = head.split(" ")[1]
                status, body = service.answer(target, headers.get("authorization", ""))
                data = json.dumps(body).encode()
                self.wfile.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                                 f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
                                 .encode() + data)  # fmt: skip

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, target: str, authorization: str) -> tuple[int, dict[str, Any]]:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(target).query))
        user = ""
        if authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if self.users.get(user) != password:
                return 401, {"errors": [{"code": "UNAUTHORIZED"}]}
        if not user:
            return 401, {"errors": [{"code": "UNAUTHORIZED"}]}
        access = []
        for scope in query.get("scope", "").split(" "):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository":
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        self.issued += 1
        return 200, {"token": self._sign(user, access), "expires_in": 300}

    def _sign(self, user: str, access: list[dict[str, Any]]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {"iss": self.issuer, "sub": user, "aud": self.service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        signature = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{b64(signature)}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SpoilingProxy:
    """Relays HTTP to a registry and, as ``mode`` says, spoils what comes back:
    ``corrupt`` flips a byte of each blob, ``cut`` closes the connection half-way
    through a blob, ``manifest`` changes a manifest's bytes (its digest no longer
    matches); ``pass`` relays as it is."""

    def __init__(self, upstream: int) -> None:
        self.mode = "pass"
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                head = self.rfile.readline()
                if not head:
                    return
                method, target, _ = head.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (line := self.rfile.readline().decode().strip()):
                    key, _, value = line.partition(":")
                    headers[key] = value.strip()
                length = int(next((v for k, v in headers.items()
                                   if k.lower() == "content-length"), "0"))  # fmt: skip
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=30)
                sent = {k: v for k, v in headers.items()
                        if k.lower() not in ("connection", "host")}  # fmt: skip
                conn.request(method, target, body=body, headers=sent)
                answer = conn.getresponse()
                data = answer.read()
                conn.close()
                blob = method == "GET" and "/blobs/" in target and answer.status == 200
                cut = False
                if blob and proxy.mode == "corrupt" and data:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                elif blob and proxy.mode == "cut":
                    cut = True
                elif proxy.mode == "manifest" and "/manifests/" in target and method == "GET":
                    data = data.replace(b"{", b"{ ", 1)
                out = f"HTTP/1.1 {answer.status} {answer.reason}\r\n"
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                        out += f"{key}: {value}\r\n"
                out += f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
                self.wfile.write(out.encode() + (data[: len(data) // 2] if cut else data))

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
