#!/usr/bin/env bash
# Create .venv with edge-agent, its export tools and test tools. Idempotent: does nothing
# when .venv already matches pyproject.toml. torch is installed first and pinned, because
# an unpinned torch resolves to a multi-GB CUDA build; override with TORCH_SPEC if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
stamp=.venv/.edge-agent-setup
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $TORCH_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "setup: creating .venv (torch, onnxruntime-genai, transformers, ...); this takes a few minutes" >&2
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".[export,dev]"
echo "$want" > "$stamp"
echo "setup: done" >&2
