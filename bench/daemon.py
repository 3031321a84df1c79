#!/usr/bin/env python3
"""Throughput and latency of `vpoller daemon` under concurrent REQ clients,
against baselines measured in the same run on the same simulator:

  * the raw single-object RetrievePropertiesEx rate (keep-alive HTTP, one
    session, the same number of clients): the floor vpoller cannot beat
    without a cache;
  * the original vPoller 0.7.3 (proxy + worker, from tests/pyclient's
    virtual environment, with the shared reference's one-line Python 3.11
    patch), when port 443 is free for the simulator (vconnector connects
    to port 443 only).

    bench/daemon.py [--vms 1000,10000] [--seconds 10] [--clients 8] [--baseline BIN]

With --baseline, vm.get is also measured with another vpoller binary (this
project's previous behaviour, built from an earlier commit) on the same
simulator and registry, before and after this one, and the ratio printed.

Needs tests/pyclient/setup.sh's virtual environment (made here if missing).
Targets (issue 6): vm.get at least 20x the original's throughput and within
1.5x of the raw floor.
"""
import argparse, http.client, json, multiprocessing as mp, os, re, shutil, signal, socket, ssl
import statistics, subprocess, sys, tempfile, time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(TOP, "target/pyvenv")
VPOLLER = os.path.join(TOP, "target/release/vpoller")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def zmq_worker(endpoint, requests, seconds, out):
    import zmq
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.connect(endpoint)
    lat, errors, i = [], 0, 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        body = requests[i % len(requests)]
        i += 1
        t = time.perf_counter()
        sock.send(body)
        reply = sock.recv()
        lat.append(time.perf_counter() - t)
        if b'"success": 0' not in reply and b'"success":0' not in reply:
            errors += 1
    out.put((lat, errors))


def run_load(endpoint, requests, seconds, clients):
    q = mp.Queue()
    procs = [mp.Process(target=zmq_worker, args=(endpoint, requests, seconds, q)) for _ in range(clients)]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    lat = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    return {
        "rps": len(lat) / seconds,
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else float("nan"),
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else float("nan"),
        "n": len(lat),
        "errors": errors,
    }


ENVELOPE = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{}</soapenv:Body></soapenv:Envelope>')


def https(port, cert):
    ctx = ssl.create_default_context(cafile=cert)
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx)


def soap(conn, cookie, body):
    headers = {"Content-Type": "text/xml; charset=utf-8"}
    if cookie:
        headers["Cookie"] = cookie
    conn.request("POST", "/sdk", ENVELOPE.format(body), headers)
    r = conn.getresponse()
    data = r.read()
    return r, data


def raw_worker(port, cert, moref, seconds, out):
    conn = https(port, cert)
    r, _ = soap(conn, None, '<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this>'
                            '<userName>user</userName><password>pass</password></Login>')
    cookie = r.getheader("Set-Cookie").split(";")[0]
    body = ('<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">propertyCollector</_this>'
            '<specSet><propSet><type>VirtualMachine</type><pathSet>name</pathSet><pathSet>runtime.powerState</pathSet>'
            f'</propSet><objectSet><obj type="VirtualMachine">{moref}</obj></objectSet></specSet><options/>'
            '</RetrievePropertiesEx>')
    lat = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        soap(conn, cookie, body)
        lat.append(time.perf_counter() - t)
    out.put((lat, 0))


