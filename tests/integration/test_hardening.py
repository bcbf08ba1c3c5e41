"""Requests and upstreams that once crashed, stalled or confused meshd (issue 10), each checked
against the real binary over real sockets: meshd answers with a clear error, keeps serving, and
never sends a request twice or a response to the wrong request."""
import socket
import threading
import time

import httpx
import pytest

from meshd_harness import simple_config, wait_until
from upstreams import RawClient, RawUpstream, Upstream, read_request_head, track_connections


@pytest.fixture
def proxied(start_meshd):
    upstream = Upstream()
    tracker = track_connections(upstream)
    meshd = start_meshd(disco={"web": upstream.disco_line})
    yield meshd, upstream, tracker
    upstream.close()


def assert_alive(meshd):
    assert meshd.proc.poll() is None, "meshd exited:\n" + "\n".join(meshd.log_lines[-60:])
    assert meshd.admin_status("/admin/ping") == 200


# --- l5d-ctx-deadline ------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "-9223372036854775808 -9223372036854775808",
    "9223372036854775807 -9223372036854775807",
    "0 -9223372036854775808",
    "-1 9223372036854775807",
    "9223372036854775807 9223372036854775807",
])
def test_extreme_deadlines_do_not_kill_meshd(proxied, value):
    meshd, upstream, _ = proxied
    response = httpx.get(meshd.url(path="/deadline"), headers={"host": "web", "l5d-ctx-deadline": value}, timeout=10)
    deadline = int(value.split()[1])
    if deadline < time.time_ns():
        assert response.status_code == 504 and "l5d-ctx-deadline passed" in response.headers["l5d-err"]
        assert upstream.count() == 0
    else:
        assert response.status_code == 200
        passed_on = dict(upstream.requests[-1]["headers"])["l5d-ctx-deadline"]
        # The caller's deadline, or a hair earlier (re-derived from meshd's own clock).
        assert 0 <= deadline - int(passed_on.split()[1]) < 5_000_000_000
    assert_alive(meshd)


# --- l5d-dtab and delegation work -------------------------------------------------------------

def doubling_dtab(steps):
    return ";".join(f"/d{i}=>/d{i + 1}|/d{i + 1}" for i in range(steps)) + f";/d{steps}=>~;/svc/web=>/d0"


def test_a_dtab_whose_alternations_multiply_gets_400_and_the_loop_stays_free(start_meshd, upstream):
    """About 1 KB of chained alternations once pinned an event loop forever; with --threads 1
    the admin port stopped answering too."""
    meshd = start_meshd(disco={"web": upstream.disco_line}, args=("--threads", "1"))
    dtab = doubling_dtab(60)
    assert len(dtab) < 1300
    started = time.monotonic()
    response = httpx.get(meshd.url(path="/"), headers={"host": "web", "l5d-dtab": dtab}, timeout=20)
    elapsed = time.monotonic() - started
    assert response.status_code == 400, response.text
    assert "lookups" in response.headers["l5d-err"]
    assert upstream.count() == 0
    # The same loop serves the admin port and the next request (the 20 s timeout above is a
    # bound on a hang, not a speed claim).
    assert meshd.admin_status("/admin/ping") == 200
    assert httpx.get(meshd.url(path="/ok"), headers={"host": "web"}, timeout=10).status_code == 200
    samples = meshd.metrics()
    assert samples['meshd_router_errors_total{router="http",reason="delegation_limit"}'] == 1
    assert elapsed < 20


def test_deeply_nested_parentheses_in_l5d_dtab_get_400(proxied):
    meshd, upstream, _ = proxied
    deep = "/svc/web=>" + "(" * 2000 + "/$/inet/127.0.0.1/1" + ")" * 2000
    response = httpx.get(meshd.url(path="/"), headers={"host": "web", "l5d-dtab": deep}, timeout=10)
    assert response.status_code == 400
    assert "nested" in response.headers["l5d-err"]
    assert upstream.count() == 0
    assert_alive(meshd)


