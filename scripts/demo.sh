#!/usr/bin/env bash
# Run the demo: JupyterHub with the DS01 spawner on http://127.0.0.1:8000.
# Installs what it needs first (scripts/setup.sh). Log in as alice, bob or admin, password ds01-demo.
# State (database, workspaces) lives in ./.ds01; delete that folder to start over.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/setup.sh
echo "[ds01 demo] open http://127.0.0.1:${DS01_HUB_PORT:-8000}/ and log in as alice / ds01-demo"
export PATH="$top/.venv/bin:$PATH"
# A hub that crashes (killed by a signal other than Ctrl-C / SIGTERM) is started again, as the
# systemd unit in docs/security-availability.md does in production; servers keep running.
while true; do
  rc=0
  jupyterhub -f "$top/jupyterhub_config.py" || rc=$?
  if [ "$rc" -lt 128 ] || [ "$rc" -eq 130 ] || [ "$rc" -eq 143 ]; then exit "$rc"; fi
  echo "[ds01 demo] the hub died (exit $rc; trace in .ds01/hub-crash.log): restarting in 2 s" >&2
  sleep 2
done
