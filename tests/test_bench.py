"""scripts/bench_step_time.py and scripts/compare_losses.py on the CPU.

The tiny bench builds both trainers' real models and optimizers (shrunk) and times real steps, so every code
path of the GPU benchmark except CUDA timing and memory runs here. compare_losses runs the tiny trainer twice.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bench_step_time as bench  # scripts/ is on sys.path (conftest)
from conftest import TINY_ENV

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "scripts" / "bench_step_time.py"
COMPARE = REPO / "scripts" / "compare_losses.py"


def run(script: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2  # bad input; 1 is a configuration that failed while measuring
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_round_robin_takes_block_i_of_every_arm_before_block_i_plus_1():
    assert bench.round_robin(["ref", "x", "y"], 2) == [(1, "ref"), (1, "x"), (1, "y"), (2, "ref"), (2, "x"), (2, "y")]
    assert bench.round_robin(["only"], 3) == [(1, "only"), (2, "only"), (3, "only")]


def test_paired_ratio_is_block_by_block():
    # block ratios 2.0, 2.0, 0.75: the median is 2.0 although the medians' ratio would be 20 / 10 = 2.0 and the
    # means' ratio 20 / 18.33; min and max are those of the pairs, not of the two ranges
    assert bench.paired_ratio([10.0, 20.0, 30.0], [5.0, 10.0, 40.0]) == {"median": 2.0, "min": 0.75, "max": 2.0}
    assert bench.paired_ratio([12.0, 6.0], [4.0, 3.0, 99.0]) == {"median": 2.5, "min": 2.0, "max": 3.0}  # pairs only
    assert bench.paired_ratio([], [1.0]) is None


def test_flops_formula():
    # 6 N B + 6 T^2 d L (B / T) at N=10, B=8, T=4, d=2, L=3: 480 + 6*16*2*3*2 = 480 + 1152
    assert bench.model_flops_per_step(10, 8, 4, 2, 3) == 1632.0


def test_tiny_bench_both_models_arms_round_robin_and_json_round_trip(tmp_path):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    proc = run(BENCH, "--tiny", "--contexts", "32,64", "--warmup", "1", "--steps", "2", "--repeats", "2",
               "--arm", "ref:", "--arm", "math:SDPA_BACKEND=math", "--out-json", out_json, "--out-md", out_md)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out_json.read_text())
    assert doc["schema"] == bench.SCHEMA and doc["settings"]["tiny"] is True and doc["settings"]["steps"] == 2
    got = {(r["model"], r["context"], r["arm"]): r for r in doc["results"]}
    assert set(got) == {(m, c, a) for m in ("baseline", "hybrid") for c in (32, 64) for a in ("ref", "math")}
    for (model, context, arm), r in got.items():
        assert r["status"] == "ok", r.get("error")
        assert len(r["block_ms_per_step"]) == 2 and all(math.isfinite(ms) and ms > 0 for ms in r["block_ms_per_step"])
        assert r["grad_accum_steps"] == 2 and r["batch_tokens"] == 2 * 2 * context
        assert r["settings"]["GRAD_ACCUM_STEPS"] == "2"  # not chosen by the probe: named
        assert r["sdpa_backend"] == "math" and r["compile"] is False and math.isfinite(r["final_loss"])
        if arm == "math":
            ref = got[(model, context, "ref")]
            assert r["reference_arm"] == "ref" and "reference_arm" not in ref
            assert r["ratio_vs_reference"] == bench.paired_ratio(r["block_ms_per_step"], ref["block_ms_per_step"])
    # 4 timed blocks per configuration, in round-robin order
    blocks = [line.split("]")[0].strip() for line in proc.stdout.splitlines() if line.strip().startswith("block ")]
    assert blocks == ["block 1/2 [ref", "block 1/2 [math", "block 2/2 [ref", "block 2/2 [math"] * 4
    # the flops count sees one attention layer in the tiny hybrid (GDN_LAYERS=0) and two in the baseline
    n = {m: got[(m, 32, "ref")]["n_params"] for m in ("baseline", "hybrid")}
    assert got[("baseline", 32, "ref")]["flops_per_step"] > 6 * 128 * (n["baseline"] - 1024 * 64)
    # round trip: what the compute-md reader loads is what was written
    loaded = bench.load_results([str(out_json)])
    assert [{k: v for k, v in r.items() if k not in ("source", "device_name", "torch", "tiny")} for r in loaded] \
        == doc["results"]
    md = out_md.read_text()
    assert md.count("| baseline | ") == 4 and md.count("| hybrid | ") == 4


def test_failed_configuration_is_recorded_and_the_others_run(tmp_path):
    out_json = tmp_path / "bench.json"
    # GDN_LAYERS=5 is invalid for the 2-layer tiny hybrid; the baseline ignores it.
    proc = run(BENCH, "--tiny", "--contexts", "32", "--warmup", "0", "--steps", "1", "--repeats", "1",
               "--env", "GDN_LAYERS=5", "--out-json", out_json)
    assert proc.returncode == 1
    results = {r["model"]: r for r in json.loads(out_json.read_text())["results"]}
    assert results["baseline"]["status"] == "ok" and results["baseline"]["block_ms_per_step"][0] > 0
    assert results["hybrid"]["status"] == "failed" and "GDN_LAYERS" in results["hybrid"]["error"]


@pytest.mark.parametrize("args, names", [
    (["--models", "baseline,transformer"], "--models"),
    (["--contexts", "0,64"], "--contexts"),
    (["--arm", "a:", "--arm", "a:NUM_LAYERS=3"], "--arm"),
    (["--arm", "noseparator"], "--arm"),
    (["--steps", "0"], "--steps"),
])
def test_bad_bench_input_is_one_error_line(args, names):
    assert names in one_error_line(run(BENCH, "--tiny", *args, timeout=60))


def write_doc(path: Path, results: list[dict], device: str = "GPU X") -> str:
    doc = {"schema": bench.SCHEMA, "command": "bench", "environment": {"device_name": device, "torch": "9"},
           "settings": {"warmup": 1, "steps": 1, "repeats": 3, "tiny": False}, "results": results}
    path.write_text(json.dumps(doc))
    return str(path)


def result(model: str, context: int, blocks: list[float], arm: str = "default", **settings) -> dict:
    return {"model": model, "context": context, "arm": arm, "settings": settings, "status": "ok",
            "block_ms_per_step": blocks, "batch_tokens": 393_216, "grad_accum_steps": 2, "sdpa_backend": "cudnn",
            "compile": True}


def test_compute_md_crossover_pooling_and_shared_baseline(tmp_path):
    a = write_doc(tmp_path / "a.json", [result("baseline", 8192, [100.0, 110.0, 120.0]),
                                        result("hybrid", 8192, [130.0, 131.0, 132.0]),
                                        result("baseline", 16384, [200.0, 201.0, 202.0])])
    # a second file of the same setup pools block by block; a GDN_ setting is the hybrid's alone, so its setup
    # shows the baseline of the setup without it
    b = write_doc(tmp_path / "b.json", [result("hybrid", 16384, [150.0, 160.0, 170.0]),
                                        result("hybrid", 16384, [100.0, 100.0, 100.0], GDN_CHUNK="32")])
    text = bench.compute_markdown([b, a])
    assert text == bench.compute_markdown([a, b])  # deterministic, inputs in path order
    first, second = text.split("\n## ")[1:3]
    assert first.startswith("GPU X: Current trainers, micro-steps auto")
    assert "| 8192 | 393,216 | 110.0 (100.0-120.0) | 131.0 (130.0-132.0) | 594 / 757 | 0.19, 0.17 | 1.19 (1.27) " \
           "| baseline |" in first
    # 16k: 160 / 201 = 0.80 ours, 847 / 952 = 0.89 published
    assert "| 16384 | 393,216 | 201.0 (200.0-202.0) | 160.0 (150.0-170.0) | 952 / 847 | 0.21, 0.19 | 0.80 (0.89) " \
           "| hybrid |" in first
    assert "Crossover (ours): the hybrid is faster per step from 16384 on (slower at 8192)." in first
    assert second.startswith("GPU X: Current trainers, micro-steps auto, GDN_CHUNK=32")
    assert "| 16384 | 393,216 | 201.0 (200.0-202.0) | 100.0 (100.0-100.0) |" in second
    assert "the hybrid is faster per step at every context measured (from 16384 on)" in second


def test_compute_md_paired_ratio_rows(tmp_path):
    ref = result("hybrid", 32768, [100.0, 100.0], arm="old", FUSED_PROJECTIONS="0")
    new = dict(result("hybrid", 32768, [90.0, 80.0], arm="new"), reference_arm="old")
    text = bench.compute_markdown([write_doc(tmp_path / "p.json", [ref, new])])
    section = text.split("## Arms of one process")[1]
    # pairs 0.9 and 0.8: median 0.85
    assert "| hybrid | 32768 | FUSED_PROJECTIONS=0 | defaults | 100.0 (100.0-100.0) | 85.0 (80.0-90.0) " \
           "| 0.850 (0.800-0.900) |" in section
    assert "## GPU X: Trainers with FUSED_PROJECTIONS=0, micro-steps auto" in text


def test_compute_md_never_pools_two_gpus(tmp_path):
    """The same setup on two GPUs gives two sections, the newer name first, each with its own GPU's numbers."""
    a = write_doc(tmp_path / "a.json", [result("baseline", 8192, [100.0] * 3), result("hybrid", 8192, [90.0] * 3)],
                  device="NVIDIA H100")
    b = write_doc(tmp_path / "b.json", [result("baseline", 8192, [80.0] * 3), result("hybrid", 4096, [70.0] * 3)],
                  device="NVIDIA H200")
    sections = bench.compute_markdown([a, b]).split("\n## ")[1:3]
    assert [s.split(":")[0] for s in sections] == ["NVIDIA H200", "NVIDIA H100"]
    h200, h100 = sections
    assert "| 8192 | 393,216 | 80.0 (80.0-80.0) | - |" in h200 and "| 4096 | 393,216 | - | 70.0 (70.0-70.0) |" in h200
    assert "| 8192 | 393,216 | 100.0 (100.0-100.0) | 90.0 (90.0-90.0) |" in h100 and "4096" not in h100


