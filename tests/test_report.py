"""scripts/report.py: table values from trainer logs, the winner rule, grouping, variants, the CLI.

Fixtures: tests/fixtures/report_logs/ holds real CPU logs of both trainers (contexts 256 and 512, seeds 1 and 2,
and one hybrid run with SDPA_BACKEND=math GRAD_ACCUM_STEPS=4; made by tests/fixtures/make_report_logs.py).
Where a case needs two GPUs, a noise case or new artifact lines, write_log() below writes a minimal log holding
only the lines the parser reads. Expected numbers come from the log text or the hand-written values, read here
with this file's own regular expressions, not with report.py's.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
import published_study  # noqa: E402
import report  # noqa: E402

REPORT = REPO_ROOT / "scripts" / "report.py"
FIXTURE_LOGS = REPO_ROOT / "tests" / "fixtures" / "report_logs"
H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"
BATCH = {16384: 393216, 32768: 524288}  # the launcher's TRAIN_BATCH_TOKENS per context


def write_log(folder: Path, model: str, ctx: int, seed: int, val_bpb: float | None, *, gpu: str = H100,
              stamp: str = "20261201_120000", config: dict | None = None, new_artifact: bool = False,
              bytes_model: int = 15_000_000, monitor: list | None = None, int8_levels: int | None = None) -> Path:
    """A minimal trainer log; val_bpb None: the run never finished (no final round-trip line)."""
    run_id = f"{model}_{ctx}_seed{seed}_{stamp}"
    config = dict(config or {})
    if model == "hybrid":
        config.setdefault("gdn_layers", "[0, 1, 2, 4, 5, 6, 8]")
    lines = ["trainer source", "=" * 100, f"run_id:{run_id} log:/tmp/{run_id}.txt",
             f"cuda:13.0 device:{gpu} capability:(9, 0)"]
    lines += [f"config {name}:{value}" for name, value in sorted(config.items())]
    lines += [f"train_batch_tokens:{BATCH[ctx]} train_seq_len:{ctx}", f"seed:{seed}",
              "world_size:1 grad_accum_steps:2 device:cuda:0 compile:True"]
    lines += [f"gpu_monitor: samples:9 sm_mhz:{mhz} (1800-1980) power_w:{w} (600-700) limit_reasons:0x4"
              for mhz, w in monitor or []]
    for step, bpb in ((100, 1.9), (200, 1.7)):
        lines += [f"step:{step}/20000 train_loss:3.0 train_time:{step * 600}ms step_avg:600.00ms",
                  f"step:{step}/20000 val_loss:3.0 val_bpb:{bpb + (0.01 if model == 'hybrid' else 0)} "
                  f"train_time:{step * 600}ms step_avg:600.00ms"]
    if val_bpb is not None:
        lines += ["step:250/20000 train_loss:2.5 train_time:150000ms step_avg:600.00ms",
                  f"step:250/20000 val_loss:2.4 val_bpb:{val_bpb} train_time:150000ms step_avg:600.00ms",
                  "train_tokens_seen:131072000 epochs:0.927", "peak memory allocated: 40000 MiB reserved: 50000 MiB"]
        if new_artifact:
            levels = "" if int8_levels is None else f" int8_levels:{int8_levels}"
            lines += [f"artifact_sizes: zlib9:{bytes_model + 200_000} lzma:{bytes_model} chosen:lzma{levels}",
                      f"Serialized model int8+lzma: {bytes_model} bytes (artifacts/{run_id}.int8.ptz)",
                      "Code size: 80000 bytes", f"submission_limit:16000000 format:lzma bytes_model:{bytes_model} "
                      f"bytes_code:80000 bytes_total:{bytes_model + 80000} within_limit:True{levels}"]
        else:
            lines += [f"Serialized model int8+zlib: {bytes_model} bytes (artifacts/{run_id}.int8.ptz)",
                      "Code size: 90000 bytes", f"Total submission size int8+zlib: {bytes_model + 90000} bytes",
                      f"submission_limit:16000000 bytes_model:{bytes_model} bytes_code:90000 "
                      f"bytes_total:{bytes_model + 90000} within_limit:True"]
        lines += [f"final_int8_zlib_roundtrip val_loss:2.4 val_bpb:{val_bpb:.4f} eval_time:3000ms",
                  f"final_int8_zlib_roundtrip_exact val_loss:2.4 val_bpb:{val_bpb}"]
    path = folder / f"{run_id}.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def final_bpb(path: Path) -> float:
    return float(re.findall(r"^final_int8_zlib_roundtrip_exact val_loss:\S+ val_bpb:(\S+)",
                            path.read_text(encoding="utf-8"), re.M)[-1])


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPORT), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)


def row_of(lines: list[str], first_cell: str, after: str) -> list[str]:
    """The cells of the first Markdown table row starting with first_cell below the heading `after`."""
    start = lines.index(after)
    row = next(line for line in lines[start:] if line.startswith(f"| {first_cell} |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_fixture_cell_mean_and_spread_from_real_logs():
    cells, unscored, skipped = report.load_runs(FIXTURE_LOGS)
    assert not skipped and not unscored
    keys = [k for k in cells if k[2:] == (256, "baseline")]
    assert len(keys) == 1 and keys[0][0] == "cpu"
    runs = cells[keys[0]]
    expected = sorted(final_bpb(p) for p in FIXTURE_LOGS.glob("baseline_256_seed*.txt"))
    assert [r.seed for r in runs] == [1, 2]
    assert report.mean(r.final_val_bpb for r in runs) == pytest.approx(sum(expected) / 2, abs=1e-12)
    assert report.spread(runs) == pytest.approx(expected[1] - expected[0], abs=1e-12)
    # The math-kernel run is its own variant: the seed-1 hybrid at 512 keeps its default-kernel run.
    kernels = FIXTURE_LOGS / "hybrid_512_seed1_kernels_20261122_215804.txt"
    hybrid_512 = {k[1]: v for k, v in cells.items() if k[2:] == (512, "hybrid")}
    assert len(hybrid_512) == 2
    variant = next(v for v in hybrid_512 if "kernels" in v.split("+"))
    assert [r.file for r in hybrid_512[variant]] == [kernels.name]
    default_like = next(v for v in hybrid_512 if v != variant)
    assert [r.seed for r in hybrid_512[default_like]] == [1, 2]


def test_parse_log_fields_of_a_real_log():
    path = FIXTURE_LOGS / "hybrid_512_seed1_kernels_20261122_215804.txt"
    text = path.read_text(encoding="utf-8").split("=" * 100 + "\n")[-1]
    run = report.parse_log(path)
    train = [(int(s), float(t), float(a), float(loss)) for s, loss, t, a in re.findall(
        r"^step:(\d+)/\d+ train_loss:(\S+) train_time:([\d.]+)ms step_avg:([\d.]+)ms", text, re.M)]
    assert run.train == train and len(train) > 0
    assert (run.model, run.seq_len, run.seed, run.gpu, run.sdpa_backend) == ("hybrid", 512, 1, "cpu", "math")
    assert (run.world_size, run.grad_accum_steps) == (1, 4)
    assert run.config["sdpa_backend"] == "math" and run.config["grad_accum_requested"] == 4
    assert run.peak_alloc_mib is None  # a CPU run logs no peak memory
    gpu_log = REPO_ROOT / "tests" / "fixtures" / "report_logs_gpu" / "gpu_base_8k.txt"
    gpu_run = report.parse_log(gpu_log)
    assert gpu_run.peak_alloc_mib == int(re.findall(r"^peak memory allocated: (\d+) MiB",
                                                    gpu_log.read_text(encoding="utf-8"), re.M)[-1])
    assert (gpu_run.gpu, gpu_run.seq_len, gpu_run.model) == (H100, 8192, "baseline")
    assert run.val[-1][2] == pytest.approx(float(re.findall(r"val_bpb:(\S+) train_time", text)[-1]))


def test_winner_rule_called_above_spread_noise_within_and_one_seed(tmp_path):
    for seed, b, h in ((1, 1.50, 1.40), (2, 1.52, 1.41)):  # delta -0.105, spreads 0.02 and 0.01: hybrid
        write_log(tmp_path, "baseline", 32768, seed, b)
        write_log(tmp_path, "hybrid", 32768, seed, h)
    for seed, b, h in ((1, 1.30, 1.29), (2, 1.32, 1.34)):  # delta +0.005 < spreads 0.02 and 0.05: noise
        write_log(tmp_path, "baseline", 16384, seed, b)
        write_log(tmp_path, "hybrid", 16384, seed, h)
    cells, _, _ = report.load_runs(tmp_path)
    rows = {r["context"]: r for r in report.comparison_rows(cells, H100, "default")}
    assert rows["32k"]["winner"] == "hybrid" and rows["32k"]["delta"] == "-0.1050"
    assert rows["16k"]["winner"] == "within seed noise" and rows["16k"]["delta"] == "+0.0050"
    assert rows["crossover"]["winner"] == "from 32k (not called: 16k)"
    assert rows["32k"]["equal step"] == 250 and rows["32k"]["seeds b/h"] == "2/2"
    one = tmp_path / "one"
    one.mkdir()
    write_log(one, "baseline", 32768, 1, 1.50)
    write_log(one, "hybrid", 32768, 1, 1.40)
    cells, _, _ = report.load_runs(one)
    assert report.comparison_rows(cells, H100, "default")[0]["winner"] == "1 seed"


def test_crossover_needs_wins_at_every_larger_context():
    assert report.crossover_text({8192: "hybrid", 16384: "baseline", 32768: "hybrid"}) == "from 32k"
    assert report.crossover_text({8192: "baseline", 16384: "hybrid", 32768: "hybrid"}) == "from 16k"
    assert report.crossover_text({8192: "hybrid", 16384: "hybrid", 32768: "baseline"}) == "none"
    assert report.crossover_text({8192: "1 seed", 32768: "within seed noise"}) == "not called"


def test_published_crossover_is_the_studys_whatever_contexts_we_ran(tmp_path):
    write_log(tmp_path, "baseline", 32768, 1, 1.50)  # only 32k here; the study's hybrid led from 16k
    write_log(tmp_path, "hybrid", 32768, 1, 1.40)
    cells, _, _ = report.load_runs(tmp_path)
    assert report.comparison_rows(cells, H100, "default")[-1]["published delta"] == "from 16k"


def test_gpu_models_never_pool_and_newest_gpu_first(tmp_path):
    write_log(tmp_path, "hybrid", 32768, 1, 1.40, gpu=H100)
    write_log(tmp_path, "hybrid", 32768, 1, 1.30, gpu=H200, stamp="20261201_130000")
    write_log(tmp_path, "baseline", 32768, 1, 1.50, gpu=H100)
    write_log(tmp_path, "baseline", 32768, 1, 1.45, gpu=H200, stamp="20261201_130000")
    cells, unscored, _ = report.load_runs(tmp_path)
    assert not unscored  # the same seed on two GPUs: both count, each in its own cell
    assert [r.final_val_bpb for r in cells[(H100, "default", 32768, "hybrid")]] == [1.40]
    assert [r.final_val_bpb for r in cells[(H200, "default", 32768, "hybrid")]] == [1.30]
    out = tmp_path / "out"
    assert run_cli("--logs", tmp_path, "--out", out).returncode == 0
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert readme.index(f"### {H200}") < readme.index(f"### {H100}")
    lines = readme.splitlines()
    assert row_of(lines, "32k", next(x for x in lines if x.startswith(f"### {H200}")))[2:4] == ["1.4500", "1.3000"]
    assert row_of(lines, "32k", next(x for x in lines if x.startswith(f"### {H100}")))[2:4] == ["1.5000", "1.4000"]


@pytest.mark.parametrize("config, variant", [
    ({}, "default"),
    ({"fused_projections": True, "muon_batched": True, "compile": False}, "default"),  # speed only
    ({"rotary_positions_bf16": True}, "bf16 rotary"),
    ({"gdn_conv_bf16": True}, "bf16 conv"),
    ({"sdpa_backend": "'flash'", "grad_accum_steps": 8, "grad_accum_memory_fraction": 0.8}, "published kernels"),
    ({"sdpa_backend": "'flash'", "grad_accum_requested": 8}, "published kernels"),
    ({"grad_accum_steps": 8}, "default"),  # the oldest trainers: a fixed 8 micro-steps was their default
    ({"grad_accum_steps": 4, "grad_accum_memory_fraction": 0.8}, "kernels"),
    ({"matrix_lr": 0.04, "num_heads": 7}, "shape+lr"),
    ({"warmdown_frac": 0.0, "muon_momentum_warmup_frac": 0.0, "muon_momentum_warmup_steps": 79,
      "warmdown_iters": 158}, "published schedule"),
    ({"warmdown_frac": 0.5}, "schedule"),
])
def test_variant_comes_from_explicit_settings(tmp_path, config, variant):
    assert report.parse_log(write_log(tmp_path, "hybrid", 32768, 1, 1.4, config=config)).variant == variant


def test_variant_settings_are_trainer_hyperparameters_and_launcher_defaults():
    import train_gpt
    import train_gpt_gdn

    baseline, hybrid = vars(train_gpt.Hyperparameters({})), vars(train_gpt_gdn.Hyperparameters({}))
    missing = [n for n in report.VARIANT_SETTINGS
               if n not in hybrid or (not n.startswith("gdn_") and n not in baseline)]
    assert missing == []
    launcher = dict(re.findall(r"^export (\w+)=([\d.]+)\s", (REPO_ROOT / "scripts" / "launch_long_context.sh")
                               .read_text(encoding="utf-8"), re.M))
    checked = [n for n in report.VARIANT_SETTINGS if n.upper() in launcher]
    assert len(checked) >= 7
    for name in checked:
        assert float(report.VARIANT_SETTINGS[name][0]) == float(launcher[name.upper()]), name


def test_published_schedule_steps_match_the_launcher():
    text = (REPO_ROOT / "scripts" / "launch_long_context.sh").read_text(encoding="utf-8")
    found = {(m, int(c)): (int(a), int(b)) for m, c, a, b in re.findall(r'(\w+):(\d+)\) echo "(\d+) (\d+)"', text)}
    expected = {(m, c): v for m, by_ctx in published_study.PUBLISHED_SCHEDULE_STEPS.items() for c, v in by_ctx.items()}
    assert found == expected and len(found) == 6
    assert published_study.PUBLISHED_ARM["GRAD_ACCUM_STEPS"] == str(published_study.PUBLISHED_GRAD_ACCUM)


def test_newest_finished_run_counts_and_incomplete_is_listed(tmp_path):
    old = write_log(tmp_path, "hybrid", 32768, 1, 1.45, stamp="20261201_100000")
    new = write_log(tmp_path, "hybrid", 32768, 1, 1.41, stamp="20261201_110000")
    broken = write_log(tmp_path, "hybrid", 32768, 1, None, stamp="20261201_120000")  # newest, but unfinished
    (tmp_path / "notes.txt").write_text("not a log\n", encoding="utf-8")
    cells, unscored, skipped = report.load_runs(tmp_path)
    assert [r.file for r in cells[(H100, "default", 32768, "hybrid")]] == [new.name]
    assert sorted(r.file for r in unscored) == sorted([old.name, broken.name])
    assert [s.split(":")[0] for s in skipped] == ["notes.txt"]
    out = tmp_path / "out"
    assert run_cli("--logs", tmp_path, "--out", out).returncode == 0
    lines = (out / "RESULTS.md").read_text(encoding="utf-8").splitlines()
    assert row_of(lines, broken.name, "## Runs not scored")[1] == "incomplete"
    assert row_of(lines, old.name, "## Runs not scored")[1].startswith("superseded")


def test_old_and_new_artifact_lines(tmp_path):
    old = report.parse_log(write_log(tmp_path, "baseline", 32768, 1, 1.5, bytes_model=15_100_000))
    new = report.parse_log(write_log(tmp_path, "hybrid", 32768, 1, 1.4, new_artifact=True, bytes_model=14_900_000))
    assert (old.bytes_model, old.bytes_code, old.artifact_format) == (15_100_000, 90_000, "zlib9")
    assert (new.bytes_model, new.bytes_code, new.artifact_format) == (14_900_000, 80_000, "lzma")
    out = tmp_path / "out"
    assert run_cli("--logs", tmp_path, "--out", out).returncode == 0
    lines = (out / "RESULTS.md").read_text(encoding="utf-8").splitlines()
    header = row_of(lines, "context", f"## {H100}, variant default")
    row = next(line for line in lines if line.startswith("| 32k | hybrid |"))
    hybrid = dict(zip(header, (cell.strip() for cell in row.strip("|").split("|"))))
    assert (hybrid["bytes model (max)"], hybrid["bytes total"], hybrid["format"]) == ("14900000", "14980000", "lzma")


def test_a_coarser_int8_step_shows_in_the_format(tmp_path):
    """A run that shipped int8 steps coarser than +-127 (to fit the limit) says so in its format; +-127 does not."""
    full = report.parse_log(write_log(tmp_path, "baseline", 16384, 1, 1.5, new_artifact=True, int8_levels=127))
    coarse = report.parse_log(write_log(tmp_path, "hybrid", 16384, 1, 1.4, new_artifact=True, int8_levels=121))
    assert (full.artifact_format, coarse.artifact_format) == ("lzma", "lzma int8±121")
    out = tmp_path / "out"
    assert run_cli("--logs", tmp_path, "--out", out).returncode == 0
    lines = (out / "RESULTS.md").read_text(encoding="utf-8").splitlines()
    header = row_of(lines, "context", f"## {H100}, variant default")
    cells = {model: dict(zip(header, (c.strip() for c in row.strip("|").split("|"))))
             for model in ("baseline", "hybrid") for row in lines if row.startswith(f"| 16k | {model} |")}
    assert (cells["baseline"]["format"], cells["hybrid"]["format"]) == ("lzma", "lzma int8±121")


def test_gpu_clock_from_csv_beside_the_log_else_monitor_lines(tmp_path):
    with_monitor = write_log(tmp_path, "baseline", 32768, 1, 1.5, monitor=[(1965, 674), (1950, 677), (1920, 672)])
    run = report.parse_log(with_monitor)
    assert (run.sm_mhz, run.power_w) == (1950, 674)  # medians of the interval medians
    csv = with_monitor.with_name(f"{with_monitor.stem}.gpu.csv")
    csv.write_text("timestamp, utilization.gpu [%], clocks.current.sm [MHz], power.draw [W], "
                   "clocks_throttle_reasons.active\n"
                   "2026/12/01 12:00:00.000, 0, 345, 80.5, 0x0000000000000001\n"  # idle: not counted
                   "2026/12/01 12:00:05.000, 99, 1980, 690.0, 0x0000000000000000\n"
                   "2026/12/01 12:00:10.000, 97, 1965, 700.0, 0x0000000000000004\n"
                   "2026/12/01 12:00:15.000, [N/A], [N/A], [N/A], [N/A]\n"
                   "2026/12/01 12:00:20.000, 50, 1950, 710.0, 0x0000000000000004\n", encoding="utf-8")
    run = report.parse_log(with_monitor)
    assert (run.sm_mhz, run.power_w) == (1965, 700)


def test_submission_bytes_code_is_the_shipped_trainer(tmp_path):
    for seed, size in ((1, 14_000_000), (2, 14_500_000)):
        write_log(tmp_path, "hybrid", 32768, seed, 1.40 + seed / 100, new_artifact=True, bytes_model=size)
    out = tmp_path / "out"
    assert run_cli("--logs", tmp_path, "--out", out).returncode == 0
    sub = json.loads((out / "submission.json").read_text(encoding="utf-8"))
    trainer_bytes = (REPO_ROOT / "train_gpt_gdn.py").stat().st_size
    assert sub["bytes_code"] == trainer_bytes
    assert sub["bytes_total"] == trainer_bytes + 14_500_000
    assert sub["val_bpb"] == pytest.approx(1.415) and sub["seeds"] == [1, 2]
    assert set(sub) == {"track", "name", "date", "val_bpb", "val_loss", "seeds", "seed_results", "bytes_total",
                        "bytes_code", "notes"}


def test_rerun_is_byte_identical_and_readme_block_replaced(tmp_path):
    logs, out_a, out_b = tmp_path / "logs", tmp_path / "a", tmp_path / "b"
    shutil.copytree(FIXTURE_LOGS, logs)  # real CPU logs, plus a default-variant H100 grid
    for ctx in (16384, 32768):
        for seed in (1, 2):
            write_log(logs, "baseline", ctx, seed, 1.5 + seed / 100)
            write_log(logs, "hybrid", ctx, seed, 1.4 + seed / 100, new_artifact=True)
    out_b.mkdir()
    (out_b / "README.md").write_text("# Kept\n\n<!-- report:begin -->\nold\n<!-- report:end -->\n\nTail.\n",
                                     encoding="utf-8")
    for out in (out_a, out_b, out_a):
        result = run_cli("--logs", logs, "--out", out)
        assert result.returncode == 0, result.stderr
    names = sorted(p.relative_to(out_a).as_posix() for p in out_a.rglob("*") if p.is_file())
    assert names == ["README.md", "RESULTS.md", "figures/ms_per_step_vs_context.png", "figures/val_bpb_vs_time.png",
                     "submission.json"]
    for name in names[1:]:
        assert (out_a / name).read_bytes() == (out_b / name).read_bytes(), name
    block_a = (out_a / "README.md").read_text(encoding="utf-8")
    text_b = (out_b / "README.md").read_text(encoding="utf-8")
    assert text_b.startswith("# Kept\n\n") and text_b.endswith("\n\nTail.\n") and "\nold\n" not in text_b
    assert block_a.strip() in text_b
    assert len(block_a.splitlines()) <= 45


def test_logs_without_out_is_one_error_line_and_writes_nothing(tmp_path):
    watched = [REPO_ROOT / n for n in ("README.md", "RESULTS.md", "submission.json", "figures")]
    before = [(p.exists(), p.stat().st_mtime_ns if p.exists() else 0) for p in watched]
    result = run_cli("--logs", FIXTURE_LOGS)
    assert result.returncode != 0
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: ")
    assert [(p.exists(), p.stat().st_mtime_ns if p.exists() else 0) for p in watched] == before
    result = run_cli("--logs", tmp_path / "missing", "--out", tmp_path / "out")
    assert result.returncode != 0 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_fits_column_marks_an_artifact_over_the_limit(tmp_path):
    write_log(tmp_path, "baseline", 32768, 1, 1.50, new_artifact=True, bytes_model=15_920_000)  # + 80,000 code: fits
    write_log(tmp_path, "hybrid", 32768, 1, 1.40, new_artifact=True, bytes_model=15_920_001)  # one byte over
    cells, _, _ = report.load_runs(tmp_path)
    assert report.comparison_rows(cells, H100, "default")[0]["fits 16 MB b/h"] == "yes/no"


def test_decomposition_gives_each_variants_delta_spreads_and_change_from_default(tmp_path):
    rotary = {"rotary_positions_bf16": "True"}
    for seed, b, h, bb, hb in ((1, 1.50, 1.40, 1.52, 1.45), (2, 1.52, 1.41, 1.53, 1.47)):
        write_log(tmp_path, "baseline", 32768, seed, b)
        write_log(tmp_path, "hybrid", 32768, seed, h)
        write_log(tmp_path, "baseline", 32768, seed, bb, config=rotary, stamp="20261201_130000")
        write_log(tmp_path, "hybrid", 32768, seed, hb, config=rotary, stamp="20261201_130000")
    cells, _, _ = report.load_runs(tmp_path)
    rows = {row[0]: row[1:] for row in report.decomposition_rows(cells, H100, 32768)}
    # default: 1.405 - 1.51 = -0.105; bf16 rotary: 1.46 - 1.525 = -0.065, i.e. +0.040 against the default
    assert rows["default"] == ["-0.1050", "0.0200", "0.0100", "+0.0000"]
    assert rows["bf16 rotary"] == ["-0.0650", "0.0100", "0.0200", "+0.0400"]


def test_hybrid_only_settings_pair_with_the_baseline_without_them(tmp_path):
    """The published arm: both models with bf16 rotary positions, the hybrid also with bf16 GDN convolutions (a
    baseline has none); the two pair in one cell, and the decomposition takes them against the default pair."""
    rotary, both = {"rotary_positions_bf16": "True"}, {"rotary_positions_bf16": "True", "gdn_conv_bf16": "True"}
    write_log(tmp_path, "baseline", 32768, 1, 1.50)
    write_log(tmp_path, "hybrid", 32768, 1, 1.40)
    write_log(tmp_path, "baseline", 32768, 1, 1.52, config=rotary, stamp="20261201_130000")
    write_log(tmp_path, "hybrid", 32768, 1, 1.47, config=both, stamp="20261201_130000")
    cells, _, _ = report.load_runs(tmp_path)
    base, hyb = report.pair(cells, H100, "bf16 rotary+bf16 conv", 32768)
    assert [r.final_val_bpb for r in base] == [1.52] and [r.final_val_bpb for r in hyb] == [1.47]
    rows = {row[0]: row[1:] for row in report.decomposition_rows(cells, H100, 32768)}
    assert rows == {"default": ["-0.1000", "–", "–", "+0.0000"],
                    "bf16 rotary+bf16 conv": ["-0.0500", "–", "–", "+0.0500"]}


def test_published_study_prints_the_published_arm_as_settings():
    out = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "published_study.py")], capture_output=True,
                         text=True, check=True).stdout
    assert dict(item.split("=", 1) for item in out.split()) == published_study.PUBLISHED_ARM


def test_results_pair_a_hybrid_only_variant_in_one_section_with_its_baseline(tmp_path):
    rotary, both = {"rotary_positions_bf16": "True"}, {"rotary_positions_bf16": "True", "gdn_conv_bf16": "True"}
    write_log(tmp_path, "baseline", 32768, 1, 1.52, config=rotary)
    write_log(tmp_path, "hybrid", 32768, 1, 1.47, config=both)
    cells, _, _ = report.load_runs(tmp_path)
    lines = report.results_lines(cells, [], [])
    sections = [line for line in lines if line.startswith(f"## {H100}, variant")]
    assert sections == [f"## {H100}, variant bf16 rotary+bf16 conv"]  # the baseline has no section of its own
    by_step = lines[lines.index("val_bpb by step, 32k (mean over seeds):"):]
    assert row_of(by_step, "200", by_step[0]) == ["200", "1.7000", "1.7100"]  # both models at step 200 (write_log)
