"""Retries, timeouts, response classification and deadlines, end to end against real upstreams.

Every upstream in this module records the `x-request-id` of each request it gets, and a check
after every test asserts that no non-idempotent request (POST, PATCH) reached any upstream twice.
"""
import json
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from upstreams import Upstream, free_port, RawClient
from meshd_harness import FS_ROUTER_HEAD

SEEN = []  # (method, request id) at every upstream, for the duplicate check


def header(record, name):
    for key, value in record["headers"]:
        if key.lower() == name:
            return value
    return None


@pytest.fixture(autouse=True)
def no_duplicate_non_idempotent_requests():
    SEEN.clear()
    yield
    ids = Counter(request_id for method, request_id in SEEN if method in ("POST", "PATCH") and request_id)
    duplicates = {request_id: count for request_id, count in ids.items() if count > 1}
    assert not duplicates, f"non-idempotent requests reached an upstream twice: {duplicates}"


def recording(behaviour):
    def wrapped(handler, record):
        SEEN.append((record["method"], header(record, "x-request-id")))
        behaviour(handler, record)
    return wrapped


def ok(handler, record):
    handler.reply(200, b"ok")


def fail_first_attempt_per_request():
    attempts = Counter()
    lock = threading.Lock()

    def behaviour(handler, record):
        key = header(record, "x-request-id")
        with lock:
            attempts[key] += 1
            first = attempts[key] == 1
        handler.reply(503 if first else 200, b"first attempt fails" if first else b"ok")

    return behaviour


def service_config(service_yaml="", client_yaml="", server_yaml=""):
    return FS_ROUTER_HEAD + f"""  dtab: /svc => /#/io.l5d.fs;
  service:
{service_yaml or "    kind: io.l5d.global"}
  client:
{client_yaml or "    kind: io.l5d.global"}
  servers:
  - ip: 127.0.0.1
    port: 0
{server_yaml}
"""


@pytest.fixture
def upstream():
    server = Upstream(default=recording(ok))
    yield server
    server.close()


CLIENT = httpx.Client(timeout=10)


def request(meshd, method="GET", path="/", body=None, headers=None, timeout=10):
    """One request on a long-lived client (so that timings measure meshd, not client set-up)."""
    all_headers = {"host": "web", "x-request-id": str(uuid.uuid4())}
    all_headers.update(headers or {})
    return CLIENT.request(method, meshd.url(path=path), headers=all_headers, content=body, timeout=timeout)


def test_get_whose_first_attempt_gets_503_is_retried(start_meshd, upstream):
    upstream.default = recording(fail_first_attempt_per_request())
    meshd = start_meshd(service_config("    responseClassifier: {kind: io.l5d.http.retryableRead5XX}"), disco={"web": upstream.disco_line})
    response = request(meshd)
    assert response.status_code == 200
    assert response.headers["l5d-success-class"] == "1.0"
    assert upstream.count() == 2
    assert header(upstream.requests[0], "l5d-reqid") == header(upstream.requests[1], "l5d-reqid")
    assert meshd.metrics()['meshd_service_retries_total{router="http",service="/svc/web"}'] == 1


def test_max_retries_caps_each_request_and_counts_the_cut_off(start_meshd, upstream):
    """maxRetries: 2 against an upstream that always fails: each GET is sent 3 times, the client
    gets the last 503, and every cut-off is counted."""
    upstream.default = recording(lambda handler, record: handler.reply(503, b"always failing"))
    meshd = start_meshd(service_config("""    responseClassifier: {kind: io.l5d.http.retryableRead5XX}
    retries: {maxRetries: 2}"""), disco={"web": upstream.disco_line})
    for _ in range(3):
        response = request(meshd)
        assert response.status_code == 503
        assert response.headers["l5d-retryable"] == "true"
    assert upstream.count() == 9
    samples = meshd.metrics()
    assert samples['meshd_service_retries_total{router="http",service="/svc/web"}'] == 6
    assert samples['meshd_service_retries_limited_total{router="http",service="/svc/web"}'] == 3
    assert samples['meshd_service_retry_budget_exhausted_total{router="http",service="/svc/web"}'] == 0


def test_retry_prefers_another_endpoint(start_meshd):
    bad = Upstream(default=recording(lambda handler, record: handler.reply(503, b"down")))
    good = Upstream(default=recording(ok))
    try:
        meshd = start_meshd(service_config("    responseClassifier: {kind: io.l5d.http.retryableRead5XX}"),
                            disco={"web": bad.disco_line + good.disco_line})
        for _ in range(20):
            assert request(meshd).status_code == 200
        # Every request that went to the bad endpoint first was retried on the good one.
        assert good.count() == 20
    finally:
        bad.close()
        good.close()


