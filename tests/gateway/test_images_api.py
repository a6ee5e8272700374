"""Image routes: build with streamed progress, bootstrap, list, inspect, history, tag, remove."""

from __future__ import annotations

import io
import json
import tarfile

import httpx

from pool.manager import PoolManager


def context_tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


DOCKERFILE = b"""FROM busybox
ARG GREETING=hi
LABEL purpose=test
COPY hello.txt /hello.txt
RUN echo "$GREETING" > /greeting
CMD ["cat", "/greeting"]
"""


async def _stream(api: httpx.AsyncClient, method: str, url: str, **kw: object) -> list[dict]:  # type: ignore[type-arg]
    async with api.stream(method, url, **kw) as response:  # type: ignore[arg-type]
        assert response.status_code == 200, await response.aread()
        return [json.loads(line) async for line in response.aiter_lines() if line]


async def test_build_streams_progress_and_the_image_is_usable(
    api: httpx.AsyncClient, manager: PoolManager
) -> None:
    body = context_tar({"Dockerfile": DOCKERFILE, "hello.txt": b"hello\n"})
    messages = await _stream(
        api, "POST", "/v1.43/build",
        params={"t": "tests/built:1", "buildargs": json.dumps({"GREETING": "hey"})},
        content=body, headers={"Content-Type": "application/x-tar"},
    )  # fmt: skip
    text = "".join(m.get("stream", "") for m in messages)
    assert "Step 1/6 : FROM busybox" in text and "Successfully tagged tests/built:1" in text
    image_id = next(m["aux"]["ID"] for m in messages if "aux" in m)
    try:
        listed = (await api.get("/images/json")).json()
        mine = next(i for i in listed if "tests/built:1" in i["RepoTags"])
        assert mine["Id"] == image_id and mine["Labels"] == {"purpose": "test"}
        inspected = (await api.get("/images/tests/built:1/json")).json()
        assert inspected["Config"]["Cmd"] == ["cat", "/greeting"]
        history = (await api.get("/images/tests/built:1/history")).json()
        assert any("COPY" in row["CreatedBy"] for row in history)
        assert history[0]["Id"] == image_id

        tagged = await api.post("/images/tests/built:1/tag", params={"repo": "tests/other",
                                                                     "tag": "2"})  # fmt: skip
        assert tagged.status_code == 201
        untagged = (await api.delete("/images/tests/other:2")).json()
        assert untagged == [{"Untagged": "tests/other:2"}]
    finally:
        removed = (await api.delete("/images/tests/built:1")).json()
    assert {"Deleted": image_id} in removed
    assert (await api.get("/images/tests/built:1/json")).status_code == 404


async def test_build_errors_arrive_in_the_stream(
    api: httpx.AsyncClient, manager: PoolManager
) -> None:
    bad = context_tar({"Dockerfile": b"FROM busybox\nRUN exit 7\n"})
    messages = await _stream(api, "POST", "/build", content=bad)
    errors = [m for m in messages if "error" in m]
    assert errors and "7" in errors[0]["error"] and errors[0]["errorDetail"]["message"]
    no_dockerfile = await _stream(api, "POST", "/build", content=context_tar({"a": b""}))
    assert "no Dockerfile" in next(m for m in no_dockerfile if "error" in m)["error"]
    empty = await api.post("/build", content=b"")
    assert empty.status_code == 400


async def test_bootstrap_streams_progress(api: httpx.AsyncClient, manager: PoolManager) -> None:
    messages = await _stream(api, "POST", "/system/images/bootstrap", params={"name": "busybox"})
    assert any("busybox" in m.get("stream", "") for m in messages)
    assert any("aux" in m for m in messages)
    unknown = await _stream(api, "POST", "/system/images/bootstrap", params={"name": "windows"})
    assert "windows" in next(m for m in unknown if "error" in m)["error"]


async def test_image_errors(api: httpx.AsyncClient, manager: PoolManager) -> None:
    missing = await api.get("/images/no/such:image/json")
    assert missing.status_code == 404 and "no/such" in missing.json()["message"]
    assert (await api.delete("/images/no/such:image")).status_code == 404
    no_repo = await api.post("/images/busybox/tag")
    assert no_repo.status_code == 400


async def test_no_node_is_503_at_once(api: httpx.AsyncClient) -> None:
    response = await api.get("/images/json")
    assert response.status_code == 503 and response.json()["error"] == "no_node"
    build = await api.post("/build", content=context_tar({"Dockerfile": DOCKERFILE}))
    assert build.status_code == 503
