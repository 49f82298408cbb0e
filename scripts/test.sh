#!/usr/bin/env bash
# Run the whole test suite: installs what it needs first (scripts/setup.sh), then
#   - ruff over the code,
#   - unit tests (pure logic, no daemon),
#   - integration tests (real Docker engine, real jupyterhub, loopback only),
#   - browser tests (headless Debian chromium driven by Playwright, on 127.0.0.1).
# Extra arguments go to pytest, e.g. scripts/test.sh -k persistence
# The tests run in DS01_TEST_WORKERS pytest-xdist workers (default 2; 0 runs them in this process),
# one test module per worker at a time (--dist loadfile: a module's hub is never shared across
# workers); most of an integration test's time is spent waiting for a hub, a container or a culler
# cycle, so two workers overlap those waits on a 2-core machine.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/setup.sh --browser
.venv/bin/ruff check ds01spawner tests benchmarks harness jupyterhub_config.py
workers=${DS01_TEST_WORKERS:-2}
xdist=()
if [ "$workers" != 0 ]; then
    xdist=(-n "$workers" --dist loadfile)
fi
exec .venv/bin/python -m pytest -ra --durations=20 "${xdist[@]}" "$@"
