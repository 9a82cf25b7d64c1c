"""Gated DeltaNet maths: the chunked PyTorch path and fla's CUDA kernel against the step-by-step fp32 recurrence.

Tolerances are relative errors ||a - b|| / ||b|| per tensor (as flash-linear-attention's tests use):
the chunked form is exact maths in fp32, so 1e-5; fla's kernels use TF32/bf16 tensor cores, so
5e-3 with fp32 inputs and 2e-2 with bf16 inputs (the H100 measured 1.5e-3..2e-3 and 5e-3..6e-3).
"""

import pytest
import torch

import train_gpt_gdn as gdn


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


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


@pytest.mark.parametrize("seq_len,chunk_size", [(1, 64), (77, 64), (150, 64), (200, 32)])
def test_chunked_matches_recurrence(seq_len, chunk_size):
    bsz, heads, key_dim, value_dim = 2, 3, 12, 20  # odd sizes, T not a multiple of the chunk
    inputs = make_inputs(bsz, seq_len, heads, key_dim, value_dim)
    d_out = torch.randn(bsz, seq_len, heads, value_dim, generator=torch.Generator().manual_seed(1))
    scale = key_dim**-0.5
    ref_out, ref_grads = outputs_and_grads(gdn.gated_delta_rule_recurrent, inputs, d_out, scale)
    chunked = lambda *a, scale: gdn.gated_delta_rule_chunked(*a, scale=scale, chunk_size=chunk_size)  # noqa: E731
    out, grads = outputs_and_grads(chunked, inputs, d_out, scale)
    assert rel_err(out, ref_out) < 1e-5
    for name, grad, ref in zip("q k v g beta".split(), grads, ref_grads):
        assert rel_err(grad, ref) < 1e-5, name


def test_recurrence_is_the_delta_rule():
    """One hand-checkable step: S = beta k v^T from a zero state, o = scale q.k beta v."""
    q = torch.tensor([[[[1.0, 0.0]]]])
    k = torch.tensor([[[[0.6, 0.8]]]])
    v = torch.tensor([[[[2.0, -1.0, 0.5]]]])
    g = torch.tensor([[[-0.1]]])
    beta = torch.tensor([[[1.5]]])
    out = gdn.gated_delta_rule_recurrent(q, k, v, g, beta, scale=0.5)
    expected = 0.5 * 0.6 * 1.5 * v
    torch.testing.assert_close(out, expected)


def test_negative_eigenvalue_flips_the_stored_value():
    """beta = 2 with a repeated unit key reflects the state: writing v twice gives back +v, not 2v."""
    k = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2).repeat(1, 2, 1, 1)
    v = torch.tensor([3.0]).view(1, 1, 1, 1).repeat(1, 2, 1, 1)
    g = torch.zeros(1, 2, 1)
    beta = torch.full((1, 2, 1), 2.0)
    out = gdn.gated_delta_rule_recurrent(k, k, v, g, beta, scale=1.0)
    # step 1: S = 2*3 = 6; step 2: S = 6 + 2*(3 - 6) = 0
    torch.testing.assert_close(out.flatten(), torch.tensor([6.0, 0.0]))


needs_fla = pytest.mark.skipif(not gdn.fla_available(), reason="needs CUDA and fla-core (GPU machine only)")


@needs_fla
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 5e-3), (torch.bfloat16, 2e-2)])
def test_fla_kernel_matches_recurrence(dtype, tol):
    bsz, seq_len, heads, key_dim, value_dim = 2, 300, 4, 42, 84  # the hybrid's head dims; T % 64 != 0
    inputs = make_inputs(bsz, seq_len, heads, key_dim, value_dim, device="cuda", dtype=dtype)
    d_out = torch.randn(bsz, seq_len, heads, value_dim, device="cuda")
    scale = key_dim**-0.5
    ref_out, ref_grads = outputs_and_grads(gdn.gated_delta_rule_recurrent, [t.float() for t in inputs], d_out, scale)
    out, grads = outputs_and_grads(gdn.gated_delta_rule_fla, inputs, d_out, scale)
    assert rel_err(out, ref_out) < tol
    for name, grad, ref in zip("q k v g beta".split(), grads, ref_grads):
        assert rel_err(grad, ref) < tol, name


def run_mixer(mixer, x):
    """Forward under bf16 autocast as in training, backward of a scalar: (output, dx, parameter grads)."""
    xin = x.clone().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = mixer(xin)
    y.float().square().mean().backward()
    return y.detach(), xin.grad, {n: p.grad for n, p in mixer.named_parameters()}


@needs_fla
def test_fla_mixer_matches_torch_mixer():
    """The whole mixer (fla's conv + kernel vs the PyTorch path), same weights, bf16 autocast as in training."""
    torch.manual_seed(0)
    fla_mixer = gdn.GatedDeltaNet(448, 8, 42, 84, 4, backend="fla").cuda()
    torch.nn.init.normal_(fla_mixer.o_proj.weight, std=0.02)  # zero-init would hide the output
    torch_mixer = gdn.GatedDeltaNet(448, 8, 42, 84, 4, backend="torch").cuda()
    torch_mixer.load_state_dict(fla_mixer.state_dict())
    x = torch.randn(2, 333, 448, device="cuda")
    (y_fla, dx_fla, grads_fla), (y_ref, dx_ref, grads_ref) = (run_mixer(m, x) for m in (fla_mixer, torch_mixer))
    assert rel_err(y_fla, y_ref) < 2e-2
    assert rel_err(dx_fla, dx_ref) < 3e-2
    for name in grads_ref:
        assert rel_err(grads_fla[name], grads_ref[name]) < 3e-2, name


@needs_fla
def test_fla_fused_mixer_matches_unfused():
    """GDN_FLA_FUSED=1 (L2 norm, gate and beta inside fla's kernel) against the unfused fla mixer:
    output and every gradient, A_log and dt_bias included, in bf16 autocast."""
    torch.manual_seed(0)
    plain = gdn.GatedDeltaNet(448, 8, 42, 84, 4, backend="fla").cuda()
    torch.nn.init.normal_(plain.o_proj.weight, std=0.02)
    fused = gdn.GatedDeltaNet(448, 8, 42, 84, 4, backend="fla", fla_fused=True).cuda()
    fused.load_state_dict(plain.state_dict())
    assert fused.fla_fused and not plain.fla_fused
    x = torch.randn(2, 333, 448, device="cuda")
    (y_fused, dx_fused, grads_fused), (y_plain, dx_plain, grads_plain) = (run_mixer(m, x) for m in (fused, plain))
    assert rel_err(y_fused, y_plain) < 1e-2
    assert rel_err(dx_fused, dx_plain) < 2e-2
    for name in grads_plain:
        assert rel_err(grads_fused[name], grads_plain[name]) < 2e-2, name
