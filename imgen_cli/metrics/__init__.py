"""Image quality metrics: full-reference PSNR, SSIM and MS-SSIM, and no-reference NIQE.

Pure numpy and scipy, no weights downloaded. `imgen metrics` is the command-line front end
(imgen_cli/metrics_cli.py); the conventions are in each module's docstring and docs/metrics.md.

    from imgen_cli.metrics import psnr, ssim
    psnr(reference, output, channel="y", crop_border=4)   # numpy arrays, uint8/uint16/float 0..1
"""

from .fullref import crop, data_range_of, ms_ssim, prepare, psnr, rgb_to_y, ssim
from .niqe import NiqeParams, fit_niqe, load_params, niqe, patch_features

__all__ = ["crop", "data_range_of", "fit_niqe", "load_params", "ms_ssim", "niqe", "NiqeParams",
           "patch_features", "prepare", "psnr", "rgb_to_y", "ssim"]
