"""meshd as an HTTP/1.1 proxy: routing by Host and by absolute-form targets, the headers it adds
and removes, connection reuse on both sides, pipelining, bodiless responses, 100-continue,
HTTP/1.0 clients, and dtabs naming addresses directly."""
import hashlib
import json
import os
import subprocess
import time

import httpx
import pytest

from upstreams import RawClient, RawUpstream, Upstream, echo


def headers_of(record):
    """The upstream's view of the request headers, as {lowercased name: [values]}."""
    result = {}
    for name, value in record["headers"]:
        result.setdefault(name.lower(), []).append(value)
    return result


@pytest.fixture
def web(start_meshd):
    upstream = Upstream()
    meshd = start_meshd(disco={"web": upstream.disco_line})
    yield meshd, upstream
    upstream.close()


def test_requests_are_routed_by_host(start_meshd):
    web, api = Upstream(), Upstream()
    try:
        meshd = start_meshd(disco={"web": web.disco_line, "api": api.disco_line})
        with httpx.Client(timeout=10) as client:
            first = client.get(meshd.url(path="/one"), headers={"host": "web"})
            second = client.get(meshd.url(path="/two"), headers={"host": "api"})
            third = client.get(meshd.url(path="/three"), headers={"host": "web"})
        assert [r.status_code for r in (first, second, third)] == [200, 200, 200]
        assert [record["path"] for record in web.requests] == ["/one", "/three"]
        assert [record["path"] for record in api.requests] == ["/two"]
        assert second.json()["path"] == "/two"
    finally:
        web.close()
        api.close()


def test_absolute_form_target_from_an_http_proxy_client(web):
    meshd, upstream = web
    host, port = meshd.router()
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-x", f"http://{host}:{port}", "-w", "\n%{http_code}", "http://web/path?q=1"],
        capture_output=True, text=True, timeout=30, env=env,
    )
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    assert status == "200"
    assert upstream.count() == 1
    record = upstream.requests[0]
    assert record["path"] == "/path?q=1", "the upstream must get the origin-form target"
    headers = headers_of(record)
    assert headers["host"] == ["web"]
    assert "proxy-connection" not in headers
    assert json.loads(body)["path"] == "/path?q=1"


def test_absolute_form_authority_replaces_the_host_header(web):
    """RFC 9112 §3.2.2: with an absolute-form target the Host header is ignored in favour of the target's authority."""
    meshd, upstream = web
    with RawClient(meshd.router()) as client:
        client.send(b"GET http://web/abs?x=%20y HTTP/1.1\r\nHost: elsewhere\r\n\r\n")
        response = client.read_response()
    assert response.status == 200, response
    record = upstream.requests[0]
    assert record["path"] == "/abs?x=%20y"
    assert headers_of(record)["host"] == ["web"]


def test_routing_headers_are_added_upstream(web):
    meshd, upstream = web
    with httpx.Client(timeout=10) as client:
        for _ in range(3):
            assert client.get(meshd.url(path="/ids"), headers={"host": "web", "via": "1.0 edge"}).status_code == 200
    request_ids = []
    for record in upstream.requests:
        headers = headers_of(record)
        assert len(headers["via"]) == 1
        assert "1.1 meshd" in headers["via"][0]
        assert headers["via"][0].startswith("1.0 edge"), "meshd must append to an existing Via, not replace it"
        assert headers["l5d-dst-service"] == ["/svc/web"]
        assert headers["l5d-dst-client"] == ["/#/io.l5d.fs/web"]
        assert len(headers["l5d-reqid"]) == 1 and headers["l5d-reqid"][0]
        request_ids.append(headers["l5d-reqid"][0])
    assert len(set(request_ids)) == 3, f"l5d-reqid must differ per request: {request_ids}"


