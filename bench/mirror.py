#!/usr/bin/env python3
"""The live inventory mirror, measured against baselines from the same run
on the same simulator:

  1. Throughput: mirrored `vm.get` with 8 REQ clients against a bare
     ZeroMQ ROUTER echo server (libzmq, the same clients), the same request
     with the mirror off, and `about` (which asks vCenter nothing) to show
     where the time goes: ZeroMQ (the echo), dispatch + Lua + reply
     (about - echo), the mirror's read and conversions (vm.get - about).
     Target: mirrored vm.get >= 0.8x the echo, 0 SOAP calls per request.
  2. A Zabbix-shaped run: the stock VM template's items (one request per
     item: 25 vm.get paths including quickStats, vm.disk.get, vm.host.get,
     vm.cpu.usage.percent) for every VM of a 1,000-VM inventory, paced over
     a minute as Zabbix spreads them; vCenter calls per minute with the
     mirror (first and second minute: paths are promoted during the first)
     and without it.
  3. Change-to-reply latency (PowerOff/PowerOn, then polling vm.get), the
     initial load against a direct RetrievePropertiesEx of the same spec
     (target <= 1.5x), and RSS per 1,000 VMs (target <= 10 MB).

    bench/mirror.py [--vms 1000] [--seconds 10] [--clients 8] [--zabbix-minutes 2]
"""
import argparse, json, multiprocessing as mp, os, re, signal, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon import (TOP, VPOLLER, build_all, enter_venv, free_port, https, mgmt, run_load, soap,  # noqa: E402
                    wait_port)

ECHO = os.path.join(TOP, "target/release/examples/zmq_echo")

ZABBIX_VM_PATHS = [
    "config.annotation", "config.guestFullName", "config.guestId", "config.hardware.memoryMB",
    "config.hardware.numCPU", "config.hardware.numCoresPerSocket", "config.name", "config.tools.syncTimeWithHost",
    "config.tools.toolsUpgradePolicy", "config.uuid", "config.version", "guest.appHeartbeatStatus",
    "guest.guestFamily", "guest.toolsRunningStatus", "guest.toolsVersion", "runtime.connectionState",
    "runtime.powerState", "summary.overallStatus", "summary.quickStats.balloonedMemory",
    "summary.quickStats.compressedMemory", "summary.quickStats.consumedOverheadMemory",
    "summary.quickStats.guestMemoryUsage", "summary.quickStats.hostMemoryUsage",
    "summary.quickStats.overallCpuDemand", "summary.quickStats.overallCpuUsage",
]


def request(method, name=None, properties=None, key=None, hostname="vcsim"):
    return json.dumps({"method": method, "hostname": hostname, "name": name, "username": None, "password": None,
                       "key": key, "properties": properties, "counter-name": None, "instance": None,
                       "max-sample": None, "perf-interval": None, "helper": None}).encode()


