"""Upstreams that refuse, reset, speak garbage or stop half-way: meshd answers 502/503 with
`l5d-err` when it still can, breaks the connection when the response had already begun, never
passes garbage on, and keeps serving everything else."""
import random
import socket
import struct

import httpx
import pytest

from upstreams import RawClient, RawUpstream, Upstream, free_port, read_request_head


def wait_for_close(conn, timeout=5.0):
    """Keeps the connection until meshd closes it (so a close of ours does not race what we sent)."""
    conn.settimeout(timeout)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def reset_after_request(conn):
    read_request_head(conn)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def answer_with(data):
    def script(conn):
        read_request_head(conn)
        conn.sendall(data)
        wait_for_close(conn)
    return script


def answer_then_close(data):
    def script(conn):
        read_request_head(conn)
        conn.sendall(data)
    return script


GARBAGE = random.Random(99).randbytes(600).replace(b"H", b"h")  # cannot start like "HTTP/"
HALF_BODY = b"A" * 500
def answer_once_then_close(conn):
    """A keep-alive response (no Connection: close), then the upstream closes the idle connection."""
    head = read_request_head(conn)
    path = head.split(b" ")[1]
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path))


# Responses meshd's parser must refuse (502, nothing forwarded), each carrying the marker LEAK.
MALFORMED = {
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n continued\r\nContent-Length: 4\r\n\r\nLEAK",
    "space-before-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 4\r\n\r\nLEAK",
    "length-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nLEAK\r\n0\r\n\r\n",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nLEAK!",
    "signed-length": b"HTTP/1.1 200 OK\r\nContent-Length: +4\r\n\r\nLEAK",
    "nul-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 4\r\n\r\nLEAK",
    "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 4\n\nLEAK",
    "http2-status-line": b"HTTP/2.0 200 OK\r\nContent-Length: 4\r\n\r\nLEAK",
    "short-status": b"HTTP/1.1 20 OK\r\nContent-Length: 4\r\n\r\nLEAK",
}
# Responses framed in less common ways that must arrive whole: (bytes, body the client gets).
WELL_FORMED = {
    "chunk-extension": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n", b"hello"),
    "upper-case-chunk-size": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    "until-close": (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nread to the end", b"read to the end"),
    "http-1.0": (b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nten bytes!", b"ten bytes!"),
    "folded-case-headers": (b"HTTP/1.1 200 OK\r\ncOnTeNt-LeNgTh: 3\r\nconnection: Keep-Alive\r\n\r\nabc", b"abc"),
}

RAW_SCRIPTS = {
    **{name: answer_with(data) for name, data in MALFORMED.items()},
    **{name: answer_then_close(data) for name, (data, _) in WELL_FORMED.items()},
    "closes-idle": answer_once_then_close,
    "reset": reset_after_request,
    "hello": answer_with(b"HELLO\r\n\r\n"),
    "random": answer_with(GARBAGE),
    "half-length": answer_then_close(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + HALF_BODY),
    "half-chunked": answer_then_close(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(HALF_BODY), HALF_BODY)
    ),
}


@pytest.fixture
def mesh(start_meshd):
    """meshd with a good service and one service per way of failing."""
    good = Upstream()
    raws = {name: RawUpstream(script) for name, script in RAW_SCRIPTS.items()}
    refused_port = free_port()
    disco = {
        "good": good.disco_line,
        "refused": f"127.0.0.1 {refused_port}\n",
        "empty": "",
        **{name: raw.disco_line for name, raw in raws.items()},
    }
    meshd = start_meshd(disco=disco)
    yield meshd, good, raws, refused_port
    good.close()
    for raw in raws.values():
        raw.close()


def assert_good_request_works(meshd, good, client=None):
    before = good.count()
    if client is None:
        response = httpx.get(meshd.url(path="/good"), headers={"host": "good"}, timeout=10)
        assert response.status_code == 200
    else:
        client.send(b"GET /good HTTP/1.1\r\nHost: good\r\n\r\n")
        response = client.read_response()
        assert response is not None and response.status == 200, response
    assert good.count() == before + 1
    assert meshd.proc.poll() is None


def request_from_meshd(meshd, host):
    """One GET for `host` on a raw connection; returns (client, response) with the client still open."""
    client = RawClient(meshd.router(), timeout=10)
    client.send(b"GET /fail HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode())
    return client, client.read_response()


def assert_meshd_error(response, status):
    assert response is not None, "meshd closed the connection without answering"
    assert response.status == status, response
    assert response.has("l5d-err"), response
    assert response.body.strip(), "meshd's own responses carry a one-line reason body"
    return response.header("l5d-err")


def test_refused_connection_gets_502_naming_the_endpoint(mesh):
    meshd, good, _, port = mesh
    client, response = request_from_meshd(meshd, "refused")
    with client:
        reason = assert_meshd_error(response, 502)
        assert f"127.0.0.1:{port}" in reason, reason
        assert_good_request_works(meshd, good, client)
    assert_good_request_works(meshd, good)


def test_upstream_reset_after_reading_the_request_gets_502(mesh):
    meshd, good, raws, _ = mesh
    client, response = request_from_meshd(meshd, "reset")
    with client:
        reason = assert_meshd_error(response, 502)
        assert f"127.0.0.1:{raws['reset'].port}" in reason, reason
        assert_good_request_works(meshd, good, client)
    assert raws["reset"].connections >= 1
    assert_good_request_works(meshd, good)


@pytest.mark.parametrize("name,marker", [("hello", b"HELLO"), ("random", GARBAGE[100:132])], ids=["hello", "random"])
def test_garbage_from_the_upstream_gets_502_and_never_reaches_the_client(mesh, name, marker):
    meshd, good, raws, _ = mesh
    client, response = request_from_meshd(meshd, name)
    with client:
        assert_meshd_error(response, 502)
        assert_good_request_works(meshd, good, client)
        assert marker not in bytes(client.received), "the upstream's garbage reached the client"
    assert raws[name].connections >= 1
    assert_good_request_works(meshd, good)


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_upstream_response_gets_502_and_nothing_of_it_is_forwarded(mesh, name):
    meshd, good, raws, _ = mesh
    client, response = request_from_meshd(meshd, name)
    with client:
        assert "invalid HTTP response" in assert_meshd_error(response, 502)
        assert_good_request_works(meshd, good, client)
        assert b"LEAK" not in bytes(client.received), "part of the malformed response reached the client"


@pytest.mark.parametrize("name", list(WELL_FORMED))
def test_less_common_response_framings_arrive_whole(mesh, name):
    meshd, good, raws, _ = mesh
    client, response = request_from_meshd(meshd, name)
    with client:
        assert response is not None and response.status == 200, response
        assert response.body == WELL_FORMED[name][1]
        assert response.complete
    assert_good_request_works(meshd, good)


@pytest.mark.parametrize("name", ["half-length", "half-chunked"])
def test_response_cut_short_never_looks_complete(mesh, name):
    meshd, good, _, _ = mesh
    # raw client: the response head went out, so the only honest signal left is a broken connection
    client, response = request_from_meshd(meshd, name)
    with client:
        assert response is not None and response.status == 200, response
        assert not response.complete, f"a response cut short upstream arrived looking complete: {response!r}"
        assert len(response.body) <= len(HALF_BODY)
        closed, extra = client.wait_closed(5)
        assert closed, "meshd kept the connection open after an incomplete response"
        assert extra == b""
    # a real client sees an error, never a short success
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        with httpx.Client(timeout=10) as http:
            http.get(meshd.url(path="/fail"), headers={"host": name})
    assert_good_request_works(meshd, good)


@pytest.mark.parametrize("host", ["empty", "nodiscofile"])
def test_no_endpoints_gets_503(mesh, host):
    meshd, good, _, _ = mesh
    client, response = request_from_meshd(meshd, host)
    with client:
        assert_meshd_error(response, 503)
        assert_good_request_works(meshd, good, client)
    assert_good_request_works(meshd, good)


def test_upstream_closing_an_idle_pooled_connection_is_not_an_error(mesh):
    """Each upstream connection carries one response and is then closed by the upstream: the next
    GET must not fail on the dead pooled connection (it gets a fresh one, or is retried)."""
    meshd, good, raws, _ = mesh
    with RawClient(meshd.router(), timeout=10) as client:
        for i in range(5):
            client.send(b"GET /idle/%d HTTP/1.1\r\nHost: closes-idle\r\n\r\n" % i)
            response = client.read_response()
            assert response is not None and response.status == 200, (i, response)
            assert response.body == b"/idle/%d" % i
    assert raws["closes-idle"].connections == 5
    assert_good_request_works(meshd, good)
