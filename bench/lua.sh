#!/usr/bin/env bash
# The Lua layer's cost per call against the same call's vSphere round trip,
# on a simulator started here. Prints ratios; see bench/lua_overhead.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/vcsim/build.sh
cargo build --release --quiet --example lua_overhead
coproc SIM { exec target/vcsim/vcsim -stdinexit 2>/dev/null; }
read -r url <&"${SIM[0]}"
trap 'kill $SIM_PID 2>/dev/null' EXIT
target/release/examples/lua_overhead "$url" "${1:-2000}"
