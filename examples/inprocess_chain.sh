#!/usr/bin/env bash
# The same two steps as pipe_chain.sh, chained with + in one process: the model of each step is
# loaded once and the image stays in memory (on the GPU, when there is one) between steps.
#
#   examples/inprocess_chain.sh [OUTPUT_FOLDER]     (default: a new temporary folder)
set -euo pipefail

images="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/images"
out="${1:-$(mktemp -d)}"
mkdir -p "$out"

# Each step takes its own options; shared ones (-o, --device, ...) may go in any step.
imgen denoise + sr --scale 2 --kind fidelity "$images/friends.jpg" -o "$out/friends-denoise-sr.png"

echo "$out/friends-denoise-sr.png"
