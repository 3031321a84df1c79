#!/usr/bin/env python3
"""vm.perf.metric.get under load: 8 clients asking for 1,000 VMs x 5
counters, against the same load on another vpoller build (this project's
previous behaviour, without batching and the cache) and on vPoller 0.7.3,
all on the same simulator in one run.

    bench/perf.py --baseline BIN [--vms 1000] [--seconds 10] [--clients 8]

Prints requests per second, p50/p99, and SOAP calls per request once warm
(every question asked once before the measured run). Targets (issue 12):
at most 0.05 SOAP calls per request, and at least 10x the previous
throughput.
"""
import argparse, json, os, signal, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon import (TOP, VPOLLER, build_all, enter_venv, mgmt, original_vpoller, port_free, run_load,  # noqa: E402
                    soap_calls, start_daemon)

COUNTERS = ["cpu.usagemhz.megaHertz.average", "cpu.usage.percent.average", "mem.usage.percent.average",
            "disk.usage.kiloBytesPerSecond.average", "net.usage.kiloBytesPerSecond.average"]


def perf_requests(names, hostname="vcsim"):
    out = []
    for counter in COUNTERS:
        for n in names:
            out.append(json.dumps({"method": "vm.perf.metric.get", "hostname": hostname, "name": n,
                                   "counter-name": counter, "properties": None, "key": None, "username": None,
                                   "password": None, "instance": None, "max-sample": None, "perf-interval": None,
                                   "helper": None}).encode())
    return out


def ask_each(endpoint, reqs, out):
    import zmq
    sock = zmq.Context().socket(zmq.REQ)
    sock.connect(endpoint)
    for body in reqs:
        sock.send(body)
        sock.recv()
    out.put(len(reqs))


def ask_all_once(endpoint, reqs, clients):
    """Every question once, shared out between the clients."""
    import multiprocessing as mp
    q = mp.Queue()
    procs = [mp.Process(target=ask_each, args=(endpoint, reqs[k::clients], q)) for k in range(clients)]
    for p in procs:
        p.start()
    asked = sum(q.get() for _ in procs)
    for p in procs:
        p.join()
    return asked


def measure(binary, db, key, reqs, seconds, clients):
    daemon, endpoint, mgmt_ep = start_daemon(binary, db, key)
    try:
        # Warm: every question once (sessions, the name index, summaries, samples).
        ask_all_once(endpoint, reqs, clients)
        before = soap_calls(mgmt(mgmt_ep, "status"))
        r = run_load(endpoint, reqs, seconds, clients)
        after = soap_calls(mgmt(mgmt_ep, "status"))
        r["soap_per_request"] = (after - before) / max(1, r["n"])
        return r
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)


def show(label, r):
    soap = f"  SOAP calls/request {r['soap_per_request']:.3f}" if "soap_per_request" in r else ""
    print(f"{label:28s} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
          f"{soap}  errors {r['errors']}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True, help="an earlier vpoller build")
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    enter_venv()
    build_all()
    per_pool = max(1, args.vms // 2)
    with tempfile.TemporaryDirectory() as tmp:
        listen = "127.0.0.1:443" if port_free(443) else "127.0.0.1:0"
        cert = os.path.join(tmp, "vcsim.pem")
        sim = subprocess.Popen([os.path.join(TOP, "target/vcsim/vcsim"), "-stdinexit", "-l", listen, "-tls",
                                "-tls-cert-out", cert, "-standalone", "1", "-cluster", "1", "-host", "2",
                                "-vm", str(per_pool)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
        url = sim.stdout.readline().decode().strip()
        db, key = os.path.join(tmp, "a.db"), os.path.join(tmp, "a.key")
        subprocess.run([VPOLLER, "agent", "init", "-d", db, "--key-file", key], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([VPOLLER, "agent", "add", "-d", db, "--key-file", key, "-H", "vcsim", "-U", "user", "--url",
                        url, "--cacert", cert], check=True, env=dict(os.environ, VPOLLER_PASSWORD="pass"),
                       stdout=subprocess.DEVNULL)
        names = [f"DC0_H0_VM{i}" for i in range(per_pool)] + [f"DC0_C0_RP0_VM{i}" for i in range(per_pool)]
        reqs = perf_requests(names)
        print(f"{len(names)} VMs x {len(COUNTERS)} counters = {len(reqs)} questions, {args.clients} clients, "
              f"simulator at {url}")
        ours = measure(VPOLLER, db, key, reqs, args.seconds, args.clients)
        previous = measure(os.path.abspath(args.baseline), db, key, reqs, args.seconds, args.clients)
        show("vpoller (this build)", ours)
        show(f"previous ({os.path.basename(args.baseline)})", previous)
        print(f"throughput: {ours['rps'] / max(previous['rps'], 1e-9):.1f}x the previous build (target >= 10)")
        print(f"SOAP calls per request: {ours['soap_per_request']:.3f} (target <= 0.05), "
              f"previous {previous['soap_per_request']:.2f}")
        if listen.endswith(":443"):
            original = original_vpoller(tmp, perf_requests(names[:50], "127.0.0.1"), args.seconds, args.clients)
            show("original vPoller 0.7.3", original)
            if original["rps"] > 0:
                print(f"throughput: {ours['rps'] / original['rps']:.1f}x the original's")
        else:
            print("port 443 is taken: the original vPoller (port 443 only) is not measured")
        sim.stdin.close()
        sim.wait()


if __name__ == "__main__":
    main()
