r"""The M2 model of semi-supervised learning (Kingma, Rezende, Mohamed & Welling 2014) as a Pyro program.

Generative model, for datapoints i = 1..N (``pyro.plate("data", N)``), C classes::

    y_i ~ Cat(pi)                                site "y"  (pi = 1/C; observed when row i is labelled)
    z_i ~ p(z)                                   site "z"  (prior, independent of y)
    x_i | y_i, z_i ~ p_theta(x | eta = f_theta(z_i, onehot(y_i)))   site "x" (likelihood, decoder)

Recognition model (the guide)::

    y_i | x_i ~ q_phi(y | x_i) = Cat(softmax(h_phi(x_i)))        site "y"  (the classifier; only when unlabelled)
    z_i | x_i, y_i ~ q_phi(z | x_i, y_i) = family(g_phi(x_i, onehot(y_i)))   site "z"

For a labelled row the bound is

    -L(x, y) = E_{q(z|x,y)}[log p_theta(x | y, z) + log p(y) + log p(z) - log q_phi(z | x, y)] <= log p(x, y),

for an unlabelled row, with y summed out exactly (enumerated, never sampled),

    -U(x) = sum_y q_phi(y | x) (-L(x, y)) + H(q_phi(y | x)) <= log p(x),

and the training objective adds the classification term on the labelled rows

    J^alpha = sum_labelled L(x, y) + sum_unlabelled U(x) - alpha sum_labelled log q_phi(y | x)

(alpha = 0.1 N by default, N the number of training rows). ``model(x)`` / ``guide(x)`` without
``y`` are the unlabelled program (y latent); ``model(x, y)`` / ``guide(x, y)`` the labelled one.
Enumeration is switched on by the objective (``config_enumerate`` in
:mod:`inference.objectives.enum`), so the same program also runs under any other estimator
(the guide then samples y). Networks take y as a one-hot vector appended to their input (an
``mlp`` splits its first layer, W [x; onehot(y)] = W_x x + W_y onehot(y), so x passes it once per row
rather than once per enumerated class: :func:`through`); the prior, likelihood, networks and
guide family come from the registries as for the VAE. KL annealing (beta < 1) scales the z site
only, as in the VAE; the label's terms stay unscaled.
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyro_vae.checks import integer, positive_float, positive_int
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.guides import GUIDES
from pyro_vae.likelihoods import LIKELIHOODS
from pyro_vae.networks import MLP, NETWORKS
from pyro_vae.plates import data_plate
from pyro_vae.priors import PRIORS
from pyro_vae.programs import PROGRAMS, check_build_args
from pyro_vae.rng import seeded
from pyro_vae.registry import BuildContext
from pyro_vae.spec import ModelSpec, as_section
from pyro_vae.vae import VAE, _kl_weight  # the same shape check and KL weight as the VAE


def joined(a: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """[a, onehot] along the last dimension, the leading dimensions broadcast (enumerated y has shape (C, 1, C))."""
    shape = torch.broadcast_shapes(a.shape[:-1], onehot.shape[:-1])
    return torch.cat([a.expand(*shape, a.shape[-1]), onehot.expand(*shape, onehot.shape[-1])], dim=-1)


def through(network: nn.Module, a: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """network([a, onehot]), leading dimensions broadcast. An :class:`~pyro_vae.networks.MLP` takes the two parts
    apart (``network(a, onehot)``: a passes its first layer at a's own batch shape, once per row rather than once
    per enumerated class); any other network gets the concatenation :func:`joined`. Both go through the module's
    call, so hooks and mixed precision apply."""
    if isinstance(network, MLP):
        return network(a, onehot)
    return network(joined(a, onehot))


class M2(nn.Module):
    """p(y) p(z) p_theta(x | y, z) with q_phi(y | x) q_phi(z | x, y); see the module docstring for the math.

    As a program it takes batches with the named tensor ``x`` (:attr:`inputs`); ``y`` is an
    optional keyword of model and guide that makes the label site observed. Its per-datapoint
    latent sites (when unlabelled) are ``y`` and ``z`` (:attr:`latents`).
    """

    inputs = ("x",)
    latents = ("y", "z")
    labels = "y"  # the keyword that observes the class (semi-supervised training passes it for labelled rows)

    def __init__(self, prior: nn.Module, likelihood: nn.Module, classifier: nn.Module, encoder: nn.Module,
                 decoder: nn.Module, family: nn.Module, *, num_classes: int, latent_dim: int, data_dim: int,
                 alpha: float | None = None, image_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.prior, self.likelihood, self.family = prior, likelihood, family
        self.classifier, self.encoder, self.decoder = classifier, encoder, decoder
        self.num_classes, self.latent_dim, self.data_dim = num_classes, latent_dim, data_dim
        self.alpha, self.image_shape = alpha, image_shape
        self.register_buffer("class_logits", torch.full((num_classes,), -torch.log(torch.tensor(float(num_classes)))))

    # -- the densities, as plain functions of tensors ---------------------------------
    def onehot(self, y: torch.Tensor) -> torch.Tensor:
        """onehot(y) as floats, shape y.shape + (C,)."""
        return F.one_hot(y.long(), self.num_classes).to(self.class_logits.dtype)

    def classes(self) -> torch.Tensor:
        """0, 1, ..., C-1 on the program's device."""
        return torch.arange(self.num_classes, device=self.class_logits.device)

    def class_prior(self) -> dist.Categorical:
        """p(y) = Cat(pi), pi = 1/C."""
        return dist.Categorical(logits=self.class_logits)

    def classify(self, x: torch.Tensor) -> dist.Categorical:
        """q_phi(y | x), batch_shape x.shape[:-1]."""
        return dist.Categorical(logits=self.classifier(x))

    def posterior_given(self, x: torch.Tensor, y: torch.Tensor) -> dist.Distribution:
        """q_phi(z | x, y), batch_shape the broadcast of x.shape[:-1] and y.shape."""
        return self.family(through(self.encoder, x, self.onehot(y)))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        """p_theta(x | y, z), batch_shape the broadcast of z.shape[:-1] and y.shape; for ``y=None`` the label
        summed out, p(x | z) = sum_y pi_y p_theta(x | y, z) (a mixture, batch_shape z.shape[:-1])."""
        if y is not None:
            return self.likelihood(through(self.decoder, z, self.onehot(y)))
        per_class = self.likelihood(through(self.decoder, z.unsqueeze(-2), self.onehot(self.classes())))
        pi = dist.Categorical(logits=self.class_logits.expand(*z.shape[:-1], self.num_classes))
        return dist.MixtureSameFamily(pi, per_class)

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        """q_phi(z | x) = sum_y q_phi(y | x) q_phi(z | x, y), summarized by the diagonal Gaussian of its mean and variance.

        mean = sum_y q(y|x) mu_y;  var = sum_y q(y|x) (var_y + mu_y^2) - mean^2 (law of total variance);
        batch_shape x.shape[:-1] (what the latent-space figures and active units read).
        """
        ys = self.classes().reshape(-1, *([1] * (x.dim() - 1)))  # (C, 1...)
        comp = self.posterior_given(x, ys)  # batch (C, B...)
        w = self.classify(x).probs.movedim(-1, 0).unsqueeze(-1)  # (C, B..., 1)
        mean = (w * comp.mean).sum(0)
        var = (w * (comp.variance + comp.mean ** 2)).sum(0) - mean ** 2
        return dist.Normal(mean, var.clamp_min(1e-12).sqrt()).to_event(1)

    # -- the Pyro program ---------------------------------------------------------------
    def model(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None, *, num_data: int | None = None,
              beta: float = 1.0, num_samples: int | None = None) -> torch.Tensor:
        """y ~ Cat(pi) (observed when given); z ~ p(z); x ~ p_theta(x | y, z). With ``x=None`` draws ``num_samples`` rows."""
        batch = x.shape[0] if x is not None else (y.shape[0] if y is not None else num_samples)
        if batch is None:
            raise ValueError("model(x=None) needs num_samples (or y), the number of datapoints to generate")
        with data_plate(batch, num_data):
            y = pyro.sample("y", self.class_prior(), obs=y)
            with _kl_weight(beta):
                z = pyro.sample("z", self.prior())
            return pyro.sample("x", self.decode(z, y), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, *, num_data: int | None = None,
              beta: float = 1.0, num_samples: int | None = None) -> torch.Tensor:
        """y ~ q_phi(y | x) unless observed; z ~ q_phi(z | x, y)."""
        with data_plate(x.shape[0], num_data):
            if y is None:
                y = pyro.sample("y", self.classify(x))
            with _kl_weight(beta):
                return pyro.sample("z", self.posterior_given(x, y))

    # -- conveniences ---------------------------------------------------------------------
    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        """Refuse data of the wrong shape or outside the likelihood's support (DataError), as the VAE does."""
        VAE.check_data(self, x, name)

    def check_labels(self, y: torch.Tensor, n: int, name: str = "labels") -> None:
        """Refuse labels that are not n integers in 0..C-1 (DataError naming the first bad one)."""
        if not torch.is_tensor(y) or y.shape != (n,) or y.is_floating_point():
            raise DataError(f"{name} must be an integer tensor of shape ({n},), got "
                            f"{tuple(y.shape) if torch.is_tensor(y) else type(y).__name__}")
        bad = (y < 0) | (y >= self.num_classes)
        if bool(bad.any()):
            raise DataError(f"{name} holds the label {int(y[bad][0])}, outside this model's {self.num_classes} classes "
                            f"0..{self.num_classes - 1}; build it with program option classes >= {int(y.max()) + 1}")

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = True, y: torch.Tensor | None = None) -> torch.Tensor:
        """n draws x ~ p_theta(x | y, z), z ~ p(z), y ~ Cat(pi) (or the given classes); ``mean``: E[x | y, z] instead."""
        n = positive_int("n", n)
        y = self.class_prior().sample((n,)) if y is None else y
        px = self.decode(self.prior().sample((n,)), y)
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | y*, z*] with y* = argmax q(y | x) and z* = E_q[z | x, y*]."""
        y = self.classify(x).probs.argmax(-1)
        return self.decode(self.posterior_given(x, y).mean, y).mean

    @torch.no_grad()
    def analogies(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | y = c, z = E_q[z | x, y*]] for every row and class: the style of each row under every class, (N, C, D)."""
        y = self.classify(x).probs.argmax(-1)
        z = self.posterior_given(x, y).mean  # (N, d)
        ys = self.classes()
        return self.decode(z[:, None, :], ys[None, :]).mean

    def analytic_kl(self) -> bool:
        """False: estimator B uses closed forms site by site where torch registers them (z), Monte Carlo otherwise."""
        return False


