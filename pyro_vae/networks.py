r"""Encoder and decoder networks.

A network factory builds a ``torch.nn.Module`` mapping ``(..., in_dim) -> (..., out_dim)``.
As an encoder g_phi it maps a flattened datapoint x (in_dim = D) to the guide family's raw
parameters; as a decoder f_theta it maps z (in_dim = latent_dim) to the likelihood's raw
parameters (out_dim = params_per_feature * D). ``context.role`` says which.

Registered networks (``NETWORKS.names()``):

- ``mlp``: h_0 = input, h_l = act(W_l h_{l-1} + b_l) for each hidden width, output = W h_L + b.
- ``conv``: a small convolutional pair for images (needs ``image_shape``): as an encoder,
  stride-2 convolutions then a linear layer; as a decoder, a linear layer, upsampling to the
  image size and convolutions (exact output size for any H x W).
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
from torch import nn

from pyro_vae.checks import positive_ints
from pyro_vae.errors import ConfigError
from pyro_vae.registry import BuildContext, Registry

NETWORKS: Registry[nn.Module] = Registry("network")

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
}


def activation(name: str) -> nn.Module:
    """The activation module called ``name``; unknown names list the valid ones."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown activation {name!r} (network option activation); valid activations are: {', '.join(sorted(ACTIVATIONS))}"
        ) from None


def _widths(hidden: Sequence[int] | int, what: str, *, at_least_one: bool = False) -> list[int]:
    """The layer widths ``hidden`` (one int or a list) as a list of positive integers, else ConfigError."""
    one = isinstance(hidden, int) and not isinstance(hidden, bool)
    return positive_ints(what, [hidden] if one else hidden, at_least_one=at_least_one)


class MLP(nn.Sequential):
    """x -> act(W_1 x + b_1) -> ... -> W_out h_L + b_out (the last layer is linear)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int], act: str = "relu") -> None:
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), activation(act)]
            width = h
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)

    def forward(self, *parts: torch.Tensor) -> torch.Tensor:
        r"""The network on one input, or on the concatenation [p_1; ...; p_k] of several ``parts`` (last
        dimension, leading dimensions broadcast) without building it. The first layer is linear, so

            W_1 [p_1; ...; p_k] + b_1 = W_1^(1) p_1 + ... + W_1^(k) p_k + b_1     (W_1 split by columns),

        and each part meets the first layer at its own batch shape: M2 passes x once per row, not once per
        enumerated class. Equal to ``self(torch.cat(broadcast parts, -1))`` up to floating-point rounding.
        """
        if len(parts) == 1:
            return super().forward(parts[0])
        first = self[0]
        widths = [p.shape[-1] for p in parts]
        if sum(widths) != first.in_features:
            raise ValueError(f"MLP: the parts have {sum(widths)} features in all ({widths}), "
                             f"the first layer takes {first.in_features}")
        weights = first.weight.split(widths, dim=1)
        h = nn.functional.linear(parts[0], weights[0], first.bias)  # each term in the layer's own dtype (autocast)
        for weight, part in zip(weights[1:], parts[1:]):
            h = h + nn.functional.linear(part, weight)
        for layer in itertools.islice(self, 1, None):
            h = layer(h)
        return h


def _chw(image_shape: tuple[int, ...] | None) -> tuple[int, int, int]:
    if image_shape is None or len(image_shape) not in (2, 3):
        raise ConfigError(
            f"the 'conv' network needs image data with image_shape (H, W) or (C, H, W), got {image_shape}; "
            "use the 'mlp' network for non-image data"
        )
    return (1, *image_shape) if len(image_shape) == 2 else tuple(image_shape)  # type: ignore[return-value]


class ConvEncoder(nn.Module):
    """x (flattened C*H*W) -> stride-2 convs -> flatten -> linear -> out_dim."""

    def __init__(self, chw: tuple[int, int, int], out_dim: int, channels: Sequence[int], act: str) -> None:
        super().__init__()
        self.chw = chw
        layers: list[nn.Module] = []
        c, h, w = chw
        for ch in channels:
            layers += [nn.Conv2d(c, ch, 3, stride=2, padding=1), activation(act)]
            c, h, w = ch, math.ceil(h / 2), math.ceil(w / 2)
        self.conv = nn.Sequential(*layers)
        self.head = nn.Linear(c * h * w, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-1]
        h = self.conv(x.reshape(-1, *self.chw))
        return self.head(h.flatten(1)).reshape(*batch, -1)


class ConvDecoder(nn.Module):
    """z -> linear -> (C_0, H/4, W/4) -> [upsample x2, conv]... -> resize to (k*C, H, W) -> flatten."""

    def __init__(self, in_dim: int, chw: tuple[int, int, int], out_channels: int, channels: Sequence[int], act: str) -> None:
        super().__init__()
        c, h, w = chw
        n_up = len(channels)
        self.start = (channels[-1], max(1, math.ceil(h / 2**n_up)), max(1, math.ceil(w / 2**n_up)))
        self.size = (h, w)
        self.linear = nn.Linear(in_dim, math.prod(self.start))
        layers: list[nn.Module] = [activation(act)]
        width = channels[-1]
        for ch in reversed(channels):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, ch, 3, padding=1), activation(act)]
            width = ch
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        h = self.body(self.linear(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start))
        h = nn.functional.interpolate(h, size=self.size, mode="nearest") if h.shape[-2:] != self.size else h
        return self.out(h).reshape(*batch, -1)


@NETWORKS.register("mlp")
def mlp(
    in_dim: int,
    out_dim: int,
    *,
    context: BuildContext,
    hidden: Sequence[int] | int = (200, 200),
    activation: str = "relu",
) -> nn.Module:
    """Multi-layer perceptron with the given hidden widths and activation."""
    return MLP(in_dim, out_dim, _widths(hidden, "mlp network: hidden widths"), activation)


@NETWORKS.register("conv")
def conv(
    in_dim: int,
    out_dim: int,
    *,
    context: BuildContext,
    channels: Sequence[int] = (32, 64),
    activation: str = "relu",
) -> nn.Module:
    """Small convolutional encoder/decoder pair for images (stride-2 convs / upsampling)."""
    chw = _chw(context.image_shape)
    chans = _widths(channels, "conv network: channels", at_least_one=True)
    if context.role == "encoder":
        return ConvEncoder(chw, out_dim, chans, activation)
    if context.role == "decoder":
        d = math.prod(chw)
        if out_dim % d:
            raise ConfigError(f"conv decoder: output size {out_dim} is not a multiple of the image size {d}")
        return ConvDecoder(in_dim, chw, (out_dim // d) * chw[0], chans, activation)
    raise ConfigError(f"conv network: role must be 'encoder' or 'decoder', got {context.role!r}")
