#!/usr/bin/env bash
# Makes the Python environment the compatibility tests use: vPoller 0.7.3's
# own vpoller-client, pyzmq for raw sockets, and prometheus_client for its
# exposition-format parser. Idempotent.
set -euo pipefail
venv=${1:?usage: setup.sh VENV_DIR}
if [ -x "$venv/bin/vpoller-client" ] && "$venv/bin/python" -c "import zmq, prometheus_client" 2>/dev/null; then
  exit 0
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check vpoller==0.7.3 pyzmq prometheus_client