def test_several_via_headers_become_one_list_with_meshd_last(web):
    meshd, upstream = web
    upstream.on("/vias", lambda handler, record: handler.reply(200, b"ok", [("Via", "1.1 origin-a"), ("Via", "1.1 origin-b")]))
    response = httpx.get(meshd.url(path="/vias"), headers=[("host", "web"), ("via", "1.0 edge"), ("via", "1.1 inner")], timeout=10)
    assert response.status_code == 200
    assert headers_of(upstream.requests[-1])["via"] == ["1.0 edge, 1.1 inner, 1.1 meshd"]
    assert response.headers.get_list("via") == ["1.1 origin-a, 1.1 origin-b, 1.1 meshd"]


def test_hop_by_hop_request_headers_are_not_forwarded(web):
    meshd, upstream = web
    with RawClient(meshd.router()) as client:
        client.send(
            b"GET /hop HTTP/1.1\r\n"
            b"Host: web\r\n"
            b"Connection: keep-alive, x-secret\r\n"
            b"x-secret: 1\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"Proxy-Connection: keep-alive\r\n"
            b"TE: trailers\r\n"
            b"Upgrade: websocket\r\n"
            b"X-Kept: yes\r\n"
            b"\r\n"
        )
        response = client.read_response()
    assert response.status == 200, response
    headers = headers_of(upstream.requests[0])
    for name in ("x-secret", "keep-alive", "proxy-connection", "te", "upgrade"):
        assert name not in headers, f"{name} was forwarded: {headers}"
    assert all("x-secret" not in value.lower() for value in headers.get("connection", []))
    assert headers["x-kept"] == ["yes"]