def _check_widened_input(part: str, name: str, network: nn.Module, width: int, classes: int) -> None:
    """ConfigError when a network cannot take M2's inputs with onehot(y) appended (e.g. a conv net wants images)."""
    try:
        with torch.no_grad():
            network(torch.zeros(1, width))
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"model.{part} {name!r} cannot take M2's {width} inputs (its usual input plus onehot(y), "
                          f"{classes} more values): {str(err).splitlines()[0][:120]}; use model.{part}: mlp") from err


@PROGRAMS.register("m2")
def m2_program(spec: ModelSpec, *, data_dim: int, image_shape: tuple[int, ...] | None = None,
               data_sample: torch.Tensor | None = None, seed: int | None = None,
               classes: int = 10, alpha: float | None = None) -> M2:
    """M2 (Kingma et al. 2014): y ~ Cat(pi), z ~ p(z), x ~ p_theta(x | y, z); q(y | x), q(z | x, y).

    ``classes``: the number of classes C; ``alpha``: weight of the classification term
    alpha * sum_labelled log q(y | x) (None: 0.1 N, N the training rows).
    """
    return build_m2(spec, data_dim=data_dim, image_shape=image_shape, data_sample=data_sample, seed=seed,
                    classes=classes, alpha=alpha)


def build_m2(spec: ModelSpec | Any = None, *, data_dim: int, image_shape: tuple[int, ...] | None = None,
             data_sample: torch.Tensor | None = None, seed: int | None = None, classes: int = 10,
             alpha: float | None = None, **overrides: Any) -> M2:
    """Build a fresh M2 from a model spec: the classifier is the spec's encoder network with C outputs,
    the encoder of q(z | x, y) and the decoder take onehot(y) appended to their input."""
    spec = as_section(ModelSpec, spec, "model spec", **overrides)
    check_build_args(data_dim, image_shape, data_sample, seed)
    classes = integer("model.program classes", classes, minimum=2)
    if alpha is not None:
        positive_float("model.program alpha", alpha)
    with seeded(seed):  # the weights drawn from seed; the caller's torch RNG untouched
        d = spec.latent_dim
        ctx = BuildContext(d, data_dim, image_shape, data_sample=data_sample)
        family = GUIDES.build(spec.guide.name, d, context=ctx, **spec.guide.options)
        likelihood = LIKELIHOODS.build(spec.likelihood.name, data_dim, context=ctx, **spec.likelihood.options)
        enc = ctx.with_role("encoder")
        classifier = NETWORKS.build(spec.encoder.name, data_dim, classes, context=enc, **spec.encoder.options)
        encoder = NETWORKS.build(spec.encoder.name, data_dim + classes, family.param_size, context=enc, **spec.encoder.options)
        decoder = NETWORKS.build(spec.decoder.name, d + classes, likelihood.params_per_feature * data_dim,
                                 context=ctx.with_role("decoder"), **spec.decoder.options)
        for part, net, width in (("encoder", encoder, data_dim + classes), ("decoder", decoder, d + classes)):
            _check_widened_input(part, getattr(spec, part).name, net, width, classes)
        prior = PRIORS.build(spec.prior.name, d, context=ctx, **spec.prior.options)
        return M2(prior, likelihood, classifier, encoder, decoder, family, num_classes=classes, latent_dim=d,
                  data_dim=data_dim, alpha=alpha, image_shape=image_shape)


__all__ = ["M2", "m2_program", "build_m2", "joined", "through"]
