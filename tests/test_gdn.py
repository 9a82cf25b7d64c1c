"""Gated DeltaNet maths: the chunked PyTorch path and fla's CUDA kernel against the step-by-step fp32 recurrence.

Tolerances are relative errors ||a - b|| / ||b|| per tensor (as flash-linear-attention's tests use):
the chunked form is exact maths in fp32, so 1e-5; fla's kernels use TF32/bf16 tensor cores, so
5e-3 with fp32 inputs and 2e-2 with bf16 inputs (the H100 measured 1.5e-3..2e-3 and 5e-3..6e-3).
"""

import pytest
import torch

import train_gpt_gdn as gdn
from conftest import rel_err


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
    # the hybrid's head dims; T % 64 != 0
    assert_cuda_paths_agree(gdn.gated_delta_rule_fla, gdn.gated_delta_rule_recurrent, (2, 300, 4, 42, 84), dtype, tol,
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
    ("out"), dx and every parameter's gradient, then both mixers."""
    torch.manual_seed(0)
    first = gdn.GatedDeltaNet(*dims, **weights_from).to(device)
    torch.nn.init.normal_(first.o_proj.weight, std=0.02)
    second = gdn.GatedDeltaNet(*dims, **other).to(device)
    second.load_state_dict(first.state_dict())
    x = torch.randn(2, seq_len, dims[0], device=device)
    (y_ref, dx_ref, grads_ref), (y, dx, grads) = (run_mixer(m, x, autocast) for m in (first, second))
    errors = {"out": rel_err(y, y_ref), "dx": rel_err(dx, dx_ref)}
    errors.update({name: rel_err(grads[name], grads_ref[name]) for name in grads_ref})
    return errors, first, second


def assert_mixers_agree(weights_from: dict, other: dict, out_tol: float, grad_tol: float):
    """Published-shape mixers on CUDA under bf16 autocast as in training (mixer_errors): output within
    out_tol, dx and every gradient within grad_tol."""
    errors, first, second = mixer_errors(weights_from, other)
    assert errors.pop("out") < out_tol
    assert errors.pop("dx") < grad_tol
    for name, err in errors.items():
        assert err < grad_tol, name
    return first, second


@needs_fla
def test_fla_mixer_matches_torch_mixer():
    """The whole mixer (fla's conv + kernel vs the PyTorch path), same weights, bf16 autocast as in training."""
    # The PyTorch path is the reference: rel_err(fla, torch), as before the helper existed.
    assert_mixers_agree({"backend": "torch"}, {"backend": "fla"}, out_tol=2e-2, grad_tol=3e-2)


@needs_fla
def test_fla_fused_mixer_matches_unfused():
    """GDN_FLA_FUSED=1 (L2 norm, gate and beta inside fla's kernel) against the unfused fla mixer:
    output and every gradient, A_log and dt_bias included, in bf16 autocast."""
    plain, fused = assert_mixers_agree({"backend": "fla"}, {"backend": "fla", "fla_fused": True},
                                       out_tol=1e-2, grad_tol=2e-2)
    assert fused.fla_fused and not plain.fla_fused


@needs_fla
def test_fla_mixer_with_fused_projections_matches_separate():
    """FUSED_PROJECTIONS=1 on fla: one matmul for the six input projections and one fla causal_conv1d over
    the q|k|v channels (a strided slice of that matmul's output) against the separate calls, bf16
    autocast; the bounds of the in-kernel test above, as a differently rounded bf16 projection propagates
    the same way. (Not yet run on a GPU; in fp32 it passes on the CPU through Triton's interpreter,
    test_fla_interpreter.py.)"""
    assert_mixers_agree({"backend": "fla"}, {"backend": "fla", "fused_projections": True}, out_tol=1e-2, grad_tol=2e-2)


@needs_fla
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seq_len", [300, 64, 1])  # T % 64 != 0, one whole chunk, a single token
def test_keep_states_matches_fla_wrapper(dtype, seq_len):
    """GDN_KEEP_STATES=1: fla's forward kernels run once and their states serve the backward. The same
    kernels on the same inputs as fla's own autograd Function, so the output and every gradient should be
    the same numbers: relative error <= 1e-6 (0 expected; the bound leaves room for an atomic add's order).
    (Written without a GPU at hand: not yet run.)"""
    (out, grads), (ref_out, _), inputs = assert_cuda_paths_agree(
        gdn.gated_delta_rule_fla_keep_states, gdn.gated_delta_rule_fla, (2, seq_len, 4, 42, 84), dtype, 1e-6)
    assert out.dtype == ref_out.dtype
    assert [grad.dtype for grad in grads] == [inp.dtype for inp in inputs]


@needs_fla
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 5e-3), (torch.bfloat16, 2e-2)])
def test_keep_states_matches_recurrence(dtype, tol):
    """The same path against the fp32 step-by-step recurrence, with the fla kernel's tolerances (above)."""
    assert_cuda_paths_agree(gdn.gated_delta_rule_fla_keep_states, gdn.gated_delta_rule_recurrent, (2, 200, 3, 42, 84),
                            dtype, tol, seed=3, ref_fp32=True)