def start_sim(tmp, vms):
    cert = os.path.join(tmp, f"vcsim-{vms}.pem")
    per_pool = max(1, vms // 2)
    sim = subprocess.Popen([os.path.join(TOP, "target/vcsim/vcsim"), "-stdinexit", "-tls", "-tls-cert-out", cert,
                            "-standalone", "1", "-cluster", "1", "-host", "2", "-vm", str(per_pool)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    url = sim.stdout.readline().decode().strip()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    return sim, url, port, cert, per_pool


def registry(tmp, url, cert):
    db, key = os.path.join(tmp, "m.db"), os.path.join(tmp, "m.key")
    subprocess.run([VPOLLER, "agent", "init", "-d", db, "--key-file", key], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([VPOLLER, "agent", "add", "-d", db, "--key-file", key, "-H", "vcsim", "-U", "user", "--url", url,
                    "--cacert", cert], check=True, env=dict(os.environ, VPOLLER_PASSWORD="pass"),
                   stdout=subprocess.DEVNULL)
    return db, key


def start_daemon(tmp, db, key, mirror_conf):
    conf = os.path.join(tmp, f"vpoller-{time.time_ns()}.conf")
    open(conf, "w").write(f"[mirror]\n{mirror_conf}\n[log]\nlevel = error\n")
    front, mg = free_port(), free_port()
    daemon = subprocess.Popen([VPOLLER, "daemon", "-f", conf, "-d", db, "--key-file", key,
                               "--frontend", f"tcp://127.0.0.1:{front}", "--mgmt", f"tcp://127.0.0.1:{mg}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(front)
    return daemon, f"tcp://127.0.0.1:{front}", f"tcp://127.0.0.1:{mg}"


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def session_status(mgmt_ep):
    sessions = mgmt(mgmt_ep, "status").get("result", {}).get("sessions", [])
    return sessions[0] if sessions else {}


def wait_live(endpoint, mgmt_ep, timeout=120):
    run_load(endpoint, [request("about")], 0.2, 1)
    deadline = time.time() + timeout
    while time.time() < deadline:
        mirror = session_status(mgmt_ep).get("mirror") or {}
        if mirror.get("state") == "live":
            return mirror
        time.sleep(0.1)
    sys.exit("the mirror did not become live")


def request_calls(mgmt_ep):
    return session_status(mgmt_ep).get("request_soap_calls", 0)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    return int(m.group(1)) / 1024


def measured(endpoint, mgmt_ep, reqs, seconds, clients):
    run_load(endpoint, reqs, 1, clients)
    before = request_calls(mgmt_ep)
    r = run_load(endpoint, reqs, seconds, clients)
    r["soap_per_request"] = (request_calls(mgmt_ep) - before) / max(1, r["n"])
    return r


def echo_rate(seconds, clients, body):
    port = free_port()
    server = subprocess.Popen([ECHO, "libzmq", f"tcp://127.0.0.1:{port}"])
    try:
        wait_port(port)
        endpoint = f"tcp://127.0.0.1:{port}"
        run_load(endpoint, [body], 1, clients)
        return run_load(endpoint, [body], seconds, clients)
    finally:
        server.kill()
        server.wait()


def line(label, r):
    extra = f"  SOAP calls/request {r['soap_per_request']:.3f}" if "soap_per_request" in r else ""
    print(f"{label:34s} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.3f} ms  p99 {r['p99_ms']:6.3f} ms  "
          f"errors {r['errors']}{extra}")


def throughput(tmp, db, key, names, seconds, clients):
    print("\n-- 1. throughput, 8 REQ clients")
    vm_reqs = [request("vm.get", n, ["runtime.powerState"]) for n in names]
    mirrored, m_front, m_mgmt = start_daemon(tmp, db, key, "pin = VirtualMachine:runtime.powerState")
    wait_live(m_front, m_mgmt)
    direct, d_front, d_mgmt = start_daemon(tmp, db, key, "enabled = false")
    results = {}
    try:
        # Alternated twice, so that no stage gets the quieter half.
        for _ in range(2):
            for label, fn in [
                ("echo", lambda: echo_rate(seconds // 2 or 1, clients, vm_reqs[0])),
                ("about", lambda: measured(m_front, m_mgmt, [request("about")], seconds // 2 or 1, clients)),
                ("vm.get mirrored", lambda: measured(m_front, m_mgmt, vm_reqs, seconds // 2 or 1, clients)),
                ("vm.get mirror off", lambda: measured(d_front, d_mgmt, vm_reqs, seconds // 2 or 1, clients)),
            ]:
                r = fn()
                prev = results.get(label)
                if prev:
                    total = prev["n"] + r["n"]
                    r = {**r, "rps": (prev["rps"] + r["rps"]) / 2, "n": total,
                         "p50_ms": max(prev["p50_ms"], r["p50_ms"]), "p99_ms": max(prev["p99_ms"], r["p99_ms"]),
                         "errors": prev["errors"] + r["errors"]}
                    if "soap_per_request" in prev:
                        r["soap_per_request"] = max(prev["soap_per_request"], r["soap_per_request"])
                results[label] = r
    finally:
        stop(mirrored)
        stop(direct)
    for label, r in results.items():
        line(label, r)
    echo, about, mirror, off = (results[k]["rps"] for k in ["echo", "about", "vm.get mirrored", "vm.get mirror off"])
    print(f"mirrored vm.get / echo: {mirror / echo:.2f}x (target >= 0.8); mirror on / off: {mirror / off:.1f}x")
    us = lambda rps: 1e6 * clients / rps  # noqa: E731  time per request per client
    print(f"where a mirrored vm.get's time goes (us per request, {clients} clients): ZeroMQ round trip {us(echo):.0f}, "
          f"dispatch + Lua + reply {us(about) - us(echo):.0f}, name lookup + rows + conversions {us(mirror) - us(about):.0f}")


def zabbix_items(names):
    items = []
    for n in names:
        items += [request("vm.get", n, [p]) for p in ZABBIX_VM_PATHS]
        items += [request("vm.disk.get", n, [p], key="/") for p in ("capacity", "freeSpace", "freeSpacePercentage")]
        items += [request("vm.host.get", n, ["host"]), request("vm.cpu.usage.percent", n, ["vm.cpu.usage.percent"])]
    return items


def paced_worker(endpoint, items, seconds, out):
    import zmq
    sock = zmq.Context().socket(zmq.REQ)
    sock.connect(endpoint)
    start, errors = time.perf_counter(), 0
    for i, body in enumerate(items):
        due = start + seconds * i / len(items)
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sock.send(body)
        reply = sock.recv()
        if b'"success": 0' not in reply and b'"success":0' not in reply:
            errors += 1
    out.put((len(items), errors))


def zabbix_minute(endpoint, mgmt_ep, items, clients):
    """The item set spread over 60 s by `clients` pollers; vCenter calls made."""
    before = request_calls(mgmt_ep)
    q = mp.Queue()
    shares = [items[i::clients] for i in range(clients)]
    procs = [mp.Process(target=paced_worker, args=(endpoint, s, 60, q)) for s in shares]
    t = time.time()
    for p in procs:
        p.start()
    done = [q.get() for _ in procs]
    for p in procs:
        p.join()
    took = time.time() - t
    return {"requests": sum(d[0] for d in done), "errors": sum(d[1] for d in done),
            "calls": request_calls(mgmt_ep) - before, "seconds": took}


def zabbix(tmp, db, key, names, minutes, clients):
    print(f"\n-- 2. Zabbix-shaped: the stock VM template's items for {len(names)} VMs, each minute")
    items = zabbix_items(names)
    mirrored, m_front, m_mgmt = start_daemon(tmp, db, key, "")
    direct, d_front, d_mgmt = start_daemon(tmp, db, key, "enabled = false")
    try:
        wait_live(m_front, m_mgmt)
        run_load(d_front, [request("about")], 0.2, 1)
        rss_before = {"mirror": rss_mb(mirrored.pid), "direct": rss_mb(direct.pid)}
        off = zabbix_minute(d_front, d_mgmt, items, clients)
        print(f"mirror off, minute 1: {off['requests']} requests, {off['calls']} vCenter calls "
              f"({off['calls'] / off['requests']:.2f} per request), errors {off['errors']}, {off['seconds']:.0f} s")
        on = []
        for minute in range(minutes):
            r = zabbix_minute(m_front, m_mgmt, items, clients)
            on.append(r)
            print(f"mirror on,  minute {minute + 1}: {r['requests']} requests, {r['calls']} vCenter calls "
                  f"({r['calls'] / r['requests']:.4f} per request), errors {r['errors']}, {r['seconds']:.0f} s")
        mirror = session_status(m_mgmt).get("mirror", {})
        print(f"mirror after the run: {mirror.get('objects')} objects, {mirror.get('paths')} paths held, "
              f"{mirror.get('builds')} builds, {mirror.get('volatile_bulk_reads')} volatile bulk reads, "
              f"its own calls {mirror.get('soap_calls')} (waits and builds)")
        last = on[-1]
        if last["calls"]:
            print(f"vCenter calls for the same minute: {off['calls']} without the mirror, {last['calls']} with it "
                  f"({off['calls'] / last['calls']:.0f}x fewer)")
        rss = {"mirror": rss_mb(mirrored.pid), "direct": rss_mb(direct.pid)}
        per_1000 = (rss["mirror"] - rss["direct"]) * 1000 / len(names)
        print(f"RSS after the run: mirror {rss['mirror']:.1f} MB (at start {rss_before['mirror']:.1f}), "
              f"mirror off {rss['direct']:.1f} MB (at start {rss_before['direct']:.1f}); the mirror's share "
              f"{per_1000:.1f} MB per 1,000 VMs with {mirror.get('paths')} paths (target <= 10)")
        return mirror
    finally:
        stop(mirrored)
        stop(direct)


def find_vm(conn, cookie, name):
    _, body = soap(conn, cookie, '<CreateContainerView xmlns="urn:vim25"><_this type="ViewManager">ViewManager</_this>'
                                 '<container type="Folder">group-d1</container><type>VirtualMachine</type>'
                                 '<recursive>true</recursive></CreateContainerView>')
    view = re.search(rb"<returnval[^>]*>([^<]+)</returnval>", body).group(1).decode()
    _, body = soap(conn, cookie, retrieve_body(view, {"VirtualMachine": ["name"]}))
    for obj, val in re.findall(rb'<obj type="VirtualMachine">([^<]+)</obj><propSet><name>name</name><val[^>]*>([^<]+)'
                               rb'</val>', body):
        if val.decode() == name:
            return obj.decode()
    sys.exit(f"no VM {name}")


def filter_spec(view, paths_by_type):
    props = "".join(f"<propSet><type>{t}</type>" + "".join(f"<pathSet>{p}</pathSet>" for p in paths) + "</propSet>"
                    for t, paths in paths_by_type.items())
    return (f'{props}<objectSet><obj type="ContainerView">{view}</obj><skip>true</skip>'
            '<selectSet xsi:type="TraversalSpec"><name>v</name><type>ContainerView</type><path>view</path>'
            '<skip>false</skip></selectSet></objectSet>')


def retrieve_body(view, paths_by_type):
    return ('<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">propertyCollector</_this>'
            f'<specSet>{filter_spec(view, paths_by_type)}</specSet><options><maxObjects>100000</maxObjects></options>'
            '</RetrievePropertiesEx>')


def initial_wait_seconds(conn, cookie, view, spec):
    """The initial WaitForUpdatesEx of the same spec on a fresh private
    collector, transfer only: what vcsim itself takes to answer it."""
    _, body = soap(conn, cookie, '<CreatePropertyCollector xmlns="urn:vim25"><_this type="PropertyCollector">'
                                 'propertyCollector</_this></CreatePropertyCollector>')
    collector = re.search(rb"<returnval[^>]*>([^<]+)</returnval>", body).group(1).decode()
    this = f'<_this type="PropertyCollector">{collector}</_this>'
    soap(conn, cookie, f'<CreateFilter xmlns="urn:vim25">{this}<spec>{filter_spec(view, spec)}</spec>'
                       '<partialUpdates>false</partialUpdates></CreateFilter>')
    t = time.perf_counter()
    soap(conn, cookie, f'<WaitForUpdatesEx xmlns="urn:vim25">{this}<version></version>'
                       '<options><maxWaitSeconds>1</maxWaitSeconds></options></WaitForUpdatesEx>')
    took = time.perf_counter() - t
    soap(conn, cookie, f'<DestroyPropertyCollector xmlns="urn:vim25">{this}</DestroyPropertyCollector>')
    return took


def login(port, cert):
    conn = https(port, cert)
    r, _ = soap(conn, None, '<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this>'
                            '<userName>user</userName><password>pass</password></Login>')
    return conn, r.getheader("Set-Cookie").split(";")[0]


FAMILIES = {"VirtualMachine": ["VirtualMachine"], "HostSystem": ["HostSystem"], "Datastore": ["Datastore"],
            "Datacenter": ["Datacenter"], "ClusterComputeResource": ["ClusterComputeResource"],
            "ResourcePool": ["ResourcePool", "VirtualApp"],
            "Network": ["Network", "DistributedVirtualPortgroup", "OpaqueNetwork"]}


def direct_load_seconds(port, cert, held):
    """A RetrievePropertiesEx of the mirror's own spec over a fresh view of
    everything: the fastest a direct read of the same data can be."""
    conn, cookie = login(port, cert)
    _, body = soap(conn, cookie, '<CreateContainerView xmlns="urn:vim25"><_this type="ViewManager">ViewManager</_this>'
                                 '<container type="Folder">group-d1</container><recursive>true</recursive>'
                                 '</CreateContainerView>')
    view = re.search(rb"<returnval[^>]*>([^<]+)</returnval>", body).group(1).decode()
    spec = {t: paths for family, paths in held.items() for t in FAMILIES.get(family, [family])}
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        soap(conn, cookie, retrieve_body(view, spec))
        best = min(best, time.perf_counter() - t)
    wait = min(initial_wait_seconds(conn, cookie, view, spec) for _ in range(3))
    return best, wait


def latency_and_load(tmp, db, key, port, cert, held):
    print("\n-- 3. change-to-reply latency, initial load, memory")
    # The direct reads first, warm, then the mirror's own load on the same
    # warm simulator.
    direct, wait = direct_load_seconds(port, cert, held)
    pins = ", ".join(f"{family}:{p}" for family, paths in held.items() for p in paths if p != "name")
    mirrored, front, mgmt_ep = start_daemon(tmp, db, key, f"pin = {pins}")
    try:
        mirror = wait_live(front, mgmt_ep)
        load = mirror["initial_load_seconds"]
        print(f"initial load of {mirror['objects']} objects, {mirror['paths']} paths: mirror {load:.3f} s "
              f"(WaitForUpdatesEx, decoded and applied) against a direct RetrievePropertiesEx of the same spec "
              f"{direct:.3f} s (transfer only, not decoded): {load / direct:.2f}x (target <= 1.5). vcsim's own "
              f"initial WaitForUpdatesEx of that spec takes {wait:.3f} s (transfer only, {wait / direct:.2f}x its "
              f"RetrievePropertiesEx); decoding and applying add {max(0.0, load - wait):.3f} s")
        conn, cookie = login(port, cert)
        vm = find_vm(conn, cookie, "DC0_H0_VM0")
        import zmq
        sock = zmq.Context().socket(zmq.REQ)
        sock.connect(front)
        probe = request("vm.get", "DC0_H0_VM0", ["runtime.powerState"])
        latencies = []
        for i in range(10):
            state = "poweredOff" if i % 2 == 0 else "poweredOn"
            task = "PowerOffVM_Task" if i % 2 == 0 else "PowerOnVM_Task"
            time.sleep(0.37)  # de-phased from vcsim's 250 ms tick
            t = time.perf_counter()
            soap(conn, cookie, f'<{task} xmlns="urn:vim25"><_this type="VirtualMachine">{vm}</_this></{task}>')
            while True:
                sock.send(probe)
                if state.encode() in sock.recv():
                    break
            latencies.append(time.perf_counter() - t)
        latencies.sort()
        print(f"change to reply (PowerOff/On, then vm.get until it shows): median {1000 * latencies[5]:.0f} ms, "
              f"min {1000 * latencies[0]:.0f}, max {1000 * latencies[-1]:.0f} (vcsim wakes its waits every 250 ms)")
    finally:
        stop(mirrored)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--zabbix-minutes", type=int, default=2)
    args = ap.parse_args()
    enter_venv()
    build_all()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "zmq_echo"], cwd=TOP, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        sim, url, port, cert, per_pool = start_sim(tmp, args.vms)
        try:
            db, key = registry(tmp, url, cert)
            print(f"== {2 * per_pool} VMs at {url}")
            sample = [f"DC0_H0_VM{i}" for i in range(0, per_pool, max(1, per_pool // 50))]
            throughput(tmp, db, key, sample, args.seconds, args.clients)
            names = [f"DC0_H0_VM{i}" for i in range(per_pool)] + [f"DC0_C0_RP0_VM{i}" for i in range(per_pool)]
            held = zabbix(tmp, db, key, names, args.zabbix_minutes, args.clients).get("held") or {}
            latency_and_load(tmp, db, key, port, cert, held)
        finally:
            sim.stdin.close()
            sim.wait()


if __name__ == "__main__":
    main()