def test_compute_md_refuses_another_schema(tmp_path, capsys):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schema": "bench_step_time/1", "results": []}))
    with pytest.raises(SystemExit) as exit_info:
        bench.compute_markdown([str(path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and "bench_step_time/1" in err


def test_committed_compute_experiment_md_is_what_its_command_rebuilds(tmp_path):
    out = tmp_path / "compute_experiment.md"
    proc = run(BENCH, "--regenerate-compute-md", "--out-md", out, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == (REPO / "compute_experiment.md").read_bytes()
    for source in bench.COMPUTE_SOURCES:  # every source is in the file's list, with H100 numbers from it
        assert f"`{source}`" in out.read_text()


def compare_args(tiny_data: dict, tmp_path: Path) -> list:
    shared = {k: v for k, v in TINY_ENV.items() if k not in ("ITERATIONS", "VAL_LOSS_EVERY", "TRAIN_LOG_EVERY",
                                                              "MAX_WALLCLOCK_SECONDS", "GDN_LAYERS")}
    shared["ARTIFACT_DIR"] = str(tmp_path / "artifacts")  # the trainers run in the repository root
    return ["--data-path", tiny_data["data_path"], "--tokenizer-path", tiny_data["tokenizer"],
            "--log-dir", tmp_path / "logs", *(a for k, v in shared.items() for a in ("--env", f"{k}={v}"))]


def test_compare_losses_names_what_is_missing(tiny_data, tmp_path):
    args = compare_args(tiny_data, tmp_path)
    assert "no_such.py" in one_error_line(run(COMPARE, "--trainer", "no_such.py", "--arm", "a:", *args))
    line = one_error_line(run(COMPARE, "--trainer", "train_gpt.py", "--arm", f"old:TRAINER={tmp_path}/old.py",
                              "--arm", "new:", *args))
    assert "old.py" in line and "TRAINER" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_error_line(run(COMPARE, "--trainer", "train_gpt.py", "--arm", "a:", *args, "--data-path", empty))
    assert "--data-path" in line and str(empty) in line
    line = one_error_line(run(COMPARE, "--trainer", "train_gpt.py", "--arm", "a:", *args,
                              "--tokenizer-path", tmp_path / "none.model"))
    assert "--tokenizer-path" in line
    line = one_error_line(run(COMPARE, "--trainer", "train_gpt.py", "--arm", "a:NPROC=x", *args))
    assert "NPROC=x" in line
    for text in ("not json", '{"arms": [{"name": "a"}]}'):  # not JSON; arms without losses
        saved = tmp_path / "saved.json"
        saved.write_text(text)
        assert "--from-json" in one_error_line(run(COMPARE, "--from-json", saved))


def test_bench_marks_only_the_first_arm_as_reference_when_it_fails(tmp_path):
    doc = {"settings": {"tiny": True}, "results": [
        {"model": "baseline", "context": 64, "arm": arm, "settings": {}, "grad_accum_steps": 1, "status": status,
         "error": "boom", "block_ms_per_step": [5.0], "batch_tokens": 128, "flops_per_step": 1.0}
        for arm, status in (("first", "failed"), ("second", "ok"))]}
    rows = {row[2]: row for row in bench.run_rows(doc)}
    assert rows["first"][5].startswith("FAILED") and rows["second"][9] == "-"


def test_compare_losses_runs_another_copy_of_the_trainer_as_an_arm(tiny_data, tmp_path):
    old = tmp_path / "old_train_gpt.py"
    shutil.copy(REPO / "train_gpt.py", old)  # the same code elsewhere: the same losses, step for step
    out = tmp_path / "compare.json"
    proc = run(COMPARE, "--trainer", "train_gpt.py", "--steps", "2", "--skip-steps", "0", "--arm",
               f"old:TRAINER={old}", "--arm", "new:", *compare_args(tiny_data, tmp_path), "--out-json", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    arms = {a["name"]: a for a in json.loads(out.read_text())["arms"]}
    assert arms["old"]["trainer"] == str(old.resolve()) and arms["new"]["trainer"] == str(REPO / "train_gpt.py")
    assert arms["old"]["steps"] == arms["new"]["steps"] == [1, 2]
    assert arms["new"]["losses"] == arms["old"]["losses"] and arms["new"]["max_abs_diff"] == 0.0
    assert all(5.0 < loss < 8.0 for loss in arms["new"]["losses"])  # ~ln(1024) = 6.93 at the start