# --- pipelining and malformed requests --------------------------------------------------------

def test_a_valid_post_pipelined_before_a_malformed_request_gets_its_own_response(proxied):
    """The POST is executed upstream, so its answer must be the upstream's, not the 400 that
    belongs to the malformed request behind it."""
    meshd, upstream, _ = proxied
    with RawClient(meshd.router(), timeout=10) as client:
        client.send(
            b"POST /charge HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /second HTTP/1.1\r\nHost: web\r\n\r\n"
            b"GET /bad HTTP/1.1\r\nHost: web\r\nX-Bad: a\x00b\r\n\r\n"
        )
        first = client.read_response()
        assert first.status == 200, first
        assert b'"/charge"' in first.body
        second = client.read_response()
        assert second.status == 200 and b'"/second"' in second.body, second
        third = client.read_response()
        assert third.status == 400 and third.has("l5d-err"), third
        closed, extra = client.wait_closed(5)
        assert closed and extra == b""
    assert [record["path"] for record in upstream.requests] == ["/charge", "/second"]


# --- framing ------------------------------------------------------------------------------------

def test_connection_naming_content_length_does_not_unframe_the_body(proxied):
    """`Connection: content-length` once stripped the framing of a body that was still sent, so the
    upstream read the body as the next request."""
    meshd, upstream, _ = proxied
    with RawClient(meshd.router(), timeout=10) as client:
        for index in range(3):
            body = b"GET /smuggled HTTP/1"
            assert len(body) == 20
            client.send(
                b"POST /framed%d HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, content-length, host\r\n"
                b"Content-Length: 20\r\n\r\n" % index + body
            )
            response = client.read_response()
            assert response.status == 200, response
    paths = [record["path"] for record in upstream.requests]
    assert paths == ["/framed0", "/framed1", "/framed2"], paths
    assert all(record["body_size"] == 20 for record in upstream.requests)
    assert all(dict((k.lower(), v) for k, v in record["headers"])["host"] == "web" for record in upstream.requests)


def test_an_upstream_response_naming_content_length_in_connection_keeps_its_framing(start_meshd):
    def script(conn):
        while True:
            head = read_request_head(conn)
            if not head:
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello")

    raw = RawUpstream(script)
    try:
        meshd = start_meshd(disco={"raw": raw.disco_line})
        for version in (b"HTTP/1.1", b"HTTP/1.0"):
            with RawClient(meshd.router(), timeout=10) as client:
                for _ in range(2):
                    client.send(b"GET / " + version + b"\r\nHost: raw\r\nConnection: keep-alive\r\n\r\n")
                    response = client.read_response()
                    assert response.status == 200 and response.body == b"hello" and response.complete, response
                    assert response.header("content-length") == "5" or response.header("transfer-encoding") == "chunked"
    finally:
        raw.close()


def test_trace_with_a_body_is_refused(proxied):
    meshd, upstream, tracker = proxied
    with RawClient(meshd.router(), timeout=5) as client:
        client.send(b"TRACE / HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\n\r\nGET ")
        response = client.read_response()
        assert response.status == 400 and "TRACE" in response.header("l5d-err"), response
    assert upstream.count() == 0 and tracker.total == 0
    with RawClient(meshd.router(), timeout=5) as client:
        client.send(b"TRACE / HTTP/1.1\r\nHost: web\r\n\r\n")
        assert client.read_response().status == 501  # Python's server has no do_TRACE


def test_duplicate_host_headers_get_400(proxied):
    meshd, upstream, _ = proxied
    with RawClient(meshd.router(), timeout=5) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: web\r\nHost: evil\r\n\r\n")
        response = client.read_response()
        assert response.status == 400 and "Host" in response.header("l5d-err"), response
    assert upstream.count() == 0


