#!/usr/bin/env bash
# Installs the Debian package on this machine and uses it as an admin
# would, from outside the source tree, against a simulator; then removes and
# purges it. Needs root (CI runs it; scripts/test.sh does when
# VPOLLER_PACKAGE_TEST=1).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
[ "$(id -u)" = 0 ] || { echo "package test: needs root" >&2; exit 1; }
bash scripts/package.sh --profile dev >/dev/null
deb=$(ls -t target/debian/vpoller_*.deb | head -1)
bash tests/vcsim/build.sh
work=$(mktemp -d)
coproc SIM { exec "$top/target/vcsim/vcsim" -stdinexit 2>/dev/null; }
read -r url <&"${SIM[0]}"
cleanup() { kill "$SIM_PID" 2>/dev/null || true; dpkg -P vpoller >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "package test: $*" >&2; exit 1; }

dpkg -i "$deb" >/dev/null
cd /
[ -x /usr/bin/vpoller ] || fail "no /usr/bin/vpoller"
getent passwd vpoller >/dev/null || fail "no vpoller user"
[ "$(stat -c '%U %a' /var/lib/vpoller)" = "vpoller 700" ] || fail "/var/lib/vpoller is not vpoller's, 0700"
[ "$(stat -c '%U %a' /etc/vpoller/agents.key)" = "vpoller 600" ] || fail "the key is not vpoller's, 0600"
dpkg-query -W -f='${Conffiles}\n' vpoller | grep -q /etc/vpoller/vpoller.conf || fail "vpoller.conf is not a conffile"
listed=$(/usr/bin/vpoller methods list)
[ "$(grep -c /usr/share/vpoller/methods <<<"$listed")" -ge 53 ] || fail "methods do not come from /usr/share/vpoller/methods: $listed"
as_vpoller() { runuser -u vpoller -- env VPOLLER_PASSWORD=pass /usr/bin/vpoller "$@"; }
as_vpoller agent add -H vcsim -U user --url "$url" >/dev/null
reply=$(as_vpoller call vm.get -V vcsim -n DC0_H0_VM0 -p runtime.powerState)
grep -q '"runtime.powerState": *"poweredOn"' <<<"$reply" || fail "vm.get through the installed package: $reply"
if command -v systemd-analyze >/dev/null; then
  for unit in /lib/systemd/system/vpoller-*.service; do
    systemd-analyze verify "$unit" 2>&1 | grep -v "^$" && fail "systemd-analyze verify $unit" || true
  done
fi
man -w vpoller-daemon >/dev/null 2>&1 || [ -f /usr/share/man/man1/vpoller-daemon.1.gz ] || fail "no man page"
dpkg -r vpoller >/dev/null
[ ! -e /usr/bin/vpoller ] || fail "the binary is still there after removal"
[ -e /etc/vpoller/vpoller.conf ] || fail "removal took the conffile (only purge should)"
dpkg -P vpoller >/dev/null
[ ! -e /etc/vpoller/vpoller.conf ] && [ ! -e /var/lib/vpoller ] || fail "purge left configuration or state"
echo "package test: installed, used, removed and purged $(basename "$deb")"
