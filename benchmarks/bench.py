#!/usr/bin/env python3
"""meshd against a direct connection to the same upstream, measured with wrk.

Starts an nginx upstream (1 worker, fixed small 200), meshd (release build) routing to it, and
runs wrk against each, interleaved (direct, meshd, direct, meshd, ...) for a few rounds; prints a
markdown table of medians: requests/s, p50, p99, meshd's CPU time per request, and meshd's RSS
idle and under load. Ratios against the direct connection are what count: the machine is shared.

    benchmarks/bench.py                 # 3 rounds of 10 s, 50 connections
    benchmarks/bench.py --short         # 2 rounds of 5 s
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_tools():
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None and not Path("/usr/sbin/nginx").exists()]
    if missing:
        print(f"installing {' '.join(missing)} ...", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk", "nginx-light"], check=True, env=env, stdout=subprocess.DEVNULL)


def start_nginx(workdir: Path, ports=None):
    ports = ports or [free_port()]
    port = ports[0]
    listens = "\n".join(f"        listen 127.0.0.1:{p};" for p in ports)
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {{
{listens}
        location / {{ return 200 "ok"; }}
    }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/")
    return proc, port


def long_dtab(upstream_port):
    """20 dentries: 15 that never match this name, and a chain of 5 rewrites that does."""
    unused = [f"/svc/unused{i} => /#/io.l5d.fs/unused{i};" for i in range(15)]
    chain = [f"/a => /$/inet/127.0.0.1/{upstream_port};", "/b => /a;", "/c => /b;", "/d => /c;", "/svc/bench => /d;"]
    return " ".join(chain[:1] + unused + chain[1:])


def start_meshd(binary: str, workdir: Path, upstream_port: int, dtab=None, name="meshd"):
    config = workdir / f"{name}.yaml"
    dtab = dtab or f"/svc/bench => /$/inet/127.0.0.1/{upstream_port};"
    config.write_text(f"""
admin: {{ip: 127.0.0.1, port: 0}}
routers:
- protocol: http
  label: bench
  dtab: "{dtab}"
  servers: [{{ip: 127.0.0.1, port: 0}}]
