#!/usr/bin/env bash
# The main job, end to end on a fresh machine: set up, build the tiny random Phi-3.5-mini
# fixture, export it to an INT4 onnxruntime-genai package, and verify the package
# (hashes, tokenizer vectors, chat format, generation, logits against PyTorch).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
work=${EDGE_AGENT_DEMO_DIR:-work/demo}
mkdir -p "$work"
edge-agent-export fixture --model phi-3.5-mini --size tiny --output "$work/phi-3.5-mini-tiny" --force
edge-agent-export text --input "$work/phi-3.5-mini-tiny" --output "$work/phi-3.5-mini-tiny-int4" --force
edge-agent-export verify "$work/phi-3.5-mini-tiny-int4" --reference "$work/phi-3.5-mini-tiny"
