#!/usr/bin/env bash
# A whole folder in one run: every image in examples/images is upscaled 2x into OUTPUT/upscaled/,
# keeping its name and format. On a terminal a progress bar counts the images; the run ends
# with a summary line, and a bad input is reported without stopping the others.
# --skip-existing makes a re-run do only the images not done yet.
#
#   examples/batch_folder.sh [OUTPUT_FOLDER]     (default: a new temporary folder)
set -euo pipefail

images="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/images"
out="${1:-$(mktemp -d)}"
mkdir -p "$out/upscaled"

imgen sr --scale 2 --kind fidelity "$images" -o "$out/upscaled/" --skip-existing

echo "$out/upscaled"
