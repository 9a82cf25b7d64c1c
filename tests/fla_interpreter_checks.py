"""fla's GDN paths on the CPU through Triton's interpreter, against the fp32 references: prints one JSON object.

Run by tests/test_fla_interpreter.py in its own process (TRITON_INTERPRET=1 must be set before triton is
imported, and the interpreter's patches stay out of the main test process); the asserts live there.
Every entry holds relative errors ||a - b|| / ||b||: "out" and one per gradient.
"""

import json
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS), str(TESTS.parent)]

import triton_interpreter  # noqa: E402  (patches Triton's interpreter; needs TRITON_INTERPRET=1)

triton_interpreter.check_versions()

import train_gpt_gdn as gdn  # noqa: E402
from conftest import rel_err  # noqa: E402
from test_gdn import make_inputs, outputs_and_grads, run_mixer  # noqa: E402

GRAD_NAMES = ("q", "k", "v", "g", "beta")


def compare_functions(fn, ref_fn, shape: tuple[int, int, int, int, int]) -> dict[str, float]:
    """fn against ref_fn on the same fp32 inputs (B, T, H, K, V) and output gradient."""
    bsz, seq_len, heads, key_dim, value_dim = shape
    inputs = make_inputs(*shape)
    d_out = torch.randn(bsz, seq_len, heads, value_dim, generator=torch.Generator().manual_seed(1))
    scale = key_dim**-0.5
    ref_out, ref_grads = outputs_and_grads(ref_fn, inputs, d_out, scale)
    out, grads = outputs_and_grads(fn, inputs, d_out, scale)
    errors = {"out": rel_err(out, ref_out)}
    errors.update({name: rel_err(grad, ref) for name, grad, ref in zip(GRAD_NAMES, grads, ref_grads)})
    return errors


def compare_mixers(settings: dict) -> dict[str, float]:
    """A small GDN mixer (width 96, 2 heads of 24/48, conv 4; 100 tokens: one full chunk of 64 and a ragged
    one) with these settings against the PyTorch path with the same weights, in fp32 (no autocast)."""

    def build(**kwargs) -> gdn.GatedDeltaNet:
        torch.manual_seed(0)
        mixer = gdn.GatedDeltaNet(96, 2, 24, 48, 4, **kwargs)
        torch.nn.init.normal_(mixer.o_proj.weight, std=0.02)  # off the zero init, which would hide the rest
        return mixer

    reference = build(backend="torch")
    other = build(**settings)
    other.load_state_dict(reference.state_dict())
    x = torch.randn(2, 100, 96, generator=torch.Generator().manual_seed(2))
    (y_ref, dx_ref, grads_ref), (y, dx, grads) = (run_mixer(m, x, autocast=False) for m in (reference, other))
    errors = {"out": rel_err(y, y_ref), "dx": rel_err(dx, dx_ref)}
    errors.update({name: rel_err(grads[name], grads_ref[name]) for name in grads_ref})
    return errors


def main() -> None:
    results = {"functions": {}, "mixers": {}}
    hybrid_heads = (42, 84)  # the hybrid's head dims: not powers of two, padded inside fla's kernels
    for seq_len in (100, 130):  # one ragged chunk; two full chunks and a ragged one
        results["functions"][f"fla_vs_recurrence_T{seq_len}"] = compare_functions(
            gdn.gated_delta_rule_fla, gdn.gated_delta_rule_recurrent, (2, seq_len, 2, *hybrid_heads))
    # GDN_KEY_DIM=64 (the power-of-two variants): K 64, V 128, fla's blocks without padding.
    results["functions"]["fla_vs_recurrence_T100_K64"] = compare_functions(
        gdn.gated_delta_rule_fla, gdn.gated_delta_rule_recurrent, (1, 100, 2, 64, 128))
    for seq_len in (1, 64, 100):
        results["functions"][f"keep_states_vs_fla_T{seq_len}"] = compare_functions(
            gdn.gated_delta_rule_fla_keep_states, gdn.gated_delta_rule_fla, (2, seq_len, 2, *hybrid_heads))
    results["functions"]["keep_states_vs_recurrence_T100"] = compare_functions(
        gdn.gated_delta_rule_fla_keep_states, gdn.gated_delta_rule_recurrent, (2, 100, 2, *hybrid_heads))
    for name, settings in {"fla": {}, "fla_fused": {"fla_fused": True}, "keep_states": {"keep_states": True},
                           "fused_projections": {"fused_projections": True}}.items():
        results["mixers"][name] = compare_mixers({"backend": "fla", **settings})
    results["kernels"] = sorted(set(triton_interpreter.KERNELS_RUN))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
