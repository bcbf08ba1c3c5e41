"""Shutting a real meshd down: signals and the admin endpoint, with requests in flight, new
connections arriving, and idle keep-alive connections open."""
import json
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import httpx
import pytest

from meshd_harness import MEMORY_CHECKS, MESHD_BIN, simple_config, wait_until, write_config
from upstreams import Upstream


class SlowUpstream:
    """An upstream whose /slow path answers after `delay` seconds; `started` is set when a slow
    request arrives, `finished` when its answer has been written."""

    def __init__(self, delay):
        self.started = threading.Event()
        self.finished = threading.Event()
        self.upstream = Upstream()

        def slow(handler, record):
            self.started.set()
            time.sleep(delay)
            try:
                handler.reply(200, b"slow done")
            finally:
                self.finished.set()

        self.upstream.on("/slow", slow)

    def close(self):
        self.upstream.close()


@pytest.fixture
def slow_upstream():
    made = []

    def make(delay):
        server = SlowUpstream(delay)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def config_with_grace(grace_ms):
    admin = "admin: {ip: 127.0.0.1, port: 0}"
    config = simple_config()
    assert admin in config
    return config.replace(admin, f"admin: {{ip: 127.0.0.1, port: 0, shutdownGraceMs: {grace_ms}}}", 1)


def request_in_background(url, host="web", timeout=15):
    """Starts a GET in a thread; returns (thread, result dict filled with response or error)."""
    result = {}

    def run():
        began = time.monotonic()
        try:
            response = httpx.get(url, headers={"host": host}, timeout=timeout)
            result["response"] = (response.status_code, response.text)
        except httpx.HTTPError as error:
            result["error"] = repr(error)
        result["elapsed"] = time.monotonic() - began

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def wait_refused(address, timeout=5.0):
    """Connects until the connection is refused; returns the seconds that took, or None."""
    began = time.monotonic()
    for _ in range(1000):
        if time.monotonic() - began > timeout:
            return None
        try:
            with socket.create_connection(address, timeout=1):
                pass
        except ConnectionRefusedError:
            return time.monotonic() - began
        except OSError:
            pass
        time.sleep(0.01)
    return None


def exit_within(meshd, seconds):
    """The exit status if meshd exits within `seconds`, else None."""
    try:
        return meshd.wait(seconds)
    except subprocess.TimeoutExpired:
        return None


def handlers_installed(meshd):
    """Waits until meshd traps SIGTERM and SIGINT: ServiceLifecycle logs "Starting service" (debug)
    once its signal sources are registered. meshd now logs ready only after that (see
    test_signal_right_after_ready_is_graceful, which tests the window itself); waiting keeps the
    other shutdown tests about draining, whatever the start-up order."""
    assert wait_until(lambda: any('"msg":"Starting service"' in line for line in meshd.log_lines), timeout=10)


def read_response(sock):
    """Reads one content-length-framed response; returns its head."""
    data = b""
    for _ in range(1000):
        if b"\r\n\r\n" in data:
            break
        chunk = sock.recv(65536)
        assert chunk, "meshd closed before answering"
        data += chunk
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, "no end of the response head"
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    for _ in range(1000):
        if len(body) >= length:
            break
        chunk = sock.recv(65536)
        assert chunk, "meshd closed inside a body"
        body += chunk
    assert len(body) == length
    return head


