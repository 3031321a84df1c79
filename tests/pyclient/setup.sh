#!/usr/bin/env bash
# Makes the Python environment the compatibility tests use: vPoller 0.7.3's
# own vpoller-client, and pyzmq for raw sockets. Idempotent.
set -euo pipefail
venv=${1:?usage: setup.sh VENV_DIR}
if [ -x "$venv/bin/vpoller-client" ] && "$venv/bin/python" -c "import zmq" 2>/dev/null; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check vpoller==0.7.3 pyzmq