@needs_fla
def test_keep_states_mixer_matches_fla_mixer():
    """The whole mixer with GDN_KEEP_STATES against the plain fla mixer, same weights, bf16 autocast as in
    training: the same kernels, so the same numbers (bounds as tight as the kernel test's)."""
    plain, kept = assert_mixers_agree({"backend": "fla"}, {"backend": "fla", "keep_states": True},
                                      out_tol=1e-6, grad_tol=1e-6)
    assert kept.keep_states and not plain.keep_states


# ------------------------------------------------ GDN_CUSTOM_OP: the kernel as torch.library custom ops
# On CPU the pgolf:: ops run the PyTorch chunked path: these tests check the plumbing (registration, fake
# shapes, autograd wiring, fullgraph compile). Training runs their CUDA kernels (fla), checked by the
# needs_fla tests below on a GPU machine.

CUSTOM_OP_SHAPE = (2, 77, 3, 20, 36)  # B, T (not a multiple of the chunk), H, K, V


def custom_op_args(device="cpu", dtype=torch.float32, requires_grad=False):
    """(q, k, v, g, beta, scale) for gdn_chunk_fwd, and a d_out."""
    bsz, seq_len, heads, key_dim, value_dim = CUSTOM_OP_SHAPE
    inputs = make_inputs(*CUSTOM_OP_SHAPE, device=device, dtype=dtype)
    inputs[4] = inputs[4].to(dtype)  # beta in q's dtype, as gated_delta_rule_op passes it
    inputs = [t.requires_grad_(requires_grad) for t in inputs]
    d_out = torch.randn(bsz, seq_len, heads, value_dim, generator=torch.Generator().manual_seed(2)).to(device)
    return (*inputs, key_dim**-0.5), d_out


def test_custom_op_matches_chunked():
    """The op path (gdn_chunk_fwd and its registered backward) against gated_delta_rule_chunked called directly:
    fp32, 1e-5 relative (the same maths on CPU; measured 0)."""
    (*inputs, scale), d_out = custom_op_args()
    ref_out, ref_grads = outputs_and_grads(gdn.gated_delta_rule_chunked, inputs, d_out, scale)
    out, grads = outputs_and_grads(gdn.gated_delta_rule_op, inputs, d_out, scale)
    assert rel_err(out, ref_out) < 1e-5
    for name, grad, ref in zip("q k v g beta".split(), grads, ref_grads):
        assert rel_err(grad, ref) < 1e-5, name


