#!/usr/bin/env bash
# Builds vpoller and the simulator, starts a TLS simulator with a generated
# certificate, and shows vpoller at work on it: collect, a registered agent,
# a method call, and the daemon answering vPoller-style clients.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/vcsim/build.sh
cargo build --release --quiet
vpoller=target/release/vpoller
work=$(mktemp -d)
coproc SIM { exec target/vcsim/vcsim -tls -tls-cert-out "$work/vcsim.pem" -stdinexit 2>"$work/vcsim.log"; }
read -r url <&"${SIM[0]}"
daemon_pid=
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  kill "$SIM_PID" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
export VPOLLER_PASSWORD=pass
step() { printf '\n== %s\n' "$*" >&2; }

step "simulator at $url; vpoller collect, trusting its certificate"
$vpoller collect --url "$url" --user user --cacert "$work/vcsim.pem" --type VirtualMachine \
  --properties name,runtime.powerState,summary.quickStats.overallCpuUsage,guest.ipAddress

step "register it as agent vc01 (the password is sealed; get never shows it)"
registry=(-d "$work/agents.db" --key-file "$work/agents.key")
$vpoller agent init "${registry[@]}"
$vpoller agent add "${registry[@]}" -H vc01 -U user --url "$url" --cacert "$work/vcsim.pem"
$vpoller agent get "${registry[@]}"

step "one method, no daemon: vm.get"
$vpoller call vm.get "${registry[@]}" -V vc01 -n DC0_H0_VM0 -p runtime.powerState,runtime.host

step "the daemon, and vpoller client as Zabbix would use it"
$vpoller daemon "${registry[@]}" --frontend tcp://127.0.0.1:21123 --mgmt tcp://127.0.0.1:21999 --log-level warn &
daemon_pid=$!
sleep 1
$vpoller client -e tcp://127.0.0.1:21123 -m vm.discover -V vc01 -H vpoller.helpers.zabbix
$vpoller client -e tcp://127.0.0.1:21123 -m vm.get -V vc01 -n DC0_H0_VM1 -p summary.quickStats.overallCpuUsage -H vpoller.helpers.zabbix
$vpoller client -e tcp://127.0.0.1:21123 -m vm.alarm.get -V vc01 -n DC0_H0_VM1
$vpoller daemon status -e tcp://127.0.0.1:21999
$vpoller daemon stop -e tcp://127.0.0.1:21999 >/dev/null
wait "$daemon_pid" 2>/dev/null || true
daemon_pid=