def test_upgrade_request_is_proxied_as_plain_http_and_the_connection_stays_usable(web):
    meshd, upstream = web
    with RawClient(meshd.router(), timeout=5) as client:
        client.send(b"GET /ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        first = client.read_response()
        assert first.status == 200, first
        headers = headers_of(upstream.requests[0])
        assert "upgrade" not in headers
        assert all("upgrade" not in value.lower() for value in headers.get("connection", []))
        if "close" in (first.header("connection") or "").lower():
            closed, _ = client.wait_closed(3)
            assert closed, "meshd said Connection: close but kept the connection open"
        else:
            client.send(b"GET /after HTTP/1.1\r\nHost: web\r\n\r\n")
            client.sock.settimeout(2)
            try:
                second = client.read_response()
            except TimeoutError:
                second = None
            assert second is not None and second.status == 200, (
                "the response was keep-alive, but the next request on the connection got no answer")


def test_hop_by_hop_response_headers_do_not_reach_the_client(web):
    meshd, upstream = web

    def hop_headers(handler, record):
        handler.reply(200, b"hello", {
            "Connection": "x-up-secret",
            "X-Up-Secret": "1",
            "Keep-Alive": "timeout=5",
            "Proxy-Connection": "keep-alive",
            "Upgrade": "h2c",
            "X-Normal": "kept",
        })

    upstream.on("/hop", hop_headers)
    response = httpx.get(meshd.url(path="/hop"), headers={"host": "web"}, timeout=10)
    assert response.status_code == 200
    assert response.content == b"hello"
    for name in ("x-up-secret", "keep-alive", "proxy-connection", "upgrade"):
        assert name not in response.headers, f"{name} reached the client: {response.headers}"
    assert "x-up-secret" not in response.headers.get("connection", "").lower()
    assert response.headers["x-normal"] == "kept"
    assert "1.1 meshd" in response.headers["via"]


def test_connections_are_kept_alive_on_both_sides(web):
    meshd, upstream = web
    upstream_ports = []

    def record_port(handler, record):
        upstream_ports.append(handler.client_address[1])
        echo(handler, record)

    upstream.on("/ka", record_port)
    client_ports = set()
    with httpx.Client(timeout=10) as client:
        for i in range(20):
            response = client.get(meshd.url(path=f"/ka/{i}"), headers={"host": "web"})
            assert response.status_code == 200
            assert response.json()["path"] == f"/ka/{i}"
            client_ports.add(response.extensions["network_stream"].get_extra_info("client_addr")[1])
    assert len(client_ports) == 1, "meshd closed the client connection between requests"
    assert len(upstream_ports) == 20
    assert len(set(upstream_ports)) < 20, "meshd opened an upstream connection per request"
    assert len(set(upstream_ports)) == 1, f"one client connection should reuse one upstream connection: {upstream_ports}"


def test_pipelined_requests_are_answered_in_order(web):
    meshd, upstream = web

    def delayed(seconds):
        def behaviour(handler, record):
            time.sleep(seconds)  # a slow upstream, not synchronisation
            echo(handler, record)
        return behaviour

    upstream.on("/slow", delayed(0.3))
    upstream.on("/medium", delayed(0.1))
    paths = ["/slow", "/fast", "/medium"]
    with RawClient(meshd.router(), timeout=10) as client:
        client.send(b"".join(b"GET %s HTTP/1.1\r\nHost: web\r\n\r\n" % path.encode() for path in paths))
        responses = [client.read_response() for _ in paths]
    assert all(r is not None and r.status == 200 and r.complete for r in responses), responses
    assert [json.loads(r.body)["path"] for r in responses] == paths
    assert sorted(record["path"] for record in upstream.requests) == sorted(paths)


def test_pipelined_requests_with_bodies(web):
    meshd, upstream = web
    with RawClient(meshd.router(), timeout=10) as client:
        client.send(
            b"POST /p1 HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\nfirst"
            b"PUT /p2 HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n"
            b"GET /p3 HTTP/1.1\r\nHost: web\r\n\r\n"
        )
        responses = [client.read_response() for _ in range(3)]
    assert all(r is not None and r.status == 200 for r in responses), responses
    records = [json.loads(r.body) for r in responses]
    assert [(r["method"], r["path"]) for r in records] == [("POST", "/p1"), ("PUT", "/p2"), ("GET", "/p3")]
    assert records[0]["body_sha256"] == hashlib.sha256(b"first").hexdigest()
    assert records[1]["body_sha256"] == hashlib.sha256(b"second").hexdigest()
    assert records[2]["body_size"] == 0


@pytest.mark.parametrize("method,path,status", [
    ("HEAD", "/head", 200), ("HEAD", "/headchunked", 200), ("GET", "/nocontent", 204), ("GET", "/notmodified", 304),
])
def test_bodiless_responses_leave_the_connection_usable(web, method, path, status):
    meshd, upstream = web
    upstream.on("/head", lambda handler, record: handler.reply(200, b"x" * 1234, {"content-type": "text/plain"}))
    upstream.on("/headchunked", lambda handler, record: handler.reply(200, b"y" * 20000, chunked=True))
    upstream.on("/nocontent", lambda handler, record: handler.reply(204))
    upstream.on("/notmodified", lambda handler, record: handler.reply(304, b"", {"etag": '"v1"'}))
    with RawClient(meshd.router()) as client:
        client.send(b"%s %s HTTP/1.1\r\nHost: web\r\n\r\n" % (method.encode(), path.encode()))
        first = client.read_response(method=method)
        assert first.status == status, first
        assert first.body == b""
        if path == "/head":
            assert first.header("content-length") == "1234", "HEAD must keep the length of the GET response"
        elif status in (204, 304):
            assert first.header("transfer-encoding") is None
        client.send(b"GET /after HTTP/1.1\r\nHost: web\r\n\r\n")
        second = client.read_response()
        assert second is not None, "meshd closed the connection after a bodiless response"
        assert second.status == 200, second
        assert json.loads(second.body)["path"] == "/after"
    assert [record["path"] for record in upstream.requests] == [path, "/after"]


def test_expect_100_continue_upload(web, tmp_path):
    meshd, upstream = web
    payload = os.urandom(1 << 20)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    result = subprocess.run(
        [
            "curl", "-sS", "-v", "--max-time", "30", "--expect100-timeout", "15",
            "-H", "Host: web", "-H", "Expect: 100-continue", "-H", "Content-Type: application/octet-stream",
            "--data-binary", f"@{source}", "-o", str(tmp_path / "out.json"), "-w", "%{http_code}",
            meshd.url(path="/upload"),
        ],
        capture_output=True, text=True, timeout=40,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "200"
    assert "HTTP/1.1 100" in result.stderr, "meshd did not pass on the upstream's 100 Continue"
    record = upstream.requests[0]
    assert record["body_size"] == len(payload)
    assert record["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert any(value.lower() == "100-continue" for value in headers_of(record).get("expect", []))


def test_http_1_0_client_gets_an_unchunked_response(web):
    meshd, upstream = web
    body = bytes(range(256)) * 200  # 51,200 bytes, several chunks upstream
    upstream.on("/chunked", lambda handler, record: handler.reply(200, body, chunked=True))
    with RawClient(meshd.router(), timeout=10) as client:
        client.send(b"GET /chunked HTTP/1.0\r\nHost: web\r\n\r\n")
        response = client.read_response()
        assert response.version == "HTTP/1.0", response
        assert response.status == 200
        assert response.header("transfer-encoding") is None, "HTTP/1.0 has no chunked coding"
        assert response.body == body
        if response.header("content-length") is None:
            assert client.eof, "a response framed by close must end with the connection"
    assert upstream.requests[0]["path"] == "/chunked"


def test_dtab_naming_an_inet_address(start_meshd):
    upstream = Upstream()
    try:
        config = f"""
admin:
  ip: 127.0.0.1
  port: 0
routers:
- protocol: http
  dtab: /svc/web => /$/inet/127.0.0.1/{upstream.port};
  servers:
  - ip: 127.0.0.1
    port: 0
"""
        meshd = start_meshd(config)
        response = httpx.get(meshd.url(path="/inet"), headers={"host": "web"}, timeout=10)
        assert response.status_code == 200
        assert response.json()["path"] == "/inet"
        headers = headers_of(upstream.requests[0])
        assert headers["l5d-dst-client"] == [f"/$/inet/127.0.0.1/{upstream.port}"]
        other = httpx.get(meshd.url(path="/inet"), headers={"host": "other"}, timeout=10)
        assert other.status_code == 503 and "l5d-err" in other.headers
        assert upstream.count() == 1
    finally:
        upstream.close()


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
def test_request_without_host_is_refused(web, version):
    meshd, upstream = web
    with RawClient(meshd.router()) as client:
        client.send(b"GET /nohost %s\r\n\r\n" % version.encode())
        response = client.read_response()
        assert response is not None
        assert response.status == 400, response
        assert response.has("l5d-err")
        assert response.body.strip()
    assert upstream.count() == 0



def test_chunked_bodies_and_trailers_cross_both_ways(start_meshd):
    """A chunked upload with a trailer reaches the upstream chunked, trailer included; a chunked
    response with a trailer reaches the client the same way (meshd's own HTTP/1.1 encoders)."""
    seen = {}

    def script(conn):
        data = b""
        while not (b"\r\n0\r\n" in data and data.endswith(b"\r\n\r\n")):
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        seen["request"] = data
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n7\r\n, world\r\n0\r\nX-Checksum: abc\r\n\r\n")
        time.sleep(0.5)

    upstream = RawUpstream(script)
    try:
        meshd = start_meshd(disco={"web": upstream.disco_line})
        with RawClient(meshd.router()) as client:
            client.send(b"POST /t HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Up: 1\r\n\r\n")
            head = client.read_head()
            assert head is not None
            _, status, _, headers = head
            assert status == 200
            assert dict((k.lower(), v) for k, v in headers)["transfer-encoding"] == "chunked"
            rest = b""
            while not rest.endswith(b"\r\n\r\n"):
                rest += client._readline()
            assert rest == b"5\r\nhello\r\n7\r\n, world\r\n0\r\nX-Checksum: abc\r\n\r\n"
        request = seen["request"]
        head, _, body = request.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        assert b"content-length" not in head.lower()
        assert body == b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Up: 1\r\n\r\n"
    finally:
        upstream.close()