def test_post_is_not_retried_under_retryable_idempotent(start_meshd, upstream):
    upstream.default = recording(lambda handler, record: handler.reply(503, b"no"))
    meshd = start_meshd(service_config("    responseClassifier: {kind: io.l5d.http.retryableIdempotent5XX}"), disco={"web": upstream.disco_line})
    response = request(meshd, "POST", body=b"charge the card")
    assert response.status_code == 503
    assert response.headers["l5d-success-class"] == "0.0"
    assert "l5d-retryable" not in response.headers
    assert upstream.count() == 1
    # PUT is idempotent: retried (until the budget or the classifier says stop).
    put = request(meshd, "PUT", body=b"same twice is fine")
    assert put.status_code == 503 and put.headers["l5d-retryable"] == "true"
    assert upstream.count() > 2


def test_nonretryable_default_classifier_never_retries(start_meshd, upstream):
    upstream.default = recording(lambda handler, record: handler.reply(500, b"no"))
    meshd = start_meshd(service_config(), disco={"web": upstream.disco_line})
    assert request(meshd).status_code == 500
    assert upstream.count() == 1


def test_body_larger_than_the_retry_buffer_is_not_retried(start_meshd, upstream):
    upstream.default = recording(fail_first_attempt_per_request())
    service = "    responseClassifier: {kind: io.l5d.http.retryableIdempotent5XX}\n    retryBufferSize: {requestBytes: 1024}"
    meshd = start_meshd(service_config(service), disco={"web": upstream.disco_line})
    small = request(meshd, "PUT", body=b"x" * 100)
    assert small.status_code == 200 and upstream.count() == 2
    large = request(meshd, "PUT", body=b"y" * 4096)
    assert large.status_code == 503, "a body larger than the retry buffer is never replayed"
    assert upstream.count() == 3
    assert upstream.requests[-1]["body_size"] == 4096


def test_connection_failure_is_requeued_even_for_post(start_meshd):
    good = Upstream(default=recording(ok))
    try:
        meshd = start_meshd(service_config(), disco={"web": f"127.0.0.1 {free_port()}\n" + good.disco_line})
        for _ in range(10):
            assert request(meshd, "POST", body=b"once").status_code == 200
        assert good.count() == 10
    finally:
        good.close()


def slow(seconds):
    def behaviour(handler, record):
        time.sleep(seconds)
        try:
            handler.reply(200, b"late")
        except OSError:
            pass
    return recording(behaviour)


def timed(call):
    """The response and how long it took, on the shared client (no client set-up in the time)."""
    began = time.monotonic()
    response = call()
    return response, time.monotonic() - began


def test_total_timeout_fires_on_time(start_meshd, upstream):
    upstream.default = slow(3)
    meshd = start_meshd(service_config("    totalTimeoutMs: 1000"), disco={"web": upstream.disco_line})
    response, elapsed = timed(lambda: request(meshd))
    assert response.status_code == 504
    assert "total timeout of 1000 ms" in response.headers["l5d-err"]
    assert 0.9 <= elapsed <= 1.1, elapsed
    assert meshd.metrics()['meshd_service_timeouts_total{router="http",service="/svc/web",kind="total"}'] == 1


def test_attempt_timeout_fires_on_time_and_retries_within_the_total(start_meshd, upstream):
    upstream.default = slow(3)
    meshd = start_meshd(service_config(client_yaml="    requestAttemptTimeoutMs: 500"), disco={"web": upstream.disco_line})
    response, elapsed = timed(lambda: request(meshd))
    assert response.status_code == 504 and "requestAttemptTimeoutMs (500 ms)" in response.headers["l5d-err"]
    assert 0.45 <= elapsed <= 0.55, elapsed
    # With a retryable classifier, timed-out GETs are retried until the total timeout.
    retrying = start_meshd(service_config("    totalTimeoutMs: 1000\n    responseClassifier: {kind: io.l5d.http.retryableRead5XX}",
                                          client_yaml="    requestAttemptTimeoutMs: 300"), disco={"web": upstream.disco_line})
    before = upstream.count()
    response, elapsed = timed(lambda: request(retrying))
    assert response.status_code == 504
    assert 0.9 <= elapsed <= 1.1, elapsed
    assert upstream.count() - before >= 3, "attempts of 300 ms fit three times into 1000 ms"


def now_ns():
    return time.time_ns()


