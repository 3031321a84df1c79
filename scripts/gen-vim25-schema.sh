#!/usr/bin/env bash
# Regenerates src/vsphere/schema/vim25.types from Debian's govmomi sources
# (golang-github-vmware-govmomi-dev); see scripts/vim25-schema/main.go.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
types=/usr/share/gocode/src/github.com/vmware/govmomi/vim25/types
[ -d "$types" ] || { echo "missing $types: apt-get install golang-github-vmware-govmomi-dev" >&2; exit 1; }
GO111MODULE=off go run "$top/scripts/vim25-schema/main.go" "$types" > "$top/src/vsphere/schema/vim25.types.tmp"
mv "$top/src/vsphere/schema/vim25.types.tmp" "$top/src/vsphere/schema/vim25.types"
wc -l "$top/src/vsphere/schema/vim25.types"