def test_an_expectation_mixing_100_continue_gets_417_and_closes(proxied):
    """The client may be waiting for 100 Continue before its body: meshd answers and closes."""
    meshd, upstream, _ = proxied
    with RawClient(meshd.router(), timeout=5) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: web\r\nExpect: 100-continue, x\r\nContent-Length: 2\r\n\r\n")
        response = client.read_response()
        assert response.status == 417 and response.has("l5d-err"), response
        assert client.wait_closed(5)[0]
    assert upstream.count() == 0


@pytest.mark.parametrize("expect", [b"100-continue-please", b"something"])
def test_unsupported_expectations_get_417(proxied, expect):
    meshd, upstream, _ = proxied
    with RawClient(meshd.router(), timeout=5) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: web\r\nExpect: " + expect + b"\r\nContent-Length: 2\r\n\r\nhi")
        response = client.read_response()
        assert response.status == 417 and response.has("l5d-err"), response
        # The body was read away; the connection still serves.
        client.send(b"GET /after HTTP/1.1\r\nHost: web\r\n\r\n")
        assert client.read_response().status == 200
    assert [record["path"] for record in upstream.requests] == ["/after"]


def test_expect_100_continue_still_works(proxied):
    meshd, upstream, _ = proxied
    with RawClient(meshd.router(), timeout=5) as client:
        client.send(b"POST /c HTTP/1.1\r\nHost: web\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n")
        head = client.read_head()
        assert head[1] == 100, head
        client.send(b"hi")
        response = client.read_response()
        assert response.status == 200
    assert upstream.requests[0]["body_size"] == 2


# --- upstream connections carrying more than was asked -----------------------------------------

def test_bytes_after_a_response_never_reach_the_next_request(start_meshd):
    """An upstream answers one request with two responses in one write (the second a lie). The
    next request from the same client may reuse the connection at once; it must get its own
    response from a fresh connection, never the extra one, and never the parse error that
    follows it."""
    connections = []

    def script(conn):
        connections.append(conn)
        head = read_request_head(conn)
        if not head:
            return
        path = head.split(b" ")[1]
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path)
            + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"
        )
        read_request_head(conn)

    def garbage_script(conn):
        connections.append(conn)
        head = read_request_head(conn)
        if not head:
            return
        path = head.split(b" ")[1]
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s\x00\x01garbage" % (len(path), path))
        read_request_head(conn)

    for behaviour in (script, garbage_script):
        connections.clear()
        raw = RawUpstream(behaviour)
        try:
            meshd = start_meshd(disco={"raw": raw.disco_line})
            with RawClient(meshd.router(), timeout=10) as client:
                # Pipelined: the second request is leased the connection the moment the first ends.
                # A POST, so that a stale-connection resend cannot hide a misdelivered error.
                client.send(b"GET /one HTTP/1.1\r\nHost: raw\r\n\r\nPOST /two HTTP/1.1\r\nHost: raw\r\nContent-Length: 2\r\n\r\nhi")
                first = client.read_response()
                second = client.read_response()
            assert first.status == 200 and first.body == b"/one", first
            assert second.status == 200 and second.body == b"/two", second
            assert raw.connections == 2, "the poisoned connection was reused"
        finally:
            raw.close()


# --- retries that must not happen ---------------------------------------------------------------

def retry_config(classifier="io.l5d.http.nonRetryable5XX", budget=""):
    return simple_config(extra_router=f"""
  service:
    responseClassifier: {{kind: {classifier}}}
{budget}""")


def test_an_upstream_saying_l5d_retryable_cannot_make_a_post_go_twice(start_meshd, upstream):
    upstream.default = lambda handler, record: handler.reply(503, b"busy", {"l5d-retryable": "true"})
    meshd = start_meshd(retry_config(), disco={"web": upstream.disco_line})
    response = httpx.post(meshd.url(path="/pay"), headers={"host": "web"}, content=b"once", timeout=10)
    assert response.status_code == 503
    assert upstream.count() == 1, "the POST was sent again"
    # An idempotent request is still retried on the hint.
    before = upstream.count()
    httpx.get(meshd.url(path="/read"), headers={"host": "web"}, timeout=10)
    assert upstream.count() > before + 1


