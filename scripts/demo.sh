#!/usr/bin/env bash
# Builds vpoller and the simulator, starts a TLS simulator with a
# generated certificate, and collects a few VM properties from it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/vcsim/build.sh
cargo build --release --quiet
work=$(mktemp -d)
coproc SIM { exec target/vcsim/vcsim -tls -tls-cert-out "$work/vcsim.pem" -stdinexit 2>"$work/vcsim.log"; }
read -r url <&"${SIM[0]}"
trap 'kill $SIM_PID 2>/dev/null; rm -rf "$work"' EXIT
echo "simulator at $url" >&2
VPOLLER_PASSWORD=pass target/release/vpoller collect --url "$url" --user user \
  --cacert "$work/vcsim.pem" --type VirtualMachine \
  --properties name,runtime.powerState,summary.quickStats.overallCpuUsage,guest.ipAddress
