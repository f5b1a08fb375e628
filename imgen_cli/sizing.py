"""Output size and strength, for every command and chain: `--width`, `--height`, `--fit WxH`, `--blend`.

The host adds these options to every plugin command (`options.step_params`), the chain parser
turns them into each step's `blend` and `size` (`chain.StepSpec`), and the engine applies them, so
the CLI, the Python API, `imgen serve`, `imgen --server` and `imgen ray` all take them from the same
chain string.

Size. Wherever it is written in a chain, the size applies to the chain's output:
- `--width W`: W pixels wide, the height following the aspect ratio (`--height H` likewise);
- `--width W --height H`: exactly W x H, the aspect ratio not kept;
- `--fit WxH`: the largest size inside the box that keeps the aspect ratio (enlarging or shrinking).
A step that can choose its model's scale (`sr` without `--scale`, `--outscale` or `--model`, see
`Command.models_by_scale`) runs the smallest scale that reaches the target, or its largest when
none does; the chain's output is then resized to the target, antialiased when shrinking.

Blend. Each step mixes its own result with its own input: `out = input + blend * (result - input)`,
the input resized (bicubic) to the result's size when the step changes the size. 1 is the plain
result, 0 the (resized) input, exactly.

Like the rest of the host package, torch is imported only when pixels are touched.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_SIDE = 65535  # the largest side JPEG and TIFF readers commonly accept; a typo's guard


@dataclass(frozen=True)
class Target:
    """The output size asked for: `width` and/or `height`, or with `fit` a box for both."""

    width: int | None = None
    height: int | None = None
    fit: bool = False

    def resolve(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the output for an input of `height` x `width` pixels."""
        if self.fit:
            factor = min(self.width / width, self.height / height)
            return (min(self.height, max(1, _round(height * factor))), min(self.width, max(1, _round(width * factor))))
        if self.width and self.height:
            return self.height, self.width
        if self.width:
            return max(1, _round(height * self.width / width)), self.width
        return self.height, max(1, _round(width * self.height / height))

    def __str__(self) -> str:
        if self.fit:
            return f"--fit {self.width}x{self.height}"
        return " ".join(f"--{name} {value}" for name, value in (("width", self.width), ("height", self.height))
                        if value)


def _round(value: float) -> int:
    return int(value + 0.5)


def target(width: int | None, height: int | None, fit: tuple[int, int] | None) -> Target | None:
    """The Target of one step's options, or None; a usage error when they contradict."""
    from .errors import UsageError

    if fit is not None:
        if width or height:
            raise UsageError("--fit and --width/--height contradict each other (--fit keeps the aspect ratio "
                             "inside a box; --width with --height gives an exact size)")
        return Target(fit[0], fit[1], fit=True)
    if width or height:
        return Target(width, height)
    return None


def choose_scale(scales, size: tuple[int, int], goal: tuple[int, int]) -> int:
    """The smallest of `scales` that brings `size` (h, w) to at least `goal` (h, w), else the largest."""
    reaching = [s for s in sorted(scales) if size[0] * s >= goal[0] and size[1] * s >= goal[1]]
    return reaching[0] if reaching else max(scales)


# -- pixels -------------------------------------------------------------------------------------------


class Mix:
    """Rows of `input + weight * (result - input)` for a step whose input is `x` (N, C, H, W).

    The input is brought to the result's size by bicubic resampling: for a whole-number factor
    (the common upscaler case) row by row from a slice of the input, so no full-size copy of the
    resized input is held; for any other factor it is resized once, whole.
    """

    def __init__(self, x, weight: float):
        self.x, self.weight = x, float(weight)
        self._whole = None

    def __call__(self, row: int, band, size: tuple[int, int]):
        """`band` (N, C, rows, W) of the result, starting at `row` of a result of `size` (h, w)."""
        import torch

        source = self.rows(row, band.shape[-2], size).to(band.device)
        return torch.lerp(source, band.clamp(0, 1), self.weight)

    def rows(self, row: int, rows: int, size: tuple[int, int]):
        from .filters import resize

        height, width = self.x.shape[-2:]
        if tuple(size) == (height, width):
            return self.x[..., row:row + rows, :]
        factor = size[0] // height
        if factor >= 1 and tuple(size) == (height * factor, width * factor):
            # Bicubic reaches 2 input pixels each side: a slice with a margin of 3 gives exactly
            # the rows the whole image's resize would, the image's own edges included.
            first, last = max(0, row // factor - 3), min(height, -(-(row + rows) // factor) + 3)
            part = resize(self.x[..., first:last, :], ((last - first) * factor, width * factor))
            start = row - first * factor
            return part[..., start:start + rows, :]
        if self._whole is None or tuple(self._whole.shape[-2:]) != tuple(size):
            self._whole = resize(self.x, size)
        return self._whole[..., row:row + rows, :]


class Resampler:
    """Resizes an image arriving in row bands to `size` (h, w), with bounded memory.

    Separable: each band is resized across (rows are independent there) as it arrives, into an
    intermediate of the input's height and the output's width; `columns` then resizes that down
    (or up) in bands of columns. Bicubic, antialiased when shrinking (torch's, as
    `imgen_cli.resize`). Neither the full-size input nor a full-size float output is ever held.
    """

    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)
        self.mid = None

    def open(self, size: tuple[int, int]) -> None:
        self.size_in = tuple(size)
        self.mid = None

    def write(self, row: int, band) -> None:
        import torch

        if self.mid is None:
            self.mid = torch.empty((*band.shape[:2], self.size_in[0], self.size[1]), device=band.device)
        self.mid[..., row:row + band.shape[-2], :] = _resize(band, (band.shape[-2], self.size[1]))

    def columns(self, step: int = 0):
        """(start column, (N, C, h, columns) band) of the output, left to right."""
        width = self.size[1]
        step = step or max(1, (1 << 24) // max(1, self.mid.shape[1] * (self.size_in[0] + self.size[0])))
        for start in range(0, width, step):
            yield start, _resize(self.mid[..., start:start + step], (self.size[0], min(step, width - start)))


def _resize(x, size):
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x.float(), size=tuple(size), mode="bicubic", align_corners=False, antialias=shrink)