def stale_connection_upstream():
    """Answers the first request on each connection; on a later one, reads it and closes without
    a word (a keep-alive connection the server dropped just as meshd reused it)."""
    requests = []

    def script(conn):
        served = 0
        while True:
            head = read_request_head(conn)
            if not head:
                return
            requests.append(head.split(b" ")[1])
            if served == 1:
                return
            served += 1
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    return RawUpstream(script), requests


def test_a_stale_connection_resend_is_paid_from_the_retry_budget(start_meshd):
    raw, seen = stale_connection_upstream()
    try:
        meshd = start_meshd(retry_config(budget="""    retries:
      budget: {minRetriesPerSec: 0, percentCanRetry: 0.0}"""), disco={"raw": raw.disco_line})
        with httpx.Client(timeout=10) as client:
            assert client.get(meshd.url(path="/first"), headers={"host": "raw"}).status_code == 200
            response = client.get(meshd.url(path="/second"), headers={"host": "raw"})
        assert response.status_code == 502, "resent with an empty retry budget"
        assert seen == [b"/first", b"/second"]
        assert meshd.metrics()['meshd_service_retry_budget_exhausted_total{router="http",service="/svc/raw"}'] >= 1
    finally:
        raw.close()


def test_a_stale_connection_resend_still_happens_within_the_budget(start_meshd):
    raw, seen = stale_connection_upstream()
    try:
        meshd = start_meshd(retry_config(), disco={"raw": raw.disco_line})
        with httpx.Client(timeout=10) as client:
            assert client.get(meshd.url(path="/first"), headers={"host": "raw"}).status_code == 200
            assert client.get(meshd.url(path="/second"), headers={"host": "raw"}).status_code == 200
        assert seen == [b"/first", b"/second", b"/second"]
        assert meshd.metrics()['meshd_service_retries_total{router="http",service="/svc/raw"}'] == 1
    finally:
        raw.close()


# --- slow and abusive clients ---------------------------------------------------------------

def slow_config(head_ms=600, extra=""):
    return simple_config(extra_server=f"    requestHeadTimeoutMs: {head_ms}\n{extra}")


def test_trickling_request_heads_are_answered_408_and_closed(start_meshd, upstream):
    """40 slowloris connections, each sending a byte of its head now and then: every one is
    closed once requestHeadTimeoutMs has passed since its first byte."""
    meshd = start_meshd(slow_config(), disco={"web": upstream.disco_line})
    clients = [RawClient(meshd.router(), timeout=10) for _ in range(40)]
    stop = threading.Event()
    try:
        for client in clients:
            client.send(b"GET / HTTP/1.1\r\nHost: web\r\n")

        def trickle():
            while not stop.is_set():
                for client in clients:
                    try:
                        client.send(b"X-A: b\r\n")
                    except OSError:
                        pass
                stop.wait(0.1)

        feeder = threading.Thread(target=trickle, daemon=True)
        feeder.start()
        for client in clients:
            response = client.read_response()
            assert response is not None and response.status == 408, response
            assert "requestHeadTimeoutMs" in response.header("l5d-err")
            closed, _ = client.wait_closed(5)
            assert closed
    finally:
        stop.set()
        for client in clients:
            client.close()
    assert upstream.count() == 0
    assert meshd.metrics()[f'meshd_server_request_head_timeouts_total{{router="http",server="127.0.0.1:0"}}'] >= 40
    assert httpx.get(meshd.url(path="/"), headers={"host": "web"}, timeout=10).status_code == 200


def test_a_connection_that_never_sends_is_closed_quietly(start_meshd, upstream):
    meshd = start_meshd(slow_config(), disco={"web": upstream.disco_line})
    with RawClient(meshd.router(), timeout=10) as client:
        closed, extra = client.wait_closed(8)
        assert closed and extra == b""


