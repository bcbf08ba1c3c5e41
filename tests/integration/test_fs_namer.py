"""The io.l5d.fs namer end to end: a real meshd over a real disco/ directory, real upstreams, and
file edits made while traffic flows. Propagation of a file change is awaited with wait_until
(the watcher has no event a test can subscribe to); everything else waits on real events."""
import json
import threading
import time

import httpx
import pytest

from meshd_harness import simple_config, wait_until
from upstreams import Upstream


def quick_ok(handler, record):
    """200 "ok" in one write: http.server's separate header and body writes meet Nagle and
    delayed ACKs and cost ~40 ms a request, too slow for tests that send hundreds."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


@pytest.fixture
def make_upstream():
    """make_upstream(default=quick_ok) -> Upstream, closed at the end of the test."""
    made = []

    def make(default=quick_ok):
        server = Upstream(default)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def disco_file(meshd, name):
    return meshd.config_path.parent / "disco" / name


def replace_file(path, text):
    """Replaces a service file atomically (write a hidden file, rename it over), as deploy tools
    do, so that no rescan can ever see it half written."""
    temporary = path.parent / f".{path.name}.tmp"
    temporary.write_text(text)
    temporary.replace(path)


def bad_line_count(meshd, name):
    return meshd.metrics().get(f'meshd_discovery_errors_total{{namer="io.l5d.fs",name="{name}",kind="bad_line"}}', 0.0)


def namer_state(meshd):
    return json.loads(meshd.admin_get("/namer_state/io.l5d.fs.json"))


def test_service_file_change_applies_live(start_meshd, make_upstream):
    a, b = make_upstream(), make_upstream()
    meshd = start_meshd(disco={"web": a.disco_line})
    with httpx.Client(timeout=5) as client:
        def send():
            response = client.get(meshd.url(path="/live"), headers={"host": "web"})
            assert response.status_code == 200, response.text
            return response

        for _ in range(10):
            send()
        assert (a.count(), b.count()) == (10, 0)

        # Rewrite the file to list B only: traffic moves to B, and only to B.
        replace_file(disco_file(meshd, "web"), b.disco_line)
        assert wait_until(lambda: (send(), b.count() > 0)[1], timeout=10), "the rewrite never reached B"
        a_after_switch = a.count()
        for _ in range(30):
            send()
        assert a.count() == a_after_switch, "A still gets traffic after it left the file"
        assert b.count() >= 31

        # Append A back: both take traffic.
        with disco_file(meshd, "web").open("a") as file:
            file.write(a.disco_line)
        assert wait_until(lambda: (send(), a.count() > a_after_switch)[1], timeout=10), "A never came back"
        a_before, b_before = a.count(), b.count()
        for _ in range(60):
            send()
        assert a.count() - a_before > 0 and b.count() - b_before > 0, (a.count() - a_before, b.count() - b_before)
    endpoints = namer_state(meshd)["names"]["web"]["endpoints"]
    assert sorted(endpoints) == sorted([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])


def test_change_does_not_fail_in_flight_requests(start_meshd, make_upstream):
    a, b = make_upstream(), make_upstream()
    started = threading.Event()

    def slow(handler, record):
        started.set()
        time.sleep(1.5)
        handler.reply(200, b"slow but fine")

    a.on("/slow", slow)
    meshd = start_meshd(disco={"web": a.disco_line})
    result = {}

    def slow_request():
        began = time.monotonic()
        try:
            response = httpx.get(meshd.url(path="/slow"), headers={"host": "web"}, timeout=10)
            result["response"] = (response.status_code, response.text)
        except httpx.HTTPError as error:
            result["response"] = repr(error)
        result["elapsed"] = time.monotonic() - began

    thread = threading.Thread(target=slow_request, daemon=True)
    thread.start()
    assert started.wait(5), "the slow request never reached A"

    # Remove A (the endpoint serving the request) while the request is in flight.
    replace_file(disco_file(meshd, "web"), b.disco_line)
    with httpx.Client(timeout=5) as client:
        def new_request_on_b():
            response = client.get(meshd.url(path="/new"), headers={"host": "web"})
            assert response.status_code == 200, response.text
            return b.count() > 0

        assert wait_until(new_request_on_b, timeout=10)
    assert not result, "the slow request ended before the change applied; the test proves nothing"

    thread.join(10)
    assert not thread.is_alive()
    assert result["response"] == (200, "slow but fine")
    assert result["elapsed"] >= 1.4
    assert [r["path"] for r in a.requests] == ["/slow"]


def test_bad_lines_are_skipped_counted_and_logged(start_meshd, make_upstream):
    a, b = make_upstream(), make_upstream()
    meshd = start_meshd(disco={"web": "not-a-port-line\n" + a.disco_line + "127.0.0.1 99999\n"})

    assert bad_line_count(meshd, "web") >= 2
    warnings = [json.loads(line) for line in meshd.log_lines if line.startswith("{") and '"warning"' in line]
    bad = [event for event in warnings if event.get("meshd.file", "").endswith("disco/web")]
    assert {event.get("meshd.line") for event in bad} >= {"1", "3"}, warnings
    assert any("not-a-port-line" in event.get("meshd.text", "") for event in bad)
    assert any("99999" in event.get("meshd.text", "") for event in bad)

    # The good line in the same file still routes.
    with httpx.Client(timeout=5) as client:
        for _ in range(5):
            response = client.get(meshd.url(path="/ok"), headers={"host": "web"})
            assert response.status_code == 200, response.text
    assert a.count() == 5
    state = namer_state(meshd)["names"]["web"]
    assert state["endpoints"] == [f"127.0.0.1:{a.port}"]
    assert len(state["problems"]) == 2

    # A bad line written later is counted too, and the good lines of that version apply.
    before = bad_line_count(meshd, "web")
    disco_file(meshd, "web").write_text(a.disco_line + "127.0.0.1 http\n" + b.disco_line)
    assert wait_until(lambda: bad_line_count(meshd, "web") > before, timeout=10)
    assert wait_until(lambda: len(namer_state(meshd)["names"]["web"]["endpoints"]) == 2, timeout=10)
    assert any('"meshd.text":"127.0.0.1 http"' in line for line in meshd.log_lines)


def test_file_created_after_start_becomes_routable(start_meshd, make_upstream):
    a = make_upstream()
    meshd = start_meshd(disco={})
    with httpx.Client(timeout=5) as client:
        response = client.get(meshd.url(path="/"), headers={"host": "late"})
        assert response.status_code == 503
        assert "/svc/late" in response.headers["l5d-err"]
        assert a.count() == 0

        disco_file(meshd, "late").write_text(a.disco_line)
        assert wait_until(lambda: client.get(meshd.url(path="/"), headers={"host": "late"}).status_code == 200, timeout=10)
        assert a.count() == 1
        response = client.get(meshd.url(path="/after"), headers={"host": "late"})
        assert response.status_code == 200 and response.text == "ok"
    assert "late" in namer_state(meshd)["names"]


def test_deleting_the_file_makes_the_name_unroutable(start_meshd, make_upstream):
    a = make_upstream()
    meshd = start_meshd(disco={"web": a.disco_line, "other": a.disco_line})
    with httpx.Client(timeout=5) as client:
        assert client.get(meshd.url(path="/"), headers={"host": "web"}).status_code == 200
        disco_file(meshd, "web").unlink()
        assert wait_until(lambda: client.get(meshd.url(path="/"), headers={"host": "web"}).status_code == 503, timeout=10)
        response = client.get(meshd.url(path="/"), headers={"host": "web"})
        assert response.status_code == 503
        assert response.headers.get("l5d-err")
        # Other names are untouched.
        assert client.get(meshd.url(path="/"), headers={"host": "other"}).status_code == 200
    assert "web" not in namer_state(meshd)["names"]
    assert "other" in namer_state(meshd)["names"]


def test_weights_split_traffic(start_meshd, make_upstream):
    a, b = make_upstream(), make_upstream()
    meshd = start_meshd(disco={"web": f"127.0.0.1 {a.port} * 3\n127.0.0.1 {b.port} * 1\n"})
    with httpx.Client(timeout=5) as client:
        for _ in range(400):
            assert client.get(meshd.url(path="/w"), headers={"host": "web"}).status_code == 200
    assert a.count() + b.count() == 400
    share = a.count() / 400
    assert 0.6 <= share <= 0.9, f"weight-3 endpoint got {a.count()} of 400, weight-1 endpoint {b.count()}"


def test_weights_are_read(start_meshd, make_upstream):
    """The weight syntax (`* W` and `*W`) parses and the weights reach the client."""
    a, b = make_upstream(), make_upstream()
    meshd = start_meshd(disco={"web": f"127.0.0.1 {a.port} * 3\n127.0.0.1 {b.port} *0.5\n"})
    assert httpx.get(meshd.url(path="/"), headers={"host": "web"}, timeout=5).status_code == 200
    assert bad_line_count(meshd, "web") == 0
    clients = json.loads(meshd.admin_get("/client_state.json"))["http"]
    weights = {e["address"]: e["weight"] for e in clients["/#/io.l5d.fs/web"]["endpoints"]}
    assert weights == {f"127.0.0.1:{a.port}": 3, f"127.0.0.1:{b.port}": 0.5}


def test_comments_and_blank_lines_are_ignored(start_meshd, make_upstream):
    a, b = make_upstream(), make_upstream()
    text = (
        "# the web service\n"
        "\n"
        f"127.0.0.1 {a.port}   # primary\n"
        "   \n"
        f"# 127.0.0.1 {b.port}   (commented out)\n"
        "\t\n"
        "#\n"
    )
    meshd = start_meshd(disco={"web": text})
    with httpx.Client(timeout=5) as client:
        for _ in range(20):
            assert client.get(meshd.url(path="/"), headers={"host": "web"}).status_code == 200
    assert (a.count(), b.count()) == (20, 0)
    assert bad_line_count(meshd, "web") == 0
    state = namer_state(meshd)["names"]["web"]
    assert state["endpoints"] == [f"127.0.0.1:{a.port}"]
    assert "problems" not in state
    assert not any('"warning"' in line for line in meshd.log_lines)


def test_namer_state_lists_names_and_endpoints(start_meshd, make_upstream):
    a, b = make_upstream(), make_upstream()
    meshd = start_meshd(disco={"web": a.disco_line + b.disco_line, "api": f"127.0.0.1 {b.port} * 2\n"})
    state = namer_state(meshd)
    assert state["kind"] == "io.l5d.fs"
    assert state["prefix"] == "/io.l5d.fs"
    assert sorted(state["names"]) == ["api", "web"]
    assert state["names"]["web"]["state"] == "bound"
    assert sorted(state["names"]["web"]["endpoints"]) == sorted([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])
    assert state["names"]["api"]["endpoints"] == [f"127.0.0.1:{b.port}"]

    disco_file(meshd, "api").unlink()
    assert wait_until(lambda: "api" not in namer_state(meshd)["names"], timeout=10)
    assert sorted(namer_state(meshd)["names"]) == ["web"]


def test_host_names_and_linkerd_shorthand_resolve(start_meshd, make_upstream):
    a, b = make_upstream(), make_upstream()
    meshd = start_meshd(disco={"byname": f"localhost {a.port}\n", "short": f"127.1 {b.port}\n"})
    with httpx.Client(timeout=5) as client:
        for host in ("byname", "short"):
            for _ in range(3):
                response = client.get(meshd.url(path="/"), headers={"host": host})
                assert response.status_code == 200, (host, response.headers.get("l5d-err"))
    assert (a.count(), b.count()) == (3, 3)
    names = namer_state(meshd)["names"]
    assert names["byname"]["endpoints"] == [f"127.0.0.1:{a.port}"]
    assert names["short"]["endpoints"] == [f"127.0.0.1:{b.port}"]
    assert bad_line_count(meshd, "byname") == 0 and bad_line_count(meshd, "short") == 0


def test_file_with_no_usable_line_has_no_endpoints(start_meshd, make_upstream):
    a = make_upstream()
    meshd = start_meshd(disco={"empty": "# nothing here yet\n\n", "web": a.disco_line})
    with httpx.Client(timeout=5) as client:
        response = client.get(meshd.url(path="/"), headers={"host": "empty"})
        assert response.status_code == 503
        assert response.headers.get("l5d-err")
        assert client.get(meshd.url(path="/"), headers={"host": "web"}).status_code == 200
    assert meshd.metrics()['meshd_router_errors_total{router="http",reason="no_endpoints"}'] == 1
    assert namer_state(meshd)["names"]["empty"] == {"state": "bound", "endpoints": []}


def test_missing_file_falls_through_a_dtab_alternation(start_meshd, make_upstream):
    stable, canary = make_upstream(), make_upstream()
    config = simple_config().replace(
        "  dtab: /svc => /#/io.l5d.fs;\n",
        "  dtab: |\n    /svc => /#/io.l5d.fs;\n    /svc/web => /#/io.l5d.fs/web-canary | /#/io.l5d.fs/web;\n",
    )
    meshd = start_meshd(config, disco={"web": stable.disco_line})
    with httpx.Client(timeout=5) as client:
        def send():
            response = client.get(meshd.url(path="/"), headers={"host": "web"})
            assert response.status_code == 200, response.headers.get("l5d-err")

        for _ in range(5):
            send()
        assert (stable.count(), canary.count()) == (5, 0)

        # The canary file appears: the first branch now binds and takes the traffic.
        disco_file(meshd, "web-canary").write_text(canary.disco_line)
        assert wait_until(lambda: (send(), canary.count() > 0)[1], timeout=10)
        before = stable.count()
        for _ in range(5):
            send()
        assert stable.count() == before

        # It goes away again: traffic falls through to the second branch.
        disco_file(meshd, "web-canary").unlink()
        assert wait_until(lambda: (send(), stable.count() > before)[1], timeout=10)
        after = canary.count()
        for _ in range(5):
            send()
        assert canary.count() == after
