#!/usr/bin/env bash
# Builds the Debian package (cargo-deb) into target/debian/: the binary, the
# configuration as a conffile, the built-in methods, the systemd units, and
# the completions and man pages generated from the command's own
# definitions. `--profile dev` packages the debug build (what CI installs
# to test the package; releases use the default release profile).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
if [ "${1:-}" = "--profile" ]; then profile=${2:?--profile NAME}; shift 2; fi
command -v cargo-deb >/dev/null || cargo install cargo-deb --version 3.8.0 --locked
if [ "$profile" = dev ]; then cargo build --quiet; bin=target/debug/vpoller; else cargo build --release --quiet; bin=target/release/vpoller; fi
rm -rf target/package-assets && mkdir -p target/package-assets/man
"$bin" generate completions bash > target/package-assets/vpoller.bash
"$bin" generate man target/package-assets/man >/dev/null
cargo deb --no-build --profile "$profile" "$@" 2>&1 | tail -1