def test_keep_alive_connections_wait_for_the_next_request_without_a_head_clock(start_meshd, upstream):
    """Between requests the head clock does not run (idleTimeMs governs that); it starts again at
    the next request's first byte."""
    meshd = start_meshd(slow_config(head_ms=300), disco={"web": upstream.disco_line})
    with RawClient(meshd.router(), timeout=10) as client:
        client.send(b"GET /1 HTTP/1.1\r\nHost: web\r\n\r\n")
        assert client.read_response().status == 200
        # Idle for longer than the head timeout: still open.
        closed, _ = client.wait_closed(1.0)
        assert not closed
        client.send(b"GET /2 HTTP/1.1\r\nHost: web\r\n\r\n")
        assert client.read_response().status == 200


def test_max_connections_applies_back_pressure_to_accept(start_meshd, upstream):
    meshd = start_meshd(slow_config(head_ms=60000, extra="    maxConnections: 4"), disco={"web": upstream.disco_line})
    held = [RawClient(meshd.router(), timeout=10) for _ in range(4)]
    try:
        for client in held:
            client.send(b"GET /held HTTP/1.1\r\nHost: web\r\n\r\n")
            assert client.read_response().status == 200
        wait_until(lambda: meshd.metrics().get('meshd_server_connections_open{router="http",server="127.0.0.1:0"}') == 4)
        # The fifth connects (the kernel's backlog) but is not served while four are open.
        waiting = RawClient(meshd.router(), timeout=10)
        waiting.send(b"GET /waiting HTTP/1.1\r\nHost: web\r\n\r\n")
        waiting.sock.settimeout(1.0)
        with pytest.raises(socket.timeout):
            waiting.sock.recv(1)
        waiting.sock.settimeout(10)
        assert [record["path"] for record in upstream.requests].count("/waiting") == 0
        held.pop().close()
        response = waiting.read_response()
        assert response.status == 200
        waiting.close()
        assert meshd.metrics()['meshd_server_accept_pauses_total{router="http",server="127.0.0.1:0"}'] >= 1
    finally:
        for client in held:
            client.close()


# --- caches and metric series ---------------------------------------------------------------------

def test_evicted_clients_and_services_take_their_series_with_them(start_meshd):
    """With room for 3 clients and 3 names, 20 distinct Host-derived names leave the series of
    at most 3 clients and 3 services on the metrics page, and the evictions are counted."""
    meshd = start_meshd("""admin: {ip: 127.0.0.1, port: 0}
routers:
- protocol: http
  dtab: |
    /inet => /$/inet;
    /svc => /$/io.buoyant.hostportPfx/inet;
  bindingCache: {paths: 3, clients: 3}
  servers:
  - ip: 127.0.0.1
    port: 0
""")
    with httpx.Client(timeout=10) as client:
        for index in range(20):
            # Nothing listens there: each request is refused quickly, its client stays idle.
            response = client.get(meshd.url(path="/"), headers={"host": f"127.0.1.{index + 1}:9"})
            assert response.status_code == 502
    samples = meshd.metrics()
    clients = {key for key in samples if key.startswith("meshd_client_requests_total{")}
    services = {key for key in samples if key.startswith("meshd_service_retries_total{")}
    assert len(clients) <= 3, sorted(clients)
    assert len(services) <= 3, sorted(services)
    assert 'client="/$/inet/127.0.1.20/9"' in " ".join(clients)
    assert samples['meshd_router_cache_evictions_total{router="http",cache="clients"}'] >= 17
    assert samples['meshd_router_cache_evictions_total{router="http",cache="services"}'] >= 17


