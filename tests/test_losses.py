"""Tests for kneel_monai.losses: hand-computed values, limits, gradients, log Z, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.special import k1

from kneel_monai.losses import (
    LOSS_NAMES,
    AdaptiveRobustLoss,
    ElasticLoss,
    L1Loss,
    L2Loss,
    WingLoss,
    build_loss,
    general_robust_loss,
    log_partition,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: intra-op threads only add wake-up latency (up to ~10 ms per
    transcendental op on a busy 2-core machine), which made the training test take 20+ s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pair(residuals, dtype=torch.float64):
    """(pred, target) of shape (1, M, 2) whose per-coordinate residual is `residuals`."""
    r = torch.as_tensor(residuals, dtype=dtype).reshape(1, -1, 2)
    target = torch.full_like(r, 0.25)
    return target + r, target


def _naive_rho(x, alpha, c=1.0):
    """The paper's general formula, float64, valid away from alpha in {0, 2}."""
    y = (np.asarray(x, dtype=np.float64) / c) ** 2
    b = abs(alpha - 2.0)
    return b / alpha * ((y / b + 1.0) ** (alpha / 2.0) - 1.0)


# ------------------------------------------------------------------------------------ wing


def test_wing_hand_values_both_sides_of_width():
    residuals = [0.0, 1.0, -5.0, 14.0, 20.0, -30.0]
    pred, target = _pair(residuals)
    out = WingLoss(reduction="none")(pred, target).flatten()
    # w=15, eps=3: 15 ln(1 + |x|/3) inside, |x| - (15 - 15 ln 6) outside
    expected = [
        0.0,
        4.315231086776565,
        15 * math.log(1 + 5 / 3),
        15 * math.log(1 + 14 / 3),
        31.876392038,
        41.876392038,
    ]
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-8)
    assert WingLoss()(pred, target).item() == pytest.approx(sum(expected) / 6, abs=1e-8)
    assert WingLoss(reduction="sum")(pred, target).item() == pytest.approx(sum(expected), abs=1e-8)


def test_wing_custom_parameters():
    pred, target = _pair([0.5, -3.0])
    out = WingLoss(width=2.0, curvature=0.5, reduction="none")(pred, target).flatten()
    c = 2.0 - 2.0 * math.log(1 + 2.0 / 0.5)
    np.testing.assert_allclose(out.numpy(), [2.0 * math.log(2.0), 3.0 - c], atol=1e-12)


def test_wing_continuous_at_width():
    w = 15.0
    pred, target = _pair([w - 1e-9, w, w + 1e-9, -w])
    out = WingLoss(reduction="none")(pred, target).flatten().numpy()
    np.testing.assert_allclose(out, 15 * math.log(6.0), atol=1e-7)


def test_wing_zero_at_zero_and_finite_gradient():
    pred, target = _pair([0.0, 0.0, 1.0, -1.0, 20.0, -20.0])
    pred.requires_grad_(True)
    loss = WingLoss(reduction="sum")(pred, target)
    loss.backward()
    grad = pred.grad.flatten()
    assert torch.isfinite(grad).all()
    # d/dx = w / (eps + |x|) sign(x) inside, sign(x) outside; subgradient 0 at 0
    np.testing.assert_allclose(grad.numpy(), [0.0, 0.0, 15 / 4, -15 / 4, 1.0, -1.0], atol=1e-12)
    assert WingLoss()(target, target).item() == 0.0


# ------------------------------------------------------------------------- l1 / l2 / elastic


