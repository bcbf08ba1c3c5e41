"""Edges of the request path found by an adversarial review of the exchange machine and the
HTTP/1 drivers: a retryable response that stalls, answers cut by a close while still being
written, answers nobody reads, many tiny chunks held for replay, and transfer codings meshd
does not decode."""
import socket
import threading
import time

import pytest

from meshd_harness import MEMORY_CHECKS, simple_config, wait_until
from upstreams import RawClient, RawUpstream, Upstream, read_request_head


def serve(script_by_connection):
    """A raw upstream whose n-th connection runs script_by_connection(n, conn)."""
    counter = {"n": 0}
    lock = threading.Lock()

    def run(conn):
        with lock:
            index = counter["n"]
            counter["n"] += 1
        script_by_connection(index, conn)

    return RawUpstream(run)


def test_a_stalled_retryable_response_is_dropped_and_the_retry_goes(start_meshd):
    release = threading.Event()

    def script(index, conn):
        while True:
            head = read_request_head(conn)
            if not head:
                return
            if index == 0:
                # 503 with 10 of its 100 body bytes, then nothing until the test ends.
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\n0123456789")
                release.wait(30)
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    upstream = serve(script)
    try:
        meshd = start_meshd(simple_config(extra_router="  service:\n    responseClassifier: {kind: io.l5d.http.retryableRead5XX}"),
                            disco={"web": upstream.disco_line})
        with RawClient(meshd.router(), timeout=10) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            # Before the fix the retry waited for the stalled body (30 s here): the read timed out.
            response = client.read_response()
        assert response.status == 200 and response.body == b"ok"
        assert upstream.connections == 2
    finally:
        release.set()
        upstream.close()


def test_a_large_retryable_response_is_not_read_to_its_end(start_meshd):
    sent = {"bytes": 0}
    release = threading.Event()

    def script(index, conn):
        head = read_request_head(conn)
        if not head:
            return
        if index == 0:
            conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 104857600\r\n\r\n")
            chunk = b"x" * 65536
            try:
                while sent["bytes"] < 100 * 1024 * 1024 and not release.is_set():
                    conn.sendall(chunk)
                    sent["bytes"] += len(chunk)
            except OSError:
                return
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    upstream = serve(script)
    try:
        meshd = start_meshd(simple_config(extra_router="  service:\n    responseClassifier: {kind: io.l5d.http.retryableRead5XX}"),
                            disco={"web": upstream.disco_line})
        with RawClient(meshd.router(), timeout=10) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            response = client.read_response()
        assert response.status == 200
        # meshd closed the 100 MB 503 well before its end (it reads away at most 64 KiB).
        assert sent["bytes"] < 100 * 1024 * 1024
    finally:
        release.set()
        upstream.close()


def big_response_upstream(size):
    def script(conn):
        head = read_request_head(conn)
        if head:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"y" * size)
    return RawUpstream(script)


@pytest.mark.parametrize("trigger", ["sigterm", "idle", "lifetime"])
def test_a_close_waits_for_the_answer_still_being_written(start_meshd, trigger):
    size = 3 * 1024 * 1024
    upstream = big_response_upstream(size)
    session = {"idle": "    serverSession: {idleTimeMs: 300}", "lifetime": "    serverSession: {lifeTimeMs: 300}"}.get(trigger, "")
    try:
        meshd = start_meshd(simple_config(extra_server=session), disco={"web": upstream.disco_line})
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(20)
        sock.connect(meshd.router())
        sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        # The exchange is over once meshd has the whole response from the upstream; most of it
        # still waits in meshd's write queue for this client, which has read nothing yet.
        wait_until(lambda: meshd.metrics().get('meshd_router_responses_total{router="http",class="2xx"}', 0) >= 1, timeout=10)
        if trigger == "sigterm":
            meshd.terminate()
        received = b""
        while True:
            # A slow reader (64 KiB every 20 ms: about a second for the whole response, well past
            # the 300 ms idle time or lifetime).
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
            time.sleep(0.02)
        sock.close()
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert len(body) == size
    finally:
        upstream.close()