def raw_floor(port, cert, moref, seconds, clients):
    q = mp.Queue()
    procs = [mp.Process(target=raw_worker, args=(port, cert, moref, seconds, q)) for _ in range(clients)]
    for p in procs:
        p.start()
    lat = sorted(x for _ in procs for x in q.get()[0])
    for p in procs:
        p.join()
    return {"rps": len(lat) / seconds, "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[int(len(lat) * 0.99)]}


def requests_for(method, names, hostname="vcsim"):
    out = []
    for n in names:
        req = {"method": method, "hostname": hostname, "name": n, "username": None, "password": None, "key": None,
               "properties": ["runtime.powerState"] if method != "vm.discover" else None, "counter-name": None,
               "instance": None, "max-sample": None, "perf-interval": None, "helper": None}
        out.append(json.dumps(req).encode())
    return out


def mgmt(endpoint, method):
    import zmq
    s = zmq.Context().socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    s.send_json({"method": method})
    if not s.poll(5000):
        return {}
    return json.loads(s.recv())


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
    return int(m.group(1)) / 1024 if m else float("nan")


def soap_calls(status):
    return sum(s.get("soap_calls", 0) for s in status.get("result", {}).get("sessions", []))


def port_free(port):
    s = socket.socket()
    # As the simulator binds: connections of an earlier run in TIME_WAIT do not count.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


VPOLLER_CONF = """[proxy]
frontend = tcp://127.0.0.1:{front}
backend = tcp://127.0.0.1:{back}
mgmt = tcp://127.0.0.1:{pm}

[worker]
db = {db}
proxy = tcp://127.0.0.1:{back}
mgmt = tcp://127.0.0.1:{wm}
helpers = vpoller.helpers.zabbix
tasks = vpoller.vsphere.tasks

[cache]
enabled = True
maxsize = 0
ttl = 3600
housekeeping = 480
"""


def patch_original_worker():
    """The one-line Python 3.11 fix of the shared reference's section 12."""
    import vpoller.worker as w
    path = w.__file__
    text = open(path).read()
    old = "parser = ConfigParser(self.config_defaults)"
    new = "parser = ConfigParser({k: ('' if v is None else str(v)) for k, v in self.config_defaults.items()})"
    if old in text:
        open(path, "w").write(text.replace(old, new))


def original_vpoller(tmp, vm_requests, seconds, clients):
    """vPoller 0.7.3's proxy and worker (concurrency = cores) on the same
    simulator, which must listen on 127.0.0.1:443 (vconnector's port)."""
    bin_dir = os.path.join(VENV, "bin")
    patch_original_worker()
    tmp = tempfile.mkdtemp(dir=tmp)
    db = os.path.join(tmp, "vconnector.db")
    cli = os.path.join(bin_dir, "vconnector-cli")
    for args in (["init"], ["-H", "127.0.0.1", "-U", "user", "-P", "pass", "add"], ["-H", "127.0.0.1", "enable"]):
        subprocess.run([cli, "-d", db] + args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ports = dict(front=free_port(), back=free_port(), pm=free_port(), wm=free_port(), db=db)
    conf = os.path.join(tmp, "vpoller.conf")
    open(conf, "w").write(VPOLLER_CONF.format(**ports))
    proxy = subprocess.Popen([os.path.join(bin_dir, "vpoller-proxy"), "-f", conf, "start"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([os.path.join(bin_dir, "vpoller-worker"), "-f", conf, "-c", str(os.cpu_count()), "start"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(ports["front"])
        endpoint = f"tcp://127.0.0.1:{ports['front']}"
        run_load(endpoint, vm_requests[:2], 3, 1)  # warm-up: logins and the object cache
        return run_load(endpoint, vm_requests, seconds, clients)
    finally:
        for p in (worker, proxy):
            p.send_signal(signal.SIGTERM)
        for p in (worker, proxy):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["pkill", "-f", conf])


def start_daemon(binary, db, key):
    front, mg = free_port(), free_port()
    daemon = subprocess.Popen([binary, "daemon", "-d", db, "--key-file", key, "--frontend", f"tcp://127.0.0.1:{front}",
                               "--mgmt", f"tcp://127.0.0.1:{mg}", "--log-level", "error"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(front)
    return daemon, f"tcp://127.0.0.1:{front}", f"tcp://127.0.0.1:{mg}"


def vm_get_with(binary, db, key, reqs, seconds, clients):
    daemon, endpoint, _ = start_daemon(binary, db, key)
    try:
        run_load(endpoint, reqs, 1, 2)
        return run_load(endpoint, reqs, seconds, clients)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)


def bench_size(vms, seconds, clients, tmp, baseline=None):
    per_pool = max(1, vms // 2)
    # The original reaches vCenter on port 443 only (vconnector's default).
    listen = "127.0.0.1:443" if port_free(443) else "127.0.0.1:0"
    cert = os.path.join(tmp, f"vcsim-{vms}.pem")
    t0 = time.time()
    sim = subprocess.Popen([os.path.join(TOP, "target/vcsim/vcsim"), "-stdinexit", "-l", listen, "-tls", "-tls-cert-out", cert,
                            "-standalone", "1", "-cluster", "1", "-host", "2", "-vm", str(per_pool)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    url = sim.stdout.readline().decode().strip()
    sim_port = int(url.rsplit(":", 1)[1].split("/")[0])
    print(f"\n== {2 * per_pool} VMs (simulator up in {time.time() - t0:.1f} s at {url})")
    db, key = os.path.join(tmp, f"a{vms}.db"), os.path.join(tmp, f"a{vms}.key")
    subprocess.run([VPOLLER, "agent", "init", "-d", db, "--key-file", key], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([VPOLLER, "agent", "add", "-d", db, "--key-file", key, "-H", "vcsim", "-U", "user", "--url", url,
                    "--cacert", cert], check=True, env=dict(os.environ, VPOLLER_PASSWORD="pass"), stdout=subprocess.DEVNULL)
    daemon, endpoint, mgmt_ep = start_daemon(VPOLLER, db, key)
    vm_names = [f"DC0_H0_VM{i}" for i in range(0, per_pool, max(1, per_pool // 50))]
    host_names = ["DC0_H0", "DC0_C0_H0", "DC0_C0_H1"]
    results = {}
    for method, names, secs in [("vm.get", vm_names, seconds), ("host.get", host_names, seconds),
                                ("vm.discover", ["-"], max(2, seconds // 2))]:
        reqs = requests_for(method, names)
        run_load(endpoint, reqs, 1, 2)  # warm-up: sessions, views, the name index
        before = soap_calls(mgmt(mgmt_ep, "status"))
        r = run_load(endpoint, reqs, secs, clients)
        after = soap_calls(mgmt(mgmt_ep, "status"))
        r["soap_per_request"] = (after - before) / max(1, r["n"])
        results[method] = r
    rss = peak_rss_mb(daemon.pid)
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=30)

    if baseline:
        reqs = requests_for("vm.get", vm_names)
        # Baseline, this build, baseline again: drift shows as a spread.
        before = vm_get_with(baseline, db, key, reqs, seconds, clients)
        ours = vm_get_with(VPOLLER, db, key, reqs, seconds, clients)
        after = vm_get_with(baseline, db, key, reqs, seconds, clients)
        base_rps = (before["rps"] + after["rps"]) / 2
        print(f"baseline {os.path.basename(baseline)} vm.get {before['rps']:8.0f} / {after['rps']:8.0f} req/s "
              f"(before / after), p99 {max(before['p99_ms'], after['p99_ms']):6.2f} ms")
        print(f"this build vm.get {ours['rps']:8.0f} req/s, p99 {ours['p99_ms']:6.2f} ms: "
              f"{ours['rps'] / base_rps:.2f}x the baseline")
    conn = https(sim_port, cert)
    soap(conn, None, '<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this>'
                     '<userName>user</userName><password>pass</password></Login>')
    floor = raw_floor(sim_port, cert, "vm-57", seconds, clients)

    for method, r in results.items():
        print(f"vpoller {method:12s} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
              f"SOAP calls/request {r['soap_per_request']:.2f}  errors {r['errors']}")
    print(f"vpoller daemon peak RSS {rss:.1f} MB")
    print(f"raw RetrievePropertiesEx (1 object)  {floor['rps']:8.0f} req/s  p50 {floor['p50_ms']:6.2f} ms  "
          f"p99 {floor['p99_ms']:6.2f} ms")
    print(f"vm.get: the raw floor is {floor['rps'] / results['vm.get']['rps']:.2f}x vpoller's rate (target <= 1.5)")
    if listen.endswith(":443"):
        original = original_vpoller(tmp, requests_for("vm.get", vm_names, "127.0.0.1"), seconds, clients)
        print(f"original vPoller 0.7.3 vm.get {original['rps']:8.0f} req/s  p50 {original['p50_ms']:6.2f} ms  "
              f"p99 {original['p99_ms']:6.2f} ms  errors {original['errors']}")
        if original["rps"] > 0:
            print(f"vm.get: vpoller is {results['vm.get']['rps'] / original['rps']:.1f}x the original's throughput (target >= 20)")
    else:
        print("port 443 is taken: the original vPoller (which connects to port 443 only) is not measured")
    sim.stdin.close()
    sim.wait()


def enter_venv():
    """Re-runs this script in tests/pyclient's virtual environment (pyzmq,
    vPoller 0.7.3), making it first if missing."""
    subprocess.run(["bash", os.path.join(TOP, "tests/pyclient/setup.sh"), VENV], check=True)
    if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
        os.execv(os.path.join(VENV, "bin/python"), [os.path.join(VENV, "bin/python")] + sys.argv)


def build_all():
    """The simulator launcher and vpoller's release build."""
    subprocess.run(["bash", os.path.join(TOP, "tests/vcsim/build.sh")], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=TOP, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", default="1000,10000")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--baseline", help="another vpoller binary to compare vm.get with")
    args = ap.parse_args()
    enter_venv()
    build_all()
    with tempfile.TemporaryDirectory() as tmp:
        for vms in [int(v) for v in args.vms.split(",")]:
            bench_size(vms, args.seconds, args.clients, tmp, args.baseline and os.path.abspath(args.baseline))


if __name__ == "__main__":
    main()