def test_l1_l2_elastic_hand_values():
    pred = torch.tensor([[[0.6, 0.3], [0.8, 0.5]]], dtype=torch.float64)
    target = torch.tensor([[[0.5, 0.5], [0.5, 0.5]]], dtype=torch.float64)  # residuals .1 -.2 .3 0
    assert L1Loss()(pred, target).item() == pytest.approx(0.15, abs=1e-12)
    assert L1Loss(reduction="sum")(pred, target).item() == pytest.approx(0.6, abs=1e-12)
    assert L2Loss()(pred, target).item() == pytest.approx(0.035, abs=1e-12)
    assert L2Loss(reduction="sum")(pred, target).item() == pytest.approx(0.14, abs=1e-12)
    # 1 * 0.035 + 0.5 * 0.15
    assert ElasticLoss()(pred, target).item() == pytest.approx(0.11, abs=1e-12)
    assert ElasticLoss(reduction="sum")(pred, target).item() == pytest.approx(0.44, abs=1e-12)
    weighted = ElasticLoss(l1_weight=2.0, l2_weight=3.0)(pred, target).item()
    assert weighted == pytest.approx(3 * 0.035 + 2 * 0.15, abs=1e-12)
    np.testing.assert_allclose(
        L2Loss(reduction="none")(pred, target).numpy(), [[[0.01, 0.04], [0.09, 0.0]]], atol=1e-12
    )


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_reductions_shapes_and_consistency(name):
    torch.manual_seed(0)
    pred, target = torch.rand(3, 4, 2), torch.rand(3, 4, 2)
    kwargs = {"num_dims": 8} if name in ("robust", "adaptive") else {}
    none = build_loss(name, reduction="none", **kwargs)(pred, target)
    total = build_loss(name, reduction="sum", **kwargs)(pred, target)
    mean = build_loss(name, **kwargs)(pred, target)
    assert none.shape == (3, 4, 2)
    assert total.shape == () and mean.shape == ()
    assert total.item() == pytest.approx(none.sum().item(), rel=1e-5)
    assert mean.item() == pytest.approx(none.sum().item() / 24, rel=1e-5)


def test_build_loss_names_and_kwargs():
    assert isinstance(build_loss("Wing", width=5.0), WingLoss)
    assert build_loss("wing", width=5.0).width == 5.0
    assert type(build_loss("l1")) is L1Loss
    assert type(build_loss("l2")) is L2Loss
    assert build_loss("elastic", l1_weight=0.25).l1_weight == 0.25
    for name in ("robust", "adaptive"):
        loss = build_loss(name, num_dims=32)
        assert isinstance(loss, AdaptiveRobustLoss) and loss.alpha().shape == (32,)


# ------------------------------------------------------------------------- general robust loss


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_rho_closed_forms_at_special_alpha(dtype, tol):
    x = torch.tensor([-4.0, -1.3, -0.2, 0.0, 0.05, 0.7, 2.5], dtype=dtype)
    c = 0.7
    y = (x.double() / c) ** 2
    cases = {
        2.0: 0.5 * y,
        0.0: torch.log1p(0.5 * y),
        1.0: torch.sqrt(y + 1) - 1,
        -2.0: 2 * y / (y + 4),
        -math.inf: 1 - torch.exp(-0.5 * y),
        math.inf: torch.exp(0.5 * y) - 1,
    }
    for alpha, expected in cases.items():
        got = general_robust_loss(x, alpha, c).double()
        np.testing.assert_allclose(
            got.numpy(), expected.numpy(), rtol=tol, atol=tol, err_msg=f"alpha={alpha}"
        )


@pytest.mark.parametrize(
    "special, closed_form, atol",
    [
        (2.0, lambda y: 0.5 * y, 1e-4),
        (0.0, lambda y: np.log1p(0.5 * y), 1e-5),
        (1.0, lambda y: np.sqrt(y + 1) - 1, 1e-5),
        (-2.0, lambda y: 2 * y / (y + 4), 1e-5),
    ],
)
def test_general_formula_tends_to_closed_forms(special, closed_form, atol):
    x = np.array([-3.0, -1.0, -0.1, 0.0, 0.4, 2.0])
    c = 1.5
    y = (x / c) ** 2
    for delta in (1e-6, -1e-6):
        alpha = special + delta
        naive = _naive_rho(x, alpha, c)
        np.testing.assert_allclose(naive, closed_form(y), atol=atol, err_msg=f"alpha={alpha}")
        ours = general_robust_loss(torch.tensor(x), alpha, c).numpy()
        np.testing.assert_allclose(ours, naive, rtol=1e-7, atol=1e-10, err_msg=f"alpha={alpha}")


def test_general_formula_matches_paper_for_generic_alpha():
    x = np.linspace(-5, 5, 41)
    for alpha in (-7.0, -0.5, 0.3, 1.4, 1.97, 3.5):
        ours = general_robust_loss(torch.tensor(x), alpha, 0.8).numpy()
        np.testing.assert_allclose(
            ours, _naive_rho(x, alpha, 0.8), rtol=1e-10, atol=1e-12, err_msg=f"alpha={alpha}"
        )


