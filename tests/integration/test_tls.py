"""TLS listeners and client TLS against real peers: curl, openssl s_client, Python's ssl and
httpx, and Python TLS servers as endpoints; certificates made per test (certs.py)."""
import http.client
import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time

import httpx
import pytest

from certs import Authority
from meshd_harness import MESHD_BIN, wait_until, write_config
from upstreams import Upstream, free_port


def tls_router(cert, key, extra_tls="", upstream_port=None, identifier="{kind: io.l5d.static, path: /app}", extra_router=""):
    tls = f"""
    tls:
      certPath: {cert}
      keyPath: {key}
{extra_tls}"""
    return f"""admin: {{ip: 127.0.0.1, port: 0}}
routers:
- protocol: http
  identifier: {identifier}
  dtab: /svc/app => /$/inet/127.0.0.1/{upstream_port};
{extra_router}
  servers:
  - ip: 127.0.0.1
    port: 0{tls}
"""


def client_context(ca, cert=None, key=None, minimum=None, maximum=None):
    context = ssl.create_default_context(cafile=str(ca))
    if cert:
        context.load_cert_chain(str(cert), str(key))
    if minimum:
        context.minimum_version = minimum
    if maximum:
        context.maximum_version = maximum
    return context


def https_get(meshd, context, path="/", host="localhost", timeout=10, label="http"):
    """GET over a new TLS connection; returns (status, body, the server's certificate serial)."""
    address, port = meshd.router(label)
    conn = http.client.HTTPSConnection(address, port, context=context, timeout=timeout)
    conn.sock = None
    raw = socket.create_connection((address, port), timeout=timeout)
    conn.sock = context.wrap_socket(raw, server_hostname=host)
    try:
        conn.request("GET", path, headers={"Host": "app"})
        response = conn.getresponse()
        body = response.read()
        serial = conn.sock.getpeercert()["serialNumber"]
        return response.status, body, int(serial, 16)
    finally:
        conn.close()