def test_sigterm_drains_in_flight_requests(start_meshd, slow_upstream):
    slow = slow_upstream(1.5)
    meshd = start_meshd(disco={"web": slow.upstream.disco_line})
    handlers_installed(meshd)
    address = meshd.router()
    thread, result = request_in_background(meshd.url(path="/slow"))
    assert slow.started.wait(5), "the slow request never reached the upstream"

    signalled = time.monotonic()
    meshd.proc.send_signal(signal.SIGTERM)
    assert wait_refused(address, timeout=5) is not None, "meshd kept accepting connections after SIGTERM"
    # While draining, the admin port still answers, and says not ready.
    assert meshd.admin_status("/admin/ready") == 503
    assert meshd.admin_get("/admin/ping") == "pong"
    assert not slow.finished.is_set(), "the slow request ended before the listener closed; the test proves nothing"

    status = exit_within(meshd, 15)
    took = time.monotonic() - signalled
    assert status == 0
    thread.join(5)
    assert result.get("response") == (200, "slow done"), result
    assert took >= 1.0, "meshd exited before the in-flight request could finish"
    events = [json.loads(line) for line in meshd.log_lines if line.startswith("{")]
    draining = [event for event in events if event["msg"] == "draining"]
    assert draining and draining[0]["meshd.in_flight"] == "1"
    assert events[-1]["msg"] == "meshd stopped"


def test_grace_period_bounds_shutdown(start_meshd, slow_upstream):
    slow = slow_upstream(5)
    meshd = start_meshd(config_with_grace(300), disco={"web": slow.upstream.disco_line})
    handlers_installed(meshd)
    thread, result = request_in_background(meshd.url(path="/slow"))
    assert slow.started.wait(5)

    signalled = time.monotonic()
    meshd.proc.send_signal(signal.SIGTERM)
    status = exit_within(meshd, 2.5)
    took = time.monotonic() - signalled
    thread.join(10)
    assert status == 0, f"meshd had not exited {took:.1f}s after SIGTERM with shutdownGraceMs 300"
    assert took < 2.0
    assert result.get("response") != (200, "slow done"), "the request outlived the grace period"


def test_zero_grace_closes_in_flight_requests_at_once(start_meshd):
    """shutdownGraceMs 0 with several requests in flight on several connections: they are cut off
    at once and meshd exits 0. (Abandoned drain promises used to crash meshd here at exit.)"""
    arrived = threading.Semaphore(0)

    def slow(handler, record):
        arrived.release()
        time.sleep(5)
        try:
            handler.reply(200, b"slow done")
        except OSError:
            pass

    upstream = Upstream()
    upstream.on("/slow", slow)
    connections = []
    try:
        meshd = start_meshd(config_with_grace(0), disco={"web": upstream.disco_line})
        handlers_installed(meshd)
        for _ in range(8):
            sock = socket.create_connection(meshd.router(), timeout=5)
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: web\r\n\r\n")
            connections.append(sock)
        for _ in range(8):
            assert arrived.acquire(timeout=5), "not every slow request reached the upstream"

        signalled = time.monotonic()
        meshd.proc.send_signal(signal.SIGTERM)
        status = exit_within(meshd, 5)
        took = time.monotonic() - signalled
        assert status == 0, f"exit status {status}:\n" + "\n".join(meshd.log_lines[-20:])
        assert took < 2.0
        # Every request was cut off: its connection closed, or meshd answered an error itself
        # (its upstream connection closed first); never the upstream's answer.
        for sock in connections:
            sock.settimeout(5)
            try:
                data = b""
                for _ in range(100):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
            assert b"slow done" not in data
            assert data == b"" or data.startswith(b"HTTP/1.1 5"), data[:200]
    finally:
        for sock in connections:
            sock.close()
        upstream.close()


def test_sigint_exits_zero(start_meshd):
    meshd = start_meshd()
    handlers_installed(meshd)
    assert meshd.admin_get("/admin/ping") == "pong"
    meshd.proc.send_signal(signal.SIGINT)
    assert exit_within(meshd, 10) == 0
    events = [json.loads(line) for line in meshd.log_lines if line.startswith("{")]
    assert any(event.get("sl-signal") == "SIGINT" for event in events)
    assert events[-1]["msg"] == "meshd stopped"


