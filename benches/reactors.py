#!/usr/bin/env python3
"""Interleaved runs of fanout variants over the comparison workloads; medians, as a markdown table.

Usage: cargo build --release && benches/reactors.py
  VARIANTS=t1,t2        which variants (default: all below; base-* only if BASE is set)
  BASE=path/to/fanout   an older build to compare against (base-t1, base-t2: --threads 1 and 2)
  REPS=3 DUR=3          repetitions (alternating the order) and measured seconds per run
  ONLY=substring        only the workloads whose name contains it
  PEERS=1               also NATS and Redis (as benches/servers.sh starts them), same bench
  MINIMAL=1             also the minimal relay, the ceiling issue 16 measures against
                        (cargo build --release --example minimal_relay)
Each run starts a fresh server on its own port and runs `fanout bench --server-pid` against it.
"""
import json, os, signal, socket, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.environ.get("FANOUT", os.path.join(HERE, "..", "target", "release", "fanout"))
def fanout(binary, *args):
    """A fanout variant: how to start it on a port, and the bench's --protocol for it."""
    return (lambda p: [binary, "serve", "--listen", f"127.0.0.1:{p}", *args], "fanout")
VARIANTS = {
    "t1-nolinger": fanout(BENCH, "--threads", "1", "--flush-linger-us", "0"),
    "t1": fanout(BENCH, "--threads", "1"),
    "t2": fanout(BENCH, "--threads", "2"),
}
if os.environ.get("BASE"):
    base = os.environ["BASE"]
    VARIANTS = {"base-t1": fanout(base, "--threads", "1"), "base-t2": fanout(base, "--threads", "2"), **VARIANTS}
if os.environ.get("MINIMAL") == "1":
    MINIMAL = os.path.join(HERE, "..", "target", "release", "examples", "minimal_relay")
    VARIANTS["minimal"] = (lambda p: [MINIMAL, f"127.0.0.1:{p}"], "fanout")
if os.environ.get("PEERS") == "1":
    # As benches/servers.sh starts them.
    VARIANTS["nats"] = (lambda p: ["nats-server", "-a", "127.0.0.1", "-p", str(p)], "nats")
    VARIANTS["redis"] = (lambda p: ["redis-server", "--bind", "127.0.0.1", "--port", str(p), "--save", "",
                                    "--appendonly", "no", "--client-output-buffer-limit", "pubsub 0 0 0",
                                    "--daemonize", "no"], "redis")
WORKLOADS = {
    "1x100x1 w100": ["--subscribers", "100", "--publishers", "1", "--window", "100"],
    "1x1000x10 w10": ["--subscribers", "1000", "--publishers", "10", "--window", "10"],
    "1x100x10 1KiB w10": ["--subscribers", "100", "--publishers", "10", "--size", "1024", "--window", "10"],
    "100x20x1 128B": ["--rooms", "100", "--subscribers", "2000", "--publishers", "100", "--size", "128"],
    "1x100x1 w1000": ["--subscribers", "100", "--publishers", "1", "--window", "1000"],
    "10k/s x 100": ["--subscribers", "100", "--publishers", "1", "--rate", "10000"],
    "2k/s x 1000 (10 pubs)": ["--subscribers", "1000", "--publishers", "10", "--rate", "2000"],
    "500/s x 1000 (10 pubs)": ["--subscribers", "1000", "--publishers", "10", "--rate", "500"],
}
reps = int(os.environ.get("REPS", "3"))
only = os.environ.get("ONLY")
variants = [v for v in VARIANTS if not os.environ.get("VARIANTS") or v in os.environ["VARIANTS"].split(",")]
port = 17900
results = {}
def wait_port(p, quick=False):
    """Whether something listens on port p: at once with quick, else within 5 s."""
    for _ in range(1 if quick else 100):
        try:
            socket.create_connection(("127.0.0.1", p), timeout=0.2).close(); return True
        except OSError: time.sleep(0.05)
    return False
for rep in range(reps):
    for wname, wargs in WORKLOADS.items():
        if only and only not in wname: continue
        order = variants if rep % 2 == 0 else list(reversed(variants))
        for v in order:
            port += 1
            start, protocol = VARIANTS[v]
            command = start(port)
            if wait_port(port, quick=True):
                print(f"port {port} is taken by another process; skipping {v} {wname}", file=sys.stderr); continue
            srv = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if not wait_port(port) or srv.poll() is not None:
                print(f"{v} did not start on port {port}; skipping {wname}", file=sys.stderr); srv.kill(); srv.wait(); continue
            out = subprocess.run([BENCH, "bench", "--protocol", protocol, "--addr", f"127.0.0.1:{port}", "--duration", os.environ.get("DUR", "3"), "--warmup", "1", "--server-pid", str(srv.pid), "--json"] + wargs, capture_output=True, text=True, timeout=120)
            srv.send_signal(signal.SIGINT); srv.wait(timeout=10)
            try:
                d = json.loads(out.stdout.strip().splitlines()[-1])
            except Exception:
                print("failed", v, wname, out.stderr[-300:], file=sys.stderr); continue
            results.setdefault((wname, v), []).append(d)
            print(f"{wname:24} {v:12} {d['delivered_per_sec']/1e6:7.2f} M/s p99 {d['latency_us']['p99']/1000:8.2f} ms cpu/deliv {d['server_cpu_s']*1e9/max(d['delivered'],1):6.1f} ns lost {d['lost']}", file=sys.stderr, flush=True)
print(f"\n| workload | variant | delivered msgs/s (median of {reps}) | p99 ms | server CPU ns/delivery | lost |")
print("|---|---|---:|---:|---:|---:|")
for wname in WORKLOADS:
    for v in variants:
        rs = results.get((wname, v))
        if not rs: continue
        med = lambda f: statistics.median(f(d) for d in rs)
        print(f"| {wname} | {v} | {med(lambda d: d['delivered_per_sec'])/1e6:.2f} M | {med(lambda d: d['latency_us']['p99'])/1000:.2f} | {med(lambda d: d['server_cpu_s']*1e9/max(d['delivered'],1)):.0f} | {sum(d['lost'] for d in rs)} |")