def handshake_fails(meshd, context, host="localhost"):
    """Whether a TLS handshake with the listener fails (the error), or None when it succeeds."""
    address, port = meshd.router()
    raw = socket.create_connection((address, port), timeout=10)
    try:
        tls = context.wrap_socket(raw, server_hostname=host)
        # TLS 1.3: a refused client certificate shows on the first read.
        tls.sendall(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        data = tls.recv(1)
        tls.close()
        return None if data else "closed"
    except (ssl.SSLError, ConnectionError, OSError) as error:
        return str(error)
    finally:
        raw.close()


def counter(meshd, name, **labels):
    """The sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for key, value in meshd.metrics().items():
        if not key.startswith(name + "{") and key != name:
            continue
        if all(f'{k}="{v}"' in key for k, v in labels.items()):
            total += value
    return total


@pytest.fixture
def pki(tmp_path):
    return Authority(tmp_path / "pki")


# ---- listeners ------------------------------------------------------------------------------

@pytest.mark.parametrize("key,form,digest", [
    ("rsa2048", "pkcs8", "sha256"),
    ("rsa2048", "pkcs1", "sha512"),
    ("rsa4096", "pkcs1", "sha384"),
    ("p256", "sec1", "sha256"),
    ("p384", "pkcs8", "sha384"),
    ("p384", "sec1", "sha512"),
])
def test_listener_serves_every_key_format_and_signature(start_meshd, upstream, pki, key, form, digest):
    cert, keyfile, issued = pki.issue("localhost", dns=["localhost"], key=key, key_form=form, digest=digest)
    meshd = start_meshd(tls_router(cert, keyfile, upstream_port=upstream.port))
    status, body, serial = https_get(meshd, client_context(pki.path))
    assert status == 200
    assert serial == issued.serial_number
    assert json.loads(body)["path"] == "/"
    assert counter(meshd, "meshd_tls_handshakes_total", side="server", result="success") == 1


def test_curl_and_openssl_and_httpx_talk_to_a_tls_listener(start_meshd, upstream, pki):
    cert, key, issued = pki.issue("localhost", dns=["localhost"], ips=["127.0.0.1"])
    meshd = start_meshd(tls_router(cert, key, upstream_port=upstream.port))
    address, port = meshd.router()
    curl = subprocess.run(["curl", "-sS", "--cacert", str(pki.path), f"https://localhost:{port}/curl", "-H", "Host: app",
                           "-o", "/dev/null", "-w", "%{http_code}"], capture_output=True, text=True, timeout=20)
    assert curl.stdout == "200", curl.stderr
    s_client = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki.path),
                               "-servername", "localhost", "-verify_return_error", "-brief"],
                              input="", capture_output=True, text=True, timeout=20)
    assert "Verification: OK" in s_client.stderr, s_client.stderr
    with httpx.Client(verify=client_context(pki.path)) as client:
        response = client.get(f"https://127.0.0.1:{port}/httpx", headers={"Host": "app"})
    assert response.status_code == 200
    assert [r["path"] for r in upstream.requests] == ["/curl", "/httpx"]


def test_handshake_failures_are_counted_closed_and_never_routed(start_meshd, upstream, pki, tmp_path):
    cert, key, _ = pki.issue("localhost", dns=["localhost"])
    meshd = start_meshd(tls_router(cert, key, upstream_port=upstream.port))
    address, port = meshd.router()
    # Plain HTTP to the TLS port.
    with socket.create_connection((address, port), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        raw.settimeout(10)
        assert raw.recv(65536) == b""
    # TLS 1.1 and older are refused.
    curl = subprocess.run(["curl", "-sS", "--tlsv1.0", "--tls-max", "1.1", "-k", f"https://127.0.0.1:{port}/"],
                          capture_output=True, text=True, timeout=20)
    assert curl.returncode != 0
    # A client that does not trust meshd's certificate gives up.
    other = Authority(tmp_path / "other", name="other CA")
    assert handshake_fails(meshd, client_context(other.path)) is not None
    wait_until(lambda: counter(meshd, "meshd_tls_handshakes_total", side="server") >= 3)
    assert counter(meshd, "meshd_tls_handshakes_total", side="server", result="not_tls") == 1
    assert counter(meshd, "meshd_tls_handshakes_total", side="server", result="protocol_version") == 1
    assert upstream.count() == 0
    # And the listener still serves.
    status, _, _ = https_get(meshd, client_context(pki.path))
    assert status == 200
    logs = "\n".join(meshd.log_lines)
    assert "TLS handshake failed" in logs and "plain HTTP" in logs


def test_protocols_limit_the_versions_offered(start_meshd, upstream, pki):
    cert, key, _ = pki.issue("localhost", dns=["localhost"])
    meshd = start_meshd(tls_router(cert, key, upstream_port=upstream.port, extra_tls="      protocols: [TLSv1.3]"))
    assert handshake_fails(meshd, client_context(pki.path, maximum=ssl.TLSVersion.TLSv1_2)) is not None
    status, _, _ = https_get(meshd, client_context(pki.path, minimum=ssl.TLSVersion.TLSv1_3))
    assert status == 200


def test_require_client_auth(start_meshd, upstream, pki, tmp_path):
    cert, key, _ = pki.issue("localhost", dns=["localhost"])
    client_cert, client_key, _ = pki.issue("caller", uris=["spiffe://test/caller"], file_stem="caller")
    stranger_ca = Authority(tmp_path / "stranger", name="stranger CA")
    stranger_cert, stranger_key, _ = stranger_ca.issue("stranger", file_stem="stranger")
    extra = f"      caCertPath: {pki.path}\n      requireClientAuth: true"
    meshd = start_meshd(tls_router(cert, key, upstream_port=upstream.port, extra_tls=extra))
    assert handshake_fails(meshd, client_context(pki.path)) is not None
    assert handshake_fails(meshd, client_context(pki.path, stranger_cert, stranger_key)) is not None
    assert upstream.count() == 0
    status, _, _ = https_get(meshd, client_context(pki.path, client_cert, client_key))
    assert status == 200
    assert upstream.count() == 1
    wait_until(lambda: counter(meshd, "meshd_tls_handshakes_total", side="server") >= 3)
    failures = counter(meshd, "meshd_tls_handshakes_total", side="server") - counter(meshd, "meshd_tls_handshakes_total", side="server", result="success")
    assert failures == 2


# ---- start-up errors ----------------------------------------------------------------------------

def check(tmp_path, text):
    path = write_config(tmp_path, text)
    result = subprocess.run([MESHD_BIN, "check", "--config", str(path), "--no-bind-check"], capture_output=True, text=True, timeout=30)
    return result.returncode, result.stderr


def test_bad_files_are_config_errors_at_their_key(tmp_path, pki):
    cert, key, _ = pki.issue("localhost", dns=["localhost"])
    other_cert, other_key, _ = pki.issue("other", dns=["other"], file_stem="other")
    expired, expired_key, _ = pki.issue("old", dns=["old"], not_before_days=-20, not_after_days=-1, file_stem="old")
    future, future_key, _ = pki.issue("new", dns=["new"], not_before_days=5, not_after_days=20, file_stem="new")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        (tmp_path / "missing.pem", key, "certPath", "no such file"),
        (cert, other_key, "keyPath", "does not belong to the certificate"),
        (expired, expired_key, "certPath", "expired"),
        (future, future_key, "certPath", "not valid until"),
        (key, key, "certPath", "private key, not a certificate"),
        (cert, cert, "keyPath", "certificate, not a private key"),
        (garbage, key, "certPath", "no PEM certificate"),
    ]
    for cert_path, key_path, key_name, reason in cases:
        code, stderr = check(tmp_path, tls_router(cert_path, key_path, upstream_port=1))
        assert code == 1, (cert_path, key_path, stderr)
        line = [l for l in stderr.splitlines() if reason in l]
        assert line, (reason, stderr)
        assert f"routers[0].servers[0].tls.{key_name}" in line[0], line[0]
        assert "meshd.yaml:" in line[0]
    code, stderr = check(tmp_path, tls_router(cert, key, upstream_port=1, extra_tls="      protocols: [TLSv1.1, TLSv1.2]"))
    assert code == 1 and "TLSv1.1 is not supported" in stderr and "tls.protocols[0]" in stderr
    code, stderr = check(tmp_path, tls_router(cert, key, upstream_port=1, extra_tls="      requireClientAuth: true"))
    assert code == 1 and "caCertPath" in stderr
    code, stderr = check(tmp_path, tls_router(cert, key, upstream_port=1))
    assert code == 0, stderr


def test_run_refuses_to_start_with_a_bad_key(tmp_path, pki):
    cert, _, _ = pki.issue("localhost", dns=["localhost"])
    _, other_key, _ = pki.issue("other", dns=["other"], file_stem="other")
    path = write_config(tmp_path, tls_router(cert, other_key, upstream_port=1))
    result = subprocess.run([MESHD_BIN, "run", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "tls.keyPath" in result.stderr and "does not belong" in result.stderr


# ---- endpoints over TLS ----------------------------------------------------------------------------

class TLSUpstream:
    """An HTTPS endpoint (Python's ssl): echoes the path, and counts handshakes."""

    def __init__(self, cert, key, ca=None, require_client_cert=False):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        if ca:
            context.load_verify_locations(str(ca))
            context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        self.context = context
        self.requests = []
        self.peer_certs = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                peer = self.connection.getpeercert()
                outer.requests.append(self.path)
                outer.peer_certs.append(peer)
                body = json.dumps({"path": self.path}).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                conn, address = self.socket.accept()
                conn.settimeout(10)
                return context.wrap_socket(conn, server_side=True), address

            def handle_error(self, request, client_address):
                pass

            def _handle_request_noblock(self):
                try:
                    super()._handle_request_noblock()
                except (ssl.SSLError, OSError):
                    pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def client_tls_config(port, tls, identifier="{kind: io.l5d.path, segments: 1}", prefix=None):
    prefix = prefix or f"/$/inet/127.0.0.1/{port}"
    return f"""admin: {{ip: 127.0.0.1, port: 0}}
routers:
- protocol: http
  identifier: {identifier}
  dtab: /svc/app => /$/inet/127.0.0.1/{port};
  client:
    kind: io.l5d.static
    configs:
    - prefix: {prefix}
      tls: {tls}
  servers:
  - ip: 127.0.0.1
    port: 0
"""


@pytest.fixture
def tls_upstreams():
    made = []

    def make(*args, **kwargs):
        server = TLSUpstream(*args, **kwargs)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def test_requests_reach_a_tls_endpoint_over_pooled_connections(start_meshd, pki, tls_upstreams):
    cert, key, _ = pki.issue("app.test", dns=["app.test"], key="p384", digest="sha384")
    endpoint = tls_upstreams(cert, key)
    meshd = start_meshd(client_tls_config(endpoint.port, f"{{commonName: app.test, trustCerts: [{pki.path}]}}"), args=("--threads", "1"))
    with httpx.Client() as client:
        for i in range(5):
            response = client.get(meshd.url(path=f"/app/{i}"))
            assert response.status_code == 200, response.text
    assert endpoint.requests == [f"/app/{i}" for i in range(5)]
    # One handshake for the five requests: the connection is pooled.
    assert counter(meshd, "meshd_tls_handshakes_total", side="client", result="success") == 1


@pytest.mark.parametrize("case,expected", [
    ("wrong_name", "not for the expected name"),
    ("untrusted", "does not chain to a trusted CA"),
    ("expired", "expired"),
    ("plain", "does not speak TLS"),
])
def test_a_bad_endpoint_certificate_is_a_502_naming_the_failure(start_meshd, pki, tls_upstreams, tmp_path, upstream, case, expected):
    if case == "wrong_name":
        cert, key, _ = pki.issue("other.test", dns=["other.test"])
        port = tls_upstreams(cert, key).port
    elif case == "untrusted":
        stranger = Authority(tmp_path / "stranger", name="stranger CA")
        cert, key, _ = stranger.issue("app.test", dns=["app.test"])
        port = tls_upstreams(cert, key).port
    elif case == "expired":
        cert, key, _ = pki.issue("app.test", dns=["app.test"], not_before_days=-10, not_after_days=-1)
        port = tls_upstreams(cert, key).port
    else:
        port = upstream.port
    meshd = start_meshd(client_tls_config(port, f"{{commonName: app.test, trustCerts: [{pki.path}]}}"))
    response = httpx.get(meshd.url(path="/app/x"), timeout=20)
    assert response.status_code == 502
    assert "TLS handshake failed" in response.headers["l5d-err"]
    assert expected in response.headers["l5d-err"], response.headers["l5d-err"]
    assert counter(meshd, "meshd_tls_handshakes_total", side="client", result="success") == 0
    assert counter(meshd, "meshd_tls_handshakes_total", side="client") >= 1
    if case == "plain":
        assert upstream.count() == 0


def test_common_name_takes_the_prefix_captures(start_meshd, pki, tls_upstreams):
    cert, key, _ = pki.issue("web.example.test", dns=["web.example.test"])
    endpoint = tls_upstreams(cert, key)
    config = f"""admin: {{ip: 127.0.0.1, port: 0}}
namers:
- kind: io.l5d.fs
  rootDir: disco
routers:
- protocol: http
  identifier: {{kind: io.l5d.path, segments: 1}}
  dtab: /svc => /#/io.l5d.fs;
  client:
    kind: io.l5d.static
    configs:
    - prefix: /#/io.l5d.fs/{{service}}
      tls: {{commonName: "{{service}}.example.test", trustCerts: [{pki.path}]}}
  servers:
  - ip: 127.0.0.1
    port: 0
"""
    meshd = start_meshd(config, disco={"web": f"127.0.0.1 {endpoint.port}\n", "api": f"127.0.0.1 {endpoint.port}\n"})
    assert httpx.get(meshd.url(path="/web/a"), timeout=20).status_code == 200
    # The same endpoint under another name: its certificate is not for api.example.test.
    response = httpx.get(meshd.url(path="/api/a"), timeout=20)
    assert response.status_code == 502
    assert "api.example.test" in response.headers["l5d-err"]


def test_common_name_captures_must_exist(tmp_path, pki):
    code, stderr = check(tmp_path, client_tls_config(1, "{commonName: \"{service}.test\", trustCerts: [" + str(pki.path) + "]}", prefix="/#/io.l5d.fs/*"))
    assert code == 1 and "{service}" in stderr and "not captured" in stderr


# ---- linker to linker -----------------------------------------------------------------------------

def test_linker_to_linker_mtls(start_meshd, pki, upstream, tmp_path):
    """An outgoing meshd (plain for the app) sends to an incoming meshd over mTLS, which requires
    a client certificate and forwards to the app."""
    incoming_cert, incoming_key, _ = pki.issue("incoming.mesh", dns=["incoming.mesh"], file_stem="incoming")
    outgoing_cert, outgoing_key, _ = pki.issue("outgoing.mesh", dns=["outgoing.mesh"], uris=["spiffe://test/outgoing"], file_stem="outgoing")
    stranger_cert, stranger_key, _ = pki.issue("other.mesh", uris=["spiffe://test/other"], file_stem="other")
    incoming_port = free_port()
    (tmp_path / "in").mkdir()
    incoming = start_meshd(f"""admin: {{ip: 127.0.0.1, port: 0}}
routers:
- protocol: http
  label: incoming
  identifier: {{kind: io.l5d.static, path: /app}}
  dtab: /svc/app => /$/inet/127.0.0.1/{upstream.port};
  servers:
  - ip: 127.0.0.1
    port: {incoming_port}
    tls:
      certPath: {incoming_cert}
      keyPath: {incoming_key}
      caCertPath: {pki.path}
      requireClientAuth: true
      allow:
      - identities: [spiffe://test/outgoing]
        paths: [/svc/app]
""")
    outgoing = start_meshd(f"""admin: {{ip: 127.0.0.1, port: 0}}
routers:
- protocol: http
  label: outgoing
  identifier: {{kind: io.l5d.static, path: /app}}
  dtab: /svc/app => /$/inet/127.0.0.1/{incoming_port};
  client:
    tls:
      commonName: incoming.mesh
      trustCerts: [{pki.path}]
      clientAuth: {{certPath: {outgoing_cert}, keyPath: {outgoing_key}}}
  servers:
  - ip: 127.0.0.1
    port: 0
""", args=("--threads", "1"))
    for i in range(3):
        response = httpx.get(outgoing.url("outgoing", f"/hello/{i}"), timeout=20)
        assert response.status_code == 200, response.text
    assert [r["path"] for r in upstream.requests] == [f"/hello/{i}" for i in range(3)]
    # Another holder of a certificate from the same CA is let through the handshake, but the
    # identity rule refuses it.
    status, body, _ = https_get(incoming, client_context(pki.path, stranger_cert, stranger_key), "/hello", host="incoming.mesh", label="incoming")
    assert status == 403 and b"spiffe://test/other may not call /svc/app" in body
    assert len(upstream.requests) == 3
    # One event loop in the outgoing meshd: one pooled connection, one handshake, for the three.
    assert counter(incoming, "meshd_tls_handshakes_total", side="server", result="success") == 2
    assert counter(outgoing, "meshd_tls_handshakes_total", side="client", result="success") == 1


# ---- rotation -------------------------------------------------------------------------------------

def test_rotated_certificates_serve_new_handshakes_and_broken_ones_are_rejected(start_meshd, upstream, pki, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    first_cert, first_key, first = pki.issue("localhost", dns=["localhost"], file_stem="first")
    second_cert, second_key, second = pki.issue("localhost", dns=["localhost"], key="rsa2048", file_stem="second")
    shutil.copy(first_cert, live / "tls.pem")
    shutil.copy(first_key, live / "tls.key")
    meshd = start_meshd(tls_router(live / "tls.pem", live / "tls.key", upstream_port=upstream.port))
    context = client_context(pki.path)
    assert https_get(meshd, context)[2] == first.serial_number
    # A connection opened before the rotation keeps working after it.
    address, port = meshd.router()
    kept = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
    kept.request("GET", "/before", headers={"Host": "app"})
    assert kept.getresponse().read()

    # A broken replacement: rejected, counted, the old certificate keeps serving.
    (live / "tls.pem").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    wait_until(lambda: counter(meshd, "meshd_tls_reloads_total", result="failure") >= 1, timeout=10)
    assert https_get(meshd, context)[2] == first.serial_number

    # A valid new pair (key first, then certificate, as an operator would copy them: the
    # mismatched moment in between is rejected too).
    shutil.copy(second_key, live / "tls.key")
    shutil.copy(second_cert, live / "tls.pem")
    assert wait_until(lambda: https_get(meshd, context)[2] == second.serial_number, timeout=10)
    assert counter(meshd, "meshd_tls_reloads_total", result="success") >= 1
    kept.request("GET", "/after", headers={"Host": "app"})
    assert kept.getresponse().status == 200
    kept.close()
    logs = "\n".join(meshd.log_lines)
    assert "changed TLS files rejected" in logs and "TLS files reloaded" in logs


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_clients_resume_sessions(start_meshd, upstream, pki, tmp_path, version):
    cert, key, _ = pki.issue("localhost", dns=["localhost"])
    meshd = start_meshd(tls_router(cert, key, upstream_port=upstream.port))
    _, port = meshd.router()
    session = tmp_path / f"session{version}.pem"
    base = ["openssl", "s_client", version, "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki.path), "-servername", "localhost"]
    # The request makes s_client read the TLS 1.3 ticket that follows the handshake.
    request = "GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
    first = subprocess.run(base + ["-sess_out", str(session), "-ign_eof"], input=request, capture_output=True, text=True, timeout=20)
    assert "New," in first.stdout, first.stdout + first.stderr
    again = subprocess.run(base + ["-sess_in", str(session), "-ign_eof"], input=request, capture_output=True, text=True, timeout=20)
    assert "Reused," in again.stdout, again.stdout
    assert "HTTP/1.1 200" in again.stdout


def test_admin_tls_and_tls_json(tmp_path, pki, upstream):
    """The admin listener takes the same tls block; /admin/tls.json lists what is loaded and
    never a key."""
    cert, key, issued = pki.issue("localhost", dns=["localhost"], uris=["spiffe://test/meshd"])
    admin_port = free_port()
    text = tls_router(cert, key, upstream_port=upstream.port).replace(
        "admin: {ip: 127.0.0.1, port: 0}",
        f"admin:\n  ip: 127.0.0.1\n  port: {admin_port}\n  tls: {{certPath: {cert}, keyPath: {key}}}",
    )
    path = write_config(tmp_path, text)
    proc = subprocess.Popen([MESHD_BIN, "run", "--config", str(path), "--log-format", "json"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        context = client_context(pki.path)
        def admin_get(path):
            with httpx.Client(verify=context) as client:
                return client.get(f"https://localhost:{admin_port}{path}", timeout=5)
        def ready():
            try:
                return admin_get("/admin/ready").status_code == 200
            except httpx.HTTPError:
                return False
        assert wait_until(ready, timeout=30)
        # Plain HTTP to the admin port gets nothing.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{admin_port}/admin/ping", timeout=5)
        body = admin_get("/admin/tls.json").text
        assert "PRIVATE" not in body and key.read_text().splitlines()[1] not in body
        listing = json.loads(body)
        sides = sorted((entry["router"], entry["side"]) for entry in listing)
        assert sides == [("admin", "server"), ("http", "server")]
        entry = next(e for e in listing if e["router"] == "http")
        certificate = entry["certificate"]
        assert int(certificate["serial"], 16) == issued.serial_number
        assert certificate["dnsNames"] == ["localhost"] and certificate["uris"] == ["spiffe://test/meshd"]
        assert certificate["subject"] == "CN=localhost"
        der = issued.public_bytes(__import__("cryptography").hazmat.primitives.serialization.Encoding.DER)
        assert certificate["sha256"] == __import__("hashlib").sha256(der).hexdigest()
        metrics = admin_get("/admin/metrics/prometheus").text
        expiry = [l for l in metrics.splitlines() if l.startswith("meshd_tls_certificate_expiry_timestamp_seconds{") and 'subject="CN=localhost"' in l]
        assert expiry and abs(float(expiry[0].rsplit(" ", 1)[1]) - issued.not_valid_after_utc.timestamp()) < 1
    finally:
        proc.terminate()
        proc.wait(15)


# ---- identity-based access and x-forwarded-client-cert ------------------------------------------

def identity_router(pki, cert, key, upstream_port, allow, extra_client=""):
    return f"""admin: {{ip: 127.0.0.1, port: 0}}
routers:
- protocol: http
  identifier: {{kind: io.l5d.path, segments: 1}}
  dtab: /svc => /$/inet/127.0.0.1/{upstream_port};
{extra_client}
  servers:
  - ip: 127.0.0.1
    port: 0
    tls:
      certPath: {cert}
      keyPath: {key}
      caCertPath: {pki.path}
      requireClientAuth: true
      allow:
{allow}
"""


def test_allow_rules_let_only_named_callers_call_named_services(start_meshd, upstream, pki):
    cert, key, _ = pki.issue("localhost", dns=["localhost"])
    web_cert, web_key, _ = pki.issue("web", uris=["spiffe://test/ns/web/sa/frontend"], file_stem="web")
    jobs_cert, jobs_key, _ = pki.issue("jobs", uris=["spiffe://test/ns/jobs/sa/cron"], file_stem="jobs")
    ops_cert, ops_key, _ = pki.issue("ops.test", dns=["ops.test"], file_stem="ops")
    allow = """      - identities: [spiffe://test/ns/web/*]
        paths: [/svc/users, /svc/orders]
      - identities: [ops.test]"""
    meshd = start_meshd(identity_router(pki, cert, key, upstream.port, allow))
    web = client_context(pki.path, web_cert, web_key)
    jobs = client_context(pki.path, jobs_cert, jobs_key)
    ops = client_context(pki.path, ops_cert, ops_key)
    assert https_get(meshd, web, "/users/1")[0] == 200
    assert https_get(meshd, web, "/orders")[0] == 200
    status, body, _ = https_get(meshd, web, "/billing")
    assert status == 403
    assert b"spiffe://test/ns/web/sa/frontend may not call /svc/billing" in body
    status, _, _ = https_get(meshd, jobs, "/users/1")
    assert status == 403
    # A rule without paths allows every name.
    assert https_get(meshd, ops, "/billing")[0] == 200
    assert [r["path"] for r in upstream.requests] == ["/users/1", "/orders", "/billing"]
    assert counter(meshd, "meshd_tls_access_denied_total", identity="spiffe://test/ns/web/sa/frontend") == 1
    assert counter(meshd, "meshd_tls_access_denied_total", identity="spiffe://test/ns/jobs/sa/cron") == 1
    assert counter(meshd, "meshd_router_errors_total", reason="forbidden") == 2


def test_allow_needs_client_certificates(tmp_path, pki):
    cert, key, _ = pki.issue("localhost", dns=["localhost"])
    text = tls_router(cert, key, upstream_port=1, extra_tls="      allow: [{identities: ['*'], paths: [/svc]}]")
    code, stderr = check(tmp_path, text)
    assert code == 1 and "allow needs requireClientAuth" in stderr
    text = identity_router(pki, cert, key, 1, "      - {identities: ['spiffe://*/web'], paths: ['no-slash']}")
    code, stderr = check(tmp_path, text)
    assert code == 1 and "* may only end an identity" in stderr and "is not a path" in stderr


def test_forward_client_cert_replaces_what_the_client_sent(start_meshd, upstream, pki):
    cert, key, _ = pki.issue("localhost", dns=["localhost"], uris=["spiffe://test/meshd/incoming"])
    caller_cert, caller_key, caller = pki.issue("caller", uris=["spiffe://test/ns/web/sa/frontend"], dns=["web.test"], file_stem="caller")
    meshd = start_meshd(identity_router(pki, cert, key, upstream.port, "      - identities: ['*']",
                                        extra_client="  client: {forwardClientCert: true}"))
    context = client_context(pki.path, caller_cert, caller_key)
    address, port = meshd.router()
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
    conn.request("GET", "/app", headers={"x-forwarded-client-cert": "By=spoofed;Hash=00;URI=spiffe://evil"})
    assert conn.getresponse().read()
    conn.close()
    headers = dict((k.lower(), v) for k, v in upstream.requests[0]["headers"])
    from cryptography.hazmat.primitives.serialization import Encoding
    import hashlib
    digest = hashlib.sha256(caller.public_bytes(Encoding.DER)).hexdigest()
    assert headers["x-forwarded-client-cert"] == (
        f'By=spiffe://test/meshd/incoming;Hash={digest};Subject="CN=caller";URI=spiffe://test/ns/web/sa/frontend;DNS=web.test'
    )
    # The spoofed one is gone, not kept beside it.
    assert sum(1 for k, _ in upstream.requests[0]["headers"] if k.lower() == "x-forwarded-client-cert") == 1


def test_rotating_both_sides_of_linker_to_linker_mtls_under_load(start_meshd, upstream, pki, tmp_path):
    """The incoming listener's certificate and the outgoing client's certificate are both
    replaced while requests flow: none fails, and new handshakes carry the new certificates
    (the app sees the new client certificate's hash in x-forwarded-client-cert)."""
    live = tmp_path / "live"
    live.mkdir()
    from cryptography.hazmat.primitives.serialization import Encoding
    import hashlib
    names = {}
    for side in ("in", "out"):
        for generation in (1, 2):
            names[side, generation] = pki.issue(f"{side}.mesh", dns=[f"{side}.mesh"], uris=[f"spiffe://test/{side}"],
                                                file_stem=f"{side}{generation}")
    for side in ("in", "out"):
        shutil.copy(names[side, 1][0], live / f"{side}.pem")
        shutil.copy(names[side, 1][1], live / f"{side}.key")
    incoming_port = free_port()
    incoming = start_meshd(f"""admin: {{ip: 127.0.0.1, port: 0}}
routers:
- protocol: http
  label: incoming
  identifier: {{kind: io.l5d.static, path: /app}}
  dtab: /svc/app => /$/inet/127.0.0.1/{upstream.port};
  client: {{forwardClientCert: true}}
  servers:
  - ip: 127.0.0.1
    port: {incoming_port}
    tls: {{certPath: {live / "in.pem"}, keyPath: {live / "in.key"}, caCertPath: {pki.path}, requireClientAuth: true}}
""")
    outgoing = start_meshd(f"""admin: {{ip: 127.0.0.1, port: 0}}
routers:
- protocol: http
  label: outgoing
  identifier: {{kind: io.l5d.static, path: /app}}
  dtab: /svc/app => /$/inet/127.0.0.1/{incoming_port};
  client:
    clientSession: {{lifeTimeMs: 300}}
    tls:
      commonName: in.mesh
      trustCerts: [{pki.path}]
      clientAuth: {{certPath: {live / "out.pem"}, keyPath: {live / "out.key"}}}
  servers:
  - ip: 127.0.0.1
    port: 0
""")
    new_out_hash = hashlib.sha256(names["out", 2][2].public_bytes(Encoding.DER)).hexdigest()
    probe = client_context(pki.path, names["out", 1][0], names["out", 1][1])

    def incoming_serial():
        raw = socket.create_connection(("127.0.0.1", incoming_port), timeout=10)
        with probe.wrap_socket(raw, server_hostname="in.mesh") as tls:
            return int(tls.getpeercert()["serialNumber"], 16)

    assert incoming_serial() == names["in", 1][2].serial_number
    statuses = []
    rotated = False
    seen_new_client = False
    deadline = time.monotonic() + 60
    with httpx.Client() as client:
        for i in range(3000):
            response = client.get(outgoing.url("outgoing", f"/r/{i}"), timeout=20)
            statuses.append(response.status_code)
            if i == 50 and not rotated:
                # Keys first, then certificates, as an operator would copy them.
                shutil.copy(names["in", 2][1], live / "in.key")
                shutil.copy(names["out", 2][1], live / "out.key")
                shutil.copy(names["in", 2][0], live / "in.pem")
                shutil.copy(names["out", 2][0], live / "out.pem")
                rotated = True
            if rotated and not seen_new_client:
                forwarded = dict((k.lower(), v) for k, v in upstream.requests[-1]["headers"])["x-forwarded-client-cert"]
                seen_new_client = f"Hash={new_out_hash}" in forwarded
            if seen_new_client and incoming_serial() == names["in", 2][2].serial_number:
                break
            assert time.monotonic() < deadline, "the new certificates did not show within 60 s"
    assert seen_new_client
    assert incoming_serial() == names["in", 2][2].serial_number
    assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]
    assert len(statuses) > 51


def test_an_openssl_s_server_endpoint(start_meshd, pki, tmp_path):
    """openssl s_server as the endpoint: its -www page comes back through meshd's client TLS."""
    cert, key, _ = pki.issue("app.test", dns=["app.test"], key="rsa2048", key_form="pkcs1", digest="sha512")
    port = free_port()
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert), "-key", str(key), "-www", "-quiet"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def listening():
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0
        assert wait_until(listening, timeout=10)
        meshd = start_meshd(client_tls_config(port, f"{{commonName: app.test, trustCerts: [{pki.path}]}}"))
        response = httpx.get(meshd.url(path="/app/"), timeout=20)
        assert response.status_code == 200, response.text
        assert "Ciphers supported in s_server binary" in response.text or "s_server" in response.text
        assert counter(meshd, "meshd_tls_handshakes_total", side="client", result="success") >= 1
    finally:
        server.terminate()
        server.wait(10)


# ---- from an adversarial review of the TLS paths ------------------------------------------

def test_unusable_cipher_names_and_fifos_are_config_errors(tmp_path, pki):
    import os
    cert, key, _ = pki.issue("localhost", dns=["localhost"])
    for ciphers, reason in [("[BOGUS]", "not a TLS 1.2 cipher suite"), ("[TLS_AES_128_GCM_SHA256]", "TLS 1.3 suite"), ("['!ALL']", "not a TLS 1.2 cipher suite")]:
        code, stderr = check(tmp_path, tls_router(cert, key, upstream_port=1, extra_tls=f"      ciphers: {ciphers}"))
        assert code == 1 and reason in stderr and "tls.ciphers[0]" in stderr, stderr
    code, stderr = check(tmp_path, tls_router(cert, key, upstream_port=1, extra_tls="      ciphers: [ECDHE-RSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES256-GCM-SHA384]"))
    assert code == 0, stderr
    fifo = tmp_path / "cert.fifo"
    os.mkfifo(fifo)
    code, stderr = check(tmp_path, tls_router(fifo, key, upstream_port=1))
    assert code == 1 and "not a regular file" in stderr
    code, stderr = check(tmp_path, tls_router(tmp_path, key, upstream_port=1))
    assert code == 1 and "a directory" in stderr
    code, stderr = check(tmp_path, client_tls_config(1, f"{{commonName: 127.0.0.1, trustCerts: [{pki.path}]}}"))
    assert code == 1 and "is an IP address" in stderr
    code, stderr = check(tmp_path, tls_router(cert, key, upstream_port=1).replace(f"""    tls:
      certPath: {cert}
      keyPath: {key}
""", "    tls:\n"))
    assert code == 1 and "tls is empty" in stderr


def test_identity_rules_hold_against_dtab_overrides_and_subject_tricks(start_meshd, upstream, pki):
    other = Upstream()
    try:
        cert, key, _ = pki.issue("localhost", dns=["localhost"])
        web_cert, web_key, _ = pki.issue("web", uris=["spiffe://test/web"], file_stem="web")
        # An O that reads like a second attribute: the holder's CN is "nobody", not ops.test.
        trick_cert, trick_key, _ = pki.issue("nobody", organization="x, CN=ops.test", file_stem="trick")
        allow = """      - identities: [spiffe://test/web]
        paths: [/svc/users]
      - identities: [ops.test]"""
        meshd = start_meshd(identity_router(pki, cert, key, upstream.port, allow))
        address, port = meshd.router()
        context = client_context(pki.path, web_cert, web_key)
        conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
        for header in ("l5d-dtab", "l5d-ctx-dtab"):
            conn.request("GET", "/users/1", headers={header: f"/svc/users => /$/inet/127.0.0.1/{other.port}"})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
        conn.close()
        assert other.count() == 0 and upstream.count() == 2
        assert all("l5d-dtab" not in dict((k.lower(), v) for k, v in r["headers"]) for r in upstream.requests)
        status, _, _ = https_get(meshd, client_context(pki.path, trick_cert, trick_key), "/users/1")
        assert status == 403
    finally:
        other.close()


def test_forwarded_client_cert_quotes_names_and_is_stripped_on_tls_listeners(start_meshd, upstream, pki):
    cert, key, _ = pki.issue("localhost", dns=["localhost"])
    odd_cert, odd_key, _ = pki.issue("odd", uris=["spiffe://test/a;By=evil,Hash=00"], file_stem="odd")
    config = identity_router(pki, cert, key, upstream.port, "      - identities: ['*']", extra_client="  client: {forwardClientCert: true}")
    meshd = start_meshd(config)
    _, port = meshd.router()
    conn = http.client.HTTPSConnection("localhost", port, context=client_context(pki.path, odd_cert, odd_key), timeout=10)
    conn.request("GET", "/app")
    conn.getresponse().read()
    conn.close()
    forwarded = dict((k.lower(), v) for k, v in upstream.requests[-1]["headers"])["x-forwarded-client-cert"]
    # One entry, three fields: the URI's ; and , are inside its quotes.
    import re
    assert re.fullmatch(r'Hash=[0-9a-f]{64};Subject="CN=odd";URI="spiffe://test/a;By=evil,Hash=00"', forwarded), forwarded


def test_a_spoofed_forwarded_client_cert_does_not_pass_a_tls_listener(start_meshd, upstream, pki):
    cert, key, _ = pki.issue("localhost", dns=["localhost"])
    meshd = start_meshd(tls_router(cert, key, upstream_port=upstream.port))
    _, port = meshd.router()
    conn = http.client.HTTPSConnection("localhost", port, context=client_context(pki.path), timeout=10)
    conn.request("GET", "/", headers={"Host": "app", "x-forwarded-client-cert": "Hash=00;URI=spiffe://admin"})
    conn.getresponse().read()
    conn.close()
    assert "x-forwarded-client-cert" not in dict((k.lower(), v) for k, v in upstream.requests[-1]["headers"])


def test_an_endpoint_certificate_for_the_dialled_ip_but_another_name_is_refused(start_meshd, pki, tls_upstreams):
    cert, key, _ = pki.issue("other.test", dns=["other.test"], ips=["127.0.0.1"])
    endpoint = tls_upstreams(cert, key)
    meshd = start_meshd(client_tls_config(endpoint.port, f"{{commonName: app.test, trustCerts: [{pki.path}]}}"))
    response = httpx.get(meshd.url(path="/app/x"), timeout=20)
    assert response.status_code == 502
    assert "not for the expected name (expected app.test)" in response.headers["l5d-err"]
    assert endpoint.requests == []


def test_a_refused_request_whose_body_never_comes_does_not_hold_the_connection(start_meshd):
    from meshd_harness import simple_config
    meshd = start_meshd(simple_config(extra_server="    serverSession: {idleTimeMs: 500}"), disco={})
    sock = socket.create_connection(meshd.router(), timeout=15)
    # No route for "nosuch": answered at once, while its declared body never arrives.
    sock.sendall(b"POST / HTTP/1.1\r\nHost: nosuch\r\nContent-Length: 100\r\n\r\n")
    received = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    sock.close()
    assert received.startswith(b"HTTP/1.1 503")
