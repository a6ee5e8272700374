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
import copy
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from images import base as bases
from images.cache import BuildCache, step_key
from images.config import add_step, child_config
from images.context import BuildContext
from images.copying import below, download, is_dir_in, make_parents, place
from images.dockerfile import (
    SUBSTITUTED,
    Dockerfile,
    DockerfileError,
    Instruction,
    Stage,
    substitute,
    words,
)
from images.dockerfile import parse as parse_dockerfile
from images.errors import ImageError, ImageNotFound, UnsafeArchive
from images.layers import find_in_layers
from images.store import Image, ImageStore
from runtime.engine import Runtime, Stdio
from runtime.errors import ContainerError
from runtime.rootfs import mount_overlay, unmount
from runtime.spec import ImageConfig, RunOptions
from runtime.units import parse_duration
from runtime.users import resolve_user

Progress = Callable[[str], None]
DEFAULT_SHELL = ["/bin/sh", "-c"]
# RUN steps get Docker's default capability set, as ``docker build`` gives them:
# package managers drop privileges (SETUID, SETGID) and chown files (CHOWN).
BUILD_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)  # fmt: skip


class BuildError(ImageError):
    def __init__(self, line: int, message: str) -> None:
        self.line, self.message = line, message
        super().__init__(f"Dockerfile line {line}: {message}")


@dataclass(frozen=True)
class BuildOptions:
    context: Path
    dockerfile: Path | None = None  # default: <context>/Dockerfile
    tag: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    no_cache: bool = False
    target: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _Build:
    """One build's inputs, and the image each finished stage produced."""

    opts: BuildOptions
    dockerfile: Dockerfile
    context: BuildContext
    results: dict[int, Image | None] = field(default_factory=dict)


@dataclass
class _State:
    config: dict[str, Any]
    image: Image | None  # the image the next step builds on (None: scratch, no step yet)
    args: dict[str, str]
    shell: list[str]

    @property
    def cfg(self) -> dict[str, Any]:
        inner: dict[str, Any] = self.config.setdefault("config", {})
        return inner

    def env(self) -> dict[str, str]:
        return dict(item.partition("=")[::2] for item in self.cfg.get("Env") or [])

    def scope(self) -> dict[str, str]:
        """Variables for substitution: ARGs, then ENV over them (Docker's precedence)."""
        return {**self.args, **self.env()}


