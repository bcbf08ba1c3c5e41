"""Real third-party peers for the load and fault tests: nginx as a fast upstream that echoes
each request's target, and wrk as a load generator. Each is started on a free loopback port by
the test that needs it and stopped by PID."""
import re
import shutil
import subprocess
import time
from pathlib import Path

from upstreams import free_port


class Nginx:
    """nginx with one worker, answering `200 <request target>` so that a client can tell which
    request a response belongs to."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        conf = workdir / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        location / {{ return 200 "$request_uri"; }}
    }}
}}
""")
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        import socket
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError((workdir / "nginx-error.log").read_text())
                time.sleep(0.02)
        raise RuntimeError("nginx did not start")

    @property
    def disco_line(self):
        return f"127.0.0.1 {self.port}\n"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def wrk(url, connections, seconds, threads=2, headers=()):
    """Runs wrk; returns its counts: requests, non-2xx responses, socket errors (connect, read,
    write, timeout) and requests/s."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s"]
    for header in headers:
        command += ["-H", header]
    output = subprocess.run(command + [url], capture_output=True, text=True, timeout=seconds + 60).stdout
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output)) else 0
    errors = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors = sum(int(value) for value in m.groups())
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    return {"requests": requests, "non2xx": non2xx, "errors": errors, "rps": rps, "output": output}


def open_fds(pid):
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))
