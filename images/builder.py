"""Dockerfile builds: each step on top of the last, cached by parent and instruction.

A stage starts from an image in the store (made on demand when it is a base that
scow can bootstrap), from ``scratch``, or from an earlier stage. Metadata steps
(ENV, LABEL, CMD...) change the config and add no layer. RUN runs in a writable
container on the host network (as ``docker build`` does) and its overlay
upperdir becomes the layer. COPY and ADD stage files in a directory that becomes
the layer. Every step yields an intermediate image that the build cache maps
its key to, so a rebuild reuses each unchanged step; a COPY's key includes a
hash of what it copies, so touching a file re-runs from that step on.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import platform
import secrets
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from images import base as bases
from images import instructions
from images.cache import BuildCache, step_key
from images.config import add_step, child_config
from images.context import BuildContext, Source
from images.copying import URL_RE, CopyStep, Fetch, copy_into, ensure_dir, image_view
from images.dockerfile import (
    SUBSTITUTED,
    Dockerfile,
    DockerfileError,
    Instruction,
    Stage,
    substitute,
)
from images.dockerfile import parse as parse_dockerfile
from images.errors import ImageError, ImageNotFound
from images.instructions import BuildState
from images.store import Image, ImageStore
from runtime.engine import Runtime, Stdio
from runtime.errors import ContainerError
from runtime.rootdir import RootDir, UnsafePath
from runtime.spec import ImageConfig, RunOptions
from runtime.tarfs import UnsafeArchive

Progress = Callable[[str], None]
DEFAULT_SHELL = ["/bin/sh", "-c"]
# RUN steps get Docker's default capability set, as ``docker build`` gives them:
# package managers drop privileges (SETUID, SETGID) and chown files (CHOWN). Not
# NET_RAW on the host's network: packet sockets there would see the loopback's
# traffic, bearer tokens included.
BUILD_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)  # fmt: skip
BuildNetwork = Literal["host", "none"]
PLATFORM = f"linux/{ {'x86_64': 'amd64', 'aarch64': 'arm64'}.get(platform.machine(), '?') }"


class BuildError(DockerfileError):
    """A step that failed while building (a RUN's exit code, a COPY's missing source)."""


@dataclass(frozen=True)
class BuildOptions:
    context: Path
    dockerfile: str = "Dockerfile"  # in the context
    tag: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    no_cache: bool = False
    target: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # RUN steps' network: the host's (``docker build``'s default here) or none at all;
    # a step's own RUN --network=none|host wins.
    network: BuildNetwork = "host"


@dataclass
class _Build:
    """One build's inputs, and the image each finished stage produced."""

    opts: BuildOptions
    dockerfile: Dockerfile
    context: BuildContext
    results: dict[int, Image | None] = field(default_factory=dict)


