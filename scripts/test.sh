#!/usr/bin/env bash
# Everything the tests need, then the tests: the vcsim launcher (installs Go
# and govmomi from Debian when missing), formatting, lints, and cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/vcsim/build.sh
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets "$@"
# The Debian package, installed on this machine, used and purged (root only;
# CI sets this).
if [ "${VPOLLER_PACKAGE_TEST:-0}" = 1 ]; then
  bash scripts/package-test.sh
fi
