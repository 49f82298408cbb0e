#!/usr/bin/env bash
# Run the whole test suite: installs what it needs first (scripts/setup.sh), then
#   - ruff over the code,
#   - unit tests (pure logic, no daemon),
#   - integration tests (real Docker engine, real jupyterhub, loopback only),
#   - browser tests (headless Debian chromium driven by Playwright, on 127.0.0.1).
# Extra arguments go to pytest, e.g. scripts/test.sh -k persistence
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/setup.sh --browser
.venv/bin/ruff check ds01spawner tests benchmarks jupyterhub_config.py
exec .venv/bin/python -m pytest -ra "$@"
