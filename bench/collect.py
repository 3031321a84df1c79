#!/usr/bin/env python3
"""`vpoller collect` of 3 properties over every VM, against the raw
RetrievePropertiesEx round trip of the same request (curl), both on the same
simulator in the same run. Prints the time ratio and vpoller's peak memory
against the response size.

    bench/collect.py [--vms 10000] [--runs 5]

Targets (issue 2): time within 1.5x of the raw round trip; peak memory
below 3x the response size.
"""
import argparse, os, re, statistics, subprocess, sys, tempfile, time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATHS = ["name", "runtime.powerState", "summary.quickStats.overallCpuUsage"]
ENV_START = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
             'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
             'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
             'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>')
ENV_END = '</soapenv:Body></soapenv:Envelope>'


def run_measured(cmd, env=None):
    """Runs a command; returns (seconds, stdout)."""
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = p.communicate()
    elapsed = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {err.decode(errors='replace')}")
    return elapsed, out


def peak_rss(cmd, env):
    """Runs a command with its output discarded; returns its peak RSS in bytes."""
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.execvpe(cmd[0], cmd, env)
    _, status, usage = os.wait4(pid, 0)
    if status != 0:
        sys.exit(f"{cmd} failed with status {status}")
    return usage.ru_maxrss * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    subprocess.run(["bash", f"{TOP}/tests/vcsim/build.sh"], check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=TOP, check=True)
    vpoller = f"{TOP}/target/release/vpoller"
    per_pool = max(1, args.vms // 2)

    t0 = time.perf_counter()
    sim = subprocess.Popen([f"{TOP}/target/vcsim/vcsim", "-stdinexit", "-standalone", "1", "-cluster", "1",
                            "-host", "2", "-vm", str(per_pool)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    url = sim.stdout.readline().decode().strip()
    print(f"simulator: {2 * per_pool} VMs at {url}, started in {time.perf_counter() - t0:.1f} s")
    env = dict(os.environ, VPOLLER_PASSWORD="pass")

    with tempfile.TemporaryDirectory() as tmp:
        jar = f"{tmp}/cookies"

        def soap(body):
            data = ENV_START + body + ENV_END
            r = subprocess.run(["curl", "-s", "-b", jar, "-c", jar, "-H", "Content-Type: text/xml",
                                "--data-binary", "@-", "-o", f"{tmp}/out.xml", "-w", "%{time_total} %{size_download}",
                                url], input=data.encode(), capture_output=True, check=True)
            secs, size = r.stdout.decode().split()
            return float(secs), int(size)

        soap('<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this>'
             '<userName>user</userName><password>pass</password></Login>')
        soap('<CreateContainerView xmlns="urn:vim25"><_this type="ViewManager">ViewManager</_this>'
             '<container type="Folder">group-d1</container><type>VirtualMachine</type>'
             '<recursive>true</recursive></CreateContainerView>')
        view = re.search(r'>(session\[[^<]+)<', open(f"{tmp}/out.xml").read()).group(1)
        paths = "".join(f"<pathSet>{p}</pathSet>" for p in PATHS)
        rpex = ('<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">propertyCollector</_this>'
                f'<specSet><propSet><type>VirtualMachine</type>{paths}</propSet><objectSet>'
                f'<obj type="ContainerView">{view}</obj><skip>true</skip><selectSet xsi:type="TraversalSpec">'
                '<type>ContainerView</type><path>view</path></selectSet></objectSet></specSet>'
                '<options><maxObjects>5000</maxObjects></options></RetrievePropertiesEx>')
        soap(rpex)  # warm-up

        cmd = [vpoller, "collect", "--url", url, "--user", "user", "--type", "VirtualMachine",
               "--properties", ",".join(PATHS)]
        raw, ours, size = [], [], 0
        for _ in range(args.runs):
            secs, size = soap(rpex)
            raw.append(secs)
            secs, out = run_measured(cmd, env)
            ours.append(secs)
        rows = out.count(b'"_ref"')
        rss = max(peak_rss(cmd, env) for _ in range(2))
        idle = peak_rss([vpoller, "--version"], env)

    sim.stdin.close()
    sim.wait()

    raw_med, ours_med = statistics.median(raw), statistics.median(ours)
    print(f"response: {size / 1e6:.2f} MB, {rows} rows printed by vpoller")
    print(f"raw RetrievePropertiesEx (curl): median {raw_med * 1000:.0f} ms, min {min(raw) * 1000:.0f} ms")
    print(f"vpoller collect (whole process: login, view, retrieve, print, logout): "
          f"median {ours_med * 1000:.0f} ms, min {min(ours) * 1000:.0f} ms")
    print(f"time ratio vpoller/raw: median {ours_med / raw_med:.2f}, best {min(ours) / min(raw):.2f}  (target <= 1.5)")
    print(f"peak RSS: {rss / 1e6:.1f} MB; process baseline (vpoller --version) {idle / 1e6:.1f} MB")
    print(f"memory ratio (peak - baseline) / response: {(rss - idle) / size:.2f}  (target < 3)")


if __name__ == "__main__":
    main()
