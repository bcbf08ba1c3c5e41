"""Request and response bodies cross meshd intact, framed by Content-Length or chunked, and are
streamed: meshd's memory does not grow with the size of what it carries."""
import hashlib
import random

import httpx
import pytest

from meshd_harness import MEMORY_CHECKS
from upstreams import Upstream

MiB = 1 << 20
_BLOCK = random.Random(1234).randbytes(MiB)


def pieces(size, piece=MiB):
    """`size` deterministic bytes, as pieces of at most `piece` bytes; every MiB is different."""
    sent = 0
    index = 0
    while sent < size:
        block = index.to_bytes(8, "big") + _BLOCK[8:]
        index += 1
        for offset in range(0, MiB, piece):
            part = block[offset:offset + piece][: size - sent]
            if not part:
                return
            sent += len(part)
            yield part


def sha256_of(size):
    digest = hashlib.sha256()
    for part in pieces(size):
        digest.update(part)
    return digest.hexdigest()


def stream_body(handler, record):
    """GET /stream/<cl|chunked>/<size>: streams `size` bytes of `pieces()` without holding them."""
    _, _, mode, size = handler.path.split("/")
    size = int(size)
    handler.send_response(200)
    handler.send_header("content-type", "application/octet-stream")
    if mode == "cl":
        handler.send_header("content-length", str(size))
        handler.end_headers()
        for part in pieces(size, 256 * 1024):
            handler.wfile.write(part)
    else:
        handler.send_header("transfer-encoding", "chunked")
        handler.end_headers()
        for part in pieces(size, 256 * 1024):
            handler.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def proxied(start_meshd):
    upstream = Upstream()
    upstream.on("/stream/", stream_body)
    meshd = start_meshd(disco={"web": upstream.disco_line})
    yield meshd, upstream
    upstream.close()


def upload(client, meshd, size, framing):
    headers = {"host": "web", "content-type": "application/octet-stream"}
    if framing == "content-length":
        headers["content-length"] = str(size)  # httpx then frames the generator by length
    response = client.post(meshd.url(path=f"/upload/{framing}/{size}"), content=pieces(size), headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def check_upload(client, meshd, upstream, size, framing):
    before = upstream.count()
    record = upload(client, meshd, size, framing)
    assert upstream.count() == before + 1
    assert record["path"] == f"/upload/{framing}/{size}"
    assert record["body_size"] == size
    assert record["body_sha256"] == sha256_of(size), f"{framing} request body of {size} bytes changed on the way"
    headers = {name.lower(): value for name, value in record["headers"]}
    if framing == "chunked":
        assert headers.get("transfer-encoding", "").lower() == "chunked"
        assert "content-length" not in headers
    else:
        assert headers.get("content-length") == str(size)
        assert "transfer-encoding" not in headers


def check_download(client, meshd, size, mode):
    digest = hashlib.sha256()
    received = 0
    with client.stream("GET", meshd.url(path=f"/stream/{mode}/{size}"), headers={"host": "web"}) as response:
        assert response.status_code == 200
        if mode == "cl":
            assert response.headers["content-length"] == str(size)
        else:
            assert response.headers.get("transfer-encoding") == "chunked"
        for part in response.iter_raw():
            digest.update(part)
            received += len(part)
    assert received == size
    assert digest.hexdigest() == sha256_of(size), f"{mode} response body of {size} bytes changed on the way"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("size", [0, MiB], ids=["0B", "1MiB"])
def test_request_body_arrives_intact(proxied, size, framing):
    meshd, upstream = proxied
    with httpx.Client(timeout=60) as client:
        check_upload(client, meshd, upstream, size, framing)
        # and the connection stays usable afterwards
        check_upload(client, meshd, upstream, 1000, framing)


@pytest.mark.parametrize("mode", ["cl", "chunked"])
def test_response_body_arrives_intact(proxied, mode):
    meshd, _ = proxied
    with httpx.Client(timeout=60) as client:
        check_download(client, meshd, MiB, mode)
        check_download(client, meshd, 1000, mode)


def test_64mib_bodies_stream_without_growing_memory(proxied):
    """64 MiB each way, both framings; meshd's RSS after them stays near its RSS after 1 MiB ones."""
    meshd, upstream = proxied
    with httpx.Client(timeout=120) as client:
        for _ in range(2):
            for framing in ("content-length", "chunked"):
                check_upload(client, meshd, upstream, MiB, framing)
            for mode in ("cl", "chunked"):
                check_download(client, meshd, MiB, mode)
        rss_after_small = meshd.rss_kb()
        for framing in ("content-length", "chunked"):
            check_upload(client, meshd, upstream, 64 * MiB, framing)
        for mode in ("cl", "chunked"):
            check_download(client, meshd, 64 * MiB, mode)
        rss_after_large = meshd.rss_kb()
    growth_mb = (rss_after_large - rss_after_small) / 1024
    assert growth_mb < 32 or not MEMORY_CHECKS, (
        f"meshd's RSS grew by {growth_mb:.1f} MB carrying 64 MiB bodies "
        f"({rss_after_small} kB after 1 MiB bodies, {rss_after_large} kB after 64 MiB ones)"
    )