@pytest.mark.skipif(not MEMORY_CHECKS, reason="sanitizer builds' memory figures mean nothing")
def test_answers_nobody_reads_stop_meshd_reading(start_meshd):
    """A client pipelining requests meshd refuses itself (no route), never reading the answers:
    meshd stops reading it instead of piling up answers."""
    meshd = start_meshd(simple_config(), disco={})
    before = meshd.rss_kb()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(meshd.router())
    sock.settimeout(3)
    request = b"GET / HTTP/1.1\r\nHost: nosuch\r\n\r\n" * 1000
    sent = 0
    try:
        while sent < 32 * 1024 * 1024:
            sock.sendall(request)
            sent += len(request)
    except socket.timeout:
        pass
    grown = meshd.rss_kb() - before
    sock.close()
    # Before the fix: every request sent was answered into memory, ~26 bytes per byte sent.
    assert sent < 32 * 1024 * 1024, "meshd kept reading a client that reads nothing"
    assert grown < 64 * 1024, f"RSS grew by {grown} KiB"


@pytest.mark.skipif(not MEMORY_CHECKS, reason="sanitizer builds' memory figures mean nothing")
def test_tiny_chunks_kept_for_replay_are_bounded(start_meshd):
    release = threading.Event()
    complete = []

    def script(conn):
        data = b""
        while not data.endswith(b"0\r\n\r\n") and not release.is_set():
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        complete.append(len(data))
        release.wait(30)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    upstream = RawUpstream(script)
    try:
        meshd = start_meshd(simple_config(), disco={"web": upstream.disco_line})
        before = meshd.rss_kb()
        clients = []
        for _ in range(4):
            sock = socket.create_connection(meshd.router(), timeout=20)
            sock.sendall(b"PUT / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(60):
                # 1,000 one-byte chunks per write, each its own read for meshd at worst.
                sock.sendall(b"1\r\nz\r\n" * 1000)
            sock.sendall(b"0\r\n\r\n")
            clients.append(sock)
        # Every body has passed through meshd to the upstream, which holds its answer: what meshd
        # kept of them for a replay is still held.
        wait_until(lambda: len(complete) >= 4, timeout=30)
        grown = meshd.rss_kb() - before
        release.set()
        for sock in clients:
            sock.close()
        # 4 requests × at most twice the 64 KiB retry buffer, plus slack; before: ~4 MB each.
        assert grown < 8 * 1024, f"RSS grew by {grown} KiB"
    finally:
        release.set()
        upstream.close()


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"gzip"])
def test_a_transfer_coding_meshd_does_not_decode_is_a_502(start_meshd, coding):
    def script(conn):
        if read_request_head(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\n\r\n5\r\n\x1f\x8b\x08\x00\x00\r\n0\r\n\r\n")

    upstream = RawUpstream(script)
    try:
        meshd = start_meshd(simple_config(), disco={"web": upstream.disco_line})
        with RawClient(meshd.router(), timeout=10) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            response = client.read_response()
        assert response.status == 502
        assert "transfer coding" in response.header("l5d-err")
    finally:
        upstream.close()


def test_a_head_response_declaring_a_body_does_not_leave_its_connection_for_the_next_request(start_meshd):
    """An upstream that answers HEAD with a Content-Length and then (lying) sends a body: if its
    connection were reused, that body would be the next request's answer."""
    def script(conn):
        first = True
        while True:
            head = read_request_head(conn)
            if not head:
                return
            if head.startswith(b"HEAD"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
            elif first:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
            else:
                # A request after the HEAD on the same connection: the late, unasked-for body.
                conn.sendall(b"EVILHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")
            first = False

    upstream = RawUpstream(script)
    try:
        meshd = start_meshd(simple_config(), disco={"web": upstream.disco_line}, args=("--threads", "1"))
        with RawClient(meshd.router(), timeout=10) as client:
            client.send(b"HEAD / HTTP/1.1\r\nHost: web\r\n\r\n")
            assert client.read_response(method="HEAD").status == 200
        with RawClient(meshd.router(), timeout=10) as client:
            client.send(b"GET /victim HTTP/1.1\r\nHost: web\r\n\r\n")
            response = client.read_response()
        assert response.status == 200 and response.body == b"good"
        assert upstream.connections == 2
    finally:
        upstream.close()
