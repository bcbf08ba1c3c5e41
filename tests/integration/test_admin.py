"""The admin port of a real meshd: health, config, metrics (Prometheus text and JSON), routing
state and listeners, read over HTTP after real traffic through the proxy."""
import http.client
import json
import re
import urllib.request

import httpx
import pytest

from meshd_harness import simple_config, wait_until
from upstreams import Upstream

CLIENT = "/#/io.l5d.fs/web"


def quick_ok(handler, record):
    """200 "ok" in one write (see test_fs_namer.quick_ok)."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


@pytest.fixture
def web():
    server = Upstream(quick_ok)
    yield server
    server.close()


def admin(meshd, path, method="GET"):
    """(status, content type, body) of an admin request."""
    request = urllib.request.Request(f"http://{meshd.admin}{path}", method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("content-type", ""), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("content-type", ""), error.read().decode()


def send(meshd, count, host="web", path="/"):
    statuses = []
    with httpx.Client(timeout=5) as client:
        for _ in range(count):
            statuses.append(client.get(meshd.url(path=path), headers={"host": host}).status_code)
    return statuses


def series(samples, name):
    """{labels text: value} of every sample of `name` (exact metric name)."""
    out = {}
    for key, value in samples.items():
        metric, _, labels = key.partition("{")
        if metric == name:
            out["{" + labels if labels else ""] = value
    return out


def settled(meshd, expected, timeout=5):
    """The samples once every `expected` key has its value: meshd counts a response (and its
    latency) as it finishes writing it, which can be a moment after the client has read it."""
    wait_until(lambda: all(meshd.metrics().get(key) == value for key, value in expected.items()), timeout=timeout)
    return meshd.metrics()


def labels_of(key):
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', key))


def test_ping_and_ready(start_meshd):
    meshd = start_meshd()
    status, content_type, body = admin(meshd, "/admin/ping")
    assert (status, body) == (200, "pong")
    assert content_type.startswith("text/plain")
    status, _, body = admin(meshd, "/admin/ready")
    assert (status, body) == (200, "ready")


def test_config_json_has_defaults_filled_in(start_meshd):
    meshd = start_meshd()
    status, content_type, body = admin(meshd, "/config.json")
    assert status == 200 and content_type.startswith("application/json")
    config = json.loads(body)
    assert config["admin"]["shutdownGraceMs"] == 10000
    assert config["admin"]["ip"] == "127.0.0.1"
    assert config["namers"] == [{"kind": "io.l5d.fs", "prefix": "/io.l5d.fs", "rootDir": "disco"}]
    router = config["routers"][0]
    assert router["protocol"] == "http"
    assert router["label"] == "http"
    assert router["dstPrefix"] == "/svc"
    assert router["identifier"] == {"kind": "io.l5d.header.token", "header": "Host"}
    assert router["maxInitialLineKB"] == 4
    assert router["maxHeadersKB"] == 8
    assert router["servers"][0]["ip"] == "127.0.0.1"
    assert router["servers"][0]["port"] == 0
    pool = router["client"]["hostConnectionPool"]
    assert pool["maxWaiters"] == 2147483647
    assert pool["maxSize"] == 2147483647
    assert pool["minSize"] == 0
    assert router["client"]["loadBalancer"] == {"kind": "p2c", "maxEffort": 5}
    assert config["telemetry"] == []


def test_prometheus_metrics_after_traffic(start_meshd, web):
    meshd = start_meshd(disco={"web": web.disco_line})
    sent = 7
    assert send(meshd, sent) == [200] * sent
    assert web.count() == sent
    status, content_type, text = admin(meshd, "/admin/metrics/prometheus")
    assert status == 200 and content_type.startswith("text/plain")
    assert "# TYPE meshd_router_requests_total counter" in text
    assert "# TYPE meshd_router_request_duration_seconds histogram" in text
    endpoint = f"127.0.0.1:{web.port}"
    samples = settled(meshd, {
        'meshd_router_request_duration_seconds_count{router="http"}': sent,
        f'meshd_client_request_duration_seconds_count{{router="http",client="{CLIENT}"}}': sent,
        f'meshd_endpoint_request_duration_seconds_count{{router="http",client="{CLIENT}",endpoint="{endpoint}"}}': sent,
    })

    # Router level.
    assert samples['meshd_router_requests_total{router="http"}'] == sent
    assert samples['meshd_router_responses_total{router="http",class="2xx"}'] == sent
    assert samples['meshd_router_responses_total{router="http",class="5xx"}'] == 0
    buckets = series(samples, "meshd_router_request_duration_seconds_bucket")
    assert len(buckets) >= 5
    les = [labels_of(key)["le"] for key in buckets]
    assert "+Inf" in les
    assert buckets['{router="http",le="+Inf"}'] == sent
    finite = sorted((float(le), buckets[f'{{router="http",le="{le}"}}']) for le in les if le != "+Inf")
    assert all(earlier[1] <= later[1] for earlier, later in zip(finite, finite[1:])), "buckets are not cumulative"
    assert samples['meshd_router_request_duration_seconds_count{router="http"}'] == sent
    assert samples['meshd_router_request_duration_seconds_sum{router="http"}'] > 0

    # Client (bound name) level.
    client = f'router="http",client="{CLIENT}"'
    assert samples[f"meshd_client_requests_total{{{client}}}"] == sent
    assert samples[f'meshd_client_responses_total{{{client},class="2xx"}}'] == sent
    assert samples[f'meshd_client_request_duration_seconds_bucket{{{client},le="+Inf"}}'] == sent
    assert samples[f"meshd_client_request_duration_seconds_count{{{client}}}"] == sent

    # Endpoint level.
    at = f'{client},endpoint="{endpoint}"'
    assert samples[f"meshd_endpoint_requests_total{{{at}}}"] == sent
    assert samples[f'meshd_endpoint_responses_total{{{at},class="2xx"}}'] == sent
    assert samples[f'meshd_endpoint_request_duration_seconds_bucket{{{at},le="+Inf"}}'] == sent
    assert samples[f"meshd_endpoint_request_duration_seconds_count{{{at}}}"] == sent

    # Connections, pools, discovery.
    open_gauges = series(samples, "meshd_server_connections_open")
    assert open_gauges and all(labels_of(key)["router"] == "http" for key in open_gauges)
    assert sum(series(samples, "meshd_server_connections_total").values()) >= 1
    assert samples[f"meshd_pool_connections{{{at}}}"] >= 1
    assert samples[f"meshd_pool_connects_total{{{at}}}"] >= 1
    assert samples['meshd_discovery_updates_total{namer="io.l5d.fs",name="web"}'] >= 1
    assert samples['meshd_discovery_endpoints{namer="io.l5d.fs",name="web"}'] == 1

    # More traffic moves the counters by exactly that much.
    assert send(meshd, 3) == [200] * 3
    assert meshd.metrics()['meshd_router_requests_total{router="http"}'] == sent + 3


def test_server_connections_open_counts_an_open_connection(start_meshd, web):
    meshd = start_meshd(disco={"web": web.disco_line})

    def open_connections():
        return sum(series(meshd.metrics(), "meshd_server_connections_open").values())

    assert open_connections() == 0
    with httpx.Client(timeout=5) as client:
        assert client.get(meshd.url(), headers={"host": "web"}).status_code == 200
        assert open_connections() == 1  # the keep-alive connection is still open
    assert wait_until(lambda: open_connections() == 0, timeout=5)


def test_proxy_errors_are_counted_by_reason(start_meshd, web):
    meshd = start_meshd(disco={"web": web.disco_line})
    assert send(meshd, 2, host="nowhere") == [503, 503]
    assert send(meshd, 1) == [200]
    samples = settled(meshd, {'meshd_router_request_duration_seconds_count{router="http"}': 3})
    assert samples['meshd_router_errors_total{router="http",reason="unroutable"}'] == 2
    assert samples['meshd_router_errors_total{router="http",reason="connect_failed"}'] == 0
    assert samples['meshd_router_responses_total{router="http",class="5xx"}'] == 2
    assert samples['meshd_router_responses_total{router="http",class="2xx"}'] == 1
    assert samples['meshd_router_requests_total{router="http"}'] == 3


def test_metrics_json_holds_the_same_samples(start_meshd, web):
    meshd = start_meshd(disco={"web": web.disco_line})
    assert send(meshd, 4) == [200] * 4
    # Let the closed client connection leave the open-connections gauge, so nothing moves
    # between the two reads.
    assert wait_until(lambda: sum(series(meshd.metrics(), "meshd_server_connections_open").values()) == 0, timeout=5)
    prometheus = settled(meshd, {
        'meshd_router_request_duration_seconds_count{router="http"}': 4,
        f'meshd_endpoint_request_duration_seconds_count{{router="http",client="{CLIENT}",endpoint="127.0.0.1:{web.port}"}}': 4,
    })
    status, content_type, body = admin(meshd, "/admin/metrics.json")
    assert status == 200 and content_type.startswith("application/json")
    samples = json.loads(body)
    assert isinstance(samples, dict)
    assert samples == prometheus
    assert samples['meshd_router_requests_total{router="http"}'] == 4
    pretty = admin(meshd, "/admin/metrics.json?pretty=1")[2]
    assert "\n" in pretty.strip() and json.loads(pretty) == samples


def test_prometheus_telemeter_path_and_prefix(start_meshd, web):
    telemetry = "telemetry:\n- kind: io.l5d.prometheus\n  path: /metrics\n  prefix: l5d_\n"
    meshd = start_meshd(simple_config(extra_top=telemetry), disco={"web": web.disco_line})
    assert send(meshd, 2) == [200, 200]
    status, content_type, text = admin(meshd, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    lines = [line for line in text.splitlines() if line]
    samples = [line for line in lines if not line.startswith("#")]
    assert samples and all(line.startswith("l5d_meshd_") for line in samples), samples[:5]
    assert 'l5d_meshd_router_requests_total{router="http"} 2' in lines
    assert "# TYPE l5d_meshd_router_requests_total counter" in lines
    # The built-in path still serves unprefixed names.
    assert meshd.metrics()['meshd_router_requests_total{router="http"}'] == 2
    config = json.loads(meshd.admin_get("/config.json"))
    assert config["telemetry"] == [{"kind": "io.l5d.prometheus", "path": "/metrics", "prefix": "l5d_"}]


def test_client_state_shows_clients_and_endpoints(start_meshd, web):
    other = Upstream(quick_ok)
    try:
        meshd = start_meshd(disco={"web": web.disco_line + other.disco_line})
        before = json.loads(meshd.admin_get("/client_state.json"))
        assert before == {"http": {}}, "a client exists before any request"
        assert send(meshd, 6) == [200] * 6
        # `load` counts requests in flight; it drops as each response finishes.
        def client_state():
            return json.loads(meshd.admin_get("/client_state.json"))

        wait_until(lambda: all(e["load"] == 0 for e in client_state()["http"][CLIENT]["endpoints"]), timeout=5)
        state = client_state()
        client = state["http"][CLIENT]
        assert client["state"] == "bound"
        addresses = sorted(endpoint["address"] for endpoint in client["endpoints"])
        assert addresses == sorted([f"127.0.0.1:{web.port}", f"127.0.0.1:{other.port}"])
        for endpoint in client["endpoints"]:
            assert endpoint["weight"] == 1
            assert endpoint["load"] == 0
            assert endpoint["available"] is True
        assert sum(endpoint["openConnections"] for endpoint in client["endpoints"]) >= 1
    finally:
        other.close()


def test_listeners_json(start_meshd, web):
    config = simple_config().replace("routers:\n", "routers:\n- protocol: http\n  label: ext\n  dtab: /svc => /#/io.l5d.fs;\n  servers:\n  - port: 0\n", 1)
    meshd = start_meshd(config, disco={"web": web.disco_line})
    status, content_type, body = admin(meshd, "/admin/listeners.json")
    assert status == 200 and content_type.startswith("application/json")
    listeners = json.loads(body)
    assert listeners["admin"] == meshd.admin
    assert sorted(listeners["routers"]) == ["ext", "http"]
    addresses = [listeners["routers"][label][0] for label in ("ext", "http")]
    for address in addresses:
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
    assert addresses[0] != addresses[1]
    # Both listed addresses really are the routers' listeners.
    for label in ("ext", "http"):
        assert httpx.get(meshd.url(label), headers={"host": "web"}, timeout=5).status_code == 200
    assert web.count() == 2
    samples = meshd.metrics()
    assert samples['meshd_router_requests_total{router="ext"}'] == 1
    assert samples['meshd_router_requests_total{router="http"}'] == 1


def test_unknown_admin_path_is_404_and_shutdown_needs_post(start_meshd):
    meshd = start_meshd()
    status, _, body = admin(meshd, "/admin/no-such-thing")
    assert status == 404
    assert body.strip() == "no such admin path: /admin/no-such-thing"
    # Linkerd endpoints meshd does not have are 404 too.
    assert admin(meshd, "/admin/threads.json")[0] == 404
    assert admin(meshd, "/namer_state/io.l5d.consul.json")[0] == 404
    status, _, _ = admin(meshd, "/admin/shutdown")
    assert status == 405
    # A GET did not shut meshd down.
    assert admin(meshd, "/admin/ping")[2] == "pong"
    assert meshd.proc.poll() is None
    # Other methods get the same answers; HEAD gets the headers only.
    assert admin(meshd, "/admin/ping", method="POST")[::2] == (200, "pong")
    host, port = meshd.admin.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("HEAD", "/admin/ping")
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("content-length") == "4"
        assert response.read() == b""
    finally:
        connection.close()
    index = admin(meshd, "/admin")
    assert index[0] == 200 and "/admin/metrics/prometheus" in index[2]


def endpoint_series(samples, prefix, endpoint):
    return [key for key in samples if key.startswith(prefix) and f'endpoint="{endpoint}"' in key]


def remove_endpoint_after_traffic(meshd, gone, stays):
    """Sends traffic to both upstreams of web, then rewrites web to list `stays` only and waits
    until a request lands on it."""
    with httpx.Client(timeout=5) as client:
        def send_one():
            assert client.get(meshd.url(), headers={"host": "web"}).status_code == 200

        assert wait_until(lambda: (send_one(), gone.count() > 0 and stays.count() > 0)[1], timeout=10)
        disco = meshd.config_path.parent / "disco"
        (disco / ".web.tmp").write_text(stays.disco_line)
        (disco / ".web.tmp").replace(disco / "web")
        assert wait_until(lambda: sorted(e["address"] for e in json.loads(meshd.admin_get("/client_state.json"))["http"][CLIENT]["endpoints"]) == [f"127.0.0.1:{stays.port}"], timeout=10)
        before = stays.count()
        send_one()
        assert stays.count() == before + 1


def test_endpoint_metrics_of_a_removed_endpoint_go_away(start_meshd, web):
    stays = Upstream(quick_ok)
    try:
        meshd = start_meshd(disco={"web": web.disco_line + stays.disco_line})
        gone = f"127.0.0.1:{web.port}"
        remove_endpoint_after_traffic(meshd, web, stays)
        samples = meshd.metrics()
        assert endpoint_series(samples, "meshd_endpoint_", gone) == []
        assert endpoint_series(samples, "meshd_endpoint_requests_total", f"127.0.0.1:{stays.port}")
        assert samples['meshd_discovery_endpoints{namer="io.l5d.fs",name="web"}'] == 1
        assert samples[f'meshd_client_endpoints{{router="http",client="{CLIENT}"}}'] == 1
    finally:
        stays.close()


def test_pool_metrics_of_a_removed_endpoint_go_away(start_meshd, web):
    stays = Upstream(quick_ok)
    try:
        meshd = start_meshd(disco={"web": web.disco_line + stays.disco_line})
        gone = f"127.0.0.1:{web.port}"
        remove_endpoint_after_traffic(meshd, web, stays)
        # The removed endpoint's pool drains (its idle connection closes), then its series go.
        assert wait_until(lambda: endpoint_series(meshd.metrics(), "meshd_pool_", gone) == [], timeout=3), \
            endpoint_series(meshd.metrics(), "meshd_pool_", gone)
    finally:
        stays.close()
