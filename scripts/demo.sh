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
exec jupyterhub -f "$top/jupyterhub_config.py"
