"""Linkerd 1.x's getting-started config runs on meshd unchanged, on its own fixed ports, and the
repo's own default config is valid."""
import socket
import subprocess

import pytest

from meshd_harness import MESHD_BIN, ROOT
from upstreams import Upstream

# Verbatim from Linkerd's getting-started guide (linkerd.yaml); do not edit.
LINKERD_GETTING_STARTED = """\
admin:
  ip: 0.0.0.0
  port: 9990

# The filesystem namer (io.l5d.fs) watches the disco directory for changes.
# Each file in this directory represents a concrete name and contains a list
# of hostname/port pairs.
namers:
- kind: io.l5d.fs
  rootDir: disco

routers:
- protocol: http
  # Incoming requests to linkerd with a Host header of "hello" get assigned a
  # name like /svc/hello.  This dtab transforms that into
  # /#/io.l5d.fs/hello which indicates that the filesystem namer should be used
  # and should look for a file named "hello".  linkerd will then load balance
  # over the entries in that file.
  dtab: |
    /svc => /#/io.l5d.fs
  servers:
  - ip: 0.0.0.0
    port: 4140
"""

FIXED_PORTS = {9990: "0.0.0.0", 4140: "0.0.0.0", 8888: "127.0.0.1"}


def port_free(port, ip):
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
            sock.listen(1)
        except OSError:
            return False
    return True


@pytest.fixture
def fixed_ports():
    busy = [port for port, ip in FIXED_PORTS.items() if not port_free(port, ip)]
    if busy:
        pytest.skip(f"the Linkerd example needs ports 9990, 4140 and 8888; in use: {busy}")


def test_getting_started_config_runs_unchanged(fixed_ports, start_meshd, tmp_path):
    hello = Upstream(port=8888)
    try:
        (tmp_path / "disco").mkdir()
        (tmp_path / "disco" / "hello").write_text("127.1 8888\n")
        (tmp_path / "linkerd.yaml").write_text(LINKERD_GETTING_STARTED)
        check = subprocess.run([MESHD_BIN, "check", "--config", "linkerd.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        assert check.stdout.strip() == "linkerd.yaml: ok"

        meshd = start_meshd(LINKERD_GETTING_STARTED, disco={"hello": "127.1 8888\n"})
        assert meshd.config_path.read_text() == LINKERD_GETTING_STARTED
        assert meshd.listeners["routers"] == {"http": ["0.0.0.0:4140"]}
        assert meshd.admin == "0.0.0.0:9990"

        curl = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\\n%{http_code}", "-H", "Host: hello", "http://127.0.0.1:4140/"],
            capture_output=True, text=True, timeout=20,
        )
        assert curl.returncode == 0, curl.stderr
        body, _, status = curl.stdout.rpartition("\n")
        assert status == "200", curl.stdout
        assert hello.count() == 1
        request = hello.requests[0]
        assert request["path"] == "/"
        assert ("Host", "hello") in [tuple(header) for header in request["headers"]]
        assert '"path": "/"' in body  # the upstream's echo came back through meshd

        # The admin port is where Linkerd's is.
        ping = subprocess.run(["curl", "-sS", "--max-time", "10", "http://127.0.0.1:9990/admin/ping"], capture_output=True, text=True, timeout=20)
        assert ping.stdout == "pong"
        # A name with no file is Linkerd's "no route" answer, not a hang.
        missing = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: goodbye", "http://127.0.0.1:4140/"],
            capture_output=True, text=True, timeout=20,
        )
        assert missing.stdout == "503"
    finally:
        hello.close()


def test_repo_default_config_passes_check():
    result = subprocess.run(
        [MESHD_BIN, "check", "--no-bind-check", "--config", "config/meshd.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "config/meshd.yaml: ok"
