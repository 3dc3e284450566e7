#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, build the tiny random Phi-3.5-mini fixture,
# export it to an INT4 package, verify the package, then run the daemon in the foreground.
# In a second terminal: .venv/bin/edge-agent chat "Hello"   (Ctrl-C here stops the daemon)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
work=${EDGE_AGENT_DEMO_DIR:-$PWD/work/demo}
models="$work/models"
package="$models/phi-3.5-mini-tiny-int4"
mkdir -p "$models"
if [ ! -f "$package/edge-agent.json" ]; then
    edge-agent-export fixture --model phi-3.5-mini --size tiny --output "$work/phi-3.5-mini-tiny" --force
    edge-agent-export text --input "$work/phi-3.5-mini-tiny" --output "$package" --force
fi
edge-agent-export verify "$package" --reference "$work/phi-3.5-mini-tiny"
cat > "$work/edge-agent.toml" <<TOML
[models]
dir = "$models"
chat = "phi-3.5-mini-tiny-int4"
TOML
echo "demo: starting the daemon; in another terminal run: $PWD/.venv/bin/edge-agent chat \"Hello\"" >&2
exec edge-agent serve --config "$work/edge-agent.toml"
