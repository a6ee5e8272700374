"""A node's way to registries: pulls and pushes for the image commands and for functions
deployed by registry reference, one pull of a reference at a time however many ask.

Credentials are the asker's (Docker's ``X-Registry-Auth``, passed through), else those
kept for the registry by ``docker login``/``scow login`` (in Redis: see
``pool.contract.keys``), which is how a node pulls a function's image long after its
deploy. Plain HTTP goes only to loopback registries and those the operator named
(``python -m pool --insecure-registry``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from images.distribution import Progress, Remote, pull, push, resolve
from images.registry import Credentials, Registry
from images.store import Image, ImageStore

log = logging.getLogger("scow.pool")

StoredLogin = Callable[[str], Awaitable[str]]  # registry host -> X-Registry-Auth, or ""


async def _no_login(registry: str) -> str:
    return ""


class Registries:
    def __init__(self, insecure: Iterable[str] = (), stored: StoredLogin = _no_login) -> None:
        self.insecure = [i for i in insecure if i]
        self.stored = stored
        self._pulls: dict[tuple[str, str], asyncio.Task[Image]] = {}

    async def credentials(self, registry: str, auth: object) -> Credentials:
        header = auth if isinstance(auth, str) and auth else await self.stored(registry)
        return Credentials.from_header(header)

    async def pull(
        self, store: ImageStore, remote: Remote, auth: object, progress: Progress
    ) -> Image:
        """Pull ``remote``; while a pull of it runs, another asker waits for that one."""
        key = (str(store.root), str(remote))
        running = self._pulls.get(key)
        if running is None:
            credentials = await self.credentials(remote.registry, auth)
            running = asyncio.ensure_future(
                pull(store, remote, credentials, progress, self.insecure))
            self._pulls[key] = running
            running.add_done_callback(lambda _: self._pulls.pop(key, None))
        else:
            progress({"status": f"Waiting for the pull of {remote} under way"})
        return await asyncio.shield(running)

    async def push(
        self, store: ImageStore, local: str, remote: Remote, auth: object, progress: Progress
    ) -> tuple[str, int]:
        credentials = await self.credentials(remote.registry, auth)
        return await push(store, local, remote, credentials, progress, self.insecure)

    async def resolve(self, remote: Remote, auth: object) -> str:
        return await resolve(remote, await self.credentials(remote.registry, auth), self.insecure)

    async def login(self, server: str, auth: object) -> None:
        credentials = await self.credentials(server, auth)
        async with Registry(server, credentials, self.insecure) as registry:
            await registry.check_login()
