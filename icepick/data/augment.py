"""Training augmentation on the device, chosen by image size, and drawn once per epoch from a seed.

* ``pad_crop`` (images smaller than 64 pixels on their shorter side; the published CIFAR
  recipe): zero-pad by an eighth of the shorter side (4 pixels at 32x32, 28x28 and 8 at 64)
  and take a random crop of the original size; then a horizontal flip with probability 1/2
  when the data set suits it.
* ``random_resized_crop`` (64 pixels and more; as torchvision's classification references
  train): a random box of 8% to 100% of the image's area and aspect ratio 3/4 to 4/3, resized
  back to the image's size (bilinear), and the flip. torchvision draws a box up to ten times
  until it fits the image; here each image's box is drawn once and clipped to the image.

Both work on a whole batch at once (no per-image Python loop, no PIL) and every random number
comes from the epoch's ``torch.Generator``, so an epoch is a function of the seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "AUGMENTATIONS",
    "RRC_SCALE",
    "RRC_RATIO",
    "LARGE_IMAGE",
    "default_augmentation",
    "crop_padding",
    "describe",
    "draw",
    "apply",
]

AUGMENTATIONS = ("pad_crop", "random_resized_crop")
RRC_SCALE = (0.08, 1.0)  # share of the image's area a random box covers (torchvision's default)
RRC_RATIO = (3 / 4, 4 / 3)  # its aspect ratio
LARGE_IMAGE = 64  # from this shorter side on, random_resized_crop


def default_augmentation(height: int, width: int) -> str:
    """The augmentation that suits images of this size: ``pad_crop`` below 64 pixels, else ``random_resized_crop``."""
    return "pad_crop" if min(height, width) < LARGE_IMAGE else "random_resized_crop"


def crop_padding(height: int, width: int) -> int:
    """``pad_crop``'s zero padding: an eighth of the shorter side, at least one pixel (4 at 32x32)."""
    return max(1, round(min(height, width) / 8))


def describe(kind: str, height: int, width: int, flip: bool) -> dict[str, object]:
    """The augmentation as recorded in a manifest and in every run's record."""
    if kind == "pad_crop":
        out: dict[str, object] = {"kind": kind, "padding": crop_padding(height, width)}
    else:
        out = {"kind": kind, "scale": list(RRC_SCALE), "ratio": [round(r, 6) for r in RRC_RATIO]}
    out["flip"] = bool(flip)
    return out


def draw(kind: str, n: int, height: int, width: int, flip: bool, gen: torch.Generator,
         device: torch.device) -> dict[str, torch.Tensor]:
    """Every random number of one epoch's augmentation of ``n`` images, drawn up front (so they
    do not depend on the batch size). Flips are drawn even when they do not suit the data set
    (then all False), so the crops do not depend on it."""
    if kind == "pad_crop":
        pad = crop_padding(height, width)
        offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=gen, device=device)
        flips = torch.randint(0, 2, (n,), generator=gen, device=device).bool()
        params = {"oy": offsets[0], "ox": offsets[1]}
    else:
        u = torch.rand(4, n, generator=gen, device=device, dtype=torch.float64)
        flips = torch.randint(0, 2, (n,), generator=gen, device=device).bool()
        area = height * width * (RRC_SCALE[0] + (RRC_SCALE[1] - RRC_SCALE[0]) * u[0])
        log_lo, log_hi = math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * u[1])
        w = torch.sqrt(area * ratio).clamp(1.0, float(width))
        h = torch.sqrt(area / ratio).clamp(1.0, float(height))
        params = {"w": w, "h": h, "x0": (width - w) * u[2], "y0": (height - h) * u[3]}
    if not flip:
        flips.zero_()
    params["flip"] = flips
    return params


def apply(kind: str, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Augment a batch: uint8 ``[B, C, H, W]`` in, uint8 (``pad_crop``) or float 0..255
    (``random_resized_crop``) of the same shape out. ``params``: this batch's slice of :func:`draw`."""
    if kind == "pad_crop":
        return _pad_crop(images, params["oy"], params["ox"], params["flip"])
    return _resized_crop(images, params["x0"], params["y0"], params["w"], params["h"], params["flip"])


def _pad_crop(images: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Per-image random crop of the zero-padded image, and horizontal flip, as one gather.

    ``oy``, ``ox`` in ``[0, 2 * pad]`` are the crop's top-left corner in the padded image.
    """
    b, c, height, width = images.shape
    pad = crop_padding(height, width)
    padded = images.new_zeros(b, c, height + 2 * pad, width + 2 * pad)
    padded[:, :, pad : pad + height, pad : pad + width] = images
    rows = oy[:, None] + torch.arange(height, device=images.device)  # [B, H]
    ar = torch.arange(width, device=images.device)
    cols = torch.where(flip[:, None], ox[:, None] + (width - 1) - ar, ox[:, None] + ar)  # [B, W]
    bi = torch.arange(b, device=images.device)[:, None, None, None]
    ci = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def _resized_crop(images: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, w: torch.Tensor, h: torch.Tensor,
                  flip: torch.Tensor) -> torch.Tensor:
    """Crop each image to its box (pixel-edge coordinates) and resize it to the image's size,
    bilinear, through one ``grid_sample`` (an affine map per image; a flip negates its x scale)."""
    b, _, height, width = images.shape
    scale_x = (w / width) * torch.where(flip, -1.0, 1.0).to(w.dtype)
    shift_x = (2 * x0 + w) / width - 1
    scale_y = h / height
    shift_y = (2 * y0 + h) / height - 1
    theta = torch.zeros(b, 2, 3, dtype=torch.float32, device=images.device)
    theta[:, 0, 0], theta[:, 0, 2] = scale_x.float(), shift_x.float()
    theta[:, 1, 1], theta[:, 1, 2] = scale_y.float(), shift_y.float()
    grid = F.affine_grid(theta, [b, images.shape[1], height, width], align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
