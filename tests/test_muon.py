"""Muon, the optimizer of both trainers' block matrices: Newton-Schulz against the SVD, and the optimizer's
batched step (foreach momentum, one Newton-Schulz chain per shape) against Muon written out one matrix at a
time. The two trainers' Muon code is the same text (test_trainers' skeleton test)."""

from __future__ import annotations

import pytest
import torch

import train_gpt as base

# Odd, repeated, tall and wide shapes: batching groups the repeats, and tall matrices run transposed.
SHAPES = [(7, 5), (7, 5), (5, 7), (3, 3), (11, 6), (7, 5), (6, 11)]


@pytest.mark.parametrize("shape", [(3, 7, 5), (2, 9, 5), (4, 33, 64)])
def test_newton_schulz_on_a_stack_equals_each_matrix(shape):
    """A stack of matrices is orthogonalised matrix by matrix: each with its own norm (bitwise on CPU)."""
    torch.manual_seed(0)
    stack = torch.randn(*shape) * torch.tensor([0.1, 10.0, 1.0, 3.0])[: shape[0], None, None]
    together = base.zeropower_via_newtonschulz5(stack)
    each = torch.stack([base.zeropower_via_newtonschulz5(m) for m in stack])
    assert together.shape == stack.shape and together.dtype == torch.bfloat16
    assert torch.equal(together, each)


@pytest.mark.parametrize("shape", [(7, 5), (33, 64), (64, 64)])
def test_newton_schulz_approximates_the_polar_factor(shape):
    """Five quintic steps take every singular value into Muon's band (about 0.6-1.2) and keep the singular
    vectors: the result is within 30% (Frobenius) of U V^T computed in fp64. The input's singular values
    span 0.1-1 (five steps lift a value by at most ~3.4^5, so a near-zero one would stay below the band)."""
    torch.manual_seed(1)
    left, _ = torch.linalg.qr(torch.randn(shape[0], min(shape), dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(shape[1], min(shape), dtype=torch.float64))
    grad = left @ torch.diag(torch.linspace(0.1, 1.0, min(shape), dtype=torch.float64)) @ right.T
    ortho = base.zeropower_via_newtonschulz5(grad).double()
    u, _, vh = torch.linalg.svd(grad, full_matrices=False)
    polar = u @ vh
    singular = torch.linalg.svdvals(ortho)
    assert 0.55 <= singular.min() and singular.max() <= 1.2
    assert (ortho - polar).norm() / polar.norm() < 0.3


def reference_muon(params: list[torch.Tensor], grads_per_step: list[list[torch.Tensor | None]], lr: float,
                   momentum: float, steps: int, nesterov: bool = True) -> list[torch.Tensor]:
    """Muon one matrix at a time: momentum buffer (created at a matrix's first gradient), Nesterov look-ahead,
    Newton-Schulz (the trainer's), the RMS scale for tall matrices, the step. A matrix without a gradient
    is left alone, its buffer too."""
    params = [p.clone() for p in params]
    bufs: list[torch.Tensor | None] = [None] * len(params)
    for grads in grads_per_step:
        for i, (p, grad) in enumerate(zip(params, grads)):
            if grad is None:
                continue
            if bufs[i] is None:
                bufs[i] = torch.zeros_like(grad)
            bufs[i].mul_(momentum).add_(grad)
            direction = grad + momentum * bufs[i] if nesterov else bufs[i]
            update = base.zeropower_via_newtonschulz5(direction, steps=steps)
            update = update * max(1.0, p.size(0) / p.size(1)) ** 0.5
            p.add_(update.to(p.dtype), alpha=-lr)
    return params


def muon_steps(start: list[torch.Tensor], grads_per_step, nesterov: bool = True) -> list[torch.Tensor]:
    params = [torch.nn.Parameter(p.clone()) for p in start]
    opt = base.Muon(params, lr=0.02, momentum=0.95, backend_steps=5, nesterov=nesterov)
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.clone()
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_step_matches_one_matrix_at_a_time(nesterov):
    """Three steps on matrices of mixed, repeated shapes: the batched step equals the per-matrix reference
    bitwise on CPU (the same bf16 Newton-Schulz per matrix; batching changes only how it is launched)."""
    torch.manual_seed(2)
    start = [torch.randn(*s) for s in SHAPES]
    grads_per_step = [[torch.randn(*s) for s in SHAPES] for _ in range(3)]
    expected = reference_muon(start, grads_per_step, lr=0.02, momentum=0.95, steps=5, nesterov=nesterov)
    got = muon_steps(start, grads_per_step, nesterov)
    for i, (g, want) in enumerate(zip(got, expected)):
        assert torch.equal(g, want), (i, SHAPES[i])
    assert not torch.equal(got[0], start[0])  # the step did move the weights


def test_muon_nesterov_changes_the_update():
    """The nesterov switch is read: from the second step on (a non-zero buffer) the two updates differ."""
    torch.manual_seed(3)
    start = [torch.randn(*s) for s in SHAPES]
    grads_per_step = [[torch.randn(*s) for s in SHAPES] for _ in range(2)]
    assert not torch.equal(muon_steps(start, grads_per_step, True)[0], muon_steps(start, grads_per_step, False)[0])


def test_muon_step_without_any_gradient_changes_nothing():
    """No matrix has a gradient (or, under DDP, none is this rank's): the step is a no-op."""
    params = [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(3, 3))]
    before = [p.detach().clone() for p in params]
    base.Muon(params, lr=0.02, momentum=0.95, backend_steps=5).step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


def test_muon_skips_matrices_without_gradient():
    """A matrix with no gradient in a step keeps its weights and its momentum; the others step as the
    per-matrix reference does, over steps where the set of matrices with gradients changes."""
    torch.manual_seed(4)
    shapes = [(7, 5), (7, 5), (7, 5), (5, 7)]
    start = [torch.randn(*s) for s in shapes]
    grads_per_step = [[torch.randn(7, 5), None, torch.randn(7, 5), None],
                      [None, torch.randn(7, 5), torch.randn(7, 5), torch.randn(5, 7)],
                      [torch.randn(7, 5), torch.randn(7, 5), None, None]]
    expected = reference_muon(start, grads_per_step, lr=0.02, momentum=0.95, steps=5)
    got = muon_steps(start, grads_per_step)
    for g, want in zip(got, expected):
        assert torch.equal(g, want)
    one_step = muon_steps(start, grads_per_step[:1])
    assert torch.equal(one_step[1], start[1]) and torch.equal(one_step[3], start[3])
    assert not torch.equal(one_step[0], start[0]) and not torch.equal(one_step[2], start[2])
