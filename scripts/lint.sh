#!/usr/bin/env bash
# Static checks: ruff (style, imports, likely bugs) and mypy (types), as configured in
# pyproject.toml. Sets up .venv first if needed; CI runs this before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check edge_agent export tests bench
.venv/bin/mypy
