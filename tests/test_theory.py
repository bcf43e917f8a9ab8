"""The paper's theory, checked on its noisy quadratic model (Assumption 1) with our optimizers.

The model: ``L(theta) = 1/2 (theta - theta*)^T H (theta - theta*)`` with a random symmetric
positive definite ``H`` (eigenvalues ``h_k`` from 0.5 to 2) and stochastic gradients
``H (theta - theta*) + sigma * xi``, ``xi`` standard Gaussian. Weight decay in two forms:

- Equation 2, decay coupled to the learning rate (L2 regularization):
  ``theta <- (1 - eta*lambda) theta - eta*grad``. That is SGDS with ``momentum=0`` (its decay
  is ``lr * weight_decay * (1 - dampening) / (1 - momentum)``), on our backends (below).
- Equation 1, vanilla decay: ``theta <- (1 - lambda0) theta - eta_t*grad``, in plain tensor
  arithmetic (no optimizer of ours has it).

Backends: native and torch. Triton is left out: its CPU interpreter takes ~30 ms a step
(measured on the 2-core CI machine), so these 3,600 steps would add ~2 minutes to CI for a
property of the math; test_triton.py holds its kernels to the torch backend op by op.

Many seeds run as one batch: each row of the parameter is an independent run (the update is
element-wise), so a thousand seeds cost one tensor of a thousand rows. Seeds are fixed, derived
from each test's name.
"""
from __future__ import annotations

import zlib

import pytest
import torch

import swd_kernels

F64 = torch.float64
DIM = 4
CURVATURES = torch.linspace(0.5, 2.0, DIM, dtype=F64)  # eigenvalues h_k of H
FP32_ULP = 2.0 ** -24  # half the fp32 spacing at 1: the largest relative rounding error
BACKENDS = [name for name in swd_kernels.available_backends("cpu") if name != "triton"]


@pytest.fixture(autouse=True)
def one_thread():
    """The tensors here hold a few thousand elements, too few to split, yet a second thread
    costs: on the 2-core machine shared with other jobs this file took 27 s with two threads
    and 4.7 s with one (each parallel region waits for a thread the OS may not schedule)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def generator(request):
    """A generator seeded from the test's name (the same for every backend of one test)."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.originalname.encode()))


def quadratic(generator):
    """``(H, eigenvectors, theta*)``: ``H = Q diag(CURVATURES) Q^T`` with a random rotation Q,
    and a random minimizer of norm about 2."""
    rotation, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=generator, dtype=F64))
    hessian = rotation @ torch.diag(CURVATURES) @ rotation.T
    minimizer = torch.randn(DIM, generator=generator, dtype=F64)
    return hessian, rotation, 2.0 * minimizer / minimizer.norm()


def regularized_minimizer(hessian, minimizer, weight_decay):
    """The minimizer of ``L + lambda/2 ||theta||^2``: ``theta* + mu`` with
    ``mu = -lambda (H + lambda I)^-1 theta*`` (Corollary 1)."""
    shift = -weight_decay * torch.linalg.solve(hessian + weight_decay * torch.eye(DIM, dtype=F64),
                                               minimizer)
    return minimizer + shift, shift