class Builder:
    def __init__(self, store: ImageStore, runtime: Runtime, progress: Progress = print) -> None:
        self.store = store
        self.runtime = runtime
        self.progress = progress
        self.cache = BuildCache(store.root / "build-cache.json")

    async def build(self, opts: BuildOptions) -> Image:
        self.store.open()
        path = opts.dockerfile or opts.context / "Dockerfile"
        try:
            text = path.read_text()
        except OSError as exc:
            raise ImageError(f"cannot read {path}: {exc.strerror}") from None
        try:
            dockerfile = parse_dockerfile(text)
        except DockerfileError as exc:
            raise BuildError(exc.line, exc.message) from None
        context = BuildContext.load(opts.context)
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
        state: _State | None = None
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

    async def _stage(self, stage: Stage, build: _Build, global_args: dict[str, str]) -> _State:
        dockerfile = build.dockerfile
        base_ref = substitute(stage.base, global_args, dockerfile.escape)
        self._say_step(f"FROM {base_ref}" + (f" AS {stage.name}" if stage.name else ""))
        base = await self._base(base_ref, stage, build)
        config = child_config(base.config if base else None)
        config.pop("author", None)
        state = _State(config, base, {}, list(config["config"].get("Shell") or DEFAULT_SHELL))
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
        self, state: _State, ins: Instruction, build: _Build, counted: bool = True
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
        sources: list[Path] = []
        if ins.cmd in ("COPY", "ADD") and "from" not in ins.flags:
            sources, extra = self._sources(ins, args, build.context)
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
        diff_id = await self._execute(state, ins, args, sources, build)
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

    def _arg(self, state: _State, args: str, opts: BuildOptions) -> None:
        name, eq, default = args.partition("=")
        if name in opts.build_args:
            state.args[name] = opts.build_args[name]
        elif eq:
            state.args[name] = default
        else:
            state.args.setdefault(name, "")

    async def _execute(
        self, state: _State, ins: Instruction, args: str, sources: list[Path], build: _Build
    ) -> str | None:
        """Apply one instruction to ``state``; the diff_id of the layer it made, if any."""
        cfg = state.cfg
        try:
            match ins.cmd:
                case "RUN":
                    return await self._run(state, ins)
                case "COPY" | "ADD":
                    return await self._copy(state, ins, args, sources, build)
                case "WORKDIR":
                    path = os.path.join(cfg.get("WorkingDir") or "/", args)
                    cfg["WorkingDir"] = os.path.normpath(path)
                    return self._ensure_dir(state, cfg["WorkingDir"])
                case "ENV":
                    env = state.env()
                    env.update(_pairs(ins, args, build.dockerfile.escape, state.scope()))
                    cfg["Env"] = [f"{k}={v}" for k, v in env.items()]
                case "LABEL":
                    labels = dict(cfg.get("Labels") or {})
                    labels.update(_pairs(ins, args, build.dockerfile.escape, state.scope()))
                    cfg["Labels"] = labels
                case "MAINTAINER":
                    state.config["author"] = args
                case "USER":
                    cfg["User"] = args
                case "EXPOSE":
                    ports = dict(cfg.get("ExposedPorts") or {})
                    for p in args.split():
                        ports[p if "/" in p else f"{p}/tcp"] = {}
                    cfg["ExposedPorts"] = ports
                case "VOLUME":
                    volumes = dict(cfg.get("Volumes") or {})
                    for v in ins.json if ins.json is not None else args.split():
                        volumes[v] = {}
                    cfg["Volumes"] = volumes
                case "CMD":
                    cfg["Cmd"] = list(ins.json) if ins.json is not None else [*state.shell, args]
                case "ENTRYPOINT":
                    cfg["Entrypoint"] = (
                        list(ins.json) if ins.json is not None else [*state.shell, args]
                    )
                    cfg["Cmd"] = None  # Docker resets an inherited CMD
                case "SHELL":
                    state.shell = list(ins.json or ())
                    cfg["Shell"] = state.shell
                case "STOPSIGNAL":
                    cfg["StopSignal"] = args
                case "HEALTHCHECK":
                    cfg["Healthcheck"] = _healthcheck(ins, state.shell)
                case "ONBUILD":
                    trigger = args.split(None, 1)[0].upper() if args else ""
                    if trigger in ("ONBUILD", "FROM", "MAINTAINER", ""):
                        raise BuildError(
                            ins.line, f"{trigger or 'nothing'} is not allowed in ONBUILD"
                        )
                    cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), args]
        except (ValueError, OSError) as exc:
            raise BuildError(ins.line, str(exc)) from None
        return None

    async def _run(self, state: _State, ins: Instruction) -> str | None:
        argv = list(ins.json) if ins.json is not None else [*state.shell, ins.args]
        cfg = state.cfg
        env = [f"{k}={v}" for k, v in {**state.args, **state.env()}.items()]
        layers = self.store.layer_dirs(state.image) if state.image else []
        image_config = ImageConfig(
            env=tuple(cfg.get("Env") or ()), working_dir=cfg.get("WorkingDir") or ""
        )
        opts = RunOptions(
            entrypoint=tuple(argv), command=(), env=tuple(env), user=cfg.get("User") or "",
            network="host", memory=4 << 30, pids_limit=4096, cap_add=BUILD_CAPABILITIES,
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
    ) -> tuple[list[Path], str]:
        items = list(ins.json) if ins.json is not None else args.split()
        if len(items) < 2:
            raise BuildError(ins.line, f"{ins.cmd} needs a source and a destination")
        paths: list[Path] = []
        urls = []
        for src in items[:-1]:
            if ins.cmd == "ADD" and re.match(r"^https?://", src):
                urls.append(src)
                continue
            try:
                paths.extend(context.select(src))
            except ValueError as exc:
                raise BuildError(ins.line, f"{ins.cmd} {exc}") from None
        return paths, context.digest(paths) + "".join(urls)

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

    async def _copy(
        self, state: _State, ins: Instruction, args: str, sources: list[Path], build: _Build
    ) -> str | None:
        items = list(ins.json) if ins.json is not None else args.split()
        dest = items[-1]
        if not dest.startswith("/"):
            dest = os.path.join(state.cfg.get("WorkingDir") or "/", dest)
        layers = self.store.layer_dirs(state.image) if state.image else []
        into_dir = items[-1].endswith("/") or len(items) > 2 or is_dir_in(layers, dest)
        staging = self.store.tmp / f"copy-{secrets.token_hex(6)}"
        mount: Path | None = None
        try:
            target = staging / dest.lstrip("/")
            parent = target if into_dir else target.parent
            make_parents(staging, parent, layers)
            if "from" in ins.flags:
                image = self._copy_from_image(ins, build)
                mount = Path(tempfile.mkdtemp(dir=self.store.tmp, prefix="from-"))
                if image is not None and image.diff_ids:
                    await asyncio.to_thread(
                        mount_overlay, mount / "root", self.store.layer_dirs(image)
                    )
                root = mount / "root"
                for name in items[:-1]:
                    origin = root / name.lstrip("/")
                    if ".." in Path(name).parts or not os.path.lexists(origin):
                        stage = ins.flags["from"]
                        raise BuildError(ins.line, f"COPY --from: {name} not found in {stage}")
                    await asyncio.to_thread(place, origin, target, into_dir, None)
            else:
                for src in sources:
                    add = ins.cmd == "ADD"
                    await asyncio.to_thread(place, src, target, into_dir, build.context, add)
                for url in [s for s in items[:-1] if re.match(r"^https?://", s)]:
                    await asyncio.to_thread(download, url, target, into_dir)
            if "chown" in ins.flags:
                uid, gid = self._owner(ins, layers)
                for path in below(parent):
                    os.lchown(path, uid, gid)
            return self.store.add_layer_dir(staging)
        except UnsafeArchive as exc:
            raise BuildError(ins.line, f"ADD: {exc}") from None
        except OSError as exc:
            raise BuildError(ins.line, f"{ins.cmd} failed: {exc}") from None
        finally:
            if mount is not None:
                await asyncio.to_thread(unmount, mount / "root")
                shutil.rmtree(mount, ignore_errors=True)
            shutil.rmtree(staging, ignore_errors=True)

    def _owner(self, ins: Instruction, layers: list[Path]) -> tuple[int, int]:
        """``--chown``: a user without a group takes the same number as its gid (Docker's rule)."""

        def text(rel: str) -> str:
            found = find_in_layers(layers, rel)
            return found.read_text() if found is not None and found.is_file() else ""

        spec = ins.flags["chown"]
        try:
            user = resolve_user(spec, text("etc/passwd"), text("etc/group"))
        except ContainerError as exc:
            raise BuildError(ins.line, f"--chown: {exc}") from None
        return (user.uid, user.gid) if ":" in spec else (user.uid, user.uid)

    def _ensure_dir(self, state: _State, path: str) -> str | None:
        """WORKDIR makes its directory when the image does not have it (a small layer)."""
        layers = self.store.layer_dirs(state.image) if state.image else []
        if find_in_layers(layers, path) is not None:
            return None
        staging = self.store.tmp / f"workdir-{secrets.token_hex(6)}"
        try:
            make_parents(staging, staging / path.lstrip("/"), layers)
            return self.store.add_layer_dir(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    async def _finish(self, state: _State, opts: BuildOptions) -> Image:
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


def _pairs(ins: Instruction, args: str, escape: str, scope: Mapping[str, str]) -> dict[str, str]:
    """KEY=VALUE words, or the legacy ``KEY VALUE...`` form."""
    first = args.split(None, 1)
    if first and "=" not in first[0]:
        if len(first) < 2:
            raise BuildError(ins.line, f"{ins.cmd} {first[0]} needs a value")
        return {first[0]: "".join(words(first[1], {}, escape)) if first[1] else ""}
    out = {}
    for word in words(ins.args, scope, escape):
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise BuildError(ins.line, f"{ins.cmd} expects KEY=VALUE, got {word!r}")
        out[key] = value
    return out


def _healthcheck(ins: Instruction, shell: list[str]) -> dict[str, Any]:
    if ins.args.strip().upper() == "NONE":
        return {"Test": ["NONE"]}
    kind, _, rest = ins.args.partition(" ")
    if kind.upper() != "CMD":
        raise BuildError(ins.line, "HEALTHCHECK expects [OPTIONS] CMD command, or NONE")
    rest = rest.strip()
    form = rest.startswith("[")
    test = ["CMD", *json.loads(rest)] if form else ["CMD-SHELL", rest]
    check: dict[str, Any] = {"Test": test}
    names = {"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod",
             "start-interval": "StartInterval"}  # fmt: skip
    for flag, value in ins.flags.items():
        if flag == "retries":
            check["Retries"] = int(value)
        else:
            check[names[flag]] = int(parse_duration(value, f"HEALTHCHECK --{flag}") * 1e9)
    return check
