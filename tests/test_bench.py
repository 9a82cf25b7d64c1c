"""scripts/bench_step_time.py on the CPU: the --tiny benchmark end to end, and --regenerate-compute-md.

The tiny run builds both trainers' real models and optimizers (shrunk) and times real steps, so every
code path of the GPU benchmark except CUDA timing/memory runs here; it takes a few seconds.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bench_step_time as bench  # scripts/ is on sys.path (conftest)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "bench_step_time.py"
CONTEXTS = [32, 64]


def run_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_tiny_benchmark_both_models(tmp_path):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    proc = run_script("--tiny", "--models", "baseline,hybrid", "--contexts", ",".join(map(str, CONTEXTS)),
                      "--warmup", "1", "--steps", "2", "--repeats", "2", "--profile-steps", "1",
                      "--profile-trace-dir", str(tmp_path / "traces"), "--out-json", str(out_json), "--out-md", str(out_md))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    doc = json.loads(out_json.read_text())
    assert doc["schema"] == "bench_step_time/1"
    assert doc["settings"]["tiny"] is True and doc["settings"]["steps"] == 2
    for key in ("torch", "triton", "fla", "device_name"):
        assert key in doc["environment"]
    got = {(r["model"], r["context"]): r for r in doc["results"]}
    assert set(got) == {(m, c) for m in ("baseline", "hybrid") for c in CONTEXTS}
    for (model, context), r in got.items():
        assert r["status"] == "ok", r.get("error")
        assert len(r["block_s"]) == 2 and all(t > 0 for t in r["block_s"])
        assert len(r["block_ms_per_step"]) == 2 and all(ms > 0 for ms in r["block_ms_per_step"])
        assert r["ms_per_step_min"] <= r["ms_per_step_median"] <= r["ms_per_step_max"]
        assert r["tokens_per_s"] > 0 and r["flops_per_step"] > 0
        assert r["mfu"] is None and r["published_ms_per_step"] is None  # CPU, tiny model
        assert r["grad_accum_steps"] == 2 and r["batch_tokens"] == 2 * 2 * context
        assert r["sdpa_backend"] == "math" and r["compile"] is False
        assert r["mixer_lines"]
        # --profile-steps 1: operator self times by category; they add up to the total, matmuls are there
        prof = r["profile"]
        assert prof["steps"] == 1 and prof["wall_ms_per_step"] > 0 and prof["busy_ms_per_step"] > 0
        cats = {c["category"]: c["ms_per_step"] for c in prof["categories"]}
        assert sum(cats.values()) == pytest.approx(prof["busy_ms_per_step"], rel=1e-9)
        assert cats["matmul"] > 0 and cats["attention (sdpa)"] > 0
        trace = json.loads(gzip.decompress(Path(prof["trace"]).read_bytes()))  # the timeline, Chrome format
        assert Path(prof["trace"]).name == f"trace_{model}_{context}.json.gz"
        assert any(e.get("name") == "aten::mm" for e in trace["traceEvents"])
        top = [t["ms_per_step"] for t in prof["top"]]
        assert top == sorted(top, reverse=True) and len(top) == bench.PROFILE_TOP
    assert got[("baseline", 32)]["attn_layers"] == 2
    assert got[("hybrid", 32)]["attn_layers"] == 1  # GDN_LAYERS=0: block 0 is Gated DeltaNet
    assert "gdn_layers:[0]" in got[("hybrid", 32)]["mixer_lines"][0]

    md = out_md.read_text()
    assert ("| model | context | batch tokens | micro-steps | ms/step median | min-max | tokens/s | peak mem GiB "
            "| MFU | published ms/step | ours/published |") in md
    for model in ("baseline", "hybrid"):
        for context in CONTEXTS:
            assert f"| {model} | {context} | {2 * 2 * context:,} | 2 | " in md
    assert "6 x N_nonembed" in md
    assert "## Where the time goes: hybrid @ 64" in md and "gdn (fla kernels, conv)" in md


@pytest.mark.parametrize("name, category", [
    ("triton_poi_fused_convolution_silu_3", "inductor fused (elementwise, norms, rotary)"),  # inductor first
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16", "attention (sdpa)"),
    ("flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel", "attention (sdpa)"),
    ("chunk_gated_delta_rule_fwd_kernel_h_blockdim64", "gdn (fla kernels, conv)"),
    ("recompute_w_u_fwd_kernel", "gdn (fla kernels, conv)"),
    ("prepare_wy_repr_bwd_kernel", "gdn (fla kernels, conv)"),
    ("kernel_kernel", "gdn (fla kernels, conv)"),  # TileLang's name for fla's Hopper backward kernel
    ("my_kernel_kernel_v2", "other"),
    ("nvjet_tst_128x256_64x4_2x1_v_bz_coopB_TNN", "matmul"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "matmul"),
    ("void at::native::multi_tensor_apply_kernel<...>", "optimizer (muon, adam)"),
    ("ncclDevKernel_AllReduce_Sum_f32_RING_LL", "communication"),
    ("Memcpy HtoD (Pageable -> Device)", "copies"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::AbsFunctor>", "other"),
])
def test_profile_categories(name, category):
    assert bench.profile_category(name) == category


def test_profile_summary_per_step_and_shares():
    events = [("nvjet_gemm", 3000.0, 40), ("flash_fwd_kernel", 1000.0, 8), ("mystery", 1000.0, 2)]  # us over 2 steps
    prof = bench.profile_summary(events, n_steps=2, wall_s=0.004)
    assert prof["wall_ms_per_step"] == pytest.approx(2.0) and prof["busy_ms_per_step"] == pytest.approx(2.5)
    assert [(c["category"], c["ms_per_step"], c["share_of_busy"]) for c in prof["categories"]] == [
        ("matmul", pytest.approx(1.5), pytest.approx(0.6)), ("attention (sdpa)", pytest.approx(0.5), pytest.approx(0.2)),
        ("other", pytest.approx(0.5), pytest.approx(0.2))]
    assert prof["top"][0] == {"name": "nvjet_gemm", "category": "matmul", "ms_per_step": pytest.approx(1.5),
                              "calls_per_step": 20.0}


def test_failed_configuration_is_recorded_and_others_run(tmp_path):
    out_json = tmp_path / "bench.json"
    # GDN_LAYERS=5 is invalid for the 2-layer tiny hybrid; the baseline ignores it.
    proc = run_script("--tiny", "--contexts", "32", "--warmup", "0", "--steps", "1", "--repeats", "1",
                      "--env", "GDN_LAYERS=5", "--out-json", str(out_json))
    assert proc.returncode == 1
    results = {r["model"]: r for r in json.loads(out_json.read_text())["results"]}
    assert results["baseline"]["status"] == "ok" and results["baseline"]["ms_per_step_median"] > 0
    assert results["hybrid"]["status"] == "failed" and "GDN_LAYERS" in results["hybrid"]["error"]


def fake_results(device: str, ms: dict[str, dict[int, list[float]]], overrides: dict | None = None,
                 auto_micro_steps: bool = True) -> dict:
    """A results file as the script writes it; auto_micro_steps=False: as files from before the auto default
    (8 micro-steps, no grad_accum_auto)."""
    results = []
    for model, by_context in ms.items():
        for context, blocks in by_context.items():
            micro = {"grad_accum_steps": 2, "grad_accum_auto": True} if auto_micro_steps else {"grad_accum_steps": 8}
            results.append({"model": model, "context": context, "status": "ok",
                            "batch_tokens": 393_216 if context <= 16_384 else 524_288, **micro,
                            "sdpa_backend": "cudnn", "compile": True, "block_ms_per_step": blocks})
    return {"schema": "bench_step_time/1",
            "command": "python3 scripts/bench_step_time.py --out-json x.json",
            "environment": {"device_name": device, "torch": "2.11.0"},
            "settings": {"tiny": False, "env_overrides": overrides or {}},
            "results": results}


def regenerate(tmp_path, files: list[Path], name: str) -> str:
    out = tmp_path / name
    proc = run_script("--regenerate-compute-md", *map(str, files), "--out-md", str(out), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out.read_bytes().decode("utf-8")


def regenerate_docs(tmp_path, docs: dict[str, dict]) -> str:
    """compute_experiment.md from these result documents, each written as NAME.json in this order."""
    paths = [tmp_path / f"{name}.json" for name in docs]
    for path, doc in zip(paths, docs.values()):
        path.write_text(json.dumps(doc))
    return regenerate(tmp_path, paths, "compute_experiment.md")


def test_regenerate_compute_md_crossover_and_determinism(tmp_path):
    # Hybrid slower at 4096 and 8192, faster from 16384 on: the published crossover.
    agree = fake_results("NVIDIA H100 80GB HBM3", {
        "baseline": {4096: [400, 410, 405], 8192: [600, 590, 610], 16384: [950, 960, 940], 32768: [2200, 2210, 2190]},
        "hybrid": {4096: [700, 705, 710], 8192: [760, 750, 770], 16384: [850, 840, 860], 32768: [1360, 1370, 1350]},
    })
    # Another setup (flash kernels) where the hybrid only wins at 32768.
    later = fake_results("NVIDIA H100 80GB HBM3", {
        "baseline": {8192: [500, 500], 16384: [800, 810], 32768: [2000, 2000]},
        "hybrid": {8192: [760, 760], 16384: [850, 850], 32768: [1400, 1400]},
    }, overrides={"SDPA_BACKEND": "flash"})
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(agree))
    b.write_text(json.dumps(later))

    first = regenerate(tmp_path, [b, a], "compute_experiment.md")
    second = regenerate(tmp_path, [a, b], "compute_experiment.md")
    assert first == second  # byte-identical, whatever the order of the files

    assert "## How to regenerate" in first and "--regenerate-compute-md" in first
    assert "Crossover (published): the hybrid is faster per step from 16384 on (slower at 8192)." in first
    default_section, flash_section = first.split("settings: auto micro-steps, speed flags off")[1].split("settings: SDPA_BACKEND=flash")
    assert "Crossover (ours): the hybrid is faster per step from 16384 on (slower at 8192)." in default_section
    assert "Ours agrees with the published crossover" in default_section
    assert "| 8192 | 393,216 | 600.0 (590.0-610.0) | 594 | 760.0 (750.0-770.0) | 757 |" in default_section
    assert "Crossover (ours): the hybrid is faster per step from 32768 on (slower at 16384)." in flash_section
    assert "Ours differs from the published crossover" in flash_section


def test_files_from_before_auto_micro_steps_are_not_pooled_with_auto(tmp_path):
    """Same device, no overrides, but one file ran 8 micro-steps (the old default) and one let the probe choose:
    two sections, each with its own numbers, named by what ran."""
    old = fake_results("NVIDIA H100 80GB HBM3", {"baseline": {32768: [1554, 1556]}, "hybrid": {32768: [1010, 1011]}},
                       auto_micro_steps=False)
    new = fake_results("NVIDIA H100 80GB HBM3", {"baseline": {32768: [1539, 1542]}, "hybrid": {32768: [887, 893]}})
    a, b = tmp_path / "old.json", tmp_path / "new.json"
    a.write_text(json.dumps(old))
    b.write_text(json.dumps(new))
    text = regenerate(tmp_path, [a, b], "compute_experiment.md")
    auto_part = text.split("settings: auto micro-steps, speed flags off (the trainer defaults until 2026-11-23)")[1].split("## ")[0]
    eight_part = text.split("settings: GRAD_ACCUM_STEPS=8")[1].split("## ")[0]
    assert "| 32768 | 524,288 | 1540.5 (1539.0-1542.0) | 2202 | 890.0 (887.0-893.0) | 1361 |" in auto_part
    assert "| 32768 | 524,288 | 1555.0 (1554.0-1556.0) | 2202 | 1010.5 (1010.0-1011.0) | 1361 |" in eight_part
    # only 32k measured: the same faster model as published there, but nothing below to place a crossover
    assert ("Ours is consistent with the published crossover (from 16384 on) at every context measured (32768); "
            "these do not place it.") in auto_part


def test_goals_table_judges_each_cell_by_its_whole_spread(tmp_path):
    """The issue-4 goals (baseline 0.6x at 8k, hybrid 0.5x): 'yes' only when every block is within the goal, 'no'
    when none is, 'within the spread' between; setups with other settings (here FLASH) are not judged."""
    same_maths = fake_results("NVIDIA H100 80GB HBM3", {
        "baseline": {8192: [350.0, 356.0, 340.0]},  # 0.57-0.60x of 594: every block within 0.6
        "hybrid": {8192: [370.0, 380.0, 390.0], 32768: [900.0, 905.0]},  # 0.49-0.52x of 757; 0.66x of 1361
    })
    flash = fake_results("NVIDIA H100 80GB HBM3", {"baseline": {8192: [100.0, 100.0]}}, overrides={"SDPA_BACKEND": "flash"})
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(same_maths))
    b.write_text(json.dumps(flash))
    goals = regenerate(tmp_path, [a, b], "compute_experiment.md").split("## Against the speed goals")[1].split("## ")[0]
    rows = [line for line in goals.splitlines() if line.startswith("| speed flags off")]
    assert [row.split(" | ")[1:3] + [row.split(" | ")[-1]] for row in rows] == [
        ["baseline", "8192", "yes |"], ["hybrid", "8192", "within the spread |"], ["hybrid", "32768", "no |"]]
    assert "| 0.50 (0.49-0.52) | 0.50 |" in rows[1]
    assert "flash" not in goals.lower()


def test_crossover_and_flops_helpers():
    import bench_step_time as bench  # scripts/ is on sys.path (conftest)
    assert bench.crossover({8192: (594, 757), 16384: (952, 847), 32768: (2202, 1361)}) == (16384, 8192, False)
    assert bench.crossover({4096: (1, 2), 8192: (2, 3)}) == (None, 8192, False)
    assert bench.crossover({4096: (2, 1), 8192: (3, 2)}) == (4096, None, False)
    assert bench.crossover({4096: (2, 1), 8192: (2, 3), 16384: (3, 2)}) == (16384, 8192, True)
    # 6 N B + 6 T^2 d L (B/T): N=10, B=100, T=10, d=4, L=2 -> 6000 + 6*100*4*2*10.
    assert bench.model_flops_per_step(10, 100, 10, 4, 2) == pytest.approx(6000 + 48000)
    assert bench.published_batch_tokens(16384) == 393_216 and bench.published_batch_tokens(32768) == 524_288


def test_arms_run_in_one_process_round_robin_and_compare_block_by_block(tmp_path):
    """--arm: every arm of a configuration in this one process, blocks interleaved, each against the first.
    MUON_BATCHED gives the same maths (bitwise on CPU), so the arms' losses agree; the order of the log's
    block lines shows the round robin."""
    out_json, out_md = tmp_path / "arms.json", tmp_path / "arms.md"
    proc = run_script("--tiny", "--models", "hybrid", "--contexts", "32", "--warmup", "1", "--steps", "1",
                      "--repeats", "3", "--arm", "plain:MUON_BATCHED=0", "--arm", "batched:MUON_BATCHED=1",
                      "--arm", "broken:GDN_LAYERS=5", "--out-json", str(out_json), "--out-md", str(out_md))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # the broken arm fails, alone
    blocks = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("block ")]
    assert [b.split(":")[0] for b in blocks] == [f"block {i}/3 [{arm}]" for i in (1, 2, 3)
                                                 for arm in ("plain", "batched")]
    doc = json.loads(out_json.read_text())
    assert doc["settings"]["arms"] == {"plain": {"MUON_BATCHED": "0"}, "batched": {"MUON_BATCHED": "1"}, "broken": {"GDN_LAYERS": "5"}}
    plain, batched, broken = doc["results"]
    assert (plain["arm"], batched["arm"], broken["arm"]) == ("plain", "batched", "broken")
    assert batched["env"]["MUON_BATCHED"] == "1" and plain["env"]["MUON_BATCHED"] == "0"
    assert broken["status"] == "failed" and "GDN_LAYERS" in broken["error"]
    assert plain["status"] == batched["status"] == "ok"
    assert batched["final_loss"] == pytest.approx(plain["final_loss"], abs=1e-5)
    ratios = [b / d for b, d in zip(batched["block_ms_per_step"], plain["block_ms_per_step"])]
    assert batched["reference_arm"] == "plain" and "ratio_vs_reference" not in plain
    assert batched["ratio_vs_reference"] == pytest.approx(sorted(ratios)[1])
    assert (batched["ratio_vs_reference_min"], batched["ratio_vs_reference_max"]) == (min(ratios), max(ratios))
    md = out_md.read_text()
    assert "| hybrid [batched] | 32 |" in md and "| hybrid | 32 | batched | MUON_BATCHED=1 |" in md
    assert f"| {batched['ratio_vs_reference']:.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |" in md


def test_flags_on_by_default_pool_with_the_same_flags_asked_for_not_with_older_files(tmp_path):
    """FUSED_PROJECTIONS and MUON_BATCHED became defaults on 2026-11-23: a file made after, with no overrides,
    records them on and pools with an older file that asked for them; a file from before (nothing recorded,
    nothing asked) is the flags-off setup, and a newer one that turned them off pools with it."""
    before = fake_results("NVIDIA H100 80GB HBM3", {"hybrid": {32768: [890, 892]}})
    asked = fake_results("NVIDIA H100 80GB HBM3", {"hybrid": {32768: [828, 830]}},
                         overrides={"FUSED_PROJECTIONS": "1", "MUON_BATCHED": "1"})
    after = fake_results("NVIDIA H100 80GB HBM3", {"hybrid": {32768: [826, 832]}})
    turned_off = fake_results("NVIDIA H100 80GB HBM3", {"hybrid": {32768: [886, 888]}},
                              overrides={"FUSED_PROJECTIONS": "0", "MUON_BATCHED": "off"})
    for r in after["results"]:
        r["speed_flags"] = {"FUSED_PROJECTIONS": True, "MUON_BATCHED": True}
    for r in turned_off["results"]:
        r["speed_flags"] = {"FUSED_PROJECTIONS": False, "MUON_BATCHED": False}
    text = regenerate_docs(tmp_path, {"before": before, "asked": asked, "after": after, "off": turned_off})
    assert text.count("\n## NVIDIA H100") == 2
    off_part = text.split("settings: auto micro-steps, speed flags off")[1].split("## ")[0]
    on_part = text.split("settings: FUSED_PROJECTIONS=1 MUON_BATCHED=1")[1].split("## ")[0]
    assert "| 32768 | 524,288 | - | 2202 | 889.0 (886.0-892.0, 2 runs) | 1361 |" in off_part
    assert "| 32768 | 524,288 | - | 2202 | 829.0 (826.0-832.0, 2 runs) | 1361 |" in on_part


def test_hybrid_only_flag_names_its_setup_which_shares_the_baseline_of_the_setup_without_it(tmp_path):
    """GDN_KEEP_STATES (a default since session 12) is the hybrid's alone: a file whose hybrid ran with it is its
    own setup, whose crossover sets it against the baseline of the setup without it (the baseline runs the same
    code either way), shown in its table but not counted again in the goals table. A file from before, with
    nothing recorded for it, is the setup without it; so is an arm that turned it off, whatever the baseline."""
    on = {"FUSED_PROJECTIONS": True, "MUON_BATCHED": True}
    both = fake_results("NVIDIA H100 80GB HBM3", {"baseline": {32768: [1520, 1524]}, "hybrid": {32768: [826, 830]}})
    for r in both["results"]:
        r["speed_flags"] = dict(on)  # recorded before GDN_KEEP_STATES was
    keep = fake_results("NVIDIA H100 80GB HBM3", {"hybrid": {32768: [810, 812]}})
    for r in keep["results"]:
        r["speed_flags"] = dict(on, GDN_KEEP_STATES=True)
    new_both = fake_results("NVIDIA H100 80GB HBM3", {"baseline": {32768: [1522, 1526]}, "hybrid": {32768: [850, 852]}},
                            overrides={"GDN_KEEP_STATES": "0"})
    for r in new_both["results"]:
        r["speed_flags"] = dict(on) if r["model"] == "baseline" else dict(on, GDN_KEEP_STATES=False)
    text = regenerate_docs(tmp_path, {"both": both, "keep": keep, "new_both": new_both})
    assert text.count("\n## NVIDIA H100") == 2
    keep_part = text.split("settings: FUSED_PROJECTIONS=1 GDN_KEEP_STATES=1 MUON_BATCHED=1\n")[1].split("## ")[0]
    plain_part = text.split("settings: FUSED_PROJECTIONS=1 MUON_BATCHED=1\n")[1].split("## ")[0]
    assert "`keep.json`, `both.json` (its baseline), `new_both.json` (its baseline)." in keep_part.replace(
        str(tmp_path) + "/", "")
    assert "| 32768 | 524,288 | 1523.0 (1520.0-1526.0, 2 runs) | 2202 | 811.0 (810.0-812.0) | 1361 | 0.53 |" in keep_part
    assert "| 32768 | 524,288 | 1523.0 (1520.0-1526.0, 2 runs) | 2202 | 840.0 (826.0-852.0, 2 runs) | 1361 | 0.55 |" in plain_part
    goals = text.split("## Against the speed goals")[1].split("## ")[0]
    assert goals.count("| baseline | 32768 |") == 1 and goals.count("| hybrid | 32768 |") == 2


def test_compute_md_keeps_the_arms_of_one_file_apart(tmp_path):
    """A file with two arms is two setups: the fast arm's blocks never pool with the default's."""
    doc = fake_results("NVIDIA H100 80GB HBM3", {"baseline": {32768: [1540, 1542]}, "hybrid": {32768: [890, 892]}})
    fast = fake_results("NVIDIA H100 80GB HBM3", {"baseline": {32768: [1500, 1502]}, "hybrid": {32768: [800, 802]}})
    for r in doc["results"]:
        r["arm"] = "default"
    for r in fast["results"]:
        r["arm"] = "fast"
    doc["results"] += fast["results"]
    doc["settings"]["arms"] = {"default": {}, "fast": {"MUON_BATCHED": "1"}}
    path = tmp_path / "arms.json"
    path.write_text(json.dumps(doc))
    text = regenerate(tmp_path, [path], "compute_experiment.md")
    default_part = text.split("settings: auto micro-steps, speed flags off (the trainer defaults until 2026-11-23)")[1].split("## ")[0]
    fast_part = text.split("settings: MUON_BATCHED=1")[1].split("## ")[0]
    assert "| 32768 | 524,288 | 1541.0 (1540.0-1542.0) | 2202 | 891.0 (890.0-892.0) | 1361 |" in default_part
    assert "| 32768 | 524,288 | 1501.0 (1500.0-1502.0) | 2202 | 801.0 (800.0-802.0) | 1361 |" in fast_part
    assert text.count("python3 scripts/bench_step_time.py --out-json x.json") == 1  # the file's command once


def test_paired_ratios_of_arms_one_row_per_file_named_by_the_flags_as_they_ran(tmp_path):
    """The speed issue's comparisons: each arm against its reference arm, the ratio the run computed. An old
    file (flags asked by its fast arm, nothing recorded) and a new one (flags recorded; its reference arm
    turned them off) name the same comparison alike and give two adjacent rows; a failed arm and a file
    without arms give none."""
    def arms_file(arm_names: dict, blocks: dict, ratio: tuple, recorded: dict | None) -> dict:
        doc = fake_results("NVIDIA H100 80GB HBM3", {"baseline": {32768: blocks["ref"]}})
        ref = doc["results"][0]
        ref["arm"] = arm_names["ref"]
        arm = dict(ref, arm=arm_names["arm"], block_ms_per_step=blocks["arm"], reference_arm=arm_names["ref"],
                   ratio_vs_reference=ratio[0], ratio_vs_reference_min=ratio[1], ratio_vs_reference_max=ratio[2])
        failed = {"model": "hybrid", "context": 32768, "status": "failed", "arm": arm_names["arm"],
                  "reference_arm": arm_names["ref"], "ratio_vs_reference": 0.5}
        if recorded is not None:
            ref["speed_flags"], arm["speed_flags"] = recorded["ref"], recorded["arm"]
        doc["results"] = [ref, arm, failed]
        return doc

    on = {"FUSED_PROJECTIONS": True, "MUON_BATCHED": True}
    off = {"FUSED_PROJECTIONS": False, "MUON_BATCHED": False}
    old = arms_file({"ref": "default", "arm": "fast"}, {"ref": [1552.0, 1558.0, 1555.0], "arm": [1525.0, 1528.0, 1527.0]},
                    (0.981, 0.980, 0.984), None)
    old["settings"]["arms"] = {"default": {}, "fast": {"FUSED_PROJECTIONS": "1", "MUON_BATCHED": "1"}}
    new = arms_file({"ref": "grid", "arm": "default"}, {"ref": [1543.0, 1559.0, 1549.0], "arm": [1520.0, 1524.0, 1523.0]},
                    (0.983, 0.977, 0.985), {"ref": off, "arm": on})
    new["settings"]["arms"] = {"grid": {"FUSED_PROJECTIONS": "0", "MUON_BATCHED": "0"}, "default": {}}
    plain = fake_results("NVIDIA H100 80GB HBM3", {"hybrid": {8192: [430.0, 431.0]}})
    text = regenerate_docs(tmp_path, {"new": new, "old": old, "plain": plain})
    paths = [tmp_path / f"{name}.json" for name in ("new", "old", "plain")]
    paired = text.split("## Arms of one process: paired ratios")[1]
    rows = [line for line in paired.splitlines() if line.startswith("| NVIDIA")]
    prefix = "| NVIDIA H100 80GB HBM3 | baseline | 32768 | speed flags off | FUSED_PROJECTIONS=1 MUON_BATCHED=1 | "
    assert rows == [
        prefix + f"1549.0 (1543.0-1559.0) | 1523.0 (1520.0-1524.0) | 0.983 (0.977-0.985) | 0.69 | `{paths[0]}` |",
        prefix + f"1555.0 (1552.0-1558.0) | 1527.0 (1525.0-1528.0) | 0.981 (0.980-0.984) | 0.69 | `{paths[1]}` |",
    ]
    assert "## Arms of one process" not in regenerate(tmp_path, [paths[2]], "plain.md")


def test_committed_compute_experiment_md_is_what_its_own_command_rebuilds():
    """compute_experiment.md names the JSON files it is rebuilt from; rebuilt from them it is byte-identical
    (so every number in it comes from logs_experiment/, and a file added there without rebuilding shows)."""
    committed = (REPO / "compute_experiment.md").read_text(encoding="utf-8")
    (command,) = [line for line in committed.splitlines() if "--regenerate-compute-md" in line and "--out-md" in line]
    words = command.split()
    sources = words[words.index("--regenerate-compute-md") + 1:words.index("--out-md")]
    assert sources and all((REPO / s).is_file() and s.startswith("logs_experiment/") for s in sources), sources
    rebuilt = bench.compute_markdown(bench.load_results([REPO / s for s in sources]), words[words.index("--out-md") + 1])
    assert rebuilt == committed
