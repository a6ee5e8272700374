"""An OCI distribution registry's HTTP API, as a client: manifests, blobs, uploads and
the registry's two ways of asking who we are.

A registry answers 401 with ``WWW-Authenticate: Basic`` (then the credentials go in
each request) or ``Bearer realm=...,service=...,scope=...`` (then a token is asked of
the realm, with the credentials when there are any, and sent instead; one per scope,
kept while it lasts). HTTPS is tried first; plain HTTP only for a registry on a
loopback address or one the operator named insecure, as Docker does.

Everything a registry sends is checked: a manifest's or blob's bytes against the
digest asked for (while they stream, never trusted whole), sizes against caps. This
module moves bytes; ``images/distribution.py`` decides what to fetch and store.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from images.errors import ImageError

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]
MANIFEST_LIMIT = 4 << 20  # a manifest or a config bigger than this is refused
CHUNK = 1 << 20


class RegistryError(ImageError):
    """A registry refused, failed, or sent what it should not have."""


class Unauthorized(RegistryError):
    pass


class NotInRegistry(RegistryError):
    pass


class DigestMismatch(RegistryError):
    def __init__(self, what: str, expected: str, got: str) -> None:
        self.expected, self.got = expected, got
        super().__init__(f"{what} {expected}: the registry sent bytes whose digest is {got}")


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    token: str = ""  # an identity token (docker login's refresh token)

    @classmethod
    def from_header(cls, value: str) -> Credentials:
        """Docker's ``X-Registry-Auth``: base64url of a JSON object; empty: none."""
        if not value:
            return cls()
        try:
            padded = value + "=" * (-len(value) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded))
        except (ValueError, TypeError):
            raise RegistryError("X-Registry-Auth is not base64 of a JSON object") from None
        if not isinstance(data, dict):
            raise RegistryError("X-Registry-Auth is not base64 of a JSON object")
        return cls(str(data.get("username") or ""), str(data.get("password") or ""),
                   str(data.get("identitytoken") or ""))  # fmt: skip

    def basic(self) -> str:
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def __bool__(self) -> bool:
        return bool(self.username or self.token)


def insecure_allowed(host: str, allowed: Iterable[str] = ()) -> bool:
    """Whether plain HTTP may be used with ``host`` (``name[:port]``): a loopback address or
    ``localhost``, or one the operator allowed (``host[:port]`` or a network in CIDR).

    >>> insecure_allowed("127.0.0.1:5000"), insecure_allowed("reg.lan:5000")
    (True, False)
    >>> insecure_allowed("10.1.2.3:443", ["10.0.0.0/8"]), insecure_allowed("reg.lan", ["reg.lan"])
    (True, True)
    """
    name = host.rsplit(":", 1)[0] if re.search(r":\d+$", host) else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None
    if address is not None and address.is_loopback:
        return True
    for entry in allowed:
        entry = entry.strip()
        if not entry:
            continue
        if entry in (host, name):
            return True
        if address is not None and "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {realm, service, ...})."""
    scheme, _, rest = header.partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