def test_expired_deadline_is_refused_without_contacting_the_upstream(start_meshd, upstream):
    meshd = start_meshd(service_config(), disco={"web": upstream.disco_line})
    past = now_ns() - 1_000_000_000
    response = request(meshd, headers={"l5d-ctx-deadline": f"{past - 1_000_000_000} {past}"})
    assert response.status_code == 504
    assert "l5d-ctx-deadline passed" in response.headers["l5d-err"]
    assert upstream.count() == 0
    assert request(meshd, headers={"l5d-ctx-deadline": "soon"}).status_code == 400


def test_deadline_is_enforced_and_shrunk_for_the_next_hop(start_meshd, upstream):
    meshd = start_meshd(service_config("    totalTimeoutMs: 2000"), disco={"web": upstream.disco_line})
    far = now_ns() + 60_000_000_000
    sent_at = now_ns()
    assert request(meshd, headers={"l5d-ctx-deadline": f"{sent_at} {far}"}).status_code == 200
    timestamp, deadline = map(int, header(upstream.requests[-1], "l5d-ctx-deadline").split())
    assert deadline < far, "the next hop gets our tighter total timeout"
    assert deadline <= now_ns() + 2_000_000_000
    # No deadline from the caller: ours still goes along.
    request(meshd)
    assert header(upstream.requests[-1], "l5d-ctx-deadline") is not None
    # A caller deadline shorter than any timeout is enforced.
    upstream.default = slow(3)
    soon = now_ns() + 500_000_000
    response, elapsed = timed(lambda: request(meshd, headers={"l5d-ctx-deadline": f"{now_ns()} {soon}"}))
    assert response.status_code == 504 and "l5d-ctx-deadline" in response.headers["l5d-err"]
    assert elapsed < 0.7, elapsed


def test_retries_stay_within_the_budget_against_a_half_failing_upstream(start_meshd, upstream):
    flip = {"n": 0}
    lock = threading.Lock()

    def half(handler, record):
        with lock:
            flip["n"] += 1
            failing = flip["n"] % 2 == 0
        handler.reply(503 if failing else 200, b"coin")

    upstream.default = recording(half)
    meshd = start_meshd(service_config("    responseClassifier: {kind: io.l5d.http.retryableRead5XX}"), disco={"web": upstream.disco_line})
    requests = 3000
    began = time.monotonic()

    def worker(count):
        with httpx.Client(timeout=10) as client:
            for _ in range(count):
                client.get(meshd.url(path="/"), headers={"host": "web"})

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(worker, [requests // 6] * 6))
    seconds = time.monotonic() - began
    attempts = upstream.count()
    bound = requests * (1 + 0.2) + 10 * (seconds + 10)
    assert requests < attempts <= bound, (attempts, bound)
    samples = meshd.metrics()
    assert samples['meshd_service_retry_budget_exhausted_total{router="http",service="/svc/web"}'] > 0
    assert samples['meshd_service_retries_total{router="http",service="/svc/web"}'] == attempts - requests


def test_server_session_idle_and_lifetime(start_meshd, upstream):
    meshd = start_meshd(service_config(server_yaml="    serverSession: {idleTimeMs: 300, lifeTimeMs: 5000}"), disco={"web": upstream.disco_line})
    with RawClient(meshd.router(), timeout=5) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        assert client.read_response().status == 200
        began = time.monotonic()
        assert client.wait_closed(timeout=3)
        assert 0.25 <= time.monotonic() - began <= 1.0
    lifetime = start_meshd(service_config(server_yaml="    serverSession: {lifeTimeMs: 400}"), disco={"web": upstream.disco_line})
    with RawClient(lifetime.router(), timeout=5) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        assert client.read_response().status == 200
        assert client.wait_closed(timeout=3), "an idle connection past its lifetime is closed"


def test_client_session_lifetime_retires_upstream_connections(start_meshd, upstream):
    ports = []

    def remember(handler, record):
        ports.append(handler.client_address[1])
        handler.reply(200, b"ok")

    upstream.default = recording(remember)
    meshd = start_meshd(service_config(client_yaml="    clientSession: {lifeTimeMs: 200}"), disco={"web": upstream.disco_line})
    with httpx.Client(timeout=10) as client:
        for _ in range(3):
            assert client.get(meshd.url(path="/"), headers={"host": "web"}).status_code == 200
        time.sleep(0.3)  # let the upstream connection age past its lifetime
        for _ in range(3):
            assert client.get(meshd.url(path="/"), headers={"host": "web"}).status_code == 200
    assert len(set(ports)) >= 2, "a connection past its lifetime is not reused"
