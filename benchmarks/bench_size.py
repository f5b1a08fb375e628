"""Peak memory and time of the final resize (--width, --fit) and of --blend on a 4000x3000 image.

    python benchmarks/bench_size.py        # prints a table; about three minutes on 2 busy cores

Uses the test-suite plugin command `tinyup` (a small x2 network, tests/plugins/imgen_test_tiny.py),
so the numbers are the host's: the step streams its rows through the banded resize
(sizing.Resampler) and the blend (sizing.Mix) into the output array. For scale: a full-size float
copy of the 8000x6000 output, which neither holds, would be 576 MB. Not part of the test suite.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench_host import peak_memory

from imgen_cli import io as imgio
from imgen_cli.testing import natural_image

RUNS = [
    ("plain x2 (8000x6000)", []),
    ("--width 2000 (shrink)", ["--width", "2000"]),
    ("--fit 10000x10000 (enlarge)", ["--fit", "10000x10000"]),
    ("--blend 0.5", ["--blend", "0.5"]),
]


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "big.png"
        source.write_bytes(imgio.encode(imgio.Picture(natural_image(3000, 4000), "png"), "png")[0])
        print(f"{'tinyup on 4000x3000':32} {'peak RSS':>9} {'seconds':>8}")
        for label, args in RUNS:
            gb, seconds = peak_memory(["tinyup", *args, str(source), "-o", str(Path(folder) / "out.bmp"),
                                       "--overwrite", "-q"])
            print(f"{label:32} {gb:7.2f} GB {seconds:8.1f}")


if __name__ == "__main__":
    sys.exit(main())