def opcheck_custom_ops(device):
    """torch.library.opcheck on both ops (schema, autograd registration, fake vs real shapes/strides/dtypes,
    AOT dispatch with dynamic shapes); the forward also with inputs that require grad, which runs the backward
    op through the registered autograd."""
    args, d_out = custom_op_args(device=device)
    torch.library.opcheck(torch.ops.pgolf.gdn_chunk_fwd.default, args)
    grad_args, _ = custom_op_args(device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.pgolf.gdn_chunk_fwd.default, grad_args)
    q, k, v, g, beta, scale = args
    _, g_cumsum, A = torch.ops.pgolf.gdn_chunk_fwd(*args)
    torch.library.opcheck(torch.ops.pgolf.gdn_chunk_bwd.default, (q, k, v, g_cumsum, beta, A, d_out, scale))


def test_custom_op_opcheck_cpu():
    opcheck_custom_ops("cpu")


@pytest.mark.parametrize("shift_conv", [False, True])
def test_custom_op_mixer_compiles_fullgraph(shift_conv):
    """GDN_CUSTOM_OP=1's mixer (CPU: the op's PyTorch kernel) under torch.compile(fullgraph=True, aot_eager):
    no graph break, and output, dx and every gradient as the uncompiled plain PyTorch mixer's (fp32, 1e-5;
    measured 0 for the output, 3e-9 for dx, <= 3e-7 for the parameter gradients). With GDN_SHIFT_CONV=1
    too, the graph has no convolution left."""
    torch.manual_seed(0)
    plain = gdn.GatedDeltaNet(64, 3, 20, 36, 4, backend="torch")
    torch.nn.init.normal_(plain.o_proj.weight, std=0.02)  # off the zero init, which would hide the rest
    with_op = gdn.GatedDeltaNet(64, 3, 20, 36, 4, backend="torch", custom_op=True, shift_conv=shift_conv)
    with_op.load_state_dict(plain.state_dict())
    x = torch.randn(2, 77, 64)
    graphs = []

    def recording_aot_eager(gm, example_inputs):
        graphs.append(str(gm.graph))
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    results = []
    for mixer in (plain, torch.compile(with_op, fullgraph=True, backend=recording_aot_eager)):
        xin = x.clone().requires_grad_(True)
        y = mixer(xin)
        y.square().mean().backward()
        results.append((y.detach(), xin.grad, {n: p.grad for n, p in
                                                (plain if mixer is plain else with_op).named_parameters()}))
    (y_ref, dx_ref, grads_ref), (y, dx, grads) = results
    assert len(graphs) == 1 and "pgolf.gdn_chunk_fwd" in graphs[0]  # one graph, with the op in it
    assert ("conv1d" in graphs[0]) is not shift_conv
    assert rel_err(y, y_ref) < 1e-5
    assert rel_err(dx, dx_ref) < 1e-5
    for name in grads_ref:
        assert rel_err(grads[name], grads_ref[name]) < 1e-5, name


@needs_fla
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 5e-3), (torch.bfloat16, 2e-2)])
def test_custom_op_matches_fla_wrapper(dtype, tol):
    """On CUDA the op runs fla's chunk_gated_delta_rule_fwd/_bwd directly: against the gated_delta_rule_fla
    wrapper (fla's autograd Function), fwd and grads, the tolerances of the fla tests above. (Passed on an
    H100: logs_experiment/h100_checks/20261123/custom_op_tests.out.)"""
    assert_cuda_paths_agree(gdn.gated_delta_rule_op, gdn.gated_delta_rule_fla, (2, 300, 4, 42, 84), dtype, tol)


@needs_fla
def test_custom_op_opcheck_cuda():
    """opcheck on the fla-backed CUDA kernels: the fake shapes/dtypes/strides against fla's real outputs.
    (Passed on an H100, as above.)"""
    opcheck_custom_ops("cuda")


# ---------------------------------------------------------------- GDN_SHIFT_CONV: the causal conv written out


