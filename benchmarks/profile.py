#!/usr/bin/env python3
"""Instructions per proxied request, counted by valgrind's callgrind: the same number for the same
binary and workload whatever else the machine is doing, so that a change to the request path can
be judged on a noisy machine where requests/s cannot.

Starts an nginx upstream and meshd (one event loop) under callgrind with instrumentation off,
warms it up, then counts exactly N requests sent over 4 keep-alive connections, and prints the
instructions per request and the functions that executed the most of them.

    benchmarks/profile.py                    # builds with scripts/build-release; 20,000 requests
    benchmarks/profile.py --meshd PATH --requests 5000 --top 40 --keep OUT.callgrind
    benchmarks/profile.py --tls               # the same over TLS (a self-signed P-256 certificate)
"""
import argparse
import re
import shutil
import signal
import ssl
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import ROOT, free_port, start_nginx, wait_http


def send_requests(port, count, connections=4, tls=False):
    """`count` GETs over `connections` keep-alive connections, in lock step; each response is read
    whole (nginx's 2-byte body) before the next round."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        socks = [context.wrap_socket(sock) for sock in socks]
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    done = 0
    deadline = time.monotonic() + 1800
    try:
        while done < count and time.monotonic() < deadline:
            for sock in socks:
                sock.sendall(request)
            for sock in socks:
                data = b""
                while not data.endswith(b"\r\n\r\nok"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise SystemExit(f"meshd closed a connection after {done} requests")
                    data += chunk
            done += connections
    finally:
        for sock in socks:
            sock.close()
    return done


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meshd", help="meshd binary (default: build it with scripts/build-release)")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", help="copy the callgrind output here")
    parser.add_argument("--tls", action="store_true", help="clients speak TLS to meshd")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_annotate", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install valgrind")
    if not args.meshd:
        subprocess.run([str(ROOT / "scripts" / "build-release")], cwd=ROOT, check=True)
        args.meshd = str(ROOT / ".build" / "release" / "meshd")

    work = Path(tempfile.mkdtemp(prefix="meshd-profile-"))
    nginx = meshd = None
    try:
        # valgrind 3.19 cannot read the DWARF 5 debug information Swift writes; symbols suffice.
        binary = work / "meshd"
        shutil.copy(args.meshd, binary)
        subprocess.run(["strip", "-g", str(binary)], check=True)
        nginx, upstream_port = start_nginx(work)
        port, admin = free_port(), free_port()
        tls = ""
        if args.tls:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                            "-keyout", str(work / "key.pem"), "-out", str(work / "cert.pem"), "-days", "2", "-subj", "/CN=localhost"],
                           check=True, capture_output=True)
            tls = f", tls: {{certPath: {work / 'cert.pem'}, keyPath: {work / 'key.pem'}}}"
        config = work / "meshd.yaml"
        config.write_text(f"""
admin: {{ip: 127.0.0.1, port: {admin}}}
routers:
- protocol: http
  identifier: {{kind: io.l5d.static, path: /bench}}
  dtab: /svc/bench => /$/inet/127.0.0.1/{upstream_port};
  servers: [{{ip: 127.0.0.1, port: {port}{tls}}}]
""")
        output = work / "callgrind.out"
        log = work / "valgrind.log"
        with open(log, "w") as log_file:
            meshd = subprocess.Popen(
                ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={output}",
                 str(binary), "run", "--config", str(config), "--threads", "1", "--log-level", "error"],
                stdout=subprocess.DEVNULL, stderr=log_file)
        wait_http(f"http://127.0.0.1:{admin}/admin/ready", timeout=120)
        send_requests(port, 200, tls=args.tls)  # warm up: pooled connections, route caches
        subprocess.run(["callgrind_control", "-i", "on", str(meshd.pid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sent = send_requests(port, args.requests, tls=args.tls)
        subprocess.run(["callgrind_control", "-i", "off", str(meshd.pid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        meshd.send_signal(signal.SIGTERM)
        meshd.wait(120)
        meshd = None
        collected = re.search(r"Collected : (\d+)", log.read_text())
        if not collected:
            raise SystemExit("callgrind wrote no totals:\n" + log.read_text()[-2000:])
        total = int(collected.group(1))
        print(f"{total / sent:,.0f} instructions per request ({total:,} over {sent:,} requests)")
        annotate = subprocess.run(["callgrind_annotate", str(output)], capture_output=True, text=True).stdout
        lines = [line for line in annotate.splitlines() if re.match(r"^\s*[\d,]+ \(\s*[\d.]+%\)\s+\S", line)]
        text = "\n".join(lines[1:args.top + 1])
        if shutil.which("swift"):
            text = subprocess.run(["swift", "demangle", "--simplified"], input=text, capture_output=True, text=True).stdout
        print(text)
        if args.keep:
            shutil.copy(output, args.keep)
    finally:
        if meshd is not None:
            meshd.kill()
            meshd.wait()
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
