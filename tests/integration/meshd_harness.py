"""Start and stop a real meshd process for integration tests.

meshd runs from the binary the test script built (MESHD_BIN), on a config the test writes,
with every listener on port 0; the harness reads the bound ports back from the admin port's
/admin/listeners.json once meshd logs that it is ready.
"""
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MESHD_BIN = os.environ.get("MESHD_BIN", str(ROOT / ".build" / "debug" / "meshd"))
# Set (to `address` or `thread`) when MESHD_BIN is a sanitizer build (docs/testing.md): its
# shadow memory makes resident-memory figures meaningless, so tests skip their RSS bounds.
SANITIZER = os.environ.get("MESHD_SANITIZER", "")
MEMORY_CHECKS = SANITIZER == ""


class Meshd:
    """A running meshd. `router(label)` gives the first listen address of a router."""

    def __init__(self, config_path: Path, cwd: Path, args=()):
        self.config_path = config_path
        self.log_lines = []
        self._ready = threading.Event()
        self._exited = threading.Event()
        self.proc = subprocess.Popen(
            [MESHD_BIN, "run", "--config", str(config_path), "--log-format", "json", "--log-level", "debug", *args],
            cwd=str(cwd),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_logs, daemon=True)
        self._reader.start()
        if not self._ready.wait(30):
            self.stop()
            raise RuntimeError("meshd did not become ready:\n" + "\n".join(self.log_lines))
        if self.proc.poll() is not None:
            raise RuntimeError("meshd exited:\n" + "\n".join(self.log_lines))
        self.listeners = json.loads(self.admin_get("/admin/listeners.json"))

    def _read_logs(self):
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            self.log_lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("msg") == "meshd ready":
                self.admin = event["meshd.admin"]
                self._ready.set()
        self._exited.set()
        self._ready.set()

    def router(self, label="http"):
        host, port = self.listeners["routers"][label][0].rsplit(":", 1)
        return host.strip("[]"), int(port)

    def url(self, label="http", path="/"):
        host, port = self.router(label)
        return f"http://{host}:{port}{path}"

    def admin_get(self, path):
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=10) as response:
            return response.read().decode()

    def admin_status(self, path):
        try:
            with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    def metrics(self):
        """Prometheus samples as {'name{labels}': value}."""
        samples = {}
        for line in self.admin_get("/admin/metrics/prometheus").splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                samples[key] = float(value)
        return samples

    def rss_kb(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def terminate(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout=30):
        return self.proc.wait(timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._exited.wait(5)


def write_config(directory: Path, text: str, disco=None) -> Path:
    """Writes `text` as meshd.yaml in `directory`, and each disco entry as disco/<name>."""
    if disco is not None:
        (directory / "disco").mkdir(exist_ok=True)
        for name, content in disco.items():
            (directory / "disco" / name).write_text(content)
    path = directory / "meshd.yaml"
    path.write_text(text)
    return path


# The start of a config with an admin port on 0, the fs namer over ./disco and one http router;
# tests append the router's own keys.
FS_ROUTER_HEAD = """admin: {ip: 127.0.0.1, port: 0}
namers:
- kind: io.l5d.fs
  rootDir: disco
routers:
- protocol: http
"""


def simple_config(extra_router="", extra_server="", extra_top=""):
    """One http router on port 0 routing /svc/<Host> to the fs namer's disco/ directory."""
    return FS_ROUTER_HEAD + f"""  dtab: /svc => /#/io.l5d.fs;
{extra_router}
  servers:
  - ip: 127.0.0.1
    port: 0
{extra_server}
{extra_top}
"""


def wait_until(predicate, timeout=10.0, interval=0.02):
    """Polls `predicate` until it is true; for states that have no event to wait on (a file
    watcher noticing a change, say). Returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
