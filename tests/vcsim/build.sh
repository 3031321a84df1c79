#!/usr/bin/env bash
# Builds the vcsim launcher from Debian's govmomi sources, in GOPATH mode,
# downloading nothing. Installs golang-go and golang-github-vmware-govmomi-dev
# when they are missing. Idempotent: a warm rebuild takes a few seconds.
#   VCSIM_OUT=/path/vcsim   where to put the binary (default: target/vcsim/vcsim)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${VCSIM_OUT:-$top/target/vcsim/vcsim}
gopath=/usr/share/gocode

if ! command -v go >/dev/null || [ ! -d "$gopath/src/github.com/vmware/govmomi/simulator" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq golang-go golang-github-vmware-govmomi-dev >/dev/null
fi

if [ -x "$out" ] && [ "$out" -nt "$here/main.go" ] && [ "$out" -nt "$0" ]; then
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/vpoller-vcsim" "$(dirname "$out")"
cp "$here/main.go" "$work/src/vpoller-vcsim/"
cd "$work/src/vpoller-vcsim"
GO111MODULE=off GOPATH="$work:$gopath" CGO_ENABLED=0 \
  go build -trimpath -o "$out.tmp" .
mv "$out.tmp" "$out"
echo "built $out" >&2