@pytest.mark.parametrize("seq_len,channels,width", [(77, 13, 4), (3, 5, 4), (1, 6, 4), (50, 7, 3)])
def test_shift_conv_matches_conv1d(seq_len, channels, width):
    """causal_conv_silu_shift against F.conv1d (the "torch" backend) in fp64, output and both gradients,
    including sequences shorter than the filter; the shift form computes in fp32, so 1e-5 relative."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, seq_len, channels, generator=gen)
    weight = torch.randn(channels, 1, width, generator=gen)
    d_out = torch.randn(2, seq_len, channels, generator=gen)
    results = []
    for backend, dtype in (("torch", torch.float64), ("shift", torch.float32)):
        xi, wi = x.to(dtype).requires_grad_(True), weight.to(dtype).requires_grad_(True)
        y = gdn.causal_conv_silu(xi, wi, backend)
        assert y.dtype == dtype and y.shape == x.shape
        (y * d_out.to(dtype)).sum().backward()
        results.append((y.detach(), xi.grad, wi.grad))
    for name, got, want in zip(("out", "dx", "dweight"), results[1], results[0]):
        assert rel_err(got, want) < 1e-5, name


def test_shift_conv_is_causal():
    """Changing x at step t changes no output before t."""
    gen = torch.Generator().manual_seed(4)
    x, weight = torch.randn(1, 20, 3, generator=gen), torch.randn(3, 1, 4, generator=gen)
    y = gdn.causal_conv_silu_shift(x, weight)
    x2 = x.clone()
    x2[:, 9] += 1.0
    y2 = gdn.causal_conv_silu_shift(x2, weight)
    assert torch.equal(y[:, :9], y2[:, :9]) and not torch.equal(y[:, 9:13], y2[:, 9:13])
    assert torch.equal(y[:, 13:], y2[:, 13:])  # a width-4 filter reaches 3 steps ahead, no further


def test_shift_conv_bf16_returns_bf16():
    """In bf16 the shift form accumulates in fp32 and rounds once, as the conv kernels do: bf16 out, within
    bf16 rounding (1e-2 relative) of the fp64 convolution."""
    gen = torch.Generator().manual_seed(5)
    x, weight = torch.randn(2, 33, 10, generator=gen), torch.randn(10, 1, 4, generator=gen)
    y = gdn.causal_conv_silu_shift(x.bfloat16(), weight)
    assert y.dtype == torch.bfloat16
    assert rel_err(y, gdn.causal_conv_silu(x.double(), weight.double(), "torch")) < 1e-2


@pytest.mark.parametrize("fused_projections", [False, True])
def test_mixer_with_shift_conv_matches_conv1d(fused_projections):
    """The whole mixer (PyTorch GDN path) with GDN_SHIFT_CONV=1 against F.conv1d: output, dx and every parameter
    gradient within 1e-5 relative in fp32, with and without FUSED_PROJECTIONS."""
    torch.manual_seed(6)
    plain = gdn.GatedDeltaNet(48, 3, 10, 14, 4, backend="torch", fused_projections=fused_projections)
    with torch.no_grad():
        for param in plain.parameters():
            param.add_(torch.randn_like(param) * 0.1)  # off the init (the zero output projection hides the rest)
    shifted = gdn.GatedDeltaNet(48, 3, 10, 14, 4, backend="torch", fused_projections=fused_projections,
                                shift_conv=True)
    shifted.load_state_dict(plain.state_dict())
    assert shifted.conv_backend == "shift"
    x = torch.randn(2, 45, 48)
    (y_ref, dx_ref, grads_ref), (y, dx, grads) = (run_mixer(m, x, autocast=False) for m in (plain, shifted))
    assert rel_err(y, y_ref) < 1e-5 and rel_err(dx, dx_ref) < 1e-5
    for name in grads_ref:
        assert rel_err(grads[name], grads_ref[name]) < 1e-5, name


@needs_fla
def test_fla_mixer_with_shift_conv_matches_fla_conv():
    """On CUDA: the fla mixer with the written-out convolution against fla's causal_conv1d kernel, bf16
    autocast, the bounds of the other in-mixer comparisons on fla."""
    ref, shifted = assert_mixers_agree({"backend": "fla"}, {"backend": "fla", "shift_conv": True},
                                       out_tol=1e-2, grad_tol=2e-2)
    assert shifted.conv_backend == "shift" and ref.conv_backend == "fla"
