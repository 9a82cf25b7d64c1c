"""Muon, the optimizer of both trainers' block matrices: Newton-Schulz against the SVD, the optimizer step
against a plain per-matrix loop, and MUON_BATCHED (one Newton-Schulz chain per shape, foreach ops) against
the per-matrix path, and MUON_COMPILE (Newton-Schulz through torch.compile) against the fp64 iteration. The two
trainers' Muon code is the same text (test_trainers' drift test)."""

from __future__ import annotations

import pytest
import torch

import train_gpt as base
import train_gpt_gdn as hybrid
from conftest import rel_err

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


def reference_muon(params: list[torch.Tensor], grads_per_step: list[list[torch.Tensor]], lr: float,
                   momentum: float, steps: int) -> list[torch.Tensor]:
    """Muon written out per matrix: Nesterov momentum, Newton-Schulz (the trainer's), RMS scale, step."""
    params = [p.clone() for p in params]
    bufs = [torch.zeros_like(p) for p in params]
    for grads in grads_per_step:
        for p, buf, grad in zip(params, bufs, grads):
            buf.mul_(momentum).add_(grad)
            update = base.zeropower_via_newtonschulz5(grad + momentum * buf, steps=steps)
            update = update * max(1.0, p.size(0) / p.size(1)) ** 0.5
            p.add_(update.to(p.dtype), alpha=-lr)
    return params


@pytest.mark.parametrize("batched", [False, True])
def test_muon_step_matches_plain_loop(batched):
    """Three steps on matrices of mixed shapes: Muon (per matrix, and MUON_BATCHED) equals the plain loop
    bitwise on CPU (same bf16 Newton-Schulz per matrix; batching changes only how it is launched)."""
    torch.manual_seed(2)
    start = [torch.randn(*s) for s in SHAPES]
    grads_per_step = [[torch.randn(*s) for s in SHAPES] for _ in range(3)]
    expected = reference_muon(start, grads_per_step, lr=0.02, momentum=0.95, steps=5)

    params = [torch.nn.Parameter(p.clone()) for p in start]
    opt = base.Muon(params, lr=0.02, momentum=0.95, backend_steps=5, batched=batched)
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
    for got, want in zip(params, expected):
        assert torch.equal(got.detach(), want)
    assert not torch.equal(params[0].detach(), start[0])  # the step did move the weights


def test_muon_step_without_any_gradient_changes_nothing():
    """No matrix has a gradient (or, under DDP, none is this rank's): the step is a no-op, batched or not."""
    for batched in (False, True):
        params = [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(3, 3))]
        before = [p.detach().clone() for p in params]
        base.Muon(params, lr=0.02, momentum=0.95, backend_steps=5, batched=batched).step()
        assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


def test_muon_skips_matrices_without_gradient():
    """A matrix with no gradient (unused this step) keeps its weights, batched or not."""
    torch.manual_seed(3)
    for batched in (False, True):
        params = [torch.nn.Parameter(torch.randn(7, 5)) for _ in range(3)]
        before = [p.detach().clone() for p in params]
        params[0].grad, params[2].grad = torch.randn(7, 5), torch.randn(7, 5)
        base.Muon(params, lr=0.02, momentum=0.95, backend_steps=5, batched=batched).step()
        assert torch.equal(params[1].detach(), before[1])
        assert not torch.equal(params[0].detach(), before[0]) and not torch.equal(params[2].detach(), before[2])


def newton_schulz_fp64(grad: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """The trainers' quintic iteration written out in fp64: what the bf16 versions approximate."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    x = grad.double()
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    transposed = grad.size(-2) > grad.size(-1)
    if transposed:
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if transposed else x


@pytest.fixture(scope="module")
def compiled_newton_schulz():
    return torch.compile(base.zeropower_via_newtonschulz5, dynamic=False)


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("shape", [(7, 5), (64, 33), (3, 33, 64), (5, 448, 896)])
def test_compiled_newton_schulz_is_as_close_to_the_iteration_as_eager(compiled_newton_schulz, shape, device):
    """MUON_COMPILE changes how bf16 rounds inside the iteration (inductor fuses the elementwise ops and rounds
    once), not the iteration: eager and compiled both stay within 6% (relative Frobenius) of the same iteration
    in fp64, the error bf16 itself brings (measured 2-4% for both on CPU), on tall, wide and stacked shapes
    (the last one a stack of the hybrid's MLP matrices)."""
    torch.manual_seed(4)
    grad = torch.randn(*shape, device=device)
    want = newton_schulz_fp64(grad)
    eager = base.zeropower_via_newtonschulz5(grad)
    compiled = compiled_newton_schulz(grad)
    assert compiled.shape == grad.shape and compiled.dtype == torch.bfloat16
    assert rel_err(eager, want) < 0.06 and rel_err(compiled, want) < 0.06
    assert not torch.equal(eager, torch.zeros_like(eager))


def test_muon_compile_is_wired_only_for_a_compiled_model():
    """build_optimizers compiles Newton-Schulz only with MUON_COMPILE=1 and a compiled model (CUDA; CPU runs
    stay eager), and a Muon step through the compiled iteration lands within bf16 noise of the eager one."""
    for module in (base, hybrid):
        h = module.Hyperparameters({"NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2",
                                    "MUON_COMPILE": "1", **({"GDN_LAYERS": "0"} if module is hybrid else {})})
        model = module.GPT(h)
        muon_of = lambda compiled: module.build_optimizers(h, model, fused=False, compiled=compiled)[1]  # noqa: E731
        assert muon_of(False).orthogonalise is module.zeropower_via_newtonschulz5
        assert muon_of(True).orthogonalise is not module.zeropower_via_newtonschulz5
        h.muon_compile = False
        assert muon_of(True).orthogonalise is module.zeropower_via_newtonschulz5

    torch.manual_seed(5)
    start = [torch.randn(*s) for s in SHAPES]
    grads = [torch.randn(*s) for s in SHAPES]
    results = []
    for orthogonalise in (base.zeropower_via_newtonschulz5, torch.compile(base.zeropower_via_newtonschulz5)):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        opt = base.Muon(params, lr=0.02, momentum=0.95, backend_steps=5, batched=True, orthogonalise=orthogonalise)
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        results.append([(p.detach() - s) / 0.02 for p, s in zip(params, start)])  # the updates, unit lr
    for eager, compiled in zip(*results):
        assert rel_err(compiled, eager) < 0.1  # two bf16 roundings of one iteration (~2-4% each)
