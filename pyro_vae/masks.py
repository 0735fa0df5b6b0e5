r"""Masks and pooling for data completion: which pixels of a datapoint are observed, and its low-resolution view.

A mask is a boolean tensor of shape (D,) over the flattened datapoint, **True where the pixel is
observed** (the condition c) and False where it is missing (the part y to complete). Image masks
act on the last two axes of ``image_shape`` ((H, W) or (C, H, W)); every channel gets the same
spatial mask.

- ``quadrants`` with ``observed`` = 1, 2 or 3 (the convention of Pyro's CVAE tutorial): 1 observes
  the bottom-left quadrant, 2 adds the top-left (the left half), 3 adds the top-right (all but the
  bottom-right). The quadrants split rows at H // 2 and columns at W // 2.
- ``random`` with a missing ``fraction`` f: exactly round(f D) pixels missing, chosen uniformly by
  a seeded permutation (the same seed gives the same mask).
- ``center``: the central block of rows H//4 .. H//4 + ceil(H/2) and the same for columns is missing.
- ``rows`` with a missing ``fraction`` f: the bottom round(f H) rows are missing.

A mask that hides nothing or everything is refused (nothing to complete, or nothing to condition
on). Average pooling by a factor f in {2, 4} maps an image (H, W) to (H/f, W/f),

    pool(x)[i, j] = (1 / f^2) sum_{a, b < f} x[f i + a, f j + b],

and needs f to divide H and W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from pyro_vae.checks import choice, fraction as check_fraction, got, integer, seed as check_seed
from pyro_vae.errors import ConfigError, DataError

MASKS = ("quadrants", "random", "center", "rows")
FACTORS = (2, 4)


def _image_hw(image_shape: Sequence[int] | None, what: str) -> tuple[int, int, int]:
    """(C, H, W) of ``image_shape``; DataError naming ``what`` for non-image data."""
    if image_shape is None or len(image_shape) not in (2, 3):
        raise DataError(f"{what} needs image data with an image_shape (H, W) or (C, H, W), got image_shape="
                        f"{None if image_shape is None else tuple(image_shape)}; use mask 'random' for non-image data")
    shape = tuple(int(s) for s in image_shape)
    return (1, *shape) if len(shape) == 2 else shape  # type: ignore[return-value]


def _spatial(image_shape: Sequence[int], keep: torch.Tensor) -> torch.Tensor:
    """The (H, W) boolean map ``keep`` repeated over channels and flattened to (C*H*W,)."""
    c, _, _ = _image_hw(image_shape, "a mask")
    return keep.unsqueeze(0).expand(c, *keep.shape).reshape(-1).clone()


def quadrant_mask(image_shape: Sequence[int] | None, observed: int) -> torch.Tensor:
    """Observed = 1: bottom-left quadrant; 2: the left half; 3: all but the bottom-right (Pyro's CVAE tutorial)."""
    _, h, w = _image_hw(image_shape, "mask 'quadrants'")
    observed = integer("observed (number of observed quadrants)", observed, minimum=1, maximum=3)
    if h < 2 or w < 2:
        raise DataError(f"mask 'quadrants' needs images of at least 2 x 2 pixels, got {h} x {w}")
    keep = torch.zeros(h, w, dtype=torch.bool)
    keep[h // 2:, : w // 2] = True  # bottom-left
    if observed >= 2:
        keep[: h // 2, : w // 2] = True  # top-left
    if observed == 3:
        keep[: h // 2, w // 2:] = True  # top-right
    return _spatial(image_shape, keep)


def random_mask(data_dim: int, fraction: float, seed: int = 0) -> torch.Tensor:
    """round(fraction * D) missing features chosen uniformly by a permutation seeded with ``seed``."""
    integer("data_dim", data_dim, minimum=1)
    f = check_fraction("fraction (missing share of the features)", fraction)
    check_seed("seed", seed)
    missing = round(f * data_dim)
    perm = torch.randperm(data_dim, generator=torch.Generator().manual_seed(int(seed)))
    keep = torch.ones(data_dim, dtype=torch.bool)
    keep[perm[:missing]] = False
    return check_mask(keep, f"mask 'random' with fraction {f}")


def center_mask(image_shape: Sequence[int] | None) -> torch.Tensor:
    """The central block rows H//4 .. H//4 + ceil(H/2) (and likewise columns) missing."""
    _, h, w = _image_hw(image_shape, "mask 'center'")
    keep = torch.ones(h, w, dtype=torch.bool)
    keep[h // 4: h // 4 + math.ceil(h / 2), w // 4: w // 4 + math.ceil(w / 2)] = False
    return _spatial(image_shape, keep)


def rows_mask(image_shape: Sequence[int] | None, fraction: float = 0.5) -> torch.Tensor:
    """The bottom round(fraction * H) rows missing."""
    _, h, w = _image_hw(image_shape, "mask 'rows'")
    f = check_fraction("fraction (missing share of the rows)", fraction)
    keep = torch.ones(h, w, dtype=torch.bool)
    keep[h - round(f * h):] = False
    return check_mask(_spatial(image_shape, keep), f"mask 'rows' with fraction {f} on {h} rows")


def check_mask(mask: torch.Tensor, what: str = "mask") -> torch.Tensor:
    """``mask`` if it is boolean and observes some but not all features, else ConfigError naming ``what``."""
    if not torch.is_tensor(mask) or mask.dtype != torch.bool:
        raise ConfigError(f"{what} must be a boolean tensor (True = observed), {got(mask)}")
    observed = int(mask.sum())
    if observed == 0:
        raise ConfigError(f"{what} hides every feature: there is nothing to condition on; observe some features "
                          "(a smaller missing fraction, or more observed quadrants)")
    if observed == mask.numel():
        raise ConfigError(f"{what} hides nothing: there is nothing to complete; hide some features "
                          "(a larger missing fraction, or fewer observed quadrants)")
    return mask


@dataclass(frozen=True)
class MaskSpec:
    """A mask by name: ``kind`` in MASKS, ``observed`` quadrants, missing ``fraction``, ``seed`` of a random mask."""

    kind: str = "quadrants"
    observed: int = 1
    fraction: float = 0.5
    seed: int = 0

    def build(self, data_dim: int, image_shape: Sequence[int] | None) -> torch.Tensor:
        """The (D,) boolean mask (True = observed) for data of ``data_dim`` features and ``image_shape``."""
        kind = choice("mask", self.kind, MASKS)
        if kind == "quadrants":
            mask = quadrant_mask(image_shape, self.observed)
        elif kind == "random":
            mask = random_mask(data_dim, self.fraction, self.seed)
        elif kind == "center":
            mask = center_mask(image_shape)
        else:
            mask = rows_mask(image_shape, self.fraction)
        if mask.numel() != data_dim:
            raise DataError(f"image_shape {tuple(image_shape or ())} has {mask.numel()} pixels but the data have "
                            f"{data_dim} features; give the shape of one datapoint")
        return check_mask(mask, f"mask {kind!r}")


def check_factor(image_shape: Sequence[int] | None, factor: int) -> int:
    """``factor`` if it is 2 or 4 and divides the image's height and width, else ConfigError/DataError."""
    if isinstance(factor, bool) or factor not in FACTORS:
        raise ConfigError(f"factor={factor!r} is not valid; choose one of: {', '.join(map(str, FACTORS))}")
    _, h, w = _image_hw(image_shape, f"pooling by factor {factor}")
    if h % factor or w % factor:
        raise DataError(f"factor {factor} does not divide the image size {h} x {w}; choose a factor that divides "
                        f"both (e.g. {' or '.join(str(f) for f in FACTORS if h % f == 0 and w % f == 0) or 'none fits'})")
    return factor


def average_pool(x: torch.Tensor, image_shape: Sequence[int], factor: int) -> torch.Tensor:
    """pool(x): rows (..., C*H*W) -> (..., C*(H/f)*(W/f)), each output the mean of an f x f block (module docstring)."""
    c, h, w = _image_hw(image_shape, "average pooling")
    factor = check_factor(image_shape, factor)
    lead = x.shape[:-1]
    blocks = x.reshape(*lead, c, h // factor, factor, w // factor, factor)
    return blocks.mean(dim=(-1, -3)).reshape(*lead, -1)


def pooled_shape(image_shape: Sequence[int], factor: int) -> tuple[int, ...]:
    """The image shape after average pooling by ``factor``."""
    c, h, w = _image_hw(image_shape, "average pooling")
    factor = check_factor(image_shape, factor)
    small = (h // factor, w // factor)
    return small if len(image_shape) == 2 else (c, *small)


def parse_mask(text: str) -> tuple[str, MaskSpec | int]:
    """A command-line mask: ``quadrants:N``, ``random:F``, ``center``, ``rows:F`` -> ("inpaint", MaskSpec);
    ``downsample:F`` -> ("superres", F). ConfigError naming the forms otherwise."""
    forms = "quadrants:1|2|3, random:FRACTION, center, rows:FRACTION or downsample:2|4"
    if not isinstance(text, str) or not text:
        raise ConfigError(f"--mask must be one of {forms}, {got(text)}")
    kind, _, arg = text.partition(":")
    try:
        if kind == "downsample":
            return "superres", int(arg)
        if kind == "quadrants":
            return "inpaint", MaskSpec("quadrants", observed=int(arg))
        if kind in ("random", "rows"):
            return "inpaint", MaskSpec(kind, fraction=float(arg))
        if kind == "center" and not arg:
            return "inpaint", MaskSpec("center")
    except ValueError:
        pass
    raise ConfigError(f"--mask {text!r} is not valid; use one of {forms}")


__all__ = [
    "MASKS", "FACTORS", "MaskSpec", "quadrant_mask", "random_mask", "center_mask", "rows_mask", "check_mask",
    "check_factor", "average_pool", "pooled_shape", "parse_mask",
]