def test_general_robust_loss_gradcheck():
    x = torch.tensor([-2.0, -0.3, 0.1, 1.7], dtype=torch.float64, requires_grad=True)
    for a in (-3.0, -0.2, 1e-3, 0.5, 1.5, 1.999, 2.5):
        alpha = torch.tensor(a, dtype=torch.float64, requires_grad=True)
        scale = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(general_robust_loss, (x, alpha, scale)), f"alpha={a}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rho_gradients_finite_at_zero_and_near_special_alpha(dtype):
    alphas = [-math.inf, -2.0, -1e-6, 0.0, 1e-7, 1e-3, 1.0]
    alphas += [2 - 1e-3, 2 - 1e-6, 2.0, 2 + 1e-6, 4.0, math.inf]
    for xv in (0.0, 1e-4, 1.0, 40.0):
        alpha = torch.tensor(alphas, dtype=dtype, requires_grad=True)
        x = torch.full((len(alphas),), xv, dtype=dtype, requires_grad=True)
        scale = torch.full((len(alphas),), 0.5, dtype=dtype, requires_grad=True)
        rho = general_robust_loss(x, alpha, scale)
        rho.sum().backward()
        named = (("rho", rho), ("d/dx", x.grad), ("d/dalpha", alpha.grad), ("d/dc", scale.grad))
        for name, t in named:
            assert torch.isfinite(t).all(), f"{name} not finite at x={xv}: {t}"
        if xv == 0.0:
            assert (rho == 0).all() and (x.grad == 0).all()


def test_rho_alpha_gradient_is_right_across_zero():
    # the expm1-based form needs no epsilon shift, so d rho / d alpha is smooth through 0
    x = torch.tensor([0.5, 2.0, 10.0], dtype=torch.float64)
    grads = []
    for a in (-1e-4, 0.0, 1e-4):
        alpha = torch.tensor(a, dtype=torch.float64, requires_grad=True)
        general_robust_loss(x, alpha, 1.0).sum().backward()
        grads.append(alpha.grad.item())
    h = 1e-4
    fd = (_naive_rho(x, h).sum() - _naive_rho(x, -h).sum()) / (2 * h)
    np.testing.assert_allclose(grads, fd, rtol=1e-3)


# ----------------------------------------------------------------------------- log Z(alpha)


