"""Connection-pool and listener limits: `client.hostConnectionPool` (maxSize, maxWaiters) holds
across meshd's event loops, rejections are 503 with `l5d-err` and counted, and a server's
`maxConcurrentRequests` refuses the excess at once."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from meshd_harness import simple_config, wait_until
from upstreams import RawClient, Upstream, echo, track_connections


def pool_config(max_size, max_waiters):
    return simple_config(extra_router=f"""
  client:
    hostConnectionPool:
      maxSize: {max_size}
      maxWaiters: {max_waiters}
""")


def sleeping(seconds):
    def behaviour(handler, record):
        time.sleep(seconds)  # a slow upstream, not synchronisation
        echo(handler, record)
    return behaviour


class Gate:
    """An upstream behaviour that holds each request until the test opens the gate."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, handler, record):
        self.entered.set()
        self.release.wait(15)
        echo(handler, record)


def get(url, host="web", timeout=20):
    """GET on a connection of its own; returns (response, seconds taken). The response carries the
    monotonic time it was completed as `response.finished_at`."""
    started = time.monotonic()
    with httpx.Client(timeout=timeout) as client:
        response = client.get(url, headers={"host": host})
    response.finished_at = time.monotonic()
    return response, response.finished_at - started


def concurrently(count, function):
    """Runs `function()` `count` times at once (threads released together); returns the results."""
    barrier = threading.Barrier(count)

    def run():
        barrier.wait(10)
        return function()

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(run) for _ in range(count)]
        return [future.result(timeout=60) for future in futures]


def rejected_total(meshd):
    return sum(value for key, value in meshd.metrics().items() if key.startswith("meshd_pool_rejected_total{"))


@pytest.fixture
def slow_upstream():
    upstream = Upstream()
    tracker = track_connections(upstream)
    yield upstream, tracker
    upstream.close()


def test_pool_of_one_without_waiters_rejects_the_excess(start_meshd, slow_upstream):
    upstream, tracker = slow_upstream
    upstream.on("/slow", tracker.wrap(sleeping(1.0)))
    meshd = start_meshd(pool_config(1, 0), disco={"web": upstream.disco_line})
    results = concurrently(5, lambda: get(meshd.url(path="/slow")))
    statuses = sorted(response.status_code for response, _ in results)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 1, statuses
    assert statuses.count(503) >= 1, statuses
    first_success = min(response.finished_at for response, _ in results if response.status_code == 200)
    for response, _ in results:
        if response.status_code == 503:
            assert "l5d-err" in response.headers
            assert "pool" in response.headers["l5d-err"].lower(), response.headers["l5d-err"]
            assert response.finished_at < first_success, "a rejection waited for the busy connection (maxWaiters 0)"
    assert tracker.max_open_at_request <= 1, f"{tracker.max_open_at_request} upstream connections were open at once"
    assert tracker.max_in_flight == 1
    assert upstream.count() == statuses.count(200)
    assert wait_until(lambda: rejected_total(meshd) == statuses.count(503), timeout=5), (
        rejected_total(meshd), statuses)


def test_pool_of_one_with_waiters_serves_everyone_over_one_connection(start_meshd, slow_upstream):
    upstream, tracker = slow_upstream
    upstream.on("/slow", tracker.wrap(sleeping(0.4)))
    meshd = start_meshd(pool_config(1, 10), disco={"web": upstream.disco_line})
    results = concurrently(5, lambda: get(meshd.url(path="/slow")))
    statuses = [response.status_code for response, _ in results]
    assert statuses == [200] * 5, [(r.status_code, r.headers.get("l5d-err")) for r, _ in results]
    assert upstream.count() == 5
    assert tracker.max_in_flight == 1, "the pool let two requests reach the endpoint at once"
    assert tracker.max_open_at_request <= 1, f"{tracker.max_open_at_request} upstream connections were open at once"
    assert max(elapsed for _, elapsed in results) >= 5 * 0.4 * 0.9, "the requests were not served one at a time"
    assert rejected_total(meshd) == 0


