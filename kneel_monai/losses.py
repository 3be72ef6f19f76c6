"""Landmark regression losses for KNEEL.

Every loss is a :class:`torch.nn.Module` whose ``forward(pred, target)`` takes two tensors of
shape ``(B, M, 2)`` (batch, landmarks, ``(x, y)``) holding coordinates normalised to ``[0, 1]``
and compares them **per coordinate**: the residual is ``pred - target`` element-wise, not a
Euclidean distance per landmark. ``reduction`` is ``"mean"`` (default, over all ``B*M*2``
values), ``"sum"`` or ``"none"`` (per-coordinate values of shape ``(B, M, 2)``), as in MONAI.

* :class:`WingLoss` - Feng et al., "Wing Loss for Robust Facial Landmark Localisation with
  Convolutional Neural Networks", CVPR 2018; the KNEEL default ``w=15, eps=3``.
* :class:`L1Loss`, :class:`L2Loss` (squared error), :class:`ElasticLoss` (``L2 + 0.5 L1``).
* :func:`general_robust_loss`, :func:`log_partition`, :class:`AdaptiveRobustLoss` - Barron,
  "A General and Adaptive Robust Loss Function", CVPR 2019.
* :func:`build_loss` - construct any of the above by name.

This module deliberately does not import MONAI (its import costs seconds); ``reduction`` also
accepts ``monai.utils.LossReduction`` members.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch.nn.modules.loss import _Loss

__all__ = [
    "WingLoss",
    "L1Loss",
    "L2Loss",
    "ElasticLoss",
    "AdaptiveRobustLoss",
    "general_robust_loss",
    "log_partition",
    "build_loss",
    "LOSS_NAMES",
]

_REDUCTIONS = ("none", "mean", "sum")


def _check_reduction(reduction) -> str:
    value = getattr(reduction, "value", reduction)  # accept monai.utils.LossReduction
    if value not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return value


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    """Raise if ``pred``/``target`` are not two floating tensors of one shape ``(B, M, 2)``."""
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got pred {tuple(pred.shape)} "
            f"and target {tuple(target.shape)}"
        )
    if pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(
            f"pred and target must have shape (B, M, 2) (batch, landmarks, (x, y)), "
            f"got {tuple(pred.shape)} (rank {pred.ndim})"
        )
    if not (pred.is_floating_point() and target.is_floating_point()):
        raise TypeError(
            f"pred and target must be floating point, got {pred.dtype} and {target.dtype}"
        )


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class _LandmarkLoss(_Loss):
    """Base class: validation, the residual and the reduction; subclasses map residual -> loss."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(reduction=_check_reduction(reduction))

    def elementwise(self, diff: torch.Tensor) -> torch.Tensor:
        """Loss per coordinate of the residual ``diff = pred - target``, same shape."""
        raise NotImplementedError

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            pred: predicted coordinates, shape ``(B, M, 2)``, normalised to ``[0, 1]``.
            target: ground-truth coordinates, same shape and units as ``pred``.

        Returns:
            a scalar, or per-coordinate values of shape ``(B, M, 2)`` with ``reduction="none"``.

        Raises:
            ValueError: when the shapes differ or are not ``(B, M, 2)``.
        """
        _check_pair(pred, target)
        return _reduce(self.elementwise(pred - target), self.reduction)


class WingLoss(_LandmarkLoss):
    """Wing loss (Feng et al., CVPR 2018), per coordinate residual ``x = pred - target``:

    ``wing(x) = w * ln(1 + |x| / eps)`` if ``|x| < w`` else ``|x| - C``,
    with ``C = w - w * ln(1 + w / eps)`` so that both pieces meet at ``|x| = w``.

    ``width`` (``w``) and ``curvature`` (``eps``) are in the units of the inputs. The defaults
    ``w=15, eps=3`` are those of the KNEEL paper; on coordinates normalised to ``[0, 1]`` every
    residual is far below ``w``, so the loss works in its logarithmic regime (scale inputs to
    pixels first to reach the linear one).

    Args:
        width: ``w > 0``, where the log part hands over to the linear part.
        curvature: ``eps > 0``, curvature of the log part (smaller is sharper).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
    """

    def __init__(
        self, width: float = 15.0, curvature: float = 3.0, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction=reduction)
        self.width = _check_positive("width", width)
        self.curvature = _check_positive("curvature", curvature)
        self.c = self.width - self.width * math.log1p(self.width / self.curvature)

    def elementwise(self, diff: torch.Tensor) -> torch.Tensor:
        # |x| has subgradient 0 at x == 0 in torch, so the gradient there is 0, not NaN
        a = diff.abs()
        return torch.where(a < self.width, self.width * torch.log1p(a / self.curvature), a - self.c)


class L1Loss(_LandmarkLoss):
    """Absolute error ``|pred - target|`` per coordinate, in normalised units.

    Args:
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
    """

    def elementwise(self, diff: torch.Tensor) -> torch.Tensor:
        return diff.abs()


class L2Loss(_LandmarkLoss):
    """**Squared** error ``(pred - target)**2`` per coordinate (mean squared error with the
    default reduction), in squared normalised units. Named "L2" as in the KNEEL paper's loss
    ablation; it is not the Euclidean distance.

    Args:
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
    """

    def elementwise(self, diff: torch.Tensor) -> torch.Tensor:
        return diff.square()


class ElasticLoss(_LandmarkLoss):
    """Elastic-net loss ``l2_weight * (pred - target)**2 + l1_weight * |pred - target|`` per
    coordinate. The defaults (``1.0``, ``0.5``) reproduce the original KNEEL release, which
    used ``MSE * 1 + L1 * (1 - 0.5)``.

    Args:
        l1_weight: weight ``>= 0`` of the absolute error.
        l2_weight: weight ``>= 0`` of the squared error.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
    """

    def __init__(
        self, l1_weight: float = 0.5, l2_weight: float = 1.0, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction=reduction)
        for name, value in (("l1_weight", l1_weight), ("l2_weight", l2_weight)):
            if not (math.isfinite(float(value)) and float(value) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        self.l1_weight = float(l1_weight)
        self.l2_weight = float(l2_weight)

    def elementwise(self, diff: torch.Tensor) -> torch.Tensor:
        return self.l2_weight * diff.square() + self.l1_weight * diff.abs()


# --------------------------------------------------------------------------------------------
# Barron's general and adaptive robust loss
# --------------------------------------------------------------------------------------------


def _max_exp(dtype: torch.dtype) -> float:
    """Largest argument whose ``exp`` stays comfortably finite in ``dtype``."""
    return math.log(torch.finfo(dtype).max) - 2.0


#: Taylor coefficients 1/(k+1)! of expm1(z)/z for k = 5..1; with |z| < 0.01 the truncation
#: error z^6/7! is below float64 resolution.
_EXPREL_SERIES = tuple(1.0 / math.factorial(k + 1) for k in range(5, 0, -1))


def _exprel(z: torch.Tensor) -> torch.Tensor:
    """``expm1(z) / z`` (1 at 0), with finite, accurate values and gradients everywhere."""
    small = z.abs() < 0.01
    # the double `where` keeps the unused branch's gradient finite (no 0 * inf)
    z_small = torch.where(small, z, 0.0)
    z_big = torch.where(small, 1.0, z)
    series = z_small * _EXPREL_SERIES[0]
    for coeff in _EXPREL_SERIES[1:]:
        series = (series + coeff) * z_small
    series = series + 1.0
    big = torch.expm1(torch.clamp_max(z_big, _max_exp(z.dtype))) / z_big
    return torch.where(small, series, big)


def _rho(
    x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor, infinite_alpha: bool = True
) -> torch.Tensor:
    """Barron's rho without argument checks; tensors broadcast against each other.
    ``infinite_alpha=False`` skips the alpha = +-inf cases (the adaptive loss never has them)."""
    y = (x / scale).square()
    # a finite stand-in where alpha is infinite (NaN still propagates)
    a = torch.where(torch.isinf(alpha), 1.0, alpha) if infinite_alpha else alpha
    beta = torch.clamp_min((a - 2).abs(), torch.finfo(y.dtype).eps)
    log_term = torch.log1p(y / beta)
    # |a-2|/a * ((y/|a-2| + 1)^(a/2) - 1) == beta * L/2 * exprel(a*L/2), L = log1p(y/beta):
    # no division by alpha, so alpha = 0 gives exactly log1p(y/2) with the right d/d(alpha)
    general = (0.5 * beta) * log_term * _exprel(0.5 * a * log_term)
    out = torch.where(alpha == 2, 0.5 * y, general)
    if not infinite_alpha:
        return out
    out = torch.where(alpha == -math.inf, -torch.expm1(-0.5 * y), out)
    pos_inf = torch.expm1(torch.clamp_max(0.5 * y, _max_exp(y.dtype)))
    return torch.where(alpha == math.inf, pos_inf, out)


def _as_tensor_like(value, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def general_robust_loss(
    x: torch.Tensor, alpha: torch.Tensor | float, scale: torch.Tensor | float
) -> torch.Tensor:
    """Barron's general robust loss ``rho(x, alpha, c)`` (CVPR 2019, eq. 1 and its limits):

    ``rho = |alpha-2|/alpha * (((x/c)^2 / |alpha-2| + 1)^(alpha/2) - 1)``, and the limits
    ``alpha=2: (x/c)^2 / 2``, ``alpha=0: log((x/c)^2 / 2 + 1)``,
    ``alpha=-inf: 1 - exp(-(x/c)^2 / 2)``, ``alpha=+inf: exp((x/c)^2 / 2) - 1``.

    Special cases: ``alpha=1`` is ``sqrt((x/c)^2 + 1) - 1`` (pseudo-Huber/Charbonnier),
    ``alpha=-2`` is ``2 (x/c)^2 / ((x/c)^2 + 4)`` (Geman-McClure).

    The formula is evaluated as ``beta * L/2 * expm1(alpha*L/2) / (alpha*L/2)`` with
    ``beta = max(|alpha-2|, machine eps)`` and ``L = log1p((x/c)^2 / beta)``, which is exact
    (not epsilon-shifted) at ``alpha=0``, accurate near it, and keeps values and gradients with
    respect to ``x``, ``alpha`` and ``scale`` finite everywhere, ``x=0`` included. Near
    ``alpha=2`` the true ``d rho / d alpha`` grows like ``log(1/|alpha-2|)``; at exactly
    ``alpha=2`` the closed form is used and its gradient with respect to ``alpha`` is 0.

    Args:
        x: residuals, any shape, in the units of ``scale``.
        alpha: shape parameter, float or tensor broadcastable against ``x`` (any real or +-inf).
        scale: ``c > 0``, float or tensor broadcastable against ``x``.

    Returns:
        the loss per element, of the broadcast shape of ``x``, ``alpha`` and ``scale``.
    """
    if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
        raise TypeError(f"x must be a floating point torch.Tensor, got {type(x).__name__}")
    alpha = _as_tensor_like(alpha, x)
    scale = _as_tensor_like(scale, x)
    if not bool(torch.all(scale > 0)):
        raise ValueError(f"scale must be > 0 everywhere, got min {scale.min().item()}")
    return _rho(x, alpha, scale)


#: Knots of the log Z(alpha) table: uniform in u with alpha = 2 sin^2(pi u / 2), dense at
#: both ends where log Z varies fastest (near 2 it behaves like (2-alpha) log(2-alpha)).
_LOGZ_KNOTS = 513


def _log_partition_quad(alpha: float) -> float:
    """float64 ``log Z(alpha)`` for ``alpha`` in ``[0, 2]`` by adaptive quadrature."""
    from scipy.integrate import quad

    # exp(-rho(x, alpha, 1)) with the closed forms at the ends; one closure per alpha keeps
    # the integrand to a single Python call (the table has 513 integrals)
    if alpha == 2.0:

        def density(x: float) -> float:
            return math.exp(-0.5 * x * x)

    elif alpha == 0.0:

        def density(x: float) -> float:
            return 1.0 / (1.0 + 0.5 * x * x)

    else:
        beta, k, half_alpha = 2.0 - alpha, (2.0 - alpha) / alpha, 0.5 * alpha

        def density(x: float) -> float:
            return math.exp(-k * math.expm1(half_alpha * math.log1p(x * x / beta)))

    half, _ = quad(density, 0.0, math.inf, epsabs=1e-13, epsrel=1e-12, limit=500)
    return math.log(2.0 * half)  # the integrand is even


@functools.lru_cache(maxsize=1)
def _log_partition_table() -> torch.Tensor:
    """Cubic-spline coefficients of log Z over the u grid, float64, shape ``(K, 4)``, computed
    once; row i holds ``(a, b, c, d)`` of ``a t^3 + b t^2 + c t + d``, ``t = u - u_i``."""
    n = _LOGZ_KNOTS
    h = 1.0 / (n - 1)
    u = np.linspace(0.0, 1.0, n)
    alphas = 2.0 * np.sin(0.5 * np.pi * u) ** 2
    alphas[0], alphas[-1] = 0.0, 2.0
    y = np.array([_log_partition_quad(float(a)) for a in alphas])
    # clamped spline (zero slope at both ends): d alpha / du = 0 there while d log Z / d alpha
    # grows only like log(1 / (2 - alpha)), so d log Z / du is exactly 0 at both ends
    system = np.diag(np.full(n - 2, 4.0)) + np.diag(np.ones(n - 3), 1) + np.diag(np.ones(n - 3), -1)
    slopes = np.zeros(n)
    slopes[1:-1] = np.linalg.solve(system, 3.0 * (y[2:] - y[:-2]) / h)
    secant = np.diff(y) / h
    m0, m1 = slopes[:-1], slopes[1:]
    cubic = (m0 + m1 - 2 * secant) / h**2
    quadratic = (3 * secant - 2 * m0 - m1) / h
    coeffs = np.stack([cubic, quadratic, m0, y[:-1]], axis=1)
    return torch.from_numpy(coeffs)


def _interp_log_partition(alpha: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Differentiable spline lookup of log Z; ``alpha`` is assumed to lie in ``[0, 2]``."""
    coeffs = coeffs.to(dtype=alpha.dtype, device=alpha.device)
    k = coeffs.shape[0]
    tiny = torch.finfo(alpha.dtype).tiny
    # u = (2/pi) asin(sqrt(alpha/2)), via atan2 to stay accurate at both ends
    u = (2 / math.pi) * torch.atan2(
        torch.sqrt(torch.clamp_min(alpha, tiny)), torch.sqrt(torch.clamp_min(2 - alpha, tiny))
    )
    idx = torch.clamp(torch.floor(u.detach() * k), 0, k - 1)
    t = u - idx / k
    c = coeffs[idx.long()]
    return ((c[..., 0] * t + c[..., 1]) * t + c[..., 2]) * t + c[..., 3]