""")
    proc, listeners = launch_meshd(binary, config)
    return proc, listeners["bench"][0]


def launch_meshd(binary: str, config: Path, extra=()):
    """Starts meshd on `config`; waits for its "meshd ready" log line and returns the process
    and its routers' listening addresses (label -> [address])."""
    proc = subprocess.Popen([binary, "run", "--config", str(config), "--log-format", "json", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    admin = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and admin is None:
        line = proc.stderr.readline()
        if not line:
            break
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("msg") == "meshd ready":
            admin = event["meshd.admin"]
    if admin is None:
        proc.kill()
        raise SystemExit("meshd did not start")
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    listeners = json.loads(urllib.request.urlopen(f"http://{admin}/admin/listeners.json").read())
    proc.admin = admin
    return proc, listeners["routers"]


def wait_http(url, headers=None, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            urllib.request.urlopen(request, timeout=2).read()
            return
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer")


def to_ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_wrk(url, host, threads, connections, duration, watch_pid=None):
    peak = [0.0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(watch_pid))
            stop.wait(0.2)

    sampler = None
    cpu_before = cpu_seconds(watch_pid) if watch_pid else 0
    if watch_pid:
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-H", f"Host: {host}", url],
        check=True, capture_output=True, text=True,
    ).stdout
    stop.set()
    if sampler:
        sampler.join()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = to_ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1))
    p99 = to_ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    cpu = (cpu_seconds(watch_pid) - cpu_before) if watch_pid else 0.0
    return {"rps": rps, "p50": p50, "p99": p99, "requests": requests, "errors": int(errors.group(1)) if errors else 0,
            "cpu_us_per_request": cpu / requests * 1e6 if watch_pid else None, "rss_peak": peak[0] if watch_pid else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", help="meshd binary (default: build .build/release/meshd)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--short", action="store_true", help="2 rounds of 5 s")
    parser.add_argument("--scenario", choices=["direct", "dtab", "balancers", "admin"], default="direct",
                        help="direct: meshd vs a direct connection; dtab: a 20-dentry dtab vs a 1-dentry one; "
                             "balancers: each load balancer over 10 endpoints; admin: the admin port's latency "
                             "with the data port saturated, against its latency idle")
    parser.add_argument("--baseline", help="admin scenario: a second meshd binary measured the same way (an older build)")
    args = parser.parse_args()
    if args.short:
        args.rounds, args.duration = 2, 5

    ensure_tools()
    binary = args.binary
    if not binary:
        subprocess.run([str(ROOT / "scripts" / "build-release")], cwd=ROOT, check=True)
        binary = str(ROOT / ".build" / "release" / "meshd")

    workdir = Path(tempfile.mkdtemp(prefix="meshd-bench-"))
    if args.scenario == "dtab":
        return dtab_scenario(args, binary, workdir)
    if args.scenario == "balancers":
        return balancer_scenario(args, binary, workdir)
    if args.scenario == "admin":
        return admin_scenario(args, binary, workdir)
    nginx, upstream_port = start_nginx(workdir)
    meshd, meshd_address = start_meshd(binary, workdir, upstream_port)
    try:
        direct_url = f"http://127.0.0.1:{upstream_port}/"
        meshd_url = f"http://{meshd_address}/"
        wait_http(meshd_url, {"Host": "bench"})
        # Warm both paths (connection pools, page cache), then measure idle memory.
        run_wrk(direct_url, "bench", args.threads, args.connections, 2)
        run_wrk(meshd_url, "bench", args.threads, args.connections, 2, watch_pid=meshd.pid)
        time.sleep(1)
        idle_rss = rss_mb(meshd.pid)
        results = {"direct": [], "meshd": []}
        for _ in range(args.rounds):
            results["direct"].append(run_wrk(direct_url, "bench", args.threads, args.connections, args.duration))
            results["meshd"].append(run_wrk(meshd_url, "bench", args.threads, args.connections, args.duration, watch_pid=meshd.pid))
    finally:
        meshd.send_signal(signal.SIGTERM)
        nginx.send_signal(signal.SIGQUIT)
        meshd.wait(30)
        nginx.wait(30)

    def median(name, key):
        values = [run[key] for run in results[name] if run[key] is not None]
        return statistics.median(values) if values else None

    direct_rps = median("direct", "rps")
    rows = []
    for name in ("direct", "meshd"):
        rps = median(name, "rps")
        rows.append((name, rps, rps / direct_rps, median(name, "p50"), median(name, "p99"),
                     median(name, "cpu_us_per_request"), sum(run["errors"] for run in results[name])))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"\n### meshd vs direct — {time.strftime('%Y-%m-%d %H:%M')}, commit {commit}, {os.cpu_count()} cores")
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.rounds} rounds interleaved, medians; "
          f"upstream nginx 1 worker returning a 2-byte 200\n")
    print("| target | req/s | × direct | p50 ms | p99 ms | meshd CPU µs/req | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rps, ratio, p50, p99, cpu, errors in rows:
        cpu_text = f"{cpu:.1f}" if cpu is not None else "—"
        print(f"| {name} | {rps:,.0f} | {ratio:.2f} | {p50:.3f} | {p99:.3f} | {cpu_text} | {errors} |")
    print(f"\nmeshd RSS: idle {idle_rss:.1f} MB, under load (peak) {median('meshd', 'rss_peak'):.1f} MB")


def admin_latencies(admin, seconds, stop=None):
    """GET /admin/ping one after another for `seconds` (or until `stop` is set); latencies in ms."""
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        started = time.monotonic()
        with urllib.request.urlopen(f"http://{admin}/admin/ping", timeout=10) as response:
            response.read()
        latencies.append((time.monotonic() - started) * 1000)
        time.sleep(0.01)
    return latencies


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def admin_scenario(args, binary, workdir):
    """The admin port's /admin/ping latency while wrk saturates the data port (200 connections,
    meshd on one data-plane thread), against the same measure with meshd idle; for each binary
    given (this build, and `--baseline`), one after the other."""
    nginx, upstream_port = start_nginx(workdir)
    binaries = {"meshd": binary}
    if args.baseline:
        binaries["meshd-baseline"] = args.baseline
    rows = []
    try:
        for name, path in binaries.items():
            config = workdir / f"{name}.yaml"
            config.write_text(f"""admin: {{ip: 127.0.0.1, port: 0}}
routers:
- protocol: http
  label: bench
  dtab: "/svc/bench => /$/inet/127.0.0.1/{upstream_port};"
  servers: [{{ip: 127.0.0.1, port: 0}}]
""")
            proc, listeners = launch_meshd(path, config, extra=("--threads", "1"))
            try:
                url = f"http://{listeners['bench'][0]}/"
                wait_http(url, {"Host": "bench"})
                run_wrk(url, "bench", args.threads, 200, 2)
                idle = admin_latencies(proc.admin, 3)
                stop = threading.Event()
                loaded = []
                pinger = threading.Thread(target=lambda: loaded.extend(admin_latencies(proc.admin, args.duration * args.rounds + 5, stop)))
                pinger.start()
                load = run_wrk(url, "bench", args.threads, 200, args.duration * args.rounds)
                stop.set()
                pinger.join()
                rows.append((name, idle, loaded, load["rps"]))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    finally:
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(30)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"\n### admin port under data-plane saturation — {time.strftime('%Y-%m-%d %H:%M')}, commit {commit}, {os.cpu_count()} cores")
    print(f"meshd --threads 1; wrk -t{args.threads} -c200 for {args.duration * args.rounds} s on the data port; "
          "/admin/ping one at a time, 10 ms apart\n")
    print("| binary | data req/s | pings idle / loaded | idle p50 ms | idle p99 ms | loaded p50 ms | loaded p99 ms | loaded max ms | loaded p99 ÷ idle p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, idle, loaded, rps in rows:
        print(f"| {name} | {rps:,.0f} | {len(idle)} / {len(loaded)} | {percentile(idle, 0.5):.2f} | {percentile(idle, 0.99):.2f} | "
              f"{percentile(loaded, 0.5):.2f} | {percentile(loaded, 0.99):.2f} | {max(loaded):.2f} | {percentile(loaded, 0.99) / percentile(idle, 0.99):.1f} |")


BALANCERS = {
    "p2c": "{kind: p2c}",
    "ewma": "{kind: ewma}",
    "aperture": "{kind: aperture}",
    "heap": "{kind: heap}",
    "roundRobin": "{kind: roundRobin}",
}


def balancer_scenario(args, binary, workdir):
    """One meshd with a router per load balancer, each over the same 10 endpoints (one nginx
    worker listening on 10 ports), measured in turn, interleaved."""
    ports = [free_port() for _ in range(10)]
    nginx, _ = start_nginx(workdir, ports)
    (workdir / "disco").mkdir()
    (workdir / "disco" / "bench").write_text("".join(f"127.0.0.1 {port}\n" for port in ports))
    routers = "".join(f"""
- protocol: http
  label: {name}
  dtab: /svc => /#/io.l5d.fs;
  client:
    loadBalancer: {kind}
  servers: [{{ip: 127.0.0.1, port: 0}}]
""" for name, kind in BALANCERS.items())
    config = workdir / "balancers.yaml"
    config.write_text(f"admin: {{ip: 127.0.0.1, port: 0}}\nnamers:\n- kind: io.l5d.fs\n  rootDir: {workdir / 'disco'}\nrouters:{routers}")
    proc, listeners = launch_meshd(binary, config)
    results = {name: [] for name in BALANCERS}
    try:
        for name in BALANCERS:
            url = f"http://{listeners[name][0]}/"
            wait_http(url, {"Host": "bench"})
            run_wrk(url, "bench", args.threads, args.connections, 2, watch_pid=proc.pid)
        for _ in range(args.rounds):
            for name in BALANCERS:
                results[name].append(run_wrk(f"http://{listeners[name][0]}/", "bench", args.threads, args.connections,
                                             args.duration, watch_pid=proc.pid))
    finally:
        proc.send_signal(signal.SIGTERM)
        nginx.send_signal(signal.SIGQUIT)
        proc.wait(30)
        nginx.wait(30)
    base = statistics.median(run["rps"] for run in results["p2c"])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"\n### load balancers over 10 endpoints — {time.strftime('%Y-%m-%d %H:%M')}, commit {commit}, {os.cpu_count()} cores")
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.rounds} rounds interleaved, medians; "
          "one nginx worker listening on 10 ports\n")
    print("| balancer | req/s | × p2c | p50 ms | p99 ms | meshd CPU µs/req | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in BALANCERS:
        runs = results[name]
        rps = statistics.median(run["rps"] for run in runs)
        print(f"| {name} | {rps:,.0f} | {rps / base:.3f} | {statistics.median(r['p50'] for r in runs):.3f} | "
              f"{statistics.median(r['p99'] for r in runs):.3f} | {statistics.median(r['cpu_us_per_request'] for r in runs):.1f} | "
              f"{sum(r['errors'] for r in runs)} |")


def dtab_scenario(args, binary, workdir):
    """Two meshd processes, one routing through a 1-dentry dtab and one through 20 dentries
    (a 5-step rewrite chain among 15 that do not match), interleaved against the same nginx."""
    nginx, upstream_port = start_nginx(workdir)
    short, short_address = start_meshd(binary, workdir, upstream_port, name="one")
    long, long_address = start_meshd(binary, workdir, upstream_port, dtab=long_dtab(upstream_port), name="twenty")
    targets = {"1 dentry": (f"http://{short_address}/", short), "20 dentries": (f"http://{long_address}/", long)}
    results = {name: [] for name in targets}
    try:
        for url, proc in targets.values():
            wait_http(url, {"Host": "bench"})
            run_wrk(url, "bench", args.threads, args.connections, 2, watch_pid=proc.pid)
        for _ in range(args.rounds):
            for name, (url, proc) in targets.items():
                results[name].append(run_wrk(url, "bench", args.threads, args.connections, args.duration, watch_pid=proc.pid))
    finally:
        for proc in (short, long):
            proc.send_signal(signal.SIGTERM)
        nginx.send_signal(signal.SIGQUIT)
        for proc in (short, long, nginx):
            proc.wait(30)
    base = statistics.median(run["rps"] for run in results["1 dentry"])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"\n### routing cost of a 20-dentry dtab — {time.strftime('%Y-%m-%d %H:%M')}, commit {commit}, {os.cpu_count()} cores")
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.rounds} rounds interleaved, medians\n")
    print("| dtab | req/s | × 1 dentry | p50 ms | p99 ms | CPU µs/req |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in targets:
        runs = results[name]
        rps = statistics.median(run["rps"] for run in runs)
        print(f"| {name} | {rps:,.0f} | {rps / base:.3f} | {statistics.median(r['p50'] for r in runs):.3f} | "
              f"{statistics.median(r['p99'] for r in runs):.3f} | {statistics.median(r['cpu_us_per_request'] for r in runs):.1f} |")


if __name__ == "__main__":
    main()