def test_pool_rejections_are_counted(start_meshd, slow_upstream):
    upstream, tracker = slow_upstream
    gate = Gate()
    upstream.on("/held", tracker.wrap(gate))
    meshd = start_meshd(pool_config(1, 0), disco={"web": upstream.disco_line})
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(get, meshd.url(path="/held"))
        try:
            assert gate.entered.wait(10), "the first request never reached the upstream"
            for i in range(3):
                response, _ = get(meshd.url(path=f"/rejected/{i}"))
                assert response.status_code == 503
                assert "l5d-err" in response.headers
                assert response.headers.get("l5d-retryable") == "true", "a pool rejection never reached the upstream"
            assert wait_until(lambda: rejected_total(meshd) == 3, timeout=5), rejected_total(meshd)
        finally:
            gate.release.set()
        response, _ = first.result(timeout=20)
    assert response.status_code == 200
    # the connection is free again: the next request gets it
    again, _ = get(meshd.url(path="/after"))
    assert again.status_code == 200
    assert [record["path"] for record in upstream.requests] == ["/held", "/after"]
    assert rejected_total(meshd) == 3


def test_max_concurrent_requests_refuses_the_excess_at_once(start_meshd, slow_upstream):
    upstream, _ = slow_upstream
    gate = Gate()
    upstream.on("/held", gate)
    meshd = start_meshd(
        simple_config(extra_server="    maxConcurrentRequests: 1"), disco={"web": upstream.disco_line}
    )
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(get, meshd.url(path="/held"))
        try:
            assert gate.entered.wait(10), "the first request never reached the upstream"
            results = concurrently(4, lambda: get(meshd.url(path="/excess")))
            # answered while the first request still holds the only slot
            assert not gate.release.is_set()
            for response, _ in results:
                assert response.status_code == 503, response.text
                assert "l5d-err" in response.headers
                assert "maxConcurrentRequests" in response.headers["l5d-err"]
        finally:
            gate.release.set()
        response, _ = first.result(timeout=20)
    assert response.status_code == 200
    assert [record["path"] for record in upstream.requests] == ["/held"]
    # the slot is free again
    after, _ = get(meshd.url(path="/after"))
    assert after.status_code == 200
    assert upstream.count() == 2


def pool_waiters(meshd):
    return sum(value for key, value in meshd.metrics().items() if key.startswith("meshd_pool_waiters{"))


def open_server_connections(meshd):
    return sum(value for key, value in meshd.metrics().items() if key.startswith("meshd_server_connections_open{"))


def abandon_a_queued_request(meshd, gate):
    """With the only connection held by a request, queues a second one and closes its client."""
    assert gate.entered.wait(10), "the first request never reached the upstream"
    with RawClient(meshd.router()) as client:
        client.send(b"GET /abandoned HTTP/1.1\r\nHost: web\r\n\r\n")
        assert wait_until(lambda: pool_waiters(meshd) == 1, timeout=5), "the second request did not queue"
    # meshd notices the client left (only the held request's connection stays open)
    assert wait_until(lambda: open_server_connections(meshd) == 1, timeout=5), open_server_connections(meshd)


def test_a_queued_request_whose_client_left_is_never_forwarded(start_meshd, slow_upstream):
    upstream, tracker = slow_upstream
    gate = Gate()
    upstream.on("/held", tracker.wrap(gate))
    meshd = start_meshd(pool_config(1, 10), disco={"web": upstream.disco_line})
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(get, meshd.url(path="/held"))
        try:
            abandon_a_queued_request(meshd, gate)
        finally:
            gate.release.set()
        assert first.result(timeout=20)[0].status_code == 200
    for i in range(3):
        response, _ = get(meshd.url(path=f"/after/{i}"))
        assert response.status_code == 200
    assert [record["path"] for record in upstream.requests] == ["/held", "/after/0", "/after/1", "/after/2"]
    assert tracker.max_in_flight == 1


def test_pool_waiters_gauge_drops_when_a_queued_client_leaves(start_meshd, slow_upstream):
    upstream, _ = slow_upstream
    gate = Gate()
    upstream.on("/held", gate)
    meshd = start_meshd(pool_config(1, 10), disco={"web": upstream.disco_line})
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(get, meshd.url(path="/held"))
        try:
            abandon_a_queued_request(meshd, gate)
            assert wait_until(lambda: pool_waiters(meshd) == 0, timeout=3), (
                f"meshd_pool_waiters is {pool_waiters(meshd)} with nobody waiting")
        finally:
            gate.release.set()
        assert first.result(timeout=20)[0].status_code == 200
