"""Gated DeltaNet maths: the torch backend (chunked) and the fla backend (GatedDeltaRuleKeepStates) against the
step-by-step fp32 recurrence, and the fla backend against fla's own chunk_gated_delta_rule (tests/gdn_reference.py).

Tolerances are relative errors ||a - b|| / ||b|| per tensor (as flash-linear-attention's tests use):
the chunked form is exact maths in fp32, so 1e-5; fla's kernels use TF32/bf16 tensor cores, so
5e-3 with fp32 inputs and 2e-2 with bf16 inputs (the H100 measured 1.5e-3..2e-3 and 5e-3..6e-3).
"""

import pytest
import torch

import train_gpt_gdn as gdn
from conftest import rel_err
from gdn_reference import gated_delta_rule_fla_wrapper, gated_delta_rule_recurrent


def make_inputs(bsz, seq_len, heads, key_dim, value_dim, device="cpu", dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = gdn.l2_normalize(torch.randn(bsz, seq_len, heads, key_dim, generator=gen))
    k = gdn.l2_normalize(torch.randn(bsz, seq_len, heads, key_dim, generator=gen))
    v = torch.randn(bsz, seq_len, heads, value_dim, generator=gen)
    # Log-decays as the mixer makes them (-exp(A_log) softplus(.)), strong enough to matter over a chunk.
    g = -torch.nn.functional.softplus(torch.randn(bsz, seq_len, heads, generator=gen)) * 0.3
    beta = 2.0 * torch.sigmoid(torch.randn(bsz, seq_len, heads, generator=gen))  # (0, 2): negative eigenvalues
    return [t.to(device=device, dtype=dtype if t.dim() == 4 else torch.float32) for t in (q, k, v, g, beta)]


def outputs_and_grads(fn, inputs, d_out, scale):
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves, scale=scale)
    (out.float() * d_out).sum().backward()
    return out.detach(), [leaf.grad.detach() for leaf in leaves]


GRAD_NAMES = ("q", "k", "v", "g", "beta")


def path_errors(fn, ref_fn, shape, device="cpu", dtype=torch.float32, seed=0, ref_fp32=False):
    """fn against ref_fn on the same inputs of shape (B, T, H, K, V) and the same output gradient: rel_err of
    the output ("out") and of each input's gradient (GRAD_NAMES), then (out, grads), (ref_out, ref_grads) and
    the inputs. ref_fp32: the reference gets the inputs in fp32."""
    bsz, seq_len, heads, key_dim, value_dim = shape
    inputs = make_inputs(*shape, device=device, dtype=dtype, seed=seed)
    d_out = torch.randn(bsz, seq_len, heads, value_dim, generator=torch.Generator().manual_seed(seed + 1)).to(device)
    scale = key_dim**-0.5
    ref_out, ref_grads = outputs_and_grads(ref_fn, [t.float() for t in inputs] if ref_fp32 else inputs, d_out, scale)
    out, grads = outputs_and_grads(fn, inputs, d_out, scale)
    errors = {"out": rel_err(out, ref_out)} | {name: rel_err(g, r) for name, g, r in zip(GRAD_NAMES, grads, ref_grads)}
    return errors, (out, grads), (ref_out, ref_grads), inputs


def assert_cuda_paths_agree(fn, ref_fn, shape, dtype, tol, seed=0, ref_fp32=False):
    """fn against ref_fn on CUDA inputs of shape (B, T, H, K, V): rel_err <= tol for the output and the
    gradients of q, k, v, g and beta (a named failure). ref_fp32: the reference gets the inputs in fp32."""
    errors, *results = path_errors(fn, ref_fn, shape, "cuda", dtype, seed, ref_fp32)
    assert errors["out"] <= tol
    for name in GRAD_NAMES:
        assert errors[name] <= tol, name
    return tuple(results)


@pytest.mark.parametrize("chunk_size", [32, 64])
@pytest.mark.parametrize("seq_len", [1, 77, 150, 200])
def test_chunked_matches_recurrence(seq_len, chunk_size):
    """The torch backend against the recurrence: output and every gradient, with T not a multiple of the chunk."""
    chunked = lambda *a, scale: gdn.gated_delta_rule_chunked(*a, scale=scale, chunk_size=chunk_size)  # noqa: E731
    errors, *_ = path_errors(chunked, gated_delta_rule_recurrent, (2, seq_len, 3, 12, 20))  # odd sizes
    assert errors["out"] < 1e-5
    for name in GRAD_NAMES:
        assert errors[name] < 1e-5, name