def test_an_upstream_sending_endless_informational_responses_gets_502(start_meshd):
    def script(conn):
        read_request_head(conn)
        try:
            for _ in range(200):
                conn.sendall(b"HTTP/1.1 102 Processing\r\n\r\n")
            read_request_head(conn)
        except OSError:
            pass

    raw = RawUpstream(script)
    try:
        meshd = start_meshd(disco={"raw": raw.disco_line})
        with RawClient(meshd.router(), timeout=10) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: raw\r\n\r\n")
            interim = 0
            while True:
                head = client.read_head()
                assert head is not None, "meshd closed without a final answer"
                if head[1] == 102:
                    interim += 1
                    continue
                break
            assert head[1] == 502, head
            assert interim <= 16
            assert "informational" in dict((k.lower(), v) for k, v in head[3])["l5d-err"]
    finally:
        raw.close()


def test_a_client_gone_before_its_pipelined_requests_gets_none_of_them_sent(start_meshd):
    """The client pipelines a slow GET and a POST, then goes away while the GET is upstream:
    the POST must never be sent (once it was, for nobody, and the exchange outlived its
    connection)."""
    upstream = Upstream()
    arrived, finish = threading.Event(), threading.Event()

    def slow(handler, record):
        arrived.set()
        finish.wait(10)
        handler.reply(200, b"late")

    upstream.on("/slow", slow)
    try:
        meshd = start_meshd(disco={"web": upstream.disco_line})
        client = RawClient(meshd.router(), timeout=10)
        client.send(b"GET /slow HTTP/1.1\r\nHost: web\r\n\r\nPOST /pay HTTP/1.1\r\nHost: web\r\nContent-Length: 2\r\n\r\nhi")
        assert arrived.wait(10)
        client.close()
        finish.set()
        # A bounded wait for something that must not happen; then meshd must still serve.
        time.sleep(1.0)
        assert [record["path"] for record in upstream.requests] == ["/slow"]
        assert_alive(meshd)
        assert httpx.get(meshd.url(path="/after"), headers={"host": "web"}, timeout=10).status_code == 200
    finally:
        finish.set()
        upstream.close()


def test_a_head_stalled_behind_a_response_lets_the_whole_requests_before_it_be_answered(start_meshd):
    upstream = Upstream()
    arrived, finish = threading.Event(), threading.Event()

    def slow(handler, record):
        arrived.set()
        finish.wait(10)
        handler.reply(200, b"slow")

    upstream.on("/slow", slow)
    try:
        meshd = start_meshd(simple_config(extra_server="    requestHeadTimeoutMs: 300\n"), disco={"web": upstream.disco_line})
        with RawClient(meshd.router(), timeout=10) as client:
            client.send(b"GET /slow HTTP/1.1\r\nHost: web\r\n\r\nGET /second HTTP/1.1\r\nHost: web\r\n\r\n")
            assert arrived.wait(10)
            # The third head starts and stalls; its timer runs out while /slow is still upstream.
            # (Sent apart: the first bytes of a head that arrive in the same read as the end of
            # the request before it start no clock; serverSession.idleTimeMs bounds that case.)
            client.send(b"GET /third HTTP/1.1\r\nHost: w")
            assert wait_until(lambda: meshd.metrics().get('meshd_server_request_head_timeouts_total{router="http",server="127.0.0.1:0"}', 0) >= 1)
            finish.set()
            first, second, third = client.read_response(), client.read_response(), client.read_response()
            assert (first.status, first.body) == (200, b"slow")
            assert second.status == 200 and b'"/second"' in second.body, second
            assert third.status == 408, third
            assert client.wait_closed(5)[0]
    finally:
        finish.set()
        upstream.close()


def test_union_weights_adding_up_past_the_largest_double_do_not_kill_meshd(proxied):
    meshd, upstream, _ = proxied
    huge = "1" + "0" * 307
    dtab = f"/svc/web=>{huge}*/$/inet/127.0.0.1/{upstream.port} & {huge}*/$/inet/127.0.0.1/{upstream.port}"
    for _ in range(5):
        response = httpx.get(meshd.url(path="/w"), headers={"host": "web", "l5d-dtab": dtab}, timeout=10)
        assert response.status_code == 200, response.headers.get("l5d-err")
    assert_alive(meshd)