@pytest.mark.parametrize(
    "alpha, z",
    [(2.0, math.sqrt(2 * math.pi)), (0.0, math.pi * math.sqrt(2)), (1.0, 2 * math.e * k1(1.0))],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_partition_function_known_values(alpha, z, dtype):
    got = log_partition(torch.tensor(alpha, dtype=dtype)).exp().item()
    assert got == pytest.approx(z, abs=1e-4)


def _reference_log_z(alpha: float) -> float:
    value, _ = quad(
        lambda x: math.exp(-_naive_rho(x, alpha)),
        -math.inf,
        math.inf,
        epsabs=1e-13,
        epsrel=1e-12,
        limit=500,
    )
    return math.log(value)


def test_log_partition_interpolation_error_below_1e_4():
    rng = np.random.default_rng(7)
    alphas = np.concatenate(
        [rng.uniform(0.0, 2.0, 150), [1e-5, 1e-4, 1e-3, 0.01, 1.99, 1.999, 1.9999, 2 - 1e-5]]
    )
    reference = np.array([_reference_log_z(float(a)) for a in alphas])
    got = log_partition(torch.tensor(alphas, dtype=torch.float64)).numpy()
    error = np.abs(got - reference).max()
    assert error < 1e-4, f"max |log Z interpolation error| = {error:.3g}"
    got32 = log_partition(torch.tensor(alphas, dtype=torch.float32)).double().numpy()
    assert np.abs(got32 - reference).max() < 1e-4


def test_log_partition_gradient_matches_finite_differences():
    for a in (0.01, 0.5, 1.0, 1.5, 1.99):
        alpha = torch.tensor(a, dtype=torch.float64, requires_grad=True)
        log_partition(alpha).backward()
        h = 1e-5
        fd = (_reference_log_z(a + h) - _reference_log_z(a - h)) / (2 * h)
        assert alpha.grad.item() == pytest.approx(fd, rel=1e-3), f"alpha={a}"


# -------------------------------------------------------------------------- adaptive loss


def _adaptive_nll_1d(loss: AdaptiveRobustLoss, x: torch.Tensor) -> torch.Tensor:
    """NLL of residuals ``x`` (N,) in the first coordinate of a one-landmark module."""
    pred = torch.stack([x, x], dim=-1)[:, None, :]
    return loss(pred, torch.zeros_like(pred))[:, 0, 0]


@pytest.mark.parametrize(
    "alpha, scale", [(0.0, 1.0), (0.0, 0.05), (0.5, 2.0), (1.0, 0.3), (1.7, 0.01), (1.999, 1.0)]
)
def test_adaptive_nll_is_a_normalised_density(alpha, scale):
    if alpha == 0.0:  # a fixed alpha on the edge of the table
        loss = AdaptiveRobustLoss(2, alpha_lo=0.0, alpha_hi=0.0, scale_init=scale, reduction="none")
    else:
        loss = AdaptiveRobustLoss(
            2, alpha_lo=0.0, alpha_hi=2.0, alpha_init=alpha, scale_init=scale, reduction="none"
        )
    loss = loss.double()  # the latents were built in float32: compare loosely
    assert loss.alpha()[0].item() == pytest.approx(alpha, abs=1e-6)
    assert loss.scale()[0].item() == pytest.approx(scale, rel=1e-6)
    # x = c tan(theta) maps the real line to (-pi/2, pi/2); the midpoint rule on that smooth
    # integrand is very accurate, even for the Cauchy-like alpha=0 tails
    n = 20000
    theta = (torch.arange(n, dtype=torch.float64) + 0.5) / n * math.pi - math.pi / 2
    x = scale * torch.tan(theta)
    with torch.no_grad():
        density = torch.exp(-_adaptive_nll_1d(loss, x))
    integral = (density * scale / torch.cos(theta) ** 2).sum().item() * math.pi / n
    assert integral == pytest.approx(1.0, abs=1e-5)


def test_adaptive_parameters_and_finite_gradients():
    loss = AdaptiveRobustLoss(4)
    names = sorted(name for name, _ in loss.named_parameters())
    assert names == ["latent_alpha", "latent_scale"]
    # alpha defaults to the midpoint of (0.001, 1.999)
    np.testing.assert_allclose(loss.alpha().detach().numpy(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(loss.scale().detach().numpy(), 1.0, rtol=1e-6)
    for alpha_init in (0.001 + 1e-6, 1.0, 1.999 - 1e-6):
        loss = AdaptiveRobustLoss(4, alpha_init=alpha_init, scale_init=0.02)
        pred = torch.zeros(3, 2, 2, requires_grad=True)
        target = torch.zeros(3, 2, 2)
        target[0] = 0.1
        loss(pred, target).backward()
        for p in (pred.grad, loss.latent_alpha.grad, loss.latent_scale.grad):
            assert torch.isfinite(p).all(), f"alpha_init={alpha_init}"
        assert (pred.grad[1:] == 0).all()  # zero residual: zero gradient, not NaN


def test_adaptive_fixed_alpha_and_scale_have_no_parameters():
    loss = AdaptiveRobustLoss(6, alpha_lo=1.0, alpha_hi=1.0, scale_lo=0.1, scale_init=0.1)
    assert list(loss.parameters()) == []
    np.testing.assert_array_equal(loss.alpha().numpy(), np.ones(6, dtype=np.float32))
    np.testing.assert_array_equal(loss.scale().numpy(), np.full(6, 0.1, dtype=np.float32))
    # alpha=1: sqrt((x/c)^2 + 1) - 1 + log c + log(2 e K1(1))
    pred, target = _pair([0.2, -0.05, 0.0, 0.1, 0.3, 0.0], dtype=torch.float32)
    y = ((pred - target).double() / 0.1) ** 2
    expected = torch.sqrt(y + 1) - 1 + math.log(0.1) + math.log(2 * math.e * k1(1.0))
    assert loss(pred, target).item() == pytest.approx(expected.mean().item(), abs=1e-5)


def _fit_alpha(residuals: torch.Tensor, steps: int = 200) -> tuple[float, float]:
    loss = AdaptiveRobustLoss(2)
    optimiser = torch.optim.Adam(loss.parameters(), lr=0.05)
    target = torch.zeros_like(residuals)
    for _ in range(steps):
        optimiser.zero_grad()
        loss(residuals, target).backward()
        optimiser.step()
    return loss.alpha().mean().item(), loss.scale().mean().item()


def test_adaptive_alpha_learns_the_tail_shape():
    torch.manual_seed(0)
    sigma = 0.02  # a realistic residual in normalised coordinates
    gauss = sigma * torch.randn(512, 1, 2)
    cauchy = sigma * torch.distributions.Cauchy(0.0, 1.0).sample((512, 1, 2))
    alpha_gauss, scale_gauss = _fit_alpha(gauss)
    alpha_cauchy, _ = _fit_alpha(cauchy)
    assert alpha_gauss > 1.8, alpha_gauss
    assert alpha_cauchy < 0.3, alpha_cauchy
    assert scale_gauss == pytest.approx(sigma, rel=0.15)


def test_adaptive_reduction_none_matches_general_loss():
    torch.manual_seed(1)
    loss = AdaptiveRobustLoss(6, alpha_init=0.7, scale_init=0.3, reduction="none").double()
    pred = torch.rand(5, 3, 2, dtype=torch.float64)
    target = torch.rand(5, 3, 2, dtype=torch.float64)
    out = loss(pred, target)
    assert out.shape == (5, 3, 2)
    log_z = log_partition(torch.tensor(0.7, dtype=torch.float64))
    expected = general_robust_loss(pred - target, 0.7, 0.3) + math.log(0.3) + log_z
    np.testing.assert_allclose(out.detach().numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_shape_validation(name):
    loss = build_loss(name, num_dims=6) if name in ("robust", "adaptive") else build_loss(name)
    with pytest.raises(ValueError, match=r"same shape.*\(2, 3, 2\).*\(2, 4, 2\)"):
        loss(torch.zeros(2, 3, 2), torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match=r"\(B, M, 2\).*\(6, 2\).*rank 2"):
        loss(torch.zeros(6, 2), torch.zeros(6, 2))
    with pytest.raises(ValueError, match=r"\(B, M, 2\).*\(2, 3, 3\)"):
        loss(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3))
    with pytest.raises(TypeError, match="floating point"):
        loss(torch.zeros(2, 3, 2, dtype=torch.long), torch.zeros(2, 3, 2, dtype=torch.long))


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: WingLoss(width=0.0), "width"),
        (lambda: WingLoss(width=-1.0), "width"),
        (lambda: WingLoss(width=float("nan")), "width"),
        (lambda: WingLoss(curvature=0.0), "curvature"),
        (lambda: L1Loss(reduction="avg"), r"reduction must be one of.*'avg'"),
        (lambda: ElasticLoss(l1_weight=-0.1), "l1_weight"),
        (lambda: AdaptiveRobustLoss(0), "num_dims"),
        (lambda: AdaptiveRobustLoss(4, alpha_lo=-0.1), "alpha_lo"),
        (lambda: AdaptiveRobustLoss(4, alpha_hi=2.5), "alpha_hi"),
        (lambda: AdaptiveRobustLoss(4, alpha_lo=1.5, alpha_hi=1.0), "alpha_lo"),
        (lambda: AdaptiveRobustLoss(4, alpha_init=1.999), "alpha_init"),
        (lambda: AdaptiveRobustLoss(4, scale_lo=0.0), "scale_lo"),
        (lambda: AdaptiveRobustLoss(4, scale_lo=0.1, scale_init=0.01), "scale_init"),
        (
            lambda: build_loss("huber"),
            "unknown loss 'huber'; valid names: wing, l1, l2, elastic, robust, adaptive",
        ),
        (lambda: build_loss("robust"), "num_dims"),
        (lambda: general_robust_loss(torch.ones(3), 1.0, 0.0), "scale must be > 0"),
        (lambda: log_partition(2.5), r"alpha in \[0, 2\]"),
        (lambda: log_partition(torch.tensor([0.5, -0.1])), r"alpha in \[0, 2\]"),
    ],
)
def test_bad_arguments_raise_value_error(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_adaptive_num_dims_mismatch():
    loss = AdaptiveRobustLoss(32)
    with pytest.raises(ValueError, match=r"num_dims=32.*\(2, 4, 2\)"):
        loss(torch.zeros(2, 4, 2), torch.zeros(2, 4, 2))