def test_recurrence_is_the_delta_rule():
    """One hand-checkable step: S = beta k v^T from a zero state, o = scale q.k beta v."""
    q = torch.tensor([[[[1.0, 0.0]]]])
    k = torch.tensor([[[[0.6, 0.8]]]])
    v = torch.tensor([[[[2.0, -1.0, 0.5]]]])
    g = torch.tensor([[[-0.1]]])
    beta = torch.tensor([[[1.5]]])
    out = gated_delta_rule_recurrent(q, k, v, g, beta, scale=0.5)
    expected = 0.5 * 0.6 * 1.5 * v
    torch.testing.assert_close(out, expected)


def test_negative_eigenvalue_flips_the_stored_value():
    """beta = 2 with a repeated unit key reflects the state: writing v twice gives back +v, not 2v."""
    k = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2).repeat(1, 2, 1, 1)
    v = torch.tensor([3.0]).view(1, 1, 1, 1).repeat(1, 2, 1, 1)
    g = torch.zeros(1, 2, 1)
    beta = torch.full((1, 2, 1), 2.0)
    out = gated_delta_rule_recurrent(k, k, v, g, beta, scale=1.0)
    # step 1: S = 2*3 = 6; step 2: S = 6 + 2*(3 - 6) = 0
    torch.testing.assert_close(out.flatten(), torch.tensor([6.0, 0.0]))


needs_fla = pytest.mark.skipif(not gdn.fla_available(), reason="needs CUDA and fla-core")


@needs_fla
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 5e-3), (torch.bfloat16, 2e-2)])
def test_fla_backend_matches_recurrence(dtype, tol):
    """The fla backend (GatedDeltaRuleKeepStates) against the fp32 recurrence; the hybrid's head dims, T % 64 != 0."""
    assert_cuda_paths_agree(gdn.gated_delta_rule_fla, gated_delta_rule_recurrent, (2, 300, 4, 42, 84), dtype, tol,
                            ref_fp32=True)


def run_mixer(mixer, x, autocast: bool = True):
    """Forward (under bf16 autocast as in training, unless autocast=False), backward of a scalar:
    (output, dx, parameter grads)."""
    xin = x.clone().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        y = mixer(xin)
    y.float().square().mean().backward()
    return y.detach(), xin.grad, {n: p.grad for n, p in mixer.named_parameters()}


def mixer_errors(weights_from: dict, other: dict, dims=(448, 8, 42, 84, 4), seq_len=333, device="cuda",
                 autocast=True):
    """Two GDN mixers (dims: width, heads, key dim, value dim, conv; the published shape unless given) built
    with these keyword settings, `other` given the first's weights (its output projection moved off the zero
    init, which would hide the rest); the same x of seq_len tokens: rel_err(other, weights_from) of the output
    ("out"), dx and every parameter's gradient."""
    torch.manual_seed(0)
    first = gdn.GatedDeltaNet(*dims, **weights_from).to(device)
    torch.nn.init.normal_(first.o_proj.weight, std=0.02)
    second = gdn.GatedDeltaNet(*dims, **other).to(device)
    second.load_state_dict(first.state_dict())
    x = torch.randn(2, seq_len, dims[0], device=device)
    (y_ref, dx_ref, grads_ref), (y, dx, grads) = (run_mixer(m, x, autocast) for m in (first, second))
    errors = {"out": rel_err(y, y_ref), "dx": rel_err(dx, dx_ref)}
    errors.update({name: rel_err(grads[name], grads_ref[name]) for name in grads_ref})
    return errors


@needs_fla
def test_fla_mixer_matches_torch_mixer():
    """The whole mixer (fla's conv + kernel vs the PyTorch path), same weights, bf16 autocast as in training;
    the PyTorch path is the reference. Published shape, on CUDA: output within 2e-2, dx and every gradient 3e-2."""
    errors = mixer_errors({"backend": "torch"}, {"backend": "fla"})
    assert errors.pop("out") < 2e-2
    for name, err in errors.items():
        assert err < 3e-2, name


@needs_fla
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seq_len", [300, 64, 1])  # T % 64 != 0, one whole chunk, a single token
def test_fla_backend_equals_fla_wrapper(dtype, seq_len):
    """GatedDeltaRuleKeepStates runs fla's own kernels on the same inputs as fla's chunk_gated_delta_rule and
    keeps the forward's states for the backward: the output and every gradient are the same numbers, relative
    error <= 1e-6 (0 expected; the bound leaves room for an atomic add's order), in the inputs' dtypes."""
    (out, grads), (ref_out, _), inputs = assert_cuda_paths_agree(
        gdn.gated_delta_rule_fla, gated_delta_rule_fla_wrapper, (2, seq_len, 4, 42, 84), dtype, 1e-6)
    assert out.dtype == ref_out.dtype
    assert [grad.dtype for grad in grads] == [inp.dtype for inp in inputs]
