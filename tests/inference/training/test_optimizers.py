"""Optimizers by name: fused Adam takes Adam's steps, and resuming keeps this optimizer's kernel."""

from __future__ import annotations

import copy

import pytest
import torch
from pyro.optim.clipped_adam import ClippedAdam

from inference.training import OPTIMIZERS, adam, load_optimizer_state, make_optimizer
from pyro_vae.errors import ConfigError
from pyro_vae.spec import TrainSpec


def assert_same_adam_steps(opt_a, a, opt_b, b, steps):
    """Feed two optimizers over equal tensors the same random gradients; the tensors must stay equal
    to float rounding (Adam's update is elementwise, whichever kernel computes it)."""
    for _ in range(steps):
        for p, q in zip(a, b):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        opt_a.step()
        opt_b.step()
    for p, q in zip(a, b):
        assert torch.allclose(p, q, rtol=0, atol=1e-6)


def test_resuming_an_unfused_adam_state_keeps_fused_adam_and_its_steps():
    """A checkpoint written by unfused Adam (before svi.adam, or elsewhere) resumes into fused
    Adam: torch's load_state_dict alone would copy fused=None, and the steps must continue as
    the unfused optimizer's own would (Adam is elementwise: equal to float rounding)."""
    torch.manual_seed(0)
    a = [torch.randn(30, 20, requires_grad=True), torch.randn(20, requires_grad=True)]
    plain = torch.optim.Adam(a, lr=1e-2, foreach=False)
    for _ in range(5):
        for p in a:
            p.grad = torch.randn_like(p)
        plain.step()
    b = [t.detach().clone().requires_grad_() for t in a]
    resumed = adam(b, lr=1e-2)
    load_optimizer_state(resumed, copy.deepcopy(plain.state_dict()))  # as read back from a checkpoint
    assert resumed.param_groups[0]["fused"] is resumed.defaults["fused"]
    assert_same_adam_steps(plain, a, resumed, b, steps=5)


def test_adam_is_fused_and_follows_the_adam_update():
    """svi.adam uses torch's fused kernel (where this torch has it for CPU) and takes the same steps
    as the per-parameter implementation: Adam's update is elementwise, so they agree to float rounding."""
    torch.manual_seed(0)
    a = [torch.randn(30, 20, requires_grad=True), torch.randn(20, requires_grad=True)]
    b = [t.detach().clone().requires_grad_() for t in a]
    ours, plain = adam(a, lr=1e-2), torch.optim.Adam(b, lr=1e-2, foreach=False)
    fused_available = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)
    assert ours.defaults["fused"] is (True if fused_available else None)
    assert_same_adam_steps(ours, a, plain, b, steps=20)
    module = torch.nn.Linear(3, 2)
    assert make_optimizer(module, TrainSpec()).defaults["fused"] is ours.defaults["fused"]



def test_optimizers_are_registered_by_name_and_refuse_an_empty_parameter_list():
    assert OPTIMIZERS.names() == ["adam", "adamw", "clipped_adam"]
    clipped = make_optimizer(torch.nn.Linear(3, 2), TrainSpec(optimizer="clipped_adam", clip_norm=0.5))
    assert isinstance(clipped, ClippedAdam) and clipped.defaults["clip_norm"] == 0.5
    with pytest.raises(ConfigError, match="no trainable parameters"):
        make_optimizer([], TrainSpec())


@pytest.mark.parametrize("name", ["adam", "adamw", "clipped_adam"])
def test_weight_decay_enters_each_optimizer_as_its_docstring_says(name):
    """With a zero gradient Adam's own step is zero, so what moves theta is the weight decay alone.
    AdamW shrinks theta by exactly the fraction lr * lambda; Adam and ClippedAdam add lambda theta to the
    gradient, and Adam's first step on a gradient g is lr g / (|g| + eps), i.e. lr sign(theta)."""
    torch.manual_seed(0)
    theta = torch.randn(40, requires_grad=True)
    start = theta.detach().clone()
    lr, lam = 1e-2, 0.5
    optimizer = make_optimizer([theta], TrainSpec(optimizer=name, lr=lr, weight_decay=lam))
    theta.grad = torch.zeros_like(theta)
    optimizer.step()
    if name == "adamw":
        expected = start * (1 - lr * lam)
    else:
        g = lam * start
        expected = start - lr * g / (g.abs() + 1e-8)
    # ClippedAdam adds eps to sqrt(v) before the bias correction (eps / sqrt(1 - beta2) = 3e-7 in effect), so
    # theta near 0 moves by lr |g| / (|g| + 3e-7): 1e-5 is far below the step lr = 1e-2 being checked.
    assert torch.allclose(theta.detach(), expected, rtol=0, atol=1e-5)
    without = make_optimizer([start.clone().requires_grad_()], TrainSpec(optimizer=name, lr=lr))
    assert without.param_groups[0]["weight_decay"] == 0
