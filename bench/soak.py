#!/usr/bin/env python3
"""Soak: mixed requests from 8 clients against `vpoller daemon` while the
simulator is killed and restarted every period, with a session expiry (an
idle pause longer than the simulator's session timeout) in between.

    bench/soak.py [--minutes 10] [--period 60] [--clients 8]

Prints, per period: requests sent, replies received, errors by kind, p99
latency, the daemon's RSS and open file descriptors. At the end: sent and
received in all (they must be equal: every request gets exactly one reply),
and whether RSS and descriptors stayed flat. Exits 1 if a reply was lost.
"""
import argparse, collections, json, multiprocessing as mp, os, signal, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon import TOP, VPOLLER, build_all, enter_venv, free_port, wait_port  # noqa: E402

SESSION_IDLE = 4  # seconds; the pause in each period is longer

REQUESTS = [
    {"method": "vm.get", "hostname": "vcsim", "name": "DC0_H0_VM0", "properties": ["name", "runtime.powerState"]},
    {"method": "vm.get", "hostname": "vcsim", "name": "no-such-vm", "properties": ["name"]},
    {"method": "host.get", "hostname": "vcsim", "name": "DC0_H0", "properties": ["name", "runtime.powerState"]},
    {"method": "vm.discover", "hostname": "vcsim"},
    {"method": "datastore.discover", "hostname": "vcsim"},
    {"method": "about", "hostname": "vcsim", "properties": ["fullName"]},
    {"method": "vm.get", "hostname": "vcsim", "name": "DC0_H0_VM1", "properties": ["summary.quickStats.overallCpuUsage"],
     "helper": "vpoller.helpers.zabbix"},
    {"method": "vm.get", "hostname": "no-such-agent", "name": "x"},
]
MALFORMED = [b"not json", b"[1, 2]", b"\xff\xfe", b'{"method": 42}']


def kind_of(reply):
    if reply is None:
        return "no reply"
    text = reply.decode("utf-8", "replace")
    try:
        value = json.loads(text)
    except ValueError:
        return "ok" if text else "empty"
    if not isinstance(value, dict) or value.get("success") == 0:
        return "ok"
    msg = value.get("msg", "")
    for words, kind in [("unreachable", "circuit open"), ("no answer", "timeout"), ("cannot connect", "refused"),
                        ("login failed", "login"), ("Cannot find", "not found"), ("Invalid message", "malformed"),
                        ("Expected a JSON", "malformed"), ("Unknown or missing agent", "unknown agent"), ("Unknown or missing task", "malformed"),
                        ("closed without a response", "connection lost")]:
        if words in msg:
            return kind
    return "other: " + msg[:60]


def client(endpoint, start, seconds, pauses, out, seed):
    import zmq
    ctx = zmq.Context()
    sock = None
    i, log = seed, []
    end = start + seconds
    while time.time() < end:
        now = time.time()
        if any(a <= now < b for a, b in pauses):
            time.sleep(0.05)
            continue
        if sock is None:
            sock = ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
        i += 1
        body = MALFORMED[i % len(MALFORMED)] if i % 17 == 0 else json.dumps(REQUESTS[i % len(REQUESTS)]).encode()
        t = time.time()
        sock.send(body)
        reply = sock.recv() if sock.poll(20000) else None
        if reply is None:
            sock.close()
            sock = None
        log.append((t - start, time.time() - t, kind_of(reply)))
    out.put(log)


def proc_stats(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def start_simulator(port):
    sim = subprocess.Popen([os.path.join(TOP, "target/vcsim/vcsim"), "-stdinexit", "-l", f"127.0.0.1:{port}",
                            "-session-idle-timeout", f"{SESSION_IDLE}s"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    url = sim.stdout.readline().decode().strip()
    return sim, url


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--period", type=float, default=60)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    enter_venv()
    build_all()
    seconds = args.minutes * 60
    periods = max(1, int(seconds // args.period))
    with tempfile.TemporaryDirectory() as tmp:
        sim_port = free_port()
        sim, url = start_simulator(sim_port)
        db, key, conf = (os.path.join(tmp, n) for n in ("agents.db", "agents.key", "vpoller.conf"))
        with open(conf, "w") as f:
            f.write("[vsphere]\ntimeout = 5\nunreachable-cooldown = 1\n[log]\nlevel = error\n")
        subprocess.run([VPOLLER, "agent", "init", "-d", db, "--key-file", key], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([VPOLLER, "agent", "add", "-d", db, "--key-file", key, "-H", "vcsim", "-U", "user", "--url", url],
                       check=True, env=dict(os.environ, VPOLLER_PASSWORD="pass"), stdout=subprocess.DEVNULL)
        front, mg = free_port(), free_port()
        daemon = subprocess.Popen([VPOLLER, "daemon", "-f", conf, "-d", db, "--key-file", key,
                                   "--frontend", f"tcp://127.0.0.1:{front}", "--mgmt", f"tcp://127.0.0.1:{mg}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(front)
        start = time.time() + 1
        # In each period: the simulator is killed at 1/4 and back at 1/4 + 3 s;
        # the clients pause at 1/2 for longer than a session may stay idle.
        pauses = [(start + p * args.period + args.period / 2, start + p * args.period + args.period / 2 + SESSION_IDLE + 2)
                  for p in range(periods)]
        q = mp.Queue()
        procs = [mp.Process(target=client, args=(f"tcp://127.0.0.1:{front}", start, seconds, pauses, q, n * 1000))
                 for n in range(args.clients)]
        for p in procs:
            p.start()
        stats = []
        for p in range(periods):
            period_start = start + p * args.period
            time.sleep(max(0, period_start + args.period / 4 - time.time()))
            sim.kill()
            sim.wait()
            time.sleep(3)
            sim, _ = start_simulator(sim_port)
            time.sleep(max(0, period_start + args.period - 0.5 - time.time()))
            stats.append(proc_stats(daemon.pid))
        logs = [x for _ in procs for x in q.get()]
        for p in procs:
            p.join()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        sim.kill()

    by_period = collections.defaultdict(list)
    for at, latency, kind in logs:
        by_period[min(periods - 1, int(at // args.period))].append((latency, kind))
    print(f"{'period':>6} {'sent':>7} {'replies':>7} {'p99 ms':>8} {'RSS MB':>7} {'fds':>4}  errors by kind")
    lost = 0
    for p in range(periods):
        rows = by_period.get(p, [])
        lat = sorted(r[0] for r in rows)
        kinds = collections.Counter(k for _, k in rows if k != "ok")
        missing = kinds.pop("no reply", 0)
        lost += missing
        p99 = 1000 * lat[int(len(lat) * 0.99)] if lat else float("nan")
        rss, fds = stats[p]
        print(f"{p + 1:>6} {len(rows):>7} {len(rows) - missing:>7} {p99:>8.1f} {rss:>7.1f} {fds:>4}  "
              + ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())))
    sent = len(logs)
    print(f"sent {sent}, replies {sent - lost}, lost {lost}")
    rss = [s[0] for s in stats]
    fds = [s[1] for s in stats]
    print(f"RSS first/last/max {rss[0]:.1f}/{rss[-1]:.1f}/{max(rss):.1f} MB; fds first/last/max {fds[0]}/{fds[-1]}/{max(fds)}")
    sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()
