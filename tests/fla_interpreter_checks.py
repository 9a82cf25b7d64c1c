"""fla's GDN paths on the CPU through Triton's interpreter, against the fp32 references: prints one JSON object.

Run by tests/test_fla_interpreter.py in its own process (TRITON_INTERPRET=1 must be set before triton is
imported, and the interpreter's patches stay out of the main test process); the asserts live there.
Every entry holds relative errors ||a - b|| / ||b||: "out" and one per gradient.
"""

import json
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS), str(TESTS.parent)]

import triton_interpreter  # noqa: E402  (patches Triton's interpreter; needs TRITON_INTERPRET=1)

triton_interpreter.check_versions()

import train_gpt_gdn as gdn  # noqa: E402
from gdn_reference import gated_delta_rule_fla_wrapper, gated_delta_rule_recurrent  # noqa: E402
from test_gdn import mixer_errors, path_errors  # noqa: E402


def compare_mixers(settings: dict) -> dict[str, float]:
    """A small GDN mixer (width 96, 2 heads of 24/48, conv 4; 100 tokens: one full chunk of 64 and a ragged
    one) with these settings against the PyTorch path with the same weights, in fp32 (no autocast)."""
    return mixer_errors({"backend": "torch"}, settings, dims=(96, 2, 24, 48, 4), seq_len=100, device="cpu",
                        autocast=False)


def main() -> None:
    results = {"functions": {}, "mixers": {}}
    hybrid_heads = (42, 84)  # the hybrid's head dims: not powers of two, padded inside fla's kernels
    for seq_len in (100, 130):  # one ragged chunk; two full chunks and a ragged one
        results["functions"][f"fla_vs_recurrence_T{seq_len}"] = path_errors(
            gdn.gated_delta_rule_fla, gated_delta_rule_recurrent, (2, seq_len, 2, *hybrid_heads))[0]
    # GDN_KEY_DIM=64 (the power-of-two variants): K 64, V 128, fla's blocks without padding.
    results["functions"]["fla_vs_recurrence_T100_K64"] = path_errors(
        gdn.gated_delta_rule_fla, gated_delta_rule_recurrent, (1, 100, 2, 64, 128))[0]
    for seq_len in (1, 64, 100):
        results["functions"][f"fla_vs_wrapper_T{seq_len}"] = path_errors(
            gdn.gated_delta_rule_fla, gated_delta_rule_fla_wrapper, (2, seq_len, 2, *hybrid_heads))[0]
    results["functions"]["wrapper_vs_recurrence_T100"] = path_errors(
        gated_delta_rule_fla_wrapper, gated_delta_rule_recurrent, (2, 100, 2, *hybrid_heads))[0]
    results["mixers"]["fla"] = compare_mixers({"backend": "fla"})
    results["kernels"] = sorted(set(triton_interpreter.KERNELS_RUN))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