class Builder:
    def __init__(
        self, store: ImageStore, runtime: Runtime, progress: Progress = print,
        fetch: Fetch | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.runtime = runtime
        self.progress = progress
        # ADD <url> downloads through this (the node's, which keeps to its outbound
        # policy); without one, ADD of a URL is refused.
        self.fetch = fetch
        self.cache = BuildCache(store.root / "build-cache.json")

    async def build(self, opts: BuildOptions) -> Image:
        with self.store.adding():  # its steps' layers are no image's until it is done
            return await self._build_locked(opts)

    async def _build_locked(self, opts: BuildOptions) -> Image:
        self.store.open()
        try:
            context = BuildContext.load(opts.context)
        except UnsafePath as exc:
            raise ImageError(f"cannot read the build context: {exc.reason}") from None
        try:
            return await self._build(opts, context)
        finally:
            context.close()

    async def _build(self, opts: BuildOptions, context: BuildContext) -> Image:
        text = context.read_dockerfile(opts.dockerfile)
        if text is None:
            raise ImageError(f"no Dockerfile {opts.dockerfile!r} in the build context")
        try:
            dockerfile = parse_dockerfile(text)
        except DockerfileError as exc:
            raise BuildError(exc.line, exc.message) from None
        stages = dockerfile.stages
        if opts.target:
            try:
                last = dockerfile.stage(opts.target)
            except KeyError:
                raise ImageError(f"target stage {opts.target!r} not found") from None
            stages = stages[: last.index + 1]
        global_args = self._global_args(dockerfile, opts.build_args)
        total = sum(1 + len(s.instructions) for s in stages)
        self._step, self._total = 0, total
        build = _Build(opts, dockerfile, context)
        state: BuildState | None = None
        for stage in stages:
            state = await self._stage(stage, build, global_args)
            build.results[stage.index] = state.image
        assert state is not None
        final = await self._finish(state, opts)
        self.progress(f"Successfully built {final.short_id}")
        if opts.tag:
            final = self.store.tag(final.id, opts.tag)
            self.progress(f"Successfully tagged {opts.tag}")
        return final

    def _global_args(self, dockerfile: Dockerfile, build_args: Mapping[str, str]) -> dict[str, str]:
        args: dict[str, str] = {}
        for ins in dockerfile.global_args:
            name, eq, default = ins.args.partition("=")
            args[name] = build_args.get(name, substitute(default, args) if eq else "")
        return args

    def _say_step(self, ins_text: str) -> None:
        self._step += 1
        self.progress(f"Step {self._step}/{self._total} : {ins_text}")

    # -- stages ---------------------------------------------------------------------

    async def _stage(self, stage: Stage, build: _Build, global_args: dict[str, str]) -> BuildState:
        dockerfile = build.dockerfile
        base_ref = substitute(stage.base, global_args, dockerfile.escape)
        self._say_step(f"FROM {base_ref}" + (f" AS {stage.name}" if stage.name else ""))
        scope = {**global_args, "BUILDPLATFORM": PLATFORM, "TARGETPLATFORM": PLATFORM}
        wanted = substitute(stage.platform, scope, dockerfile.escape)
        if wanted and wanted != PLATFORM:
            raise BuildError(stage.line, f"FROM --platform={wanted}: this node builds {PLATFORM}")
        base = await self._base(base_ref, stage, build)
        config = child_config(base.config if base else None)
        config.pop("author", None)
        state = BuildState(config, base, {}, list(config["config"].get("Shell") or DEFAULT_SHELL))
        state.args.update({k: v for k, v in global_args.items() if k in {
            a.args.partition("=")[0] for a in dockerfile.global_args}})  # fmt: skip
        self.progress(f" ---> {base.short_id if base else 'scratch'}")
        triggers = list(state.cfg.pop("OnBuild", None) or [])
        for text in triggers:
            ins = parse_dockerfile(f"FROM scratch\n{text}").stages[0].instructions[0]
            ins = Instruction(stage.line, ins.cmd, ins.args, ins.original, ins.flags, ins.json)
            self.progress(f" ---> Running ONBUILD trigger: {text}")
            await self._step_one(state, ins, build, counted=False)
        for ins in stage.instructions:
            await self._step_one(state, ins, build)
        return state

    async def _base(self, ref: str, stage: Stage, build: _Build) -> Image | None:
        if ref == "scratch":
            return None
        for earlier in build.dockerfile.stages[: stage.index]:
            if earlier.name and earlier.name == ref.lower():
                return build.results[earlier.index]
        try:
            return self.store.get(ref)
        except ImageNotFound:
            if not bases.is_base(ref):
                raise BuildError(stage.line, f"no such image: {ref}") from None
        self.progress(f" ---> {ref} is not in the store: making it")
        loop = asyncio.get_running_loop()

        def progress(line: str) -> None:  # called from the bootstrap's thread
            loop.call_soon_threadsafe(self.progress, f"     {line}")

        return await asyncio.to_thread(bases.bootstrap, self.store, ref, progress)

    # -- steps ----------------------------------------------------------------------

    async def _step_one(
        self, state: BuildState, ins: Instruction, build: _Build, counted: bool = True
    ) -> None:
        if counted:
            self._say_step(ins.original)
        scope = state.scope()
        try:
            escape = build.dockerfile.escape
            args = substitute(ins.args, scope, escape) if ins.cmd in SUBSTITUTED else ins.args
        except ValueError as exc:
            raise BuildError(ins.line, str(exc)) from None
        if ins.cmd == "ARG":
            self._arg(state, args, build.opts)  # ARG changes scope, not the image
            return
        extra = ""
        if ins.cmd in ("COPY", "ADD") and "from" not in ins.flags:
            _, extra = self._sources(ins, args, build.context)
        elif ins.cmd == "COPY":
            src = self._copy_from_image(ins, build)
            extra = src.id if src else "scratch"
        elif ins.cmd == "RUN":
            extra = "\n".join(f"{k}={v}" for k, v in sorted(state.args.items()))
        key = step_key(state.image.id if state.image else None, f"{ins.cmd} {args}", extra)
        if not build.opts.no_cache and (cached := self._cached(key)) is not None:
            self.progress(" ---> Using cache")
            state.config = copy.deepcopy(cached.config)
            state.image = cached
            self.progress(f" ---> {cached.short_id}")
            return
        try:
            diff_id = await self._execute(state, ins, args, build)
        except (UnsafeArchive, UnsafePath) as exc:
            raise BuildError(ins.line, f"{ins.cmd}: {exc}") from None
        add_step(state.config, ins.original, diff_id)
        image = self.store.create_image(state.config, intermediate=True)
        self.cache.put(key, image.id)
        state.image = image
        state.config = copy.deepcopy(image.config)
        self.progress(f" ---> {image.short_id}")

    def _cached(self, key: str) -> Image | None:
        image_id = self.cache.get(key)
        if image_id is None:
            return None
        try:
            return self.store.get(image_id)
        except ImageNotFound:
            return None  # removed since: build the step again

    def _arg(self, state: BuildState, args: str, opts: BuildOptions) -> None:
        name, eq, default = args.partition("=")
        if name in opts.build_args:
            state.args[name] = opts.build_args[name]
        elif eq:
            state.args[name] = default
        else:
            state.args.setdefault(name, "")

    async def _execute(
        self, state: BuildState, ins: Instruction, args: str, build: _Build
    ) -> str | None:
        """Apply one instruction to ``state``; the diff_id of the layer it made, if any."""
        try:
            match ins.cmd:
                case "RUN":
                    return await self._run(state, ins, build.opts.network)
                case "COPY" | "ADD":
                    return await self._copy(state, ins, args, build)
                case "WORKDIR":
                    return await self._ensure_dir(state, instructions.workdir(state, args))
                case _:
                    instructions.apply(state, ins, args, build.dockerfile.escape)
        except (ValueError, OSError) as exc:
            raise BuildError(ins.line, str(exc)) from None
        return None

    async def _run(self, state: BuildState, ins: Instruction, default: BuildNetwork) -> str | None:
        argv = list(ins.json) if ins.json is not None else [*state.shell, ins.args]
        cfg = state.cfg
        env = [f"{k}={v}" for k, v in {**state.args, **state.env()}.items()]
        layers = self.store.layer_dirs(state.image) if state.image else []
        image_config = ImageConfig(
            env=tuple(cfg.get("Env") or ()), working_dir=cfg.get("WorkingDir") or ""
        )
        step = ins.flags.get("network", "default")
        network: BuildNetwork = default if step == "default" else "none" if step == "none" else (
            "host")  # fmt: skip
        caps = BUILD_CAPABILITIES if network == "host" else (*BUILD_CAPABILITIES, "NET_RAW")
        opts = RunOptions(
            entrypoint=tuple(argv), command=(), env=tuple(env), user=cfg.get("User") or "",
            network=network, memory=4 << 30, pids_limit=4096, cap_add=caps,
        )  # fmt: skip
        read_fd, write_fd = os.pipe()
        tail: list[str] = []
        record = None
        try:
            try:
                record = await self.runtime.create(
                    image_config, layers, opts, stdio="pipes",
                    pipes=Stdio(stdout=write_fd, stderr=write_fd),
                )  # fmt: skip
            finally:
                os.close(write_fd)
            await self.runtime.start(record.id)
            reader = asyncio.StreamReader()
            loop = asyncio.get_running_loop()
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0)
            )
            read_fd = -1
            try:
                while line := await reader.readline():
                    text = line.decode(errors="replace").rstrip("\n")
                    self.progress(text)
                    tail = [*tail[-9:], text]
            finally:
                transport.close()
            status = await self.runtime.wait(record.id)
            if status.code != 0:
                detail = f": {' | '.join(tail[-3:])}" if tail else ""
                raise BuildError(ins.line, f"RUN {ins.args!r} failed with {status}{detail}")
            upper = self.runtime.paths(record.id).upper
            return self.store.add_layer_dir(upper) if any(upper.iterdir()) else None
        except ContainerError as exc:
            raise BuildError(ins.line, f"cannot run {ins.args!r}: {exc}") from None
        finally:
            if read_fd >= 0:
                os.close(read_fd)
            if record is not None:
                await self.runtime.remove(record.id, force=True)

    def _sources(
        self, ins: Instruction, args: str, context: BuildContext
    ) -> tuple[list[Source], str]:
        items = list(ins.json) if ins.json is not None else args.split()
        if len(items) < 2:
            raise BuildError(ins.line, f"{ins.cmd} needs a source and a destination")
        sources: list[Source] = []
        urls = []
        for src in items[:-1]:
            if ins.cmd == "ADD" and URL_RE.match(src):
                urls.append(src)
                continue
            try:
                sources.extend(context.select(src))
            except ValueError as exc:
                raise BuildError(ins.line, f"{ins.cmd} {exc}") from None
        return sources, context.digest(sources) + "".join(urls)

    def _copy_from_image(self, ins: Instruction, build: _Build) -> Image | None:
        ref = ins.flags["from"]
        try:
            return build.results[build.dockerfile.stage(ref).index]
        except KeyError:
            pass
        try:
            return self.store.get(ref)
        except ImageNotFound:
            raise BuildError(ins.line, f"COPY --from={ref}: no such stage or image") from None

    def _layers(self, image: Image | None) -> list[Path]:
        return self.store.layer_dirs(image) if image is not None and image.diff_ids else []

    async def _copy(
        self, state: BuildState, ins: Instruction, args: str, build: _Build
    ) -> str | None:
        items = list(ins.json) if ins.json is not None else args.split()
        dest = items[-1]
        absolute = os.path.join(state.cfg.get("WorkingDir") or "/", dest)
        chmod = ins.flags.get("chmod")
        step = CopyStep(
            tuple(items[:-1]), absolute, into_dir=dest.endswith("/") or len(items) > 2,
            add=ins.cmd == "ADD", chown=ins.flags.get("chown"),
            chmod=int(chmod, 8) if chmod else None,
        )  # fmt: skip
        from_image = self._copy_from_image(ins, build) if "from" in ins.flags else None
        staging = self.store.tmp / f"copy-{secrets.token_hex(6)}"
        staging.mkdir(mode=0o700)
        try:
            async with contextlib.AsyncExitStack() as stack:
                view = await stack.enter_async_context(
                    image_view(self.store.tmp, self._layers(state.image)))
                source = None
                if "from" in ins.flags:
                    source = await stack.enter_async_context(
                        image_view(self.store.tmp, self._layers(from_image)))  # fmt: skip
                with RootDir(staging) as out:
                    await asyncio.to_thread(
                        copy_into, step, view, out, source=source, fetch=self.fetch,
                        context=None if source is not None else build.context,
                    )  # fmt: skip
            return await asyncio.to_thread(self.store.add_layer_dir, staging)
        except ValueError as exc:  # a source that is not there
            where = f" in {ins.flags['from']}" if "from" in ins.flags else ""
            raise BuildError(ins.line, f"{ins.cmd} {exc}{where}") from None
        except ContainerError as exc:  # --chown's user, a path refused
            raise BuildError(ins.line, f"{ins.cmd}: {exc}") from None
        except OSError as exc:
            raise BuildError(ins.line, f"{ins.cmd} failed: {exc}") from None
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)

    async def _ensure_dir(self, state: BuildState, path: str) -> str | None:
        """WORKDIR makes its directory when the image does not have it (a small layer)."""
        staging = self.store.tmp / f"workdir-{secrets.token_hex(6)}"
        staging.mkdir(mode=0o700)
        try:
            async with image_view(self.store.tmp, self._layers(state.image)) as view:
                with RootDir(staging) as out:
                    if not await asyncio.to_thread(ensure_dir, view, out, path):
                        return None
            return await asyncio.to_thread(self.store.add_layer_dir, staging)
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)

    async def _finish(self, state: BuildState, opts: BuildOptions) -> Image:
        if opts.labels:
            labels = dict(state.cfg.get("Labels") or {})
            labels.update(opts.labels)
            state.cfg["Labels"] = labels
        unused = set(opts.build_args) - set(state.args)
        if unused:
            self.progress(f"[Warning] One or more build-args {sorted(unused)} were not consumed")
        if state.image is not None and not opts.labels:
            return self.store.create_image(state.image.config)
        return self.store.create_image(state.config)