def loss_gradient(theta, hessian, minimizer):
    """``H (theta - theta*)`` for every row of ``theta`` (float64)."""
    return (theta.to(F64) - minimizer) @ hessian  # H is symmetric


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_coupled_decay_converges_in_expectation_to_the_shifted_minimum(backend_name, generator):
    """Theorem 2 / Corollary 1: SGD with Equation 2 settles, in expectation, at theta* + mu.

    The estimate is the mean over ``seeds`` runs and the last ``window`` steps of each, after
    ``burn_in`` steps. Tolerance, per eigen-direction k of H, from the noise alone: in direction
    k a run is an AR(1) process ``e <- a e - eta*sigma*xi`` with ``a = 1 - eta (h_k + lambda)``;
    its stationary variance is ``eta^2 sigma^2 / (1 - a^2)``, and the mean of ``window``
    consecutive values has at most ``(1 + a)/(1 - a)`` times that variance over ``window``,
    which simplifies to ``sigma^2 / ((h_k + lambda)^2 window)``; averaging ``seeds``
    independent runs divides it by ``seeds``. We allow 5 standard errors per direction (a
    5.7e-7 chance per direction for a correct optimizer). What the start leaves after
    ``burn_in`` steps, ``a^burn_in`` of the initial distance, is below 1e-12 (asserted), and
    fp32 rounding (~1e-7 of |theta| per step, unbiased) is far below the standard errors
    (3e-4 to 1e-3). Measured (2026-11-30, both backends): errors of 0.2 to 1.8 standard
    errors; mu is 33 to 73 tolerances away from theta*, and a weight decay 10% low fails."""
    seeds, burn_in, window = 1000, 600, 2000
    lr, weight_decay, noise = 0.1, 0.2, 1.0
    hessian, rotation, minimizer = quadratic(generator)
    target, shift = regularized_minimizer(hessian, minimizer, weight_decay)

    contraction = 1 - lr * (CURVATURES + weight_decay)  # a per eigen-direction
    assert contraction.abs().max() ** burn_in * (target.norm() + 1) < 1e-12
    standard_error = noise / ((CURVATURES + weight_decay) * (window * seeds) ** 0.5)
    tolerance = 5 * standard_error
    # the test can tell theta* + mu from theta*: mu is far outside the tolerance
    assert (rotation.T @ shift).abs().max() > 20 * tolerance.max()

    theta = torch.zeros(seeds, DIM)  # fp32: every backend's CPU kernels take it
    optimizer = swd_kernels.SGDS([theta], lr=lr, weight_decay=weight_decay, momentum=0.0,
                                 backend=backend_name)
    total = torch.zeros(DIM, dtype=F64)
    for step in range(burn_in + window):
        grad = loss_gradient(theta, hessian, minimizer)
        grad += noise * torch.randn(seeds, DIM, generator=generator, dtype=F64)
        theta.grad = grad.float()
        optimizer.step()
        if step >= burn_in:
            total += theta.to(F64).sum(0)
    mean = total / (seeds * window)

    error = rotation.T @ (mean - target)  # per eigen-direction of H
    assert (error.abs() <= tolerance).all(), (error, tolerance)
    # and not at the unregularized minimum
    assert ((rotation.T @ (mean - minimizer)).abs() > tolerance).any()


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_coupled_decay_settles_and_vanilla_decay_keeps_moving_when_lr_jumps(backend_name,
                                                                          generator):
    """Theorem 1: with a learning rate that changes every step (alternating ``eta_a``,
    ``eta_b``), gradient descent with Equation 2 settles on the fixed minimizer of
    ``L + lambda/2 ||theta||^2``: that point is a fixed point of every step whatever its
    learning rate. Vanilla decay (Equation 1, ``lambda0`` = the mean ``eta * lambda``) has a
    different fixed point for each learning rate, ``(lambda0/eta I + H)^-1 H theta*``, so it
    never stops: it ends on a cycle between two points, computed here exactly, and every step
    moves by the cycle's gap.

    fp32 tolerance for the settled run: each step rounds theta by at most a few half-ulps
    (2^-24 relative) of its largest entry, and the step contracts an error by at most
    ``a_max = max |1 - eta (h_k + lambda)|``, so errors add up to at most
    ``4 * 2^-24 * max|theta| / (1 - a_max)``. Measured (2026-11-30, both backends): settled
    within 4.3e-7 against a tolerance of 1.1e-5; vanilla's cycle gap 0.035. SGDS given
    Equation 1's decay (weight_decay = lambda0 / eta_t each step) fails."""
    runs, steps = 64, 1000
    lrs, weight_decay = (0.05, 0.25), 0.2
    vanilla_decay = sum(lrs) / len(lrs) * weight_decay
    hessian, _, minimizer = quadratic(generator)
    target, _ = regularized_minimizer(hessian, minimizer, weight_decay)
    start = 2.0 * torch.randn(runs, DIM, generator=generator, dtype=F64)

    a_max = max((1 - lr * (CURVATURES + weight_decay)).abs().max().item() for lr in lrs)
    assert a_max ** steps * (start - target).norm(dim=1).max() < 1e-12
    settled = 4 * FP32_ULP * max(target.abs().max().item(), 1.0) / (1 - a_max)

    # Equation 2: SGDS with the learning rate set before every step
    theta = start.float()
    optimizer = swd_kernels.SGDS([theta], lr=lrs[0], weight_decay=weight_decay,
                                 backend=backend_name)
    for step in range(steps):
        previous = theta.clone()
        optimizer.param_groups[0]["lr"] = lrs[step % 2]
        theta.grad = loss_gradient(theta, hessian, minimizer).float()
        optimizer.step()
    assert ((theta.to(F64) - target).norm(dim=1) <= settled).all()
    assert ((theta - previous).norm(dim=1) <= 2 * settled).all()

    # Equation 1 in float64: theta <- (1 - lambda0) theta - eta_t * grad
    vanilla = start.clone()
    moves = []
    for step in range(steps):
        previous = vanilla
        vanilla = (1 - vanilla_decay) * vanilla - lrs[step % 2] * loss_gradient(
            vanilla, hessian, minimizer)
        moves.append((vanilla - previous).norm(dim=1))
    # the exact 2-cycle: step(x) = A x + c for each learning rate; p lands after an eta_a
    # step and q after an eta_b step, so p = A_a q + c_a and q = A_b p + c_b
    eye = torch.eye(DIM, dtype=F64)
    (a_a, c_a), (a_b, c_b) = [((1 - vanilla_decay) * eye - lr * hessian, lr * hessian @ minimizer)
                              for lr in lrs]
    p = torch.linalg.solve(eye - a_a @ a_b, a_a @ c_b + c_a)
    q = a_b @ p + c_b
    gap = (p - q).norm().item()
    landed = p if (steps - 1) % 2 == 0 else q
    assert torch.allclose(vanilla, landed.expand_as(vanilla), atol=1e-9, rtol=0)
    tail = torch.stack(moves[-100:])
    assert tail.min().item() >= 0.999 * gap
    # bounded away from 0 on the scale of the coupled form's settled steps
    assert gap > 1000 * settled
