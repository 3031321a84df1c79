#!/usr/bin/env python3
"""The two ZeroMQ libraries side by side, in one run: a bare ROUTER echo
server on libzmq (through vpoller's own socket thread, as the service now
runs) and on the pure-Rust `zeromq` crate (what the service ran before),
driven by the same pyzmq REQ clients.

    bench/zmq_echo.py [--seconds 10] [--clients 8]

Prints requests per second, p50/p99 latency and the ratio libzmq/zeromq.
"""
import argparse, os, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon import TOP, enter_venv, free_port, run_load, wait_port  # noqa: E402

ECHO = os.path.join(TOP, "target/release/examples/zmq_echo")
REQUEST = b'{"method": "vm.get", "hostname": "vcsim", "name": "DC0_H0_VM0", "properties": ["runtime.powerState"]}'


def measure(library, seconds, clients):
    port = free_port()
    server = subprocess.Popen([ECHO, library, f"tcp://127.0.0.1:{port}"])
    try:
        wait_port(port)
        endpoint = f"tcp://127.0.0.1:{port}"
        run_load(endpoint, [REQUEST], 1, clients)  # warm-up
        return run_load(endpoint, [REQUEST], seconds, clients)
    finally:
        server.kill()
        server.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    enter_venv()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "zmq_echo"], cwd=TOP, check=True)
    results = {}
    # Alternate, so that neither library gets the quieter half of the run.
    for library in ["libzmq", "zeromq", "libzmq", "zeromq"]:
        r = measure(library, args.seconds // 2 or 1, args.clients)
        prev = results.setdefault(library, {"n": 0, "lat": []})
        prev["n"] += r["n"]
        prev["p50"] = prev.get("p50", []) + [r["p50_ms"]]
        prev["p99"] = prev.get("p99", []) + [r["p99_ms"]]
        time.sleep(0.5)
    for library, r in results.items():
        rps = r["n"] / (2 * (args.seconds // 2 or 1))
        r["rps"] = rps
        print(f"{library:8s} echo {rps:8.0f} req/s  p50 {max(r['p50']):5.2f} ms  p99 {max(r['p99']):5.2f} ms")
    print(f"libzmq / zeromq throughput: {results['libzmq']['rps'] / results['zeromq']['rps']:.2f}x")


if __name__ == "__main__":
    main()
