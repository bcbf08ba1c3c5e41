"""Real upstream HTTP servers for integration tests, on 127.0.0.1 and a port the kernel picks.

`Upstream` is a threaded HTTP/1.1 server whose behaviour per path is set by the test; it counts
what it receives. `RawUpstream` answers each connection with bytes the test scripts (garbage,
resets, early closes), for the failure cases no well-behaved server produces.
"""
import hashlib
import json
import socket
import socketserver
import threading
import http.server


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without this, Nagle's algorithm and delayed
    # ACKs add ~40 ms to every response.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _read_body(self):
        digest = hashlib.sha256()
        size = 0
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline()
                length = int(line.split(b";")[0].strip(), 16)
                if length == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                remaining = length
                while remaining:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    digest.update(chunk)
                    size += len(chunk)
                    remaining -= len(chunk)
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("content-length") or 0)
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
                remaining -= len(chunk)
        return size, digest.hexdigest()

    def _handle(self):
        server = self.server.upstream
        size, sha = self._read_body() if self.command not in ("GET", "HEAD") or self.headers.get("content-length") or self.headers.get("transfer-encoding") else (0, hashlib.sha256().hexdigest())
        record = {
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_size": size,
            "body_sha256": sha,
        }
        with server.lock:
            server.requests.append(record)
        behaviour = server.route(self.path)
        behaviour(self, record)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle

    # helpers for behaviours
    def reply(self, status=200, body=b"", headers=None, chunked=False):
        """`headers`: a dict, or a list of (name, value) pairs for repeated names."""
        # A request counts as in flight until its response starts (ConnectionTracker.wrap): the
        # client may send the next one as soon as it has the response, before this thread has
        # returned from the behaviour.
        finished, self.on_reply = getattr(self, "on_reply", None), None
        if finished:
            finished()
        self.send_response(status)
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        for name, value in pairs:
            self.send_header(name, value)
        if chunked:
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            if self.command != "HEAD":
                for i in range(0, len(body), 8192):
                    piece = body[i:i + 8192]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
        else:
            if status not in (204, 304) and "content-length" not in {k.lower() for k, _ in pairs}:
                self.send_header("content-length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD" and status not in (204, 304):
                self.wfile.write(body)


def echo(handler, record):
    """Answers with what it received, as JSON."""
    handler.reply(200, json.dumps(record).encode(), {"content-type": "application/json"})


class _TrackingServer(http.server.ThreadingHTTPServer):
    """Remembers its open connections, so that `Upstream.kill()` can cut them."""

    def get_request(self):
        conn, address = super().get_request()
        with self.upstream.lock:
            self.upstream.connections.add(conn)
        return conn, address

    def shutdown_request(self, request):
        with self.upstream.lock:
            self.upstream.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        """A connection cut by `kill()` or by meshd mid-request is part of the test, not news."""


class Upstream:
    def __init__(self, default=echo, port=0):
        """`port`: 0 lets the kernel pick (the default); a fixed port for examples that name one."""
        self.requests = []
        self.lock = threading.Lock()
        self.routes = {}
        self.default = default
        self.connections = set()
        self.server = _TrackingServer(("127.0.0.1", port), _Handler, bind_and_activate=False)
        self.server.allow_reuse_address = True
        self.server.daemon_threads = True
        self.server.upstream = self
        self.server.server_bind()
        self.server.server_activate()
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def on(self, path_prefix, behaviour):
        self.routes[path_prefix] = behaviour

    def route(self, path):
        for prefix, behaviour in sorted(self.routes.items(), key=lambda item: -len(item[0])):
            if path.startswith(prefix):
                return behaviour
        return self.default

    @property
    def disco_line(self):
        return f"127.0.0.1 {self.port}\n"

    def count(self):
        with self.lock:
            return len(self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def kill(self):
        """Stops listening and cuts every open connection, as a crashed server would."""
        self.close()
        with self.lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class RawUpstream:
    """Accepts connections and runs `script(conn)` for each; scripts read and write raw bytes."""

    def __init__(self, script):
        self.script = script
        self.connections = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def disco_line(self):
        return f"127.0.0.1 {self.port}\n"

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        try:
            self.script(conn)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self):
        self._stop = True
        self.sock.close()


def read_request_head(conn):
    """Reads bytes up to the end of one request head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def free_port():
    """A port that was free a moment ago (for tests that need a refused connection)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw_request(address, data, timeout=5.0, half_close=False):
    """Sends raw bytes to meshd and returns everything it answers until it closes or goes quiet."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except socket.timeout:
            pass
        return b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# Raw-socket client and connection tracking (added for the proxying/bodies/bad-input/pool tests).

import time as _time


class RawResponse:
    """One response as read off the wire by `RawClient.read_response`."""

    def __init__(self, version, status, reason, headers, body, complete):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] in wire order, names as sent
        self.body = body
        self.complete = complete  # the body's framing was satisfied (not cut by EOF)

    def header(self, name):
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_values(self, name):
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def has(self, name):
        return self.header(name) is not None

    def __repr__(self):
        return f"<RawResponse {self.version} {self.status} {self.headers!r} body={self.body[:200]!r} complete={self.complete}>"


class RawClient:
    """A client connection that writes raw bytes and reads responses by HTTP/1.1 framing rules."""

    def __init__(self, address, timeout=5.0):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.timeout = timeout
        self.buffer = b""
        self.eof = False
        self.received = bytearray()  # every byte read from the peer, for "this never arrived" checks

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        if self.eof:
            return False
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            return False
        self.received += chunk
        self.buffer += chunk
        return True

    def _readline(self):
        while b"\n" not in self.buffer:
            if not self._fill():
                line, self.buffer = self.buffer, b""
                return line
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def _read_exact(self, count):
        while len(self.buffer) < count:
            if not self._fill():
                data, self.buffer = self.buffer, b""
                return data
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def read_head(self):
        """The status line and headers of the next response; None if the peer closed first."""
        line = self._readline()
        if not line:
            return None
        version, _, rest = line.rstrip(b"\r\n").decode("latin-1").partition(" ")
        status, _, reason = rest.partition(" ")
        headers = []
        while True:
            line = self._readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        return version, int(status), reason, headers

    def read_response(self, method="GET", skip_informational=True):
        """Reads one response (and its body by its framing). None if the peer closed before a head."""
        while True:
            head = self.read_head()
            if head is None:
                return None
            version, status, reason, headers = head
            if not (skip_informational and 100 <= status < 200 and status != 101):
                break
        response = RawResponse(version, status, reason, headers, b"", True)
        if method == "HEAD" or 100 <= status < 200 or status in (204, 304):
            return response
        te = response.header("transfer-encoding")
        if te is not None and "chunked" in te.lower():
            body = b""
            while True:
                line = self._readline()
                if not line.endswith(b"\n"):
                    response.complete = False
                    break
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    response.complete = False
                    break
                if size == 0:
                    while True:
                        trailer = self._readline()
                        if trailer in (b"\r\n", b"\n"):
                            break
                        if not trailer.endswith(b"\n"):
                            response.complete = False
                            break
                    break
                data = self._read_exact(size)
                body += data
                if len(data) < size or self._readline() not in (b"\r\n", b"\n"):
                    response.complete = False
                    break
            response.body = body
        elif response.header("content-length") is not None:
            size = int(response.header("content-length"))
            response.body = self._read_exact(size)
            response.complete = len(response.body) == size
        else:
            chunks = []
            while self._fill():
                chunks.append(self.buffer)
                self.buffer = b""
            response.body = b"".join(chunks) + self.buffer
            self.buffer = b""
        return response

    def wait_closed(self, timeout=5.0):
        """Waits for the peer to close. Returns (closed, bytes received meanwhile)."""
        deadline = _time.monotonic() + timeout
        extra = self.buffer
        self.buffer = b""
        while not self.eof:
            remaining = deadline - _time.monotonic()
            if remaining <= 0:
                return False, extra
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False, extra
            except ConnectionResetError:
                self.eof = True
                break
            if not chunk:
                self.eof = True
                break
            self.received += chunk
            extra += chunk
        self.sock.settimeout(self.timeout)
        return True, extra

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class ConnectionTracker:
    """Watches the connections an `Upstream` accepts: how many there were, and how many were open
    (not yet closed by the peer, as the kernel sees it) whenever a request began on one of them.

    `track_connections(upstream)` installs it; behaviours wrapped with `tracker.wrap(b)` count
    requests in flight."""

    def __init__(self, upstream):
        self.lock = threading.Lock()
        self.open = {}  # id -> socket
        self.total = 0
        self.addresses = []
        self.max_open_at_request = 0
        self.in_flight = 0
        self.max_in_flight = 0
        server = upstream.server
        original = server.process_request_thread

        def process_request_thread(request, client_address):
            with self.lock:
                self.total += 1
                self.addresses.append(client_address)
                self.open[id(request)] = request
            try:
                original(request, client_address)
            finally:
                with self.lock:
                    self.open.pop(id(request), None)

        server.process_request_thread = process_request_thread

    @staticmethod
    def _peer_open(sock):
        try:
            data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return bool(data)

    def open_now(self):
        """Connections the peer has not closed, checked at the socket."""
        with self.lock:
            sockets = list(self.open.values())
        return sum(1 for sock in sockets if self._peer_open(sock))

    def wrap(self, behaviour):
        def tracked(handler, record):
            with self.lock:
                others = [sock for key, sock in self.open.items() if sock is not handler.connection]
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            open_count = 1 + sum(1 for sock in others if self._peer_open(sock))
            with self.lock:
                self.max_open_at_request = max(self.max_open_at_request, open_count)
            done = []

            def finished():
                if not done:
                    done.append(True)
                    with self.lock:
                        self.in_flight -= 1

            handler.on_reply = finished
            try:
                behaviour(handler, record)
            finally:
                handler.on_reply = None
                finished()
        return tracked


def track_connections(upstream):
    """Starts counting `upstream`'s connections (install before the first request)."""
    return ConnectionTracker(upstream)