def test_admin_shutdown_exits_zero(start_meshd, slow_upstream):
    slow = slow_upstream(1.0)
    meshd = start_meshd(disco={"web": slow.upstream.disco_line})
    address = meshd.router()
    thread, result = request_in_background(meshd.url(path="/slow"))
    assert slow.started.wait(5)

    request = urllib.request.Request(f"http://{meshd.admin}/admin/shutdown", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        assert "shutting down" in response.read().decode()
    assert wait_refused(address, timeout=5) is not None
    assert exit_within(meshd, 15) == 0
    thread.join(5)
    assert result.get("response") == (200, "slow done"), result
    assert any("shutdown requested on the admin port" in line for line in meshd.log_lines)


def test_idle_keep_alive_connections_close_on_shutdown(start_meshd):
    upstream = Upstream()
    try:
        meshd = start_meshd(disco={"web": upstream.disco_line})
        handlers_installed(meshd)
        connections = []
        for _ in range(3):
            sock = socket.create_connection(meshd.router(), timeout=5)
            sock.sendall(b"GET /idle HTTP/1.1\r\nHost: web\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200")
            connections.append(sock)
        # The connections are idle and open (keep-alive): nothing arrives and nothing closes.
        connections[0].settimeout(0.2)
        with pytest.raises(socket.timeout):
            connections[0].recv(65536, socket.MSG_PEEK)

        signalled = time.monotonic()
        meshd.terminate()
        for sock in connections:
            sock.settimeout(5)
            closed = False
            for _ in range(100):
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    closed = True
                    break
                if not data:
                    closed = True
                    break
            assert closed, "an idle keep-alive connection stayed open during shutdown"
            sock.close()
        # Closing idle connections does not wait for the grace period (10 s by default).
        assert time.monotonic() - signalled < 5
        assert exit_within(meshd, 10) == 0
        assert time.monotonic() - signalled < 5
    finally:
        upstream.close()


def test_signal_right_after_ready_is_graceful(tmp_path):
    path = write_config(tmp_path, simple_config(), disco={})
    for attempt in range(20):
        sig = signal.SIGTERM if attempt % 2 == 0 else signal.SIGINT
        proc = subprocess.Popen(
            [MESHD_BIN, "run", "--config", str(path), "--log-format", "json"],
            cwd=str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        ready = threading.Event()

        def signal_on_ready(proc=proc, sig=sig, ready=ready):
            for line in proc.stderr:  # ends at EOF, when meshd exits
                if '"msg":"meshd ready"' in line and not ready.is_set():
                    proc.send_signal(sig)  # at once: this is the window under test
                    ready.set()

        reader = threading.Thread(target=signal_on_ready, daemon=True)
        reader.start()
        try:
            assert ready.wait(30), "meshd never became ready"
            status = proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            reader.join(5)
        assert status == 0, f"attempt {attempt}: {sig.name} right after 'meshd ready' ended meshd with status {status}"


def test_startup_pages_are_given_back_once_ready(start_meshd, upstream):
    """Once ready, meshd drops the clean file pages start-up touched; what requests need faults
    back in, so the process keeps serving, and its RSS stays well below what it would have been."""
    meshd = start_meshd(disco={"web": upstream.disco_line})
    ready = next(json.loads(line) for line in meshd.log_lines if '"meshd ready"' in line)
    released_kib = int(ready["meshd.startup_pages_released_kib"])
    rss_at_ready_kib = int(ready["meshd.rss_kib"])
    assert released_kib > 1024, ready
    with httpx.Client() as client:
        for index in range(200):
            response = client.get(meshd.url(path=f"/after-drop/{index}"), headers={"host": "web"})
            assert response.status_code == 200
            assert response.json()["path"] == f"/after-drop/{index}"
    assert "meshd_router_requests_total" in meshd.admin_get("/admin/metrics/prometheus")
    assert json.loads(meshd.admin_get("/config.json"))["routers"]
    rss_now_kib = meshd.rss_kb()
    # If the drop did nothing (or everything came back), RSS would be at least ready + released.
    if MEMORY_CHECKS:
        assert rss_now_kib < rss_at_ready_kib + released_kib / 2, (rss_at_ready_kib, released_kib, rss_now_kib)