@dataclass
class Registry:
    """One registry (``host[:port]``) as one client sees it: its scheme, credentials and
    tokens. Use it in ``async with`` (its connections close after)."""

    host: str
    credentials: Credentials = field(default_factory=Credentials)
    insecure: Iterable[str] = ()
    timeout: float = 60.0
    _client: httpx.AsyncClient | None = None
    _base: str = ""
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # scope -> (token, until)
    _basic: bool = False  # the registry asked for Basic

    async def __aenter__(self) -> Registry:
        self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()

    @property
    def client(self) -> httpx.AsyncClient:
        assert self._client is not None, "use the registry in 'async with'"
        return self._client

    async def base(self) -> str:
        """https://host, or http://host where plain HTTP is allowed and HTTPS fails."""
        if self._base:
            return self._base
        try:
            await self.client.get(f"https://{self.host}/v2/")
            self._base = f"https://{self.host}"
        except httpx.HTTPError as exc:
            if not insecure_allowed(self.host, self.insecure):
                raise RegistryError(f"registry {self.host}: {exc} (plain HTTP is used only "
                                    "for loopback and registries named insecure)") from None
            self._base = f"http://{self.host}"
        return self._base

    async def request(
        self, method: str, path: str, *, scope: str, headers: dict[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None, stream: bool = False,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:  # fmt: skip
        """A request to ``/v2/...``, authenticated as the registry asks (one retry after its
        401); with ``stream`` the caller reads and closes the response."""
        url = httpx.URL(await self.base() + path)
        if params:  # merged: an upload's location carries a query of its own (_state)
            url = url.copy_merge_params(params)
        for attempt in (0, 1):
            sent = dict(headers or {})
            if auth := self._authorization(scope):
                sent["Authorization"] = auth
            body = content
            if attempt and not isinstance(content, bytes | type(None)):
                raise RegistryError(f"registry {self.host} refused an upload after login")
            req = self.client.build_request(method, url, headers=sent, content=body)
            try:
                response = await self.client.send(req, stream=True)
            except httpx.HTTPError as exc:
                raise RegistryError(f"registry {self.host}: {method} {path}: {exc}") from None
            if response.status_code != 401 or attempt:
                if not stream:
                    await response.aread()
                    await response.aclose()
                return response
            await response.aclose()
            await self._login(response.headers.get("www-authenticate", ""), scope)
        raise AssertionError("unreachable")

    def _authorization(self, scope: str) -> str:
        token = self._tokens.get(scope)
        if token is not None and token[1] > time.monotonic():
            return f"Bearer {token[0]}"
        if self._basic and self.credentials.username:
            return self.credentials.basic()
        return ""

    async def _login(self, header: str, scope: str) -> None:
        scheme, params = _challenge(header)
        if scheme == "basic":
            if not self.credentials.username:
                raise Unauthorized(f"registry {self.host} wants a login (docker login "
                                   f"{self.host})")  # fmt: skip
            if self._basic:
                raise Unauthorized(f"registry {self.host} refused the login")
            self._basic = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise Unauthorized(f"registry {self.host} answered 401 without a way to log in")
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        if self.credentials.username:
            query["account"] = self.credentials.username
        headers = {"Authorization": self.credentials.basic()} if self.credentials else {}
        if self.credentials.token:
            answer = await self.client.post(params["realm"], data={
                "grant_type": "refresh_token", "refresh_token": self.credentials.token,
                "service": query["service"], "scope": query["scope"],
                "client_id": "scow"})  # fmt: skip
        else:
            answer = await self.client.get(params["realm"], params=query, headers=headers)
        if answer.status_code in (401, 403):
            raise Unauthorized(f"registry {self.host}'s token service refused the login")
        if answer.status_code != 200:
            raise RegistryError(f"registry {self.host}'s token service answered "
                                f"{answer.status_code}")  # fmt: skip
        try:
            data = answer.json()
            token = str(data.get("token") or data.get("access_token"))
        except (ValueError, AttributeError):
            raise RegistryError(f"registry {self.host}'s token service sent no token") from None
        lifetime = float(data.get("expires_in") or 60)
        self._tokens[scope] = (token, time.monotonic() + max(lifetime - 5, 1))

    # -- what callers use -------------------------------------------------------------

    async def check_login(self) -> None:
        """``docker login``: the credentials open ``/v2/`` (a registry with a token service
        is asked for a token)."""
        response = await self.request("GET", "/v2/", scope="registry:catalog:*")
        if response.status_code == 401:
            raise Unauthorized(f"registry {self.host} refused the login")
        if response.status_code >= 400:
            raise RegistryError(f"registry {self.host} answered {response.status_code} to /v2/")

    async def manifest(self, repo: str, ref: str) -> tuple[bytes, str, str]:
        """A manifest or index by tag or digest: (its bytes, media type, digest). By digest,
        its bytes are checked against it; by tag, against the digest the registry says."""
        response = await self.request(
            "GET", f"/v2/{repo}/manifests/{ref}", scope=f"repository:{repo}:pull",
            headers={"Accept": ", ".join(MANIFEST_TYPES)}, stream=True,
        )  # fmt: skip
        try:
            _raise_for(response, f"{self.host}/{repo}:{ref}")
            data = await _read_capped(response, MANIFEST_LIMIT, f"manifest {repo}:{ref}")
        finally:
            await response.aclose()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        expected = ref if ref.startswith("sha256:") else response.headers.get(
            "docker-content-digest", digest)  # fmt: skip
        if digest != expected:
            raise DigestMismatch("manifest", expected, digest)
        media = response.headers.get("content-type", "").split(";")[0].strip()
        if media not in MANIFEST_TYPES:
            media = str(json.loads(data).get("mediaType") or media)
        return data, media, digest

    async def blob_bytes(self, repo: str, digest: str, limit: int = MANIFEST_LIMIT) -> bytes:
        """A small blob (a config), checked against its digest."""
        h = hashlib.sha256()
        chunks = []
        async for chunk in self.blob(repo, digest, limit):
            h.update(chunk)
            chunks.append(chunk)
        data = b"".join(chunks)
        if "sha256:" + h.hexdigest() != digest:
            raise DigestMismatch("blob", digest, "sha256:" + h.hexdigest())
        return data

    async def blob(self, repo: str, digest: str, limit: int) -> AsyncIterator[bytes]:
        """A blob's bytes as they come (the caller checks the digest), ``limit`` at most."""
        response = await self.request("GET", f"/v2/{repo}/blobs/{digest}", stream=True,
                                      scope=f"repository:{repo}:pull")  # fmt: skip
        try:
            _raise_for(response, f"blob {digest}")
            got = 0
            try:
                async for chunk in response.aiter_bytes(CHUNK):
                    got += len(chunk)
                    if got > limit:
                        raise RegistryError(f"blob {digest} is bigger than its {limit} bytes")
                    yield chunk
            except httpx.HTTPError as exc:
                raise RegistryError(f"blob {digest}: the registry stopped sending it: "
                                    f"{exc or type(exc).__name__}") from None
        finally:
            await response.aclose()

    async def has_blob(self, repo: str, digest: str) -> bool:
        response = await self.request("HEAD", f"/v2/{repo}/blobs/{digest}",
                                      scope=f"repository:{repo}:pull,push")  # fmt: skip
        if response.status_code == 404:
            return False
        _raise_for(response, f"blob {digest}")
        return True

    async def mount(self, repo: str, digest: str, source: str) -> bool:
        """Cross-repository mount of a blob the registry has in ``source``; False when it
        does not do it (it then answers with an upload to make)."""
        response = await self.request(
            "POST", f"/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": source},
            scope=f"repository:{repo}:pull,push repository:{source}:pull",
        )  # fmt: skip
        if response.status_code == 201:
            return True
        if response.status_code == 202:  # an upload started instead: not needed, cancel it
            location = response.headers.get("location", "")
            if location:
                await self.request("DELETE", self._path(location),
                                   scope=f"repository:{repo}:pull,push")  # fmt: skip
            return False
        _raise_for(response, f"mount of {digest} from {source}")
        return False

    async def upload(self, repo: str, digest: str, path: Path, size: int) -> None:
        """Push a blob from a file in one PUT (a monolithic upload)."""
        scope = f"repository:{repo}:pull,push"
        started = await self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope)
        _raise_for(started, f"upload of {digest}", accept=(202,))
        location = started.headers.get("location", "")
        if not location:
            raise RegistryError(f"registry {self.host} started an upload without a location")

        async def body() -> AsyncIterator[bytes]:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk

        done = await self.request(
            "PUT", self._path(location), scope=scope, params={"digest": digest},
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            content=body(),
        )  # fmt: skip
        _raise_for(done, f"upload of {digest}", accept=(201, 204))

    async def upload_bytes(self, repo: str, digest: str, data: bytes) -> None:
        scope = f"repository:{repo}:pull,push"
        started = await self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope)
        _raise_for(started, f"upload of {digest}", accept=(202,))
        done = await self.request(
            "PUT", self._path(started.headers.get("location", "")), scope=scope,
            params={"digest": digest}, content=data,
            headers={"Content-Type": "application/octet-stream"},
        )  # fmt: skip
        _raise_for(done, f"upload of {digest}", accept=(201, 204))

    async def put_manifest(self, repo: str, tag: str, data: bytes, media: str) -> str:
        response = await self.request(
            "PUT", f"/v2/{repo}/manifests/{tag}", scope=f"repository:{repo}:pull,push",
            headers={"Content-Type": media}, content=data,
        )  # fmt: skip
        _raise_for(response, f"manifest {repo}:{tag}", accept=(201,))
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def _path(self, location: str) -> str:
        """An upload's location (absolute or not) as a path on this registry."""
        if location.startswith(("http://", "https://")):
            url = httpx.URL(location)
            if url.host != self.host.rsplit(":", 1)[0]:
                raise RegistryError(f"registry {self.host} sent an upload to another host")
            return url.raw_path.decode()
        return location


def _raise_for(response: httpx.Response, what: str, accept: tuple[int, ...] = (200,)) -> None:
    if response.status_code in accept:
        return
    message = ""
    try:
        errors = json.loads(response.content).get("errors") or []
        message = "; ".join(str(e.get("message") or e.get("code")) for e in errors)
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        pass
    detail = f"{what}: {response.status_code} {message}".strip()
    if response.status_code == 404:
        raise NotInRegistry(f"{detail} (not in the registry)")
    if response.status_code in (401, 403):
        raise Unauthorized(f"{detail} (denied: docker login?)")
    raise RegistryError(detail)


async def _read_capped(response: httpx.Response, limit: int, what: str) -> bytes:
    chunks, got = [], 0
    async for chunk in response.aiter_bytes(CHUNK):
        got += len(chunk)
        if got > limit:
            raise RegistryError(f"{what} is bigger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
