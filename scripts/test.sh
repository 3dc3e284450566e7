#!/usr/bin/env bash
# The test suite, on a fresh machine too: sets up .venv if needed, then runs pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k verify`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