def log_partition(alpha: torch.Tensor | float) -> torch.Tensor:
    """``log Z(alpha)``, ``Z(alpha) = integral of exp(-rho(x, alpha, 1)) dx`` over the real line.

    Tabulated once (lazily) by adaptive quadrature on 513 values of ``alpha`` in ``[0, 2]`` and
    interpolated with a cubic spline (absolute error below 1e-6); differentiable with respect
    to ``alpha``. Known values: ``Z(0) = pi sqrt(2)``, ``Z(1) = 2 e K1(1)``, ``Z(2) = sqrt(2 pi)``.
    ``d log Z / d alpha`` is finite on ``(0, 2)`` but grows like ``log(1 / (2 - alpha))`` near 2;
    at exactly ``alpha = 0`` or ``2`` (the ends of the table) the returned gradient is 0.

    Args:
        alpha: tensor (any shape) or float, in ``[0, 2]`` (outside it Z is infinite or the
            adaptive loss is not defined by Barron).

    Returns:
        ``log Z`` of the shape and floating dtype of ``alpha``.
    """
    if not isinstance(alpha, torch.Tensor) or not alpha.is_floating_point():
        alpha = torch.as_tensor(alpha, dtype=torch.get_default_dtype())
    if not bool(torch.all((alpha >= 0) & (alpha <= 2))):
        raise ValueError(
            f"log_partition needs alpha in [0, 2], got values in "
            f"[{alpha.min().item()}, {alpha.max().item()}]"
        )
    return _interp_log_partition(alpha, _log_partition_table())


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class AdaptiveRobustLoss(_Loss):
    """Barron's adaptive robust loss (CVPR 2019): the negative log-likelihood

    ``nll(x) = rho(x, alpha, c) + log(c) + log Z(alpha)``

    of the residual ``x = pred - target`` under the density ``exp(-rho(x/c, alpha, 1)) / (c Z)``,
    with one learnable shape ``alpha`` and scale ``c`` per flattened coordinate
    (``num_dims = M * 2``). ``alpha = sigmoid(latent) * (alpha_hi - alpha_lo) + alpha_lo`` and
    ``c = softplus(latent) + scale_lo``. Add the module's parameters to the optimiser.

    ``alpha=2`` is a Gaussian, ``alpha=0`` a Cauchy-like density; a heavy-tailed residual
    distribution drives ``alpha`` down, making the loss more robust to outliers.

    Args:
        num_dims: number of coordinates per sample, ``M * 2``.
        alpha_lo: lower bound of ``alpha``, in ``[0, 2]``.
        alpha_hi: upper bound of ``alpha``, in ``[alpha_lo, 2]``; ``alpha_hi == alpha_lo``
            fixes ``alpha``.
        alpha_init: initial ``alpha`` in ``(alpha_lo, alpha_hi)``; default the midpoint.
        scale_lo: lower bound ``> 0`` of ``c``, in normalised coordinate units.
        scale_init: initial ``c >= scale_lo``, in normalised coordinate units;
            ``scale_init == scale_lo`` fixes ``c``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per coordinate, ``(B, M, 2)``).
    """

    def __init__(
        self,
        num_dims: int,
        alpha_lo: float = 0.001,
        alpha_hi: float = 1.999,
        alpha_init: float | None = None,
        scale_lo: float = 1e-5,
        scale_init: float = 1.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction=_check_reduction(reduction))
        if isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims < 1:
            raise ValueError(f"num_dims must be a positive int (M * 2), got {num_dims!r}")
        if not 0 <= alpha_lo <= alpha_hi <= 2:
            raise ValueError(
                f"need 0 <= alpha_lo <= alpha_hi <= 2, got alpha_lo={alpha_lo}, alpha_hi={alpha_hi}"
            )
        scale_lo = _check_positive("scale_lo", scale_lo)
        if not (math.isfinite(scale_init) and scale_init >= scale_lo):
            raise ValueError(
                f"scale_init must be finite and >= scale_lo={scale_lo}, got {scale_init}"
            )
        self.num_dims = num_dims
        self.alpha_lo, self.alpha_hi = float(alpha_lo), float(alpha_hi)
        self.scale_lo = scale_lo
        dtype = torch.get_default_dtype()

        if alpha_lo == alpha_hi:
            if alpha_init is not None and alpha_init != alpha_lo:
                raise ValueError(
                    f"alpha is fixed at {alpha_lo} (alpha_lo == alpha_hi), "
                    f"got alpha_init={alpha_init}"
                )
            self.register_parameter("latent_alpha", None)
            fixed_alpha = torch.full((num_dims,), self.alpha_lo, dtype=dtype)
            self.register_buffer("fixed_alpha", fixed_alpha, persistent=False)
        else:
            if alpha_init is None:
                alpha_init = 0.5 * (alpha_lo + alpha_hi)
            if not alpha_lo < alpha_init < alpha_hi:
                raise ValueError(
                    f"alpha_init must lie strictly in ({alpha_lo}, {alpha_hi}), got {alpha_init}"
                )
            p = (alpha_init - alpha_lo) / (alpha_hi - alpha_lo)
            latent = math.log(p / (1 - p))
            self.latent_alpha = torch.nn.Parameter(torch.full((num_dims,), latent, dtype=dtype))

        if scale_init == scale_lo:
            self.register_parameter("latent_scale", None)
            fixed_scale = torch.full((num_dims,), scale_lo, dtype=dtype)
            self.register_buffer("fixed_scale", fixed_scale, persistent=False)
        else:
            latent = _inv_softplus(scale_init - scale_lo)
            self.latent_scale = torch.nn.Parameter(torch.full((num_dims,), latent, dtype=dtype))

        coeffs = _log_partition_table().to(dtype=dtype, copy=True)
        self.register_buffer("logz_coeffs", coeffs, persistent=False)

    def alpha(self) -> torch.Tensor:
        """Current shape parameters, shape ``(num_dims,)``, in ``[alpha_lo, alpha_hi]``."""
        if self.latent_alpha is None:
            return self.fixed_alpha
        return torch.sigmoid(self.latent_alpha) * (self.alpha_hi - self.alpha_lo) + self.alpha_lo

    def scale(self) -> torch.Tensor:
        """Current scales ``c``, shape ``(num_dims,)``, ``>= scale_lo``, normalised units."""
        if self.latent_scale is None:
            return self.fixed_scale
        return torch.nn.functional.softplus(self.latent_scale) + self.scale_lo

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            pred: predicted coordinates, shape ``(B, M, 2)`` with ``M * 2 == num_dims``.
            target: ground-truth coordinates, same shape and units as ``pred``.

        Returns:
            the NLL (in nats), a scalar, or of shape ``(B, M, 2)`` with ``reduction="none"``.
        """
        _check_pair(pred, target)
        b, m, _ = pred.shape
        if m * 2 != self.num_dims:
            raise ValueError(
                f"AdaptiveRobustLoss was built for num_dims={self.num_dims} coordinates, "
                f"got input of shape {tuple(pred.shape)} ({m * 2} coordinates)"
            )
        alpha, scale = self.alpha(), self.scale()
        dtype = torch.promote_types(pred.dtype, alpha.dtype)
        alpha, scale = alpha.to(dtype), scale.to(dtype)
        x = (pred - target).to(dtype).reshape(b, self.num_dims)
        log_z = _interp_log_partition(alpha, self.logz_coeffs)
        nll = _rho(x, alpha, scale, infinite_alpha=False) + torch.log(scale) + log_z
        return _reduce(nll.reshape(b, m, 2), self.reduction)


#: Names accepted by :func:`build_loss`.
LOSS_NAMES: tuple[str, ...] = ("wing", "l1", "l2", "elastic", "robust", "adaptive")

_LOSSES = {
    "wing": WingLoss,
    "l1": L1Loss,
    "l2": L2Loss,
    "elastic": ElasticLoss,
    "robust": AdaptiveRobustLoss,
    "adaptive": AdaptiveRobustLoss,
}


def build_loss(name: str, **kwargs) -> torch.nn.Module:
    """Build a landmark loss by name (case-insensitive), passing ``kwargs`` to its constructor.

    Names: ``"wing"``, ``"l1"``, ``"l2"``, ``"elastic"``, ``"robust"`` / ``"adaptive"`` (these
    two need ``num_dims=M * 2``).
    """
    key = str(name).strip().lower()
    if key not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSS_NAMES)}")
    if _LOSSES[key] is AdaptiveRobustLoss and "num_dims" not in kwargs:
        raise ValueError(
            f"loss {name!r} needs num_dims=M * 2 (the number of coordinates per sample)"
        )
    return _LOSSES[key](**kwargs)
