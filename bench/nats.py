#!/usr/bin/env python3
"""vm.get through the NATS path (vpoller proxy --nats, one worker --nats on
Debian's nats-server) against vPoller's ZeroMQ broker (vpoller proxy, one
worker) and the single daemon: same 8 pyzmq REQ clients, same simulator,
same run, the mirror on everywhere. Target: NATS >= 0.8x the ZeroMQ broker.

    bench/nats.py [--vms 1000] [--seconds 10] [--clients 8]
"""
import argparse, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon import VPOLLER, build_all, enter_venv, free_port, run_load, wait_port  # noqa: E402
from mirror import registry, request, session_status, start_daemon, start_sim, stop  # noqa: E402


def wait_mirror(mgmt_ep, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (session_status(mgmt_ep).get("mirror") or {}).get("state") == "live":
            return
        time.sleep(0.1)
    sys.exit("the worker's mirror did not become live")


def conf_file(tmp, text):
    path = os.path.join(tmp, f"c{time.time_ns()}.conf")
    open(path, "w").write(text + "\n[log]\nlevel = error\n")
    return path


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(front, reqs, seconds, clients, procs):
    """The load's result, with the CPU each process spent per request."""
    run_load(front, reqs, 1, clients)
    before = {name: cpu_seconds(p.pid) for name, p in procs}
    r = run_load(front, reqs, seconds, clients)
    done = max(1, r["rps"] * seconds)
    r["cpu_us"] = {name: (cpu_seconds(p.pid) - before[name]) * 1e6 / done for name, p in procs}
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    enter_venv()
    build_all()
    with tempfile.TemporaryDirectory() as tmp:
        sim, url, _port, cert, per_pool = start_sim(tmp, args.vms)
        procs = []
        try:
            db, key = registry(tmp, url, cert)
            names = [f"DC0_H0_VM{i}" for i in range(0, per_pool, max(1, per_pool // 50))]
            reqs = [request("vm.get", n, ["runtime.powerState"]) for n in names]
            pin = "[mirror]\npin = VirtualMachine:runtime.powerState\n"

            daemon, d_front, d_mgmt = start_daemon(tmp, db, key, "pin = VirtualMachine:runtime.powerState")
            procs.append(daemon)
            layouts = {"daemon": (d_front, [("daemon", daemon)])}
            run_load(d_front, reqs[:1], 0.2, 1)
            wait_mirror(d_mgmt)

            # vPoller's layout: our ZeroMQ broker and one worker.
            front, back, pm, wm = (f"tcp://127.0.0.1:{free_port()}" for _ in range(4))
            conf = conf_file(tmp, pin)
            procs.append(subprocess.Popen([VPOLLER, "proxy", "-f", conf, "--frontend", front, "--backend", back,
                                           "--mgmt", pm], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            procs.append(subprocess.Popen([VPOLLER, "worker", "-f", conf, "-d", db, "--key-file", key, "--proxy", back,
                                           "--mgmt", wm], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(int(front.rsplit(":", 1)[1]))
            run_load(front, reqs[:1], 0.5, 1)
            wait_mirror(wm)
            layouts["ZeroMQ broker + worker"] = (front, [("broker", procs[-2]), ("worker", procs[-1])])

            # NATS: nats-server, a NATS proxy and one NATS worker.
            nats_port = free_port()
            procs.append(subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(nats_port)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            nats_server = procs[-1]
            wait_port(nats_port)
            nats = f"nats://127.0.0.1:{nats_port}"
            n_front, n_pm, n_wm = (f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
            procs.append(subprocess.Popen([VPOLLER, "worker", "-f", conf, "--nats", nats, "-d", db, "--key-file", key,
                                           "--mgmt", n_wm], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            procs.append(subprocess.Popen([VPOLLER, "proxy", "-f", conf, "--nats", nats, "--frontend", n_front,
                                           "--mgmt", n_pm], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(int(n_front.rsplit(":", 1)[1]))
            deadline = time.time() + 30
            while time.time() < deadline and run_load(n_front, reqs[:1], 0.3, 1)["errors"]:
                time.sleep(0.2)
            wait_mirror(n_wm)
            layouts["NATS proxy + worker"] = (n_front, [("proxy", procs[-1]), ("nats-server", nats_server),
                                                        ("worker", procs[-2])])

            results = {}
            # Alternated twice, so that no layout gets the quieter half.
            for _ in range(2):
                for label, (ep, measured_procs) in layouts.items():
                    r = measure(ep, reqs, args.seconds // 2 or 1, args.clients, measured_procs)
                    prev = results.setdefault(label, [])
                    prev.append(r)
            print(f"== {2 * per_pool} VMs, mirrored vm.get, {args.clients} REQ clients")
            rate = {}
            for label, runs in results.items():
                rps = sum(r["rps"] for r in runs) / len(runs)
                rate[label] = rps
                p99 = max(r["p99_ms"] for r in runs)
                errors = sum(r["errors"] for r in runs)
                cpu = "  ".join(f"{name} {sum(r['cpu_us'][name] for r in runs) / len(runs):.0f}"
                                for name in runs[0]["cpu_us"])
                print(f"{label:24s} {rps:8.0f} req/s  p99 {p99:6.2f} ms  errors {errors}  CPU us/request: {cpu}")
            print(f"NATS / ZeroMQ broker: {rate['NATS proxy + worker'] / rate['ZeroMQ broker + worker']:.2f}x "
                  f"(target >= 0.8); NATS / daemon: {rate['NATS proxy + worker'] / rate['daemon']:.2f}x")
        finally:
            for p in reversed(procs):
                stop(p)
            sim.stdin.close()
            sim.wait()


if __name__ == "__main__":
    main()
