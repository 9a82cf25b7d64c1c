"""fla-core's Triton kernels on the CPU (Triton's interpreter) against the fp32 references.

The GPU tests in test_gdn.py check fla's kernels where they run in training; these run the same kernel code
on the CPU, so CI checks the hybrid's fla backend: GatedDeltaRuleKeepStates against fla's own
chunk_gated_delta_rule and against the recurrence (tests/gdn_reference.py), and the whole fla mixer (fla's
causal conv over the fused q|k|v channels, then the kernels) against the torch mixer. Triton and fla-core
come from requirements-interp.txt, installed into .interp-site (outside the main environment: a GPU box's
torch brings its own Triton); without it these tests skip, naming the install command. The checks run in one
subprocess (tests/fla_interpreter_checks.py).

Tolerances (relative errors per tensor). The interpreter computes in plain fp32 (no TF32 tensor cores), so
fla's chunked maths agrees with the step-by-step recurrence to ~1e-6 (measured <= 2e-6 on every tensor):
1e-4. The fla backend runs the same kernels on the same inputs as fla's wrapper: 1e-6, as on the GPU.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from test_gdn import GRAD_NAMES

INTERP_SITE = REPO_ROOT / ".interp-site"
INSTALL = "python3 -m pip install --no-deps --upgrade --target .interp-site -r requirements-interp.txt"


@pytest.fixture(scope="module")
def interpreter_results() -> dict:
    if not ((INTERP_SITE / "triton").is_dir() and (INTERP_SITE / "fla").is_dir()):
        pytest.skip(f"needs Triton and fla-core in .interp-site: {INSTALL}")
    # No GPU in the subprocess, on a GPU box too: fla would see Hopper there and send its backward to TileLang.
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join(filter(None, [str(INTERP_SITE), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "fla_interpreter_checks.py")], env=env,
                          capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_within(errors: dict, tol: float, names: tuple) -> None:
    assert set(names) <= set(errors), set(names) - set(errors)
    worst = {name: err for name, err in errors.items() if not err <= tol}  # a NaN fails too
    assert not worst, f"rel_err above {tol}: {worst}"


@pytest.mark.parametrize("case", ["T100", "T130", "T100_K64"])
def test_fla_backend_matches_recurrence_on_cpu(interpreter_results, case):
    """The hybrid's head dims 42/84 at T = 100 and 130; the power-of-two variants' 64/128 at T = 100."""
    assert_within(interpreter_results["functions"][f"fla_vs_recurrence_{case}"], 1e-4, ("out",) + GRAD_NAMES)


@pytest.mark.parametrize("seq_len", [1, 64, 100])
def test_fla_backend_equals_fla_wrapper_on_cpu(interpreter_results, seq_len):
    assert_within(interpreter_results["functions"][f"fla_vs_wrapper_T{seq_len}"], 1e-6, ("out",) + GRAD_NAMES)


def test_fla_wrapper_matches_recurrence_on_cpu(interpreter_results):
    """The reference wrapper itself computes the delta rule (so agreeing with it means something)."""
    assert_within(interpreter_results["functions"]["wrapper_vs_recurrence_T100"], 1e-4, ("out",) + GRAD_NAMES)


def test_fla_mixer_matches_torch_mixer_on_cpu(interpreter_results):
    """The whole mixer on fla (its causal conv, the kernels) against the torch backend with the same weights:
    output, dx and every parameter's gradient."""
    errors = interpreter_results["mixers"]["fla"]
    assert_within(errors, 1e-4, ("out", "dx", "A_log", "dt_bias", "q_conv", "o_proj.weight"))


def test_fla_triton_kernels_ran(interpreter_results):
    """The comparisons above ran fla's Triton kernels, not a PyTorch fallback: the state passes forward and
    backward, the output, the WY backward and the causal conv."""
    expected = {"chunk_gated_delta_rule_fwd_kernel_h_blockdim64", "chunk_gated_delta_rule_bwd_kernel_dhu_blockdim64",
                "chunk_fwd_kernel_o", "chunk_bwd_kernel_dqkwg", "prepare_wy_repr_bwd_kernel",
                "recompute_w_u_fwd_kernel", "causal_conv1d_fwd_kernel", "causal_conv1d_bwd_kernel"}
    assert expected <= set(interpreter_results["kernels"]), expected - set(interpreter_results["kernels"])
