"""Malformed and refused requests, sent as raw bytes: meshd answers them itself (status code,
`l5d-err`, a one-line reason), closes the connection because the byte stream can no longer be
trusted, and forwards nothing to the upstream."""
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from meshd_harness import simple_config, wait_until
from upstreams import RawClient, RawUpstream, Upstream, track_connections


@pytest.fixture
def proxied(start_meshd):
    """meshd routing Host `web` to a tracked upstream."""
    upstream = Upstream()
    tracker = track_connections(upstream)
    meshd = start_meshd(disco={"web": upstream.disco_line})
    yield meshd, upstream, tracker
    upstream.close()


def assert_still_serving_and_nothing_forwarded(meshd, upstream, tracker):
    """Nothing from the bad request reached the upstream; a good request afterwards does."""
    assert tracker.total == 0, f"the upstream got {tracker.total} connection(s) for a refused request"
    assert upstream.count() == 0, f"the upstream received {upstream.requests!r}"
    assert meshd.proc.poll() is None, "meshd exited:\n" + "\n".join(meshd.log_lines[-40:])
    response = httpx.get(meshd.url(path="/good"), headers={"host": "web"}, timeout=10)
    assert response.status_code == 200
    assert [record["path"] for record in upstream.requests] == ["/good"]


CASES = {
    "content-length-and-transfer-encoding": (
        b"POST /smuggle HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "two-differing-content-lengths": (
        b"POST /smuggle HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    ),
    "transfer-encoding-gzip": (
        b"POST /smuggle HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: gzip\r\n\r\nabcdef",
        400,
    ),
    "obs-fold": (
        b"GET /fold HTTP/1.1\r\nHost: web\r\nX-Folded: first\r\n second\r\n\r\n",
        400,
    ),
    "nul-in-header-value": (
        b"GET /nul HTTP/1.1\r\nHost: web\r\nX-Nul: a\x00b\r\n\r\n",
        400,
    ),
    "bare-cr-in-header-value": (
        b"GET /cr HTTP/1.1\r\nHost: web\r\nX-Cr: a\rb\r\n\r\n",
        400,
    ),
    "space-before-colon": (
        b"GET /space HTTP/1.1\r\nHost : web\r\n\r\n",
        400,
    ),
    "non-numeric-content-length": (
        b"POST /cl HTTP/1.1\r\nHost: web\r\nContent-Length: 5x\r\n\r\nhello",
        400,
    ),
    "request-line-over-4k": (
        b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: web\r\n\r\n",
        414,
    ),
    "headers-over-8k": (
        b"GET /big HTTP/1.1\r\nHost: web\r\n"
        + b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(10))
        + b"\r\n",
        431,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_request_is_refused_closed_and_not_forwarded(proxied, name):
    meshd, upstream, tracker = proxied
    data, status = CASES[name]
    with RawClient(meshd.router(), timeout=5) as client:
        client.send(data)
        response = client.read_response()
        assert response is not None, "meshd closed the connection without answering"
        assert response.status == status, response
        assert response.has("l5d-err"), response
        assert response.body.strip(), "meshd's own responses carry a one-line reason body"
        assert response.complete
        closed, extra = client.wait_closed(5)
        assert closed, "meshd kept the connection of a malformed request open"
        assert extra == b"", f"meshd sent more after its refusal: {extra!r}"
    assert_still_serving_and_nothing_forwarded(meshd, upstream, tracker)


def test_connect_gets_405_and_the_connection_closes(proxied):
    meshd, upstream, tracker = proxied
    with RawClient(meshd.router(), timeout=5) as client:
        client.send(b"CONNECT host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n")
        head = client.read_head()
        assert head is not None, "meshd closed the connection without answering"
        _, status, _, headers = head
        names = {name.lower() for name, _ in headers}
        assert status == 405
        assert "l5d-err" in names
        closed, _ = client.wait_closed(3)
        assert closed, "meshd kept the connection open after refusing CONNECT (the response has no framing)"
    assert_still_serving_and_nothing_forwarded(meshd, upstream, tracker)


def assert_refused_bad_chunk(client):
    """meshd answers a malformed chunked body with one 400 (or just closes), and closes."""
    response = client.read_response()
    if response is not None:
        assert response.status == 400, response
        assert response.has("l5d-err")
    closed, extra = client.wait_closed(5)
    assert closed, "meshd kept the connection open after a malformed chunk"
    assert extra == b"", f"meshd sent more than one response: {extra!r}"


BAD_CHUNKED = (
    b"POST /chunks HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\nZZ\r\nmore\r\n0\r\n\r\n"
)


def assert_alive_and_only(meshd, upstream, paths):
    assert meshd.proc.poll() is None, "meshd crashed:\n" + "\n".join(meshd.log_lines[-60:])
    response = httpx.get(meshd.url(path="/good"), headers={"host": "web"}, timeout=10)
    assert response.status_code == 200
    assert [record["path"] for record in upstream.requests] == paths + ["/good"], (
        "the upstream saw a request it must not have")


def test_bad_chunk_size_in_the_first_packet(proxied):
    """Head and malformed chunked body in one send, on a fresh meshd."""
    meshd, upstream, _ = proxied
    with RawClient(meshd.router(), timeout=5) as client:
        client.send(BAD_CHUNKED)
        assert_refused_bad_chunk(client)
    assert_alive_and_only(meshd, upstream, [])


def test_bad_chunk_size_while_meshd_connects_upstream(proxied):
    """The name is bound but no pooled connection is left, so the malformed body is seen while meshd is
    still connecting: the pending lease must be given back without a second response (this once
    crashed meshd with 'Received second response while waiting for first one to complete')."""
    meshd, upstream, _ = proxied
    upstream.on("/warm", lambda handler, record: handler.reply(200, b"ok", {"Connection": "close"}))
    assert httpx.get(meshd.url(path="/warm"), headers={"host": "web"}, timeout=10).status_code == 200
    for _ in range(3):
        with RawClient(meshd.router(), timeout=5) as client:
            client.send(BAD_CHUNKED)
            assert_refused_bad_chunk(client)
    assert_alive_and_only(meshd, upstream, ["/warm"])


def test_bad_chunk_size_while_waiting_for_a_pooled_connection(start_meshd):
    """The only pooled connection is busy, so the request queues; its chunked body is malformed."""
    upstream = Upstream()
    held = threading.Event()
    release = threading.Event()

    def hold(handler, record):
        held.set()
        release.wait(15)
        handler.reply(200, b"held")

    upstream.on("/held", hold)
    config = simple_config(extra_router="""
  client:
    hostConnectionPool:
      maxSize: 1
""")
    meshd = start_meshd(config, disco={"web": upstream.disco_line})
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.get, meshd.url(path="/held"), headers={"host": "web"}, timeout=20)
            try:
                assert held.wait(10), "the first request never reached the upstream"
                with RawClient(meshd.router(), timeout=5) as client:
                    client.send(BAD_CHUNKED)
                    assert_refused_bad_chunk(client)
            finally:
                release.set()
            assert first.result(timeout=20).status_code == 200
        assert_alive_and_only(meshd, upstream, ["/held"])
    finally:
        release.set()
        upstream.close()


def test_bad_chunk_size_after_the_request_was_forwarded(start_meshd):
    """Head and a good chunk reach the upstream; then a malformed chunk size. meshd must break the
    upstream connection, never end the half-sent body as if it were complete."""
    received = bytearray()
    got_first_chunk = threading.Event()
    upstream_closed = threading.Event()

    def script(conn):
        conn.settimeout(15)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                received.extend(data)
                if b"\r\n\r\n5\r\nhello\r\n" in received:
                    got_first_chunk.set()
        finally:
            upstream_closed.set()

    raw = RawUpstream(script)
    good = Upstream()
    try:
        meshd = start_meshd(disco={"raw": raw.disco_line, "web": good.disco_line})
        with RawClient(meshd.router(), timeout=5) as client:
            client.send(b"POST /chunks HTTP/1.1\r\nHost: raw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            assert got_first_chunk.wait(10), f"the first chunk never reached the upstream: {bytes(received)!r}"
            client.send(b"ZZ\r\nmore\r\n0\r\n\r\n")
            assert_refused_bad_chunk(client)
        assert upstream_closed.wait(10), "meshd left the upstream connection open"
        assert not bytes(received).endswith(b"0\r\n\r\n"), f"meshd completed the broken body: {bytes(received)!r}"
        assert b"more" not in received
        assert_alive_and_only(meshd, good, [])
    finally:
        raw.close()
        good.close()


def header_section(total):
    """Headers whose size, as meshd measures it (name + value + 4 per header), is exactly `total`."""
    base = [(b"Host", b"web")]
    used = sum(len(name) + len(value) + 4 for name, value in base)
    filler = (b"X-Filler", b"v" * (total - used - len(b"X-Filler") - 4))
    headers = base + [filler]
    assert sum(len(name) + len(value) + 4 for name, value in headers) == total
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers)


@pytest.mark.parametrize("length,status", [(4096, 200), (4097, 414)])
def test_request_line_limit_is_exact(proxied, length, status):
    """The request line (method + SP + target + SP + HTTP/1.1) may be maxInitialLineKB x 1024 bytes, not one more."""
    meshd, upstream, _ = proxied
    line = b"GET /" + b"a" * (length - 14) + b" HTTP/1.1"
    assert len(line) == length
    with RawClient(meshd.router()) as client:
        client.send(line + b"\r\nHost: web\r\n\r\n")
        response = client.read_response()
    assert response.status == status, response
    assert upstream.count() == (1 if status == 200 else 0)
    if status != 200:
        assert response.has("l5d-err")


@pytest.mark.parametrize("size,status", [(8192, 200), (8193, 431)])
def test_header_section_limit_is_exact(proxied, size, status):
    meshd, upstream, _ = proxied
    with RawClient(meshd.router()) as client:
        client.send(b"GET /headers HTTP/1.1\r\n" + header_section(size) + b"\r\n")
        response = client.read_response()
    assert response.status == status, response
    assert upstream.count() == (1 if status == 200 else 0)
    if status != 200:
        assert response.has("l5d-err")
