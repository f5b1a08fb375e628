#!/usr/bin/env bash
# A shell pipe of two built-in commands: clean up a JPEG, then upscale it 2x.
# Each step is its own process; the image travels between them as PNG bytes on the pipe
# (imgen reads stdin and writes stdout when given - or when it is piped).
#
#   examples/pipe_chain.sh [OUTPUT_FOLDER]     (default: a new temporary folder)
set -euo pipefail

images="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/images"
out="${1:-$(mktemp -d)}"
mkdir -p "$out"

imgen denoise - < "$images/friends.jpg" \
  | imgen sr --scale 2 --kind fidelity - > "$out/friends-denoise-sr.png"

echo "$out/friends-denoise-sr.png"
