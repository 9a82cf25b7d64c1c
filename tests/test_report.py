"""scripts/report.py on real trainer logs.

Fixtures (all real logs, none hand-written):
* tests/fixtures/report_logs/: CPU runs of train_gpt.py and train_gpt_gdn.py made by
  tests/fixtures/make_report_logs.py (contexts 256 and 512, seeds 1 and 2, plus one hybrid run with
  non-default kernel settings SDPA_BACKEND=math GRAD_ACCUM_STEPS=4);
* tests/fixtures/report_logs_gpu/: the two logs of an H100 smoke run (8192 context, 20 steps);
* tests/fixtures/report_logs_launcher/: CPU runs through run_*_long_context_single_h100.sh and the real
  torchrun with a tiny model (NUM_LAYERS/MODEL_DIM... passed through), MAX_WALLCLOCK_SECONDS=15 or 20:
  one stopped by the wall-clock cap, one crashed (NUM_LAYERS=1 under DDP), one killed in warm-up.
The expected numbers are computed here from the log text with this file's own parsing, not report.py's.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from statistics import mean

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REPORT = REPO_ROOT / "scripts" / "report.py"
FIXTURE_LOGS = REPO_ROOT / "tests" / "fixtures" / "report_logs"
GPU_LOGS = REPO_ROOT / "tests" / "fixtures" / "report_logs_gpu"
BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"
README_BEFORE = "# Project\n\nIntro written by someone else.\n\n"
README_AFTER = "\n\n## Later section\n\nAlso someone else's | with a pipe.\n"
VARIANT = "SDPA_BACKEND=math GRAD_ACCUM_STEPS=4"
SUBMISSION_KEYS = {"track", "name", "date", "val_bpb", "val_loss", "seeds", "seed_results", "bytes_total",
                   "bytes_code", "notes"}


# ------------------------------------------------------------------ independent reading of the logs


def facts(path: Path) -> dict:
    body = path.read_text(encoding="utf-8").split("\n" + "=" * 100 + "\n", 1)[1]

    def one(pattern: str):
        match = re.search(pattern, body, re.M)
        return match.groups() if match else None

    final = one(r"^final_int8_zlib_roundtrip_exact val_loss:([\d.]+) val_bpb:([\d.]+)")
    curve = {int(s): float(b) for s, b in re.findall(r"^step:(\d+)/\d+ val_loss:\S+ val_bpb:([\d.]+)", body, re.M)}
    train_avgs = re.findall(r"^step:\d+/\d+ train_loss:\S+ train_time:\d+ms step_avg:([\d.]+)ms", body, re.M)
    run_id = one(r"^run_id:(\S+)")[0]
    return {
        "file": path.name,
        "run_id": run_id,
        "model": "hybrid" if re.search(r"^gdn_layers:\[", body, re.M) else "baseline",
        "ctx": int(one(r"^train_batch_tokens:\d+ train_seq_len:(\d+)")[0]),
        "seed": int(one(r"^seed:(\d+)")[0]),
        "sdpa_requested": one(r"^config sdpa_backend:'(\w+)'")[0],
        "finished": final is not None,
        "val_loss": float(final[0]) if final else None,
        "val_bpb": float(final[1]) if final else None,
        "ms_per_step": float(train_avgs[-1]),
        "curve": curve,
        "steps": max(curve),
        "epochs": float(one(r"^train_tokens_seen:\d+ epochs:([\d.]+)")[0]),
        "bytes_total": int(one(r"^Total submission size int8\+zlib: (\d+) bytes")[0]),
        "bytes_code": int(one(r"^Code size: (\d+) bytes")[0]),
        "run_date": datetime.strptime(re.search(r"(\d{8}_\d{6})$", run_id)[1], "%Y%m%d_%H%M%S"),
    }


@functools.cache
def fixture_facts() -> tuple[dict, ...]:
    """The fixture logs' facts, read once (tests only filter them)."""
    return tuple(facts(p) for p in sorted(FIXTURE_LOGS.glob("*.txt")))


def default_runs(all_facts, model, ctx) -> list[dict]:
    return sorted((f for f in all_facts if f["model"] == model and f["ctx"] == ctx and f["sdpa_requested"] == "auto"),
                  key=lambda f: f["seed"])


# ------------------------------------------------------------------ running the report


def run_report(out: Path, logs: Path = FIXTURE_LOGS, readme_text: str | None = README_BEFORE + BEGIN + "\nold\n"
               + END + README_AFTER, headline: int = 512, extra: tuple = ()) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    readme = out / "README.md"
    if readme_text is not None:
        readme.write_text(readme_text, encoding="utf-8")
    cmd = [sys.executable, str(REPORT), "--logs", str(logs), "--readme", str(readme), "--plots-dir",
           str(out / "figures"), "--submission", str(out / "submission.json"), "--headline-context", str(headline),
           *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return {"proc": proc, "readme": readme, "figures": out / "figures", "submission": out / "submission.json"}


def section_of(readme: Path) -> str:
    text = readme.read_text(encoding="utf-8")
    return text[text.index(BEGIN) + len(BEGIN) + 1:text.index(END)]


def tables(section: str) -> dict[str, list[dict]]:
    """Markdown tables by their ### heading, each as a list of {header: cell} rows."""
    found, heading, lines = {}, None, section.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("### "):
            heading = lines[i][4:]
        elif lines[i].startswith("|") and heading is not None and heading not in found:
            header = [c.strip() for c in lines[i].strip("|").split(" | ")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(header, [c.strip() for c in lines[i].strip().strip("|").split(" | ")])))
                i += 1
            found[heading] = rows
            continue
        i += 1
    return found


def row(rows: list[dict], **match) -> dict:
    hits = [r for r in rows if all(r[k] == str(v) for k, v in match.items())]
    assert len(hits) == 1, (match, rows)
    return hits[0]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    result = run_report(tmp_path_factory.mktemp("report"))
    assert result["proc"].returncode == 0, result["proc"].stderr
    result["tables"] = tables(section_of(result["readme"]))
    return result


# ------------------------------------------------------------------ tests


def test_fixture_holds_real_logs_of_both_models():
    all_facts = fixture_facts()
    assert len(all_facts) == 9
    for path in sorted(FIXTURE_LOGS.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        source = text.split("\n" + "=" * 100 + "\n", 1)[0]
        assert "def main()" in source and "class Hyperparameters" in source  # the trainer's own source
        assert "\ndevice:cpu threads:" in text
    for model in ("baseline", "hybrid"):
        for ctx in (256, 512):
            assert [f["seed"] for f in default_runs(all_facts, model, ctx)] == [1, 2]
    assert all(f["finished"] for f in all_facts)
    assert sum(f["sdpa_requested"] != "auto" for f in all_facts) == 1


def test_final_val_bpb_means_and_per_seed(report):
    all_facts = fixture_facts()
    rows = report["tables"]["Final val_bpb (int8+zlib round trip)"]
    for model in ("baseline", "hybrid"):
        for ctx in (256, 512):
            runs = default_runs(all_facts, model, ctx)
            r = row(rows, model=model, context=ctx, variant="default")
            assert r["val_bpb (mean)"] == f"{mean(f['val_bpb'] for f in runs):.4f}"
            assert r["val_loss (mean)"] == f"{mean(f['val_loss'] for f in runs):.4f}"
            assert r["val_bpb per seed"] == ", ".join(f"{f['seed']}: {f['val_bpb']:.4f}" for f in runs)
            assert r["device"] == "cpu"


def test_delta_and_winner(report):
    all_facts = fixture_facts()
    rows = report["tables"]["Hybrid vs baseline"]
    assert len(rows) == 2  # the variant run has no baseline partner
    for ctx in (256, 512):
        b = mean(f["val_bpb"] for f in default_runs(all_facts, "baseline", ctx))
        h = mean(f["val_bpb"] for f in default_runs(all_facts, "hybrid", ctx))
        r = row(rows, context=ctx, variant="default")
        assert r["baseline val_bpb"] == f"{b:.4f}" and r["hybrid val_bpb"] == f"{h:.4f}"
        assert float(r["delta (hybrid - baseline)"]) == pytest.approx(h - b, abs=6e-5)
        assert r["winner"] == ("hybrid" if h < b else "baseline")
        # paired by seed: each seed's hybrid against the same seed's baseline
        base_by_seed = {f["seed"]: f["val_bpb"] for f in default_runs(all_facts, "baseline", ctx)}
        assert r["delta per seed"] == ", ".join(f"{f['seed']}: {f['val_bpb'] - base_by_seed[f['seed']]:+.4f}"
                                                for f in default_runs(all_facts, "hybrid", ctx))


def test_speed_steps_epochs_and_sizes(report):
    all_facts = fixture_facts()
    rows = report["tables"]["Speed, steps, data seen, memory and artifact size"]
    assert len(rows) == 5
    for model in ("baseline", "hybrid"):
        for ctx in (256, 512):
            runs = default_runs(all_facts, model, ctx)
            r = row(rows, model=model, context=ctx, variant="default")
            assert r["runs"] == "2"
            assert r["ms/step"] == f"{mean(f['ms_per_step'] for f in runs):.1f}"
            assert r["steps"] == "20" == str(runs[0]["steps"])
            assert r["epochs"] == f"{mean(f['epochs'] for f in runs):.3f}"
            assert r["artifact bytes (max)"] == f"{max(f['bytes_total'] for f in runs):,}"
            assert r["peak alloc MiB (max)"] == "–"  # CPU runs log no CUDA memory


def test_non_default_kernels_are_their_own_row(report):
    all_facts = fixture_facts()
    (variant_run,) = [f for f in all_facts if f["sdpa_requested"] != "auto"]
    rows = report["tables"]["Final val_bpb (int8+zlib round trip)"]
    r = row(rows, model="hybrid", context=512, variant=VARIANT)
    assert r["val_bpb (mean)"] == f"{variant_run['val_bpb']:.4f}"
    default = row(rows, model="hybrid", context=512, variant="default")
    runs = default_runs(all_facts, "hybrid", 512)
    assert variant_run not in runs
    assert default["val_bpb (mean)"] == f"{mean(f['val_bpb'] for f in runs):.4f}"
    assert row(report["tables"]["Speed, steps, data seen, memory and artifact size"], model="hybrid", context=512,
               variant=VARIANT)["runs"] == "1"


def test_more_steps_or_better_steps(report):
    all_facts = fixture_facts()
    rows = report["tables"]["More steps, or better steps?"]
    assert len(rows) == 2
    winners = {}
    for ctx in (256, 512):
        base, hyb = default_runs(all_facts, "baseline", ctx), default_runs(all_facts, "hybrid", ctx)
        r = row(rows, context=ctx, variant="default")
        ratio = mean(f["ms_per_step"] for f in hyb) / mean(f["ms_per_step"] for f in base)
        assert r["ms/step hybrid / baseline"] == f"{ratio:.3f}"
        common = max(set.intersection(*(set(f["curve"]) for f in base + hyb)))
        assert r["common step"] == str(common)
        assert r["baseline val_bpb at it"] == f"{mean(f['curve'][common] for f in base):.4f}"
        assert r["hybrid val_bpb at it"] == f"{mean(f['curve'][common] for f in hyb):.4f}"
        winners[ctx] = r["winner"]
        # the generated reading of the row: step ratio, the gap at the common step and at the end
        gap = mean(f["curve"][common] for f in hyb) - mean(f["curve"][common] for f in base)
        steps_ratio = mean(f["steps"] for f in hyb) / mean(f["steps"] for f in base)
        expected = (f"At {ctx} a hybrid step takes {ratio:.2f}x the baseline's, so the hybrid makes {steps_ratio:.2f}x "
                    f"the steps")
        end_gap = mean(f["val_bpb"] for f in hyb) - mean(f["val_bpb"] for f in base)
        position, end = (("ahead by" if g < 0 else "behind by" if g > 0 else "level") for g in (gap, end_gap))
        text = section_of(report["readme"])
        assert expected in text and f"at step {common} it is {position}" in text
        assert f"at step {common} it is {position} {abs(gap):.4f}" in text or position == "level"
        assert f"and at the end {end} {abs(end_gap):.4f}." in text or end == "level"
    section = section_of(report["readme"])
    (sentence,) = [line for line in section.splitlines() if line.startswith("Crossover:")]
    if set(winners.values()) == {"baseline"}:
        assert "the baseline wins at every context" in sentence
    elif winners == {256: "baseline", 512: "hybrid"}:
        assert "lies between 256 and 512" in sentence
    elif set(winners.values()) == {"hybrid"}:
        assert "from" in sentence and "up" in sentence
    else:
        assert "no single one" in sentence


def test_crossover_sentence_cases():
    import report as module  # scripts/ is on sys.path (conftest); `report` is also a fixture name here

    def comps(*winners):
        return [{"seq_len": 8192 * 2 ** i, "variant": "default", "winner": w} for i, w in enumerate(winners)]

    assert module.crossover_sentence([]).startswith("Crossover: no context")
    assert "baseline wins at every context" in module.crossover_sentence(comps("baseline", "baseline"))
    assert "lies between 8k and 16k" in module.crossover_sentence(comps("baseline", "hybrid", "hybrid"))
    assert "lies at or below 8k" in module.crossover_sentence(comps("hybrid", "hybrid"))
    assert "no single one" in module.crossover_sentence(comps("baseline", "hybrid", "baseline"))


def test_artifact_bytes_sentence(report):
    """Each (model, context) once, with the range of its seeds' artifact bytes and steps, in order of steps; and
    the least headroom under the limit, naming the run's seed."""
    runs = [f for f in fixture_facts() if f["sdpa_requested"] == "auto" and f["finished"]]
    (line,) = [x for x in section_of(report["readme"]).splitlines() if x.startswith("Artifact bytes by steps taken:")]

    def span(values):
        return f"{min(values):,}" if min(values) == max(values) else f"{min(values):,}-{max(values):,}"

    parts = []
    for model in ("baseline", "hybrid"):
        entries = []
        for ctx in sorted({f["ctx"] for f in runs if f["model"] == model}):
            same = [f for f in runs if f["model"] == model and f["ctx"] == ctx]
            assert len(same) == 2  # seeds 1 and 2: the collapsed form
            steps = [f["steps"] for f in same]
            entries.append(((min(steps), max(steps), ctx), f"{span([f['bytes_total'] for f in same])} at "
                                                           f"{span(steps)} steps ({ctx}, 2 seeds)"))
        # every fixture run took 20 steps: no run has more steps than another, so no growth is claimed
        parts.append(f"{model}: " + ", ".join(text for _, text in sorted(entries)))
    tight = min(runs, key=lambda f: 16_000_000 - f["bytes_total"])
    assert line == (f"Artifact bytes by steps taken: {'; '.join(parts)}; the least headroom under the 16,000,000-byte "
                    f"limit is {16_000_000 - tight['bytes_total']:,} bytes ({tight['model']} at {tight['ctx']}, "
                    f"seed {tight['seed']}).")


def test_artifact_sentence_cases():
    """The collapsed sentence on runs made here: one context with two seeds, two with one; growth with the steps
    judged run by run; 'runs' when a seed repeats (one context on two devices)."""
    import report as module

    def run(model, ctx, seed, steps, size, device="H100"):
        return module.Run(file=f"{model}_{ctx}_{seed}_{device}.txt", run_id=f"{model}_{ctx}_{seed}_{device}",
                          model=model, seq_len=ctx, seed=seed, device=device, stopped_early_step=steps,
                          bytes_total=size, byte_limit=16_000_000, within_limit=True, final_val_bpb=1.0)

    runs = [run("baseline", 32768, 42, 385, 12_991_780), run("baseline", 32768, 1337, 385, 12_990_554),
            run("baseline", 8192, 1337, 1382, 15_365_947), run("baseline", 16384, 1337, 893, 14_790_582),
            run("hybrid", 32768, 42, 657, 14_957_789), run("hybrid", 32768, 1337, 656, 14_957_480),
            run("hybrid", 8192, 1337, 1229, 15_876_098)]
    assert module.artifact_sentence(runs) == (
        "Artifact bytes by steps taken: baseline (growing with the steps): 12,990,554-12,991,780 at 385 steps "
        "(32k, 2 seeds), 14,790,582 at 893 steps (16k), 15,365,947 at 1,382 steps (8k); hybrid (growing with the "
        "steps): 14,957,480-14,957,789 at 656-657 steps (32k, 2 seeds), 15,876,098 at 1,229 steps (8k); the least "
        "headroom under the 16,000,000-byte limit is 123,902 bytes (hybrid at 8k, seed 1337).")
    # The seed with more steps has fewer bytes: not growing, though the contexts' ranges are in order.
    runs[5] = run("hybrid", 32768, 1337, 656, 14_957_900)
    text = module.artifact_sentence(runs)
    assert "hybrid: 14,957,789-14,957,900 at 656-657 steps (32k, 2 seeds), 15,876,098" in text
    assert "baseline (growing with the steps)" in text
    # Only default-kernel finished runs: a variant run and an unfinished one change nothing.
    variant = run("hybrid", 8192, 42, 2000, 15_999_999)
    variant.config["sdpa_backend"] = "flash"
    unfinished = run("hybrid", 8192, 7, 2000, 15_999_999)
    unfinished.final_val_bpb = None
    assert module.artifact_sentence(runs + [variant, unfinished]) == text
    # Seed 1337 at 8k on two devices: two runs, not two seeds.
    text = module.artifact_sentence([run("hybrid", 8192, 1337, 1229, 15_876_098),
                                     run("hybrid", 8192, 1337, 1100, 15_800_000, device="H200")])
    assert text.startswith("Artifact bytes by steps taken: hybrid (growing with the steps): 15,800,000-15,876,098 at "
                           "1,100-1,229 steps (8k, 2 runs);")


def test_seed_noise_sentence_cases():
    """Seed spread against the delta: a clear winner, a delta inside the spreads, per-seed deltas of mixed sign,
    one model with one seed, and the single-seed contexts named."""
    import report as module

    def comp(ctx, baseline, hybrid, variant="default"):
        b, h = sum(baseline.values()) / len(baseline), sum(hybrid.values()) / len(hybrid)
        delta = round(h - b, 8)
        paired = {s: round(hybrid[s] - baseline[s], 8) for s in sorted(hybrid) if s in baseline}
        return {"seq_len": ctx, "variant": variant, "delta": delta, "winner": module.winner(delta),
                "delta_by_seed": paired, "baseline_by_seed": baseline, "hybrid_by_seed": hybrid}

    # (a) our 32k pair: |delta| 0.1557 against spreads 0.0056 + 0.0051; (d) 8k and 16k with one seed each
    real = [comp(8192, {1337: 1.29552}, {1337: 1.30404}), comp(16384, {1337: 1.35392}, {1337: 1.32771}),
            comp(32768, {42: 1.53593291, 1337: 1.53036795}, {42: 1.37495711, 1337: 1.38003464})]
    assert module.seed_noise_sentence(real) == (
        "At 32k (seeds 42 and 1337 of both models) the seed spread (max - min of the final val_bpb over seeds) is "
        "0.0056 for the baseline and 0.0051 for the hybrid, against a delta of -0.1557: |delta| is larger than the "
        "sum of both spreads (0.0106), so the seeds do not change the winner; every per-seed delta (42: -0.1610, "
        "1337: -0.1503) has the sign of the mean delta. At 8k and 16k each model has one seed only, so no seed "
        "spread is measured there.")

    # (b) delta inside the spreads, every seed still on the mean's side
    text = module.seed_noise_sentence([comp(8192, {1: 1.300, 2: 1.310}, {1: 1.298, 2: 1.306})])
    assert "against a delta of -0.0030: |delta| is not larger than the sum of both spreads (0.0180), so the " \
           "winner at this context is within seed noise" in text
    assert "every per-seed delta (1: -0.0020, 2: -0.0040) has the sign of the mean delta" in text
    assert "one seed only" not in text

    # (c) per-seed deltas of mixed sign (the hybrid wins on average, loses with seed 2)
    text = module.seed_noise_sentence([comp(16384, {1: 1.300, 2: 1.300}, {1: 1.290, 2: 1.302})])
    assert "against a delta of -0.0040: |delta| is not larger than the sum of both spreads (0.0120), so the " \
           "winner at this context is within seed noise" in text
    assert text.endswith("; the per-seed deltas (1: -0.0100, 2: +0.0020) do not all have the sign of the mean "
                         "delta, so the seeds disagree on the winner.")

    # one model with two seeds, the other with one: its spread alone; one paired seed gives no sign clause
    text = module.seed_noise_sentence([comp(32768, {1337: 1.530}, {42: 1.375, 1337: 1.380})])
    assert text == ("At 32k (baseline seed 1337, hybrid seeds 42 and 1337) the seed spread (max - min of the final "
                    "val_bpb over seeds) is 0.0050 for the hybrid (none for the baseline, which has one seed), against "
                    "a delta of -0.1525: |delta| is larger than the hybrid's spread (0.0050), so the seeds do not "
                    "change the winner.")

    # (d) only single-seed contexts; non-default kernels are left out; nothing to compare gives nothing
    only_single = [comp(8192, {1337: 1.3}, {1337: 1.31}), comp(32768, {1: 1.5, 2: 1.6}, {1: 1.4, 2: 1.3}, "X=1")]
    assert module.seed_noise_sentence(only_single) == ("At 8k each model has one seed only, so no seed spread is "
                                                       "measured there.")
    assert module.seed_noise_sentence([]) == ""


def test_seed_noise_sentence_from_the_logs(report):
    """The fixture's two seeds per model and context, read from the logs here."""
    section = section_of(report["readme"])
    part = section.split("### Hybrid vs baseline")[1].split("### ")[0]
    (line,) = [x for x in part.splitlines() if x.startswith("At ")]
    for ctx in (256, 512):
        base = {f["seed"]: f["val_bpb"] for f in default_runs(fixture_facts(), "baseline", ctx)}
        hyb = {f["seed"]: f["val_bpb"] for f in default_runs(fixture_facts(), "hybrid", ctx)}
        spread_b, spread_h = (max(v.values()) - min(v.values()) for v in (base, hyb))
        delta = mean(hyb.values()) - mean(base.values())
        assert f"At {ctx} (seeds 1 and 2 of both models) the seed spread" in line
        assert (f"is {spread_b:.4f} for the baseline and {spread_h:.4f} for the hybrid, against a delta of "
                f"{delta:+.4f}") in line
        verdict = ("is larger than the sum of both spreads ({:.4f}), so the seeds do not change the winner"
                   if abs(delta) > spread_b + spread_h else
                   "is not larger than the sum of both spreads ({:.4f}), so the winner at this context is within seed "
                   "noise").format(spread_b + spread_h)
        assert verdict in line
        signs = {(hyb[s] - base[s] > 0) - (hyb[s] - base[s] < 0) for s in base}
        same = signs == {(delta > 0) - (delta < 0)}
        assert ("has the sign of the mean delta" in line) == same
    assert "one seed only" not in line


def test_crossover_place_cases():
    import report as module

    def ahead(*flags):
        return {8192 * 2 ** i: f for i, f in enumerate(flags)}

    assert module.crossover_place(ahead(False, True, True)) == "between 8k and 16k"
    assert module.crossover_place(ahead(False, False, True)) == "between 16k and 32k"
    assert module.crossover_place(ahead(True, True)) == "at or below 8k"
    assert module.crossover_place(ahead(False, False)) == "not in 8k-16k"
    assert module.crossover_place(ahead(True, False)) == "not in 8k-16k"  # ahead only below: no crossover upwards
    assert module.crossover_place(ahead(False)) == "not at 8k"
    assert module.crossover_place(ahead(True, False, True)) == "more than once"


def test_steps_or_learning_sentence_cases():
    """The 'why' sentence: is the winner the model with more steps, and who leads at the common step, with the
    warm-down caveat where the leader there is the slower model."""
    import report as module

    def row(ctx, steps_b, steps_h, at_b, at_h, winner):
        return {"seq_len": ctx, "variant": "default", "steps_baseline": steps_b, "steps_hybrid": steps_h,
                "baseline_at_step": at_b, "hybrid_at_step": at_h, "winner": winner}

    # our seed-1337 grid's shape: the slower hybrid loses at 8k though ahead at the common step
    text = module.steps_or_learning_sentence([row(8192, 1382, 1229, 1.31, 1.30, "baseline"),
                                              row(16384, 893, 1028, 1.36, 1.35, "hybrid")])
    assert text.startswith("At every context run the winner is the model that fitted more steps")
    assert "ahead at the common step at 16k although its warm-down is less far along" in text
    assert "at 8k the hybrid is ahead at the common step as well, but its warm-down is further along" in text
    text = module.steps_or_learning_sentence([row(8192, 100, 90, 1.30, 1.31, "hybrid")])
    assert text == ("The model with fewer steps wins at 8k; the baseline is ahead at the common step at 8k.")
    assert module.steps_or_learning_sentence([row(8192, 100, 90, None, None, "hybrid")]) == ""


def kernel_worth(runs) -> str:
    """report.py's paragraph on what our kernels are worth, for these runs (grouped and compared as the report does)."""
    import report as module

    groups = module.build_groups(runs)
    return module.kernel_worth_sentence(groups, module.equal_step_rows(groups, module.comparisons(groups)))


def run_32k(model, seed, ms, steps, bpb, published=False, ctx=32768, finished=True, extra=None,
            device="NVIDIA H100 80GB HBM3"):
    """A run as parsed from a log: ms/step from its last train line, steps, final val_bpb, and its kernel settings
    (the published ones: flash attention and 8 micro-steps requested; ours: auto, which picked 2)."""
    import report as module

    config = {"sdpa_backend": "flash" if published else "auto", "grad_accum_requested": 8 if published else 0,
              **(extra or {})}
    name = f"{model}_{ctx}_seed{seed}_{'flash' if published else 'auto'}{'_x' if extra else ''}_{device[-4:]}"
    return module.Run(file=name + ".txt", run_id=name, model=model, seq_len=ctx, seed=seed, config=config,
                      device=device, grad_accum_steps=8 if published else 2,
                      train=[(steps, steps * ms, ms, 2.5)], val=[(0, 7.0, 4.1, 0.0), (steps, 2.4, bpb, steps * ms)],
                      stopped_early_step=steps, final_val_bpb=bpb if finished else None)


def default_32k() -> list:
    """Our 32k default-kernel runs as logged (logs_experiment/): both models, seeds 42 and 1337."""
    return [run_32k("baseline", 42, 1559.77, 385, 1.53593291), run_32k("baseline", 1337, 1560.93, 385, 1.53036795),
            run_32k("hybrid", 42, 914.3, 657, 1.37495711), run_32k("hybrid", 1337, 915.05, 656, 1.38003464)]


def hybrid_published_32k():
    """Our hybrid at 32k with the published kernels as logged (hybrid_32768_seed1337_20261123_042134)."""
    return run_32k("hybrid", 1337, 1189.73, 505, 1.43400883, published=True)


LEAD = ("What our kernels are worth: runs with the published kernel settings (SDPA_BACKEND=flash GRAD_ACCUM_STEPS=8) "
        "against our default-kernel runs of the same context and device. ")
HYBRID_COST = ("1189.7 vs 914.7 ms/step (published study: 1361), 505 vs 656.5 steps, val_bpb 1.4340 vs 1.3775 "
               "(+0.0565; seed 1337 vs mean of seeds 42 and 1337)")


def test_kernel_worth_both_models():
    """(a) Both models with the published kernels at 32k: the ratios and deltas three ways, and the split of our
    delta into what our kernels change and what remains against the published one. The baseline's run is made up
    here (2080.5 ms/step, 289 steps, 1.59871234); the rest are our logged runs."""
    baseline = run_32k("baseline", 1337, 2080.5, 289, 1.59871234, published=True)
    # the default runs of another context are not compared with (our 16k pair as logged)
    other_ctx = [run_32k("baseline", 1337, 672.6, 893, 1.35392, ctx=16384),
                 run_32k("hybrid", 1337, 583.8, 1028, 1.32771, ctx=16384)]
    # ratios 1189.73 / 2080.5 = 0.572, 914.675 / 1560.35 = 0.586, 1361 / 2202 = 0.618; deltas 1.43400883 - 1.59871234
    # = -0.16470351, 1.37749588 - 1.53315043 = -0.15565455, 1.4709 - 1.7059 = -0.2350; our kernels -0.15565455 -
    # (-0.16470351) = +0.00904896; remaining -0.16470351 - (-0.2350) = +0.07029649
    assert kernel_worth(other_ctx + default_32k() + [hybrid_published_32k(), baseline]) == LEAD + (
        "At 32k the ms/step ratio hybrid / baseline is 0.572 with the published kernels, 0.586 with ours and 0.618 "
        "published; the delta (hybrid - baseline, means over seeds) is -0.1647 with the published kernels, -0.1557 "
        "with ours and -0.2350 published. Our kernels change our delta by +0.0090 (from -0.1647 to -0.1557, in the "
        "baseline's favour); the +0.0703 that remains between our published-kernel delta and the published one (in "
        "the baseline's favour) is what the kernels do not explain: the corpus, among other differences. Each model "
        "with the published kernels against ours: the baseline 2080.5 vs 1560.3 ms/step (published study: 2202), 289 "
        "vs 385 steps, val_bpb 1.5987 vs 1.5332 (+0.0656; seed 1337 vs mean of seeds 42 and 1337); the hybrid "
        + HYBRID_COST + ".")


def test_kernel_worth_one_model():
    """(b) Only the hybrid has run with the published kernels (our logs now): its own cost, and the baseline's run
    named as missing; an unfinished baseline run with the published kernels does not count."""
    unfinished = run_32k("baseline", 1337, 2080.5, 120, 1.9, published=True, finished=False)
    assert kernel_worth(default_32k() + [hybrid_published_32k(), unfinished]) == LEAD + (
        "At 32k the hybrid with the published kernels against ours: " + HYBRID_COST + ". The baseline's run with the "
        "published kernels at 32k is missing, so the delta cannot yet be split into what our kernels change and what "
        "they do not explain.")
    # like with like: default-kernel runs on another device are not compared with; with two devices, each is named
    h200 = [run_32k("hybrid", 42, 800.0, 750, 1.36, device="NVIDIA H200")]
    assert kernel_worth(h200 + [hybrid_published_32k()]) == LEAD + (
        "At 32k on NVIDIA H100 80GB HBM3 the hybrid with the published kernels against ours: 1189.7 ms/step "
        "(published study: 1361), 505 steps, val_bpb 1.4340 (seed 1337), and no default-kernel run to compare with. "
        "The baseline's run with the published kernels at 32k on NVIDIA H100 80GB HBM3 is missing, so the delta cannot "
        "yet be split into what our kernels change and what they do not explain.")
    # the other way round, and with no default-kernel run of that model to compare with
    baseline = run_32k("baseline", 1337, 2080.5, 289, 1.59871234, published=True)
    assert kernel_worth(default_32k()[2:] + [baseline]) == LEAD + (
        "At 32k the baseline with the published kernels against ours: 2080.5 ms/step (published study: 2202), 289 "
        "steps, val_bpb 1.5987 (seed 1337), and no default-kernel run to compare with. The hybrid's run with the "
        "published kernels at 32k is missing, so the delta cannot yet be split into what our kernels change and what "
        "they do not explain.")


def test_kernel_worth_nothing_without_published_kernel_runs():
    """(c) No finished run with the published kernels: nothing. Other kernel settings, the published ones with a speed
    flag on top, and an unfinished published-kernel run are not the published kernels."""
    others = [run_32k("hybrid", 1337, 1000.0, 600, 1.40, extra={"sdpa_backend": "math", "grad_accum_requested": 4}),
              run_32k("hybrid", 1337, 1100.0, 550, 1.41, published=True, extra={"fused_projections": True}),
              run_32k("hybrid", 1337, 1189.73, 200, 1.9, published=True, finished=False)]
    assert [r.variant for r in others[:2]] == [
        "SDPA_BACKEND=math GRAD_ACCUM_STEPS=4",
        "SDPA_BACKEND=flash GRAD_ACCUM_STEPS=8 FUSED_PROJECTIONS=1 (published kernels)"]
    assert kernel_worth(default_32k() + others) == ""
    assert kernel_worth(default_32k()) == ""
    assert kernel_worth([]) == ""


def test_crossover_beside_the_published_one_for_each_variant_with_two_contexts():
    """The default kernels' crossover table, then one per other variant compared at two or more published contexts
    (the speed flags here), in the order of their contexts; not a variant compared at one context only, nor the
    published kernel settings (the kernels paragraph covers those)."""
    import report as module

    flags = {"fused_projections": True, "muon_batched": True}
    runs = [run_32k("baseline", 1337, 430.0, 1390, 1.2955, ctx=8192), run_32k("hybrid", 1337, 490.0, 1220, 1.3040, ctx=8192),
            run_32k("baseline", 1337, 670.0, 890, 1.3539, ctx=16384), run_32k("hybrid", 1337, 580.0, 1030, 1.3277, ctx=16384),
            # the speed flags at 16k and 8k (listed in that order)
            run_32k("baseline", 1337, 650.0, 920, 1.3481, ctx=16384, extra=flags),
            run_32k("hybrid", 1337, 520.0, 1150, 1.3113, ctx=16384, extra=flags),
            run_32k("baseline", 1337, 415.0, 1440, 1.2907, ctx=8192, extra=flags),
            run_32k("hybrid", 1337, 450.0, 1330, 1.2959, ctx=8192, extra=flags),
            # another setting at one context only, and the published kernels at 32k
            run_32k("baseline", 1337, 1500.0, 400, 1.52, extra={"muon_compile": True}),
            run_32k("hybrid", 1337, 850.0, 700, 1.36, extra={"muon_compile": True}),
            run_32k("baseline", 1337, 2208.4, 272, 1.6864, published=True), hybrid_published_32k()]
    groups = module.build_groups(runs)
    step_rows = module.equal_step_rows(groups, module.comparisons(groups))
    assert module.crossover_variants(step_rows) == ["default", "FUSED_PROJECTIONS=1 MUON_BATCHED=1"]
    rows = module.published_crossover_rows(step_rows, "FUSED_PROJECTIONS=1 MUON_BATCHED=1")
    assert [r["seq_len"] for r in rows] == [8192, 16384]
    assert [r["winner"] for r in rows] == ["baseline", "hybrid"]
    assert rows[0]["ms_ratio"] == pytest.approx(450.0 / 415.0) and rows[0]["delta"] == pytest.approx(1.2959 - 1.2907)
    assert rows[1]["delta"] == pytest.approx(1.3113 - 1.3481) and rows[1]["pub_delta"] == pytest.approx(1.3999 - 1.4353)
    assert [r["delta"] for r in module.published_crossover_rows(step_rows)] == pytest.approx(
        [1.3040 - 1.2955, 1.3277 - 1.3539])


def run_with_vals(model, seed, vals, published=False):
    """run_32k with validations at these (step, val_bpb) points after step 0, the last one final."""
    run = run_32k(model, seed, 1500.0 if published else 1000.0, vals[-1][0], vals[-1][1], published=published)
    run.val = [(0, 7.0, 4.1, 0.0)] + [(step, 2.0, bpb, step * 1000.0) for step, bpb in vals]
    return run


def test_equal_step_clause_counts_the_steps_beyond_our_seeds_spread():
    """At each validation step after 0 that all runs logged: the published-kernel mean against ours, beyond our seeds'
    spread there or not; contiguous steps as a range, others listed; one seed of ours has no spread; no common step,
    nothing. Numbers: spreads 0.02 / 0.01 / 0.005 / 0.01 at steps 50-200; gaps vs our means 2.11 / 1.905 / 1.8025."""
    import report as module

    ours = [run_with_vals("hybrid", 42, [(50, 2.10), (100, 1.90), (150, 1.80), (200, 1.70)]),
            run_with_vals("hybrid", 1337, [(50, 2.12), (100, 1.91), (150, 1.805), (200, 1.69)])]

    def clause(pk_vals, default_runs=ours):
        groups = {g.variant: g for g in module.build_groups(default_runs + [run_with_vals("hybrid", 1337, pk_vals, True)])}
        (pk,) = [g for v, g in groups.items() if v != "default"]
        return module.equal_step_clause("hybrid", pk, groups["default"])

    # behind by 0.04 (spread 0.02) at 50, by 0.025 (0.01) at 100, 0.0375 (0.005) at 150; 180 is not common
    assert clause([(50, 2.15), (100, 1.93), (150, 1.84), (180, 1.8)]) == (
        "the hybrid is behind ours by more than our seeds' spread at 3 of the 3 validation steps after 0 that all its "
        "runs and ours logged (steps 50-150: by 0.0250-0.0400, where our seeds differ by 0.0050-0.0200)")
    # behind at 50 and 150 only (100 within: 0.005 < 0.01), ahead at 200 (by 0.025 > 0.01)
    assert clause([(50, 2.15), (100, 1.91), (150, 1.84), (200, 1.67)]) == (
        "the hybrid is behind ours by more than our seeds' spread at 2 of the 4 validation steps after 0 that all its "
        "runs and ours logged (steps 50 and 150: by 0.0375-0.0400, where our seeds differ by 0.0050-0.0200) and ahead "
        "of ours by more than our seeds' spread at 1 of the 4 validation steps after 0 that all its runs and ours "
        "logged (step 200: by 0.0250, where our seeds differ by 0.0100)")
    assert clause([(50, 2.11), (100, 1.905)]) == (
        "the hybrid is within our seeds' spread at all 2 validation steps after 0 that all its runs and ours logged")
    assert clause([(50, 2.111)], default_runs=ours[:1]) == (
        "the hybrid is behind ours by more than our seeds' spread at 1 of the 1 validation steps after 0 that all its "
        "runs and ours logged (step 50: by 0.0110, one seed of ours, so no spread)")
    assert clause([(75, 2.0)]) == ""
    assert module.equal_step_sentence(["", ""]) == ""


def published_kernel_copy(logs: Path, pattern: str) -> None:
    """A copy of the first fixture log matching pattern, as if run with SDPA_BACKEND=flash GRAD_ACCUM_STEPS=8 (its own
    run_id, the same seed: a run of another variant)."""
    source = sorted(logs.glob(pattern))[0]
    text = source.read_text(encoding="utf-8")
    text = text.replace("config sdpa_backend:'auto'", "config sdpa_backend:'flash'")
    text = text.replace("config grad_accum_requested:0", "config grad_accum_requested:8")
    text = re.sub(r"^sdpa_backend:\w+", "sdpa_backend:flash", text, flags=re.M)
    text = text.replace("_seed2_", "_seed2_flash_")
    (logs / source.name.replace("_seed2_", "_seed2_flash_")).write_text(text, encoding="utf-8")


def test_kernel_worth_from_the_logs(tmp_path, report):
    """Through the command on the fixture's logs: copies of the seed-2 runs at 512 as published-kernel runs, against
    the default means of seeds 1 and 2 (numbers read from the logs here). 512 is no published context."""
    assert "What our kernels are worth" not in section_of(report["readme"])  # only SDPA_BACKEND=math GRAD_ACCUM_STEPS=4
    logs = tmp_path / "logs"
    shutil.copytree(FIXTURE_LOGS, logs)
    published_kernel_copy(logs, "hybrid_512_seed2_*.txt")
    section = section_of(run_report(tmp_path / "one", logs=logs)["readme"])
    published_kernel_copy(logs, "baseline_512_seed2_*.txt")
    section_both = section_of(run_report(tmp_path / "both", logs=logs)["readme"])

    all_facts = fixture_facts()
    pk = {m: default_runs(all_facts, m, 512)[1] for m in ("baseline", "hybrid")}  # seed 2, copied
    assert pk["hybrid"]["seed"] == 2
    ours = {m: default_runs(all_facts, m, 512) for m in ("baseline", "hybrid")}

    def cost(m):
        d = ours[m]
        return (f"{pk[m]['ms_per_step']:.1f} vs {mean(f['ms_per_step'] for f in d):.1f} ms/step, {pk[m]['steps']} vs "
                f"{mean(f['steps'] for f in d):.0f} steps, val_bpb {pk[m]['val_bpb']:.4f} vs "
                f"{mean(f['val_bpb'] for f in d):.4f} ({pk[m]['val_bpb'] - mean(f['val_bpb'] for f in d):+.4f}; seed 2 "
                f"vs mean of seeds 1 and 2)")

    for text in (section, section_both):  # in "Compared with the published study", after its table and notes
        part = text.split("### Compared with the published study")[1].split("### ")[0]
        (line,) = [x for x in part.splitlines() if x.startswith("What our kernels are worth")]
        assert part.rstrip().endswith(line) and text.count("What our kernels are worth") == 1
    assert (LEAD + "At 512 the hybrid with the published kernels against ours: " + cost("hybrid") + ". The baseline's "
            "run with the published kernels at 512 is missing") in section
    def ratio(runs):
        return mean(f["ms_per_step"] for f in runs["hybrid"]) / mean(f["ms_per_step"] for f in runs["baseline"])

    def delta(runs):
        return mean(f["val_bpb"] for f in runs["hybrid"]) - mean(f["val_bpb"] for f in runs["baseline"])

    mine = {m: [f] for m, f in pk.items()}
    change = delta(ours) - delta(mine)
    assert (LEAD + f"At 512 the ms/step ratio hybrid / baseline is {ratio(mine):.3f} with the published kernels "
            f"and {ratio(ours):.3f} with ours; the delta (hybrid - baseline, means over seeds) is {delta(mine):+.4f} "
            f"with the published kernels and {delta(ours):+.4f} with ours. The published study has no run at 512. Our "
            f"kernels change our delta by {change:+.4f} (from {delta(mine):+.4f} to {delta(ours):+.4f}, ") \
        in section_both
    assert ("Each model with the published kernels against ours: the baseline " + cost("baseline") + "; the hybrid "
            + cost("hybrid") + ".") in section_both
    assert "what remains" not in section_both and "do not explain" not in section_both
    # the copies are seed 2 itself: at every common validation step half our seeds' difference from our mean
    for m in ("baseline", "hybrid"):
        assert f"the {m} is within our seeds' spread at all " in section_both


def test_val_bpb_by_step_table(report):
    all_facts = [f for f in fixture_facts() if f["ctx"] == 512]
    rows = report["tables"]["val_bpb by step at context 512"]
    assert [int(r["step"]) for r in rows] == [0, 5, 10, 15, 20]
    assert len(rows[0]) == 1 + len(all_facts)
    for f in all_facts:
        column = f"{f['model']} seed {f['seed']}" + ("" if f["sdpa_requested"] == "auto" else f" [{VARIANT}]")
        assert [r[column] for r in rows] == [f"{f['curve'][int(r['step'])]:.4f}" for r in rows]


def test_runs_table_lists_every_log(report):
    rows = report["tables"]["Runs"]
    assert sorted(r["run_id"] for r in rows) == sorted(f["run_id"] for f in fixture_facts())
    assert {r["status"] for r in rows} == {"finished"}


def test_submission_matches_schema_and_logs(report):
    sub = json.loads(report["submission"].read_text())
    assert set(sub) == SUBMISSION_KEYS
    all_facts = fixture_facts()
    runs = default_runs(all_facts, "hybrid", 512)
    assert sub["track"] == "non_record_16mb"
    assert isinstance(sub["name"], str) and sub["name"] and isinstance(sub["notes"], str) and sub["notes"]
    assert sub["val_bpb"] == pytest.approx(mean(f["val_bpb"] for f in runs), abs=1e-8)
    assert sub["val_loss"] == pytest.approx(mean(f["val_loss"] for f in runs), abs=1e-8)
    assert sub["seeds"] == [1, 2]
    assert sub["seed_results"] == {str(f["seed"]): {"val_bpb": f["val_bpb"], "val_loss": f["val_loss"]} for f in runs}
    assert sub["bytes_total"] == max(f["bytes_total"] for f in runs)
    assert sub["bytes_code"] == max(f["bytes_code"] for f in runs)
    assert sub["date"] == max(f["run_date"] for f in all_facts).strftime("%Y-%m-%d")
    base = mean(f["val_bpb"] for f in default_runs(all_facts, "baseline", 512))
    assert f"{base:.4f}" in sub["notes"]


def test_headline_context_option_and_no_submission_without_it(tmp_path):
    result = run_report(tmp_path / "a", headline=256)
    assert result["proc"].returncode == 0, result["proc"].stderr
    sub = json.loads(result["submission"].read_text())
    assert sub["seeds"] == [1, 2]
    assert sub["val_bpb"] == pytest.approx(mean(f["val_bpb"] for f in default_runs(fixture_facts(), "hybrid", 256)),
                                           abs=1e-8)
    result = run_report(tmp_path / "b", headline=32768)  # the default: no such runs in the fixture
    assert result["proc"].returncode == 0
    assert not result["submission"].exists()
    assert "No submission" in section_of(result["readme"]) and "not written" in result["proc"].stderr


def test_only_the_marked_section_changes(report):
    text = report["readme"].read_text(encoding="utf-8")
    assert text.startswith(README_BEFORE + BEGIN + "\n")
    assert text.endswith(END + README_AFTER)
    assert "old\n" not in section_of(report["readme"])
    assert report["proc"].stdout == section_of(report["readme"])  # the tables are printed too


def test_markers_are_appended_when_absent(tmp_path):
    result = run_report(tmp_path / "a", readme_text="# Someone's README\n\nText.\n")
    text = result["readme"].read_text(encoding="utf-8")
    assert text.startswith("# Someone's README\n\nText.\n\n" + BEGIN + "\n")
    assert text.endswith(END + "\n") and text.count(BEGIN) == 1
    first = text
    assert run_report(tmp_path / "a", readme_text=None)["proc"].returncode == 0  # rerun: same bytes
    assert result["readme"].read_text(encoding="utf-8") == first
    missing = run_report(tmp_path / "b", readme_text=None)  # no README at all: created with the section
    assert missing["readme"].read_text(encoding="utf-8").startswith(BEGIN + "\n")


def test_outputs_are_deterministic(report, tmp_path):
    again = run_report(tmp_path / "again")
    assert again["proc"].returncode == 0
    names = ["README.md", "submission.json", "figures/val_bpb_vs_time.png", "figures/ms_per_step_vs_context.png"]
    first_dir = report["readme"].parent
    for name in names:
        assert (first_dir / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert again["proc"].stdout == report["proc"].stdout
    for name in names[2:]:
        assert (first_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unfinished_log_is_listed_and_excluded(tmp_path):
    logs = tmp_path / "logs"
    shutil.copytree(FIXTURE_LOGS, logs)
    runs = default_runs(fixture_facts(), "hybrid", 512)
    cut = logs / runs[1]["file"]
    text = cut.read_text(encoding="utf-8")
    cut.write_text(text[:text.index("\nstep:15/20 train_loss:") + 1], encoding="utf-8")  # killed mid-run
    result = run_report(tmp_path / "out", logs=logs)
    assert result["proc"].returncode == 0, result["proc"].stderr
    section = section_of(result["readme"])
    found = tables(section)
    assert row(found["Runs"], run_id=runs[1]["run_id"])["status"] == "unfinished"
    assert f"`{runs[1]['run_id']}`" in section.split("Unfinished (no final round-trip line")[1].splitlines()[0]
    r = row(found["Final val_bpb (int8+zlib round trip)"], model="hybrid", context=512, variant="default")
    assert r["val_bpb (mean)"] == f"{runs[0]['val_bpb']:.4f}" and r["val_bpb per seed"].startswith("1: ")
    assert json.loads(result["submission"].read_text())["seeds"] == [1]
    column = "hybrid seed 2 (unfinished)"
    assert [x[column] for x in found["val_bpb by step at context 512"]][-2:] == ["–", "–"]


def fixture_copy(tmp_path: Path, pattern: str) -> tuple[Path, Path, str]:
    """The fixture logs copied to tmp_path/logs; the first copy matching pattern and its text, to edit."""
    logs = tmp_path / "logs"
    shutil.copytree(FIXTURE_LOGS, logs)
    source = sorted(logs.glob(pattern))[0]
    return logs, source, source.read_text(encoding="utf-8")


def test_published_kernel_settings_are_a_variant(tmp_path):
    logs, source, text = fixture_copy(tmp_path, "baseline_512_seed1_*.txt")
    # as if run with SDPA_BACKEND=flash GRAD_ACCUM_STEPS=8
    text = text.replace("config sdpa_backend:'auto'", "config sdpa_backend:'flash'")
    text = re.sub(r"^sdpa_backend:\w+", "sdpa_backend:flash", text, flags=re.M)
    text = text.replace("_seed1_", "_seed1_flash_")
    (logs / source.name.replace("_seed1_", "_seed1_flash_")).write_text(text, encoding="utf-8")
    result = run_report(tmp_path / "out", logs=logs)
    found = tables(section_of(result["readme"]))
    label = "SDPA_BACKEND=flash (published kernels)"
    assert row(found["Speed, steps, data seen, memory and artifact size"], model="baseline", context=512,
               variant=label)["runs"] == "1"
    assert row(found["Speed, steps, data seen, memory and artifact size"], model="baseline", context=512,
               variant="default")["runs"] == "2"


def test_speed_flags_are_a_variant(tmp_path):
    """A run with FUSED_PROJECTIONS=1 and MUON_BATCHED=1 gets its own rows; logs without the flags are default."""
    logs, source, text = fixture_copy(tmp_path, "hybrid_512_seed1_*.txt")
    assert "config muon_batched:" not in text  # the fixture predates the flag: it must read as off
    text = text.replace("config sdpa_backend:'auto'",
                        "config sdpa_backend:'auto'\nconfig fused_projections:True\nconfig muon_batched:True")
    (logs / source.name.replace("_seed1_", "_seed1_fast_")).write_text(text, encoding="utf-8")
    found = tables(section_of(run_report(tmp_path / "out", logs=logs)["readme"]))
    speed = found["Speed, steps, data seen, memory and artifact size"]
    assert row(speed, model="hybrid", context=512, variant="FUSED_PROJECTIONS=1 MUON_BATCHED=1")["runs"] == "1"
    assert row(speed, model="hybrid", context=512, variant="default")["runs"] == "2"


def test_setting_changes_are_a_variant(tmp_path):
    """A run with other head counts (as the pow2 shape variant) at a seed that already has a run is its own
    variant: it neither pools with the runs of the usual shape nor supersedes the run of its seed."""
    logs, source, text = fixture_copy(tmp_path, "hybrid_512_seed1_*.txt")
    assert "config num_heads:4" in text and "config gdn_heads:0" in text
    text = text.replace("config num_heads:4", "config num_heads:2").replace("config gdn_heads:0", "config gdn_heads:2")
    (logs / source.name.replace("_seed1_", "_seed1_pow2_")).write_text(text, encoding="utf-8")
    found = tables(section_of(run_report(tmp_path / "out", logs=logs)["readme"]))
    speed = found["Speed, steps, data seen, memory and artifact size"]
    assert row(speed, model="hybrid", context=512, variant="NUM_HEADS=2 GDN_HEADS=2")["runs"] == "1"
    assert row(speed, model="hybrid", context=512, variant="default")["runs"] == "2"
    statuses = {r["run_id"]: r["status"] for r in found["Runs"] if r["model"] == "hybrid"}
    assert "superseded" not in statuses.values(), statuses


def test_setting_reference_is_the_most_common_value_per_model():
    """The reference shape is per model (the baseline's width is not the hybrid's), the most common value wins,
    and a log without a setting reads as the reference."""
    import report as module  # scripts/ is on sys.path (conftest); `report` is also a fixture name here

    runs = [module.Run(file=f"{i}.txt", model=model, config=config) for i, (model, config) in enumerate([
        ("baseline", {"model_dim": 512, "num_heads": 8}),
        ("hybrid", {"model_dim": 448, "num_heads": 8, "gdn_heads": 0, "gdn_layers": [0, 1]}),
        ("hybrid", {"model_dim": 448, "num_heads": 8, "gdn_heads": 0, "gdn_layers": [0, 1]}),
        ("hybrid", {"model_dim": 448, "num_heads": 7, "gdn_heads": 5, "gdn_layers": [0]}),
        ("hybrid", {"model_dim": 448, "num_heads": 8}),  # from before the GDN knobs were logged
    ])]
    module.label_setting_changes(runs)
    assert [r.setting_changes for r in runs] == ["", "", "", "NUM_HEADS=7 GDN_LAYERS=0 GDN_HEADS=5", ""]
    assert runs[3].variant == "NUM_HEADS=7 GDN_LAYERS=0 GDN_HEADS=5" and runs[1].variant == "default"


def test_run_settings_are_what_the_trainers_log():
    """Each setting the report compares is a Hyperparameters attribute (logged as `config NAME:`) read from the
    environment variable it is named by, in the trainer that has it (the GDN ones: the hybrid only)."""
    import report as module
    import train_gpt  # the repository root is on sys.path (conftest)
    import train_gpt_gdn

    for config_name, env_name in module.RUN_SETTINGS:
        owners = [m for m in (train_gpt, train_gpt_gdn) if hasattr(m.Hyperparameters({}), config_name)]
        expected = [train_gpt_gdn] if config_name.startswith("gdn_") else [train_gpt, train_gpt_gdn]
        assert owners == expected, config_name
        for trainer in owners:
            assert f'"{env_name}"' in Path(trainer.__file__).read_text(encoding="utf-8"), (trainer.__name__, env_name)


def test_artifact_over_the_byte_limit_is_flagged(tmp_path):
    """A run whose trainer logged within_limit:False is marked in the Runs table, and a submission built on it
    says it is not a valid entry (in its notes and in the README)."""
    logs, source, text = fixture_copy(tmp_path, "hybrid_512_seed1_*.txt")
    assert re.search(r"^submission_limit:16000000 .* within_limit:True$", text, flags=re.M)
    text = re.sub(r"^submission_limit:16000000 (.*) within_limit:True$", r"submission_limit:16000000 \1 within_limit:False",
                  text, flags=re.M)
    text = re.sub(r"^Total submission size int8\+zlib: \d+ bytes$", "Total submission size int8+zlib: 16000123 bytes",
                  text, count=1, flags=re.M)
    source.write_text(text, encoding="utf-8")
    result = run_report(tmp_path / "out", logs=logs)
    section = section_of(result["readme"])
    run_id = source.stem
    cell = row(tables(section)["Runs"], run_id=run_id)["artifact bytes"]
    assert cell.endswith("(over the 16,000,000 limit)")
    others = [r["artifact bytes"] for r in tables(section)["Runs"] if r["run_id"] != run_id]
    assert others and not any("over" in c for c in others)
    notes = json.loads(result["submission"].read_text())["notes"]
    assert "NOT A VALID ENTRY: seed(s) 1 " in notes
    assert "not a valid entry" in section.split("### Submission")[1]
    assert "is 123 bytes over the 16,000,000-byte limit." in section


def test_gpu_logs(tmp_path):
    result = run_report(tmp_path, logs=GPU_LOGS, headline=8192)
    assert result["proc"].returncode == 0, result["proc"].stderr
    found = tables(section_of(result["readme"]))
    speed = found["Speed, steps, data seen, memory and artifact size"]
    base = row(speed, model="baseline", context=8192)
    hyb = row(speed, model="hybrid", context=8192)
    assert base["device"] == hyb["device"] == "NVIDIA H100 80GB HBM3"
    assert (base["ms/step"], hyb["ms/step"]) == ("483.2", "963.8")
    assert (base["peak alloc MiB (max)"], hyb["peak alloc MiB (max)"]) == ("7,855", "9,876")
    assert (base["artifact bytes (max)"], hyb["artifact bytes (max)"]) == ("5,080,340", "6,053,695")
    published = row(found["Compared with the published study"], model="hybrid", context=8192)
    assert published["val_bpb (ours)"] == "3.5541" and published["val_bpb (published)"] == "1.3810"
    assert published["ms/step (published)"] == "757"
    # our 8k comparison beside the published one (ratios and deltas from the logs' own numbers)
    (side,) = found["Where the hybrid pulls ahead: ours and published"]
    assert side["context"] == "8192" and side["ms/step hybrid / baseline (ours)"] == f"{963.8 / 483.2:.3f}"
    assert side["ms/step hybrid / baseline (published)"] == f"{757 / 594:.3f}" and side["delta (published)"] == "+0.0303"
    base_bpb, hyb_bpb = (float(row(found["Final val_bpb (int8+zlib round trip)"], model=m, context=8192)["val_bpb (mean)"])
                         for m in ("baseline", "hybrid"))
    assert side["winner (ours)"] == ("hybrid" if hyb_bpb < base_bpb else "baseline")
    assert side["winner (published)"] == "baseline"
    assert ("Over 8k: the hybrid's step becomes the faster one not at 8k in our runs and not at 8k in the published"
            in section_of(result["readme"]))
    margin = abs(hyb_bpb - base_bpb) / 0.0303  # from the 4-decimal means, so allow the last digit
    found_margin = re.search(r"Our margins \(\|delta\|\) are ([\d.]+)x at 8k the published ones, while the "
                             r"hybrid's step is nowhere relatively faster", section_of(result["readme"]))
    assert found_margin and float(found_margin[1]) == pytest.approx(margin, abs=0.02)
    # one seed of each model: the spread sentence says so instead of measuring one
    assert "At 8k each model has one seed only, so no seed spread is measured there." in section_of(result["readme"])
    assert "seed spread (max - min" not in section_of(result["readme"])
    sub = json.loads(result["submission"].read_text())
    assert sub["date"] == "2026-11-22"  # from the nvidia-smi banner in the log
    assert sub["val_bpb"] == 3.55409578 and sub["bytes_code"] == 60697


def test_bad_inputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_report(tmp_path / "a", logs=empty)["proc"].returncode == 2
    assert run_report(tmp_path / "b", logs=tmp_path / "nowhere")["proc"].returncode == 2
    logs = tmp_path / "logs"
    shutil.copytree(GPU_LOGS, logs)
    (logs / "notes.txt").write_text("not a log\n")
    result = run_report(tmp_path / "c", logs=logs, headline=8192)
    assert result["proc"].returncode == 0
    assert "notes.txt" in result["proc"].stderr and "notes.txt" in section_of(result["readme"])


def test_wallclock_capped_and_killed_runs_from_the_launchers(tmp_path):
    """Real logs of the launchers on CPU (tiny model, MAX_WALLCLOCK_SECONDS=15/20): one baseline run
    stopped by the wall-clock cap after 1 step, one baseline run that crashed in its first warm-up
    step, one hybrid run killed during warm-up."""
    logs = REPO_ROOT / "tests" / "fixtures" / "report_logs_launcher"
    result = run_report(tmp_path, logs=logs, headline=8192)
    assert result["proc"].returncode == 0, result["proc"].stderr
    found = tables(section_of(result["readme"]))
    by_id = {r["run_id"]: r for r in found["Runs"]}
    capped = by_id["baseline_8192_seed3_20261122_205647"]
    text = (logs / "baseline_8192_seed3_20261122_205647.txt").read_text(encoding="utf-8")
    stop = re.search(r"^stopping_early: wallclock_cap train_time:\d+ms step:(\d+)/", text, re.M)[1]
    assert capped["status"] == "finished" and capped["steps"] == stop == "1"
    assert by_id["baseline_8192_seed3_20261122_205548"]["status"] == "unfinished"
    assert by_id["hybrid_8192_seed3_20261122_204039"]["status"] == "unfinished"
    assert row(found["Speed, steps, data seen, memory and artifact size"], model="baseline", context=8192)["runs"] == "1"
    assert "Wall-clock budget: 15 s, 20 s." in section_of(result["readme"])
    assert not result["submission"].exists()  # no finished hybrid


# ------------------------------------------------------------------ re-reading the corpus


def rereading_log(logs: Path, name: str, seed: int, val: dict, train: dict, steps: int, tokens_per_step: int,
                  train_tokens: int, val_every: int, shards_line: bool = True) -> Path:
    """A copy of a real fixture log (baseline, 256 context, seed 1) with its run_id, seed, VAL_LOSS_EVERY, training
    tokens and step lines replaced by these: val {step: val_loss}, train {step: train_loss}, `steps` steps of
    `tokens_per_step` tokens each from `train_tokens` training tokens (train_tokens_seen and epochs as the trainer
    logs them). Without shards_line, the train_shards line is left out, as in logs from before it was parsed."""
    source = sorted(FIXTURE_LOGS.glob("baseline_256_seed1_*.txt"))[0]
    text = source.read_text(encoding="utf-8").replace(source.stem, name)
    text = text.replace("config val_loss_every:5\n", f"config val_loss_every:{val_every}\n")
    text = text.replace("config seed:1\n", f"config seed:{seed}\n").replace("\nseed:1\n", f"\nseed:{seed}\n")
    shards = re.search(r"^train_shards:1 train_tokens:\d+ val_tokens:\d+\n", text, re.M)[0]
    text = text.replace(shards, f"train_shards:1 train_tokens:{train_tokens} val_tokens:25088\n" if shards_line else "")
    lines = []
    for step in sorted(set(val) | set(train)):
        if step in train:
            lines.append(f"step:{step}/{steps} train_loss:{train[step]:.4f} train_time:{step * 100}ms "
                         f"step_avg:100.00ms")
        if step in val:
            lines.append(f"step:{step}/{steps} val_loss:{val[step]:.4f} val_bpb:{val[step] / 1.7:.4f} "
                         f"train_time:{step * 100}ms step_avg:100.00ms")
    seen = steps * tokens_per_step
    lines.append(f"train_tokens_seen:{seen} epochs:{seen / train_tokens:.3f}")
    start = text.index("\nstep:0/20 val_loss:") + 1
    end = text.index("\ntrain_tokens_seen:", start) + 1
    text = text[:start] + "\n".join(lines) + text[text.index("\n", end):]
    path = logs / f"{name}.txt"
    path.write_text(text, encoding="utf-8")
    return path


# 40 steps of 10,000 tokens from 100,001 training tokens: 3.99996 epochs, logged as 4.000; validations every 10
# steps, train losses every 5. Window means 3.4, 2.6, 2.3, 2.25 (standard errors |a - b| / 2 of two losses a, b:
# 0.1, 0.1, 0.1, 0.05); gaps -0.4, 0.0, +0.2, +0.15.
SYNTH_VAL = {0: 7.0, 10: 3.0, 20: 2.6, 30: 2.5, 40: 2.4}
SYNTH_TRAIN = {5: 3.5, 10: 3.3, 15: 2.7, 20: 2.5, 25: 2.2, 30: 2.4, 35: 2.3, 40: 2.2}


def test_rereading_gap_from_a_synthetic_log(tmp_path):
    """The gap, first-epoch and end steps, noise and range, from a log in the trainer's format with known numbers.
    Step 10 is at epoch 10 x 400,000 / (40 x 100,001) = 0.99999, so it is the first epoch's last validation; by the
    logged epochs (4.000 x 10 / 40 = 1.0) it would not be. The train loss at step 10 is outside step 20's window."""
    import report as module

    logs = tmp_path / "logs"
    logs.mkdir()
    path = rereading_log(logs, "baseline_256_seed3_20261201_000000", 3, SYNTH_VAL, SYNTH_TRAIN, steps=40,
                         tokens_per_step=10_000, train_tokens=100_001, val_every=10)
    run = module.parse_log(path)
    assert (run.train_tokens, run.tokens_seen, run.epochs, run.seed) == (100_001, 400_000, 4.0, 3)
    gaps = module.rereading_row(run)
    assert gaps["window"] == 10
    assert gaps["first"]["step"] == 10 and gaps["first"]["epoch"] == 10 * 400_000 / (40 * 100_001)
    assert gaps["end"]["step"] == 40 and gaps["end"]["epoch"] == 40 * 400_000 / (40 * 100_001)
    assert (gaps["first"]["gap"], gaps["end"]["gap"]) == (-0.4, 0.15)
    assert gaps["change"] == 0.55
    assert gaps["noise"] == round(2 * (0.1 ** 2 + 0.05 ** 2) ** 0.5, 8) == 0.2236068
    assert (gaps["widest"]["step"], gaps["widest"]["gap"]) == (30, 0.2)
    assert (gaps["low"], gaps["high"]) == (0.0, 0.2)
    assert gaps["fall_first"] == (0, 4.0) and gaps["fall_end"] == (30, 0.1)
    # Logs without the train_shards line: the logged epochs, so step 10 reads as epoch 1.0 and no validation is in
    # the first epoch.
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    old = module.parse_log(rereading_log(old_dir, "baseline_256_seed3_20261201_000000", 3, SYNTH_VAL, SYNTH_TRAIN,
                                         steps=40, tokens_per_step=10_000, train_tokens=100_001, val_every=10,
                                         shards_line=False))
    assert old.train_tokens is None
    old_gaps = module.rereading_row(old)
    assert old_gaps["first"] is None and old_gaps["change"] is None and old_gaps["end"]["epoch"] == 4.0
    assert [module.epoch_at(old, s) for s in (10, 20)] == [1.0, 2.0]

    # Through the command: the row in the README (the fixture's other logs stop within their first epoch).
    shutil.copytree(FIXTURE_LOGS, logs, dirs_exist_ok=True)
    section = section_of(run_report(tmp_path / "out", logs=logs)["readme"])
    found = tables(section)["Re-reading the corpus"]
    assert len(found) == 9  # the fixture's 8 default-kernel runs and this one
    assert row(found, model="baseline", context=256, seed=3) == {
        "model": "baseline", "context": "256", "seed": "3", "epochs": "4.000",
        "first-epoch step (epoch)": "10 (1.000)",  # 0.99999 at 3 decimals
        "gap there": "-0.4000", "end step (epoch)": "40 (4.000)", "gap at end": "+0.1500", "change": "+0.5500",
        "noise": "0.2236", "gap furthest from 0 from epoch 1 on": "+0.2000 (step 30)"}
    assert "It does in the baseline at 256 (seed 3): in the run with the most epochs" in section


def test_rereading_on_the_fixture_logs(report):
    """The fixture's runs stop at 0.25 epochs: a row per default-kernel run (the non-default one left out), no
    change to measure, and the sentence says there is nothing to look for."""
    rows = report["tables"]["Re-reading the corpus"]
    expected = sorted((f["model"], str(f["ctx"]), str(f["seed"])) for f in fixture_facts()
                      if f["sdpa_requested"] == "auto")
    assert sorted((r["model"], r["context"], r["seed"]) for r in rows) == expected
    assert all(r["change"] == "–" and r["first-epoch step (epoch)"] == r["end step (epoch)"] for r in rows)
    assert ("No run re-reads the corpus (each stops within its first epoch), so there is no memorisation to look "
            "for.") in section_of(report["readme"])


def rereading_run(model: str, seed: int, steps: int, tokens_per_step: int, points: dict, finished: bool = True,
                  extra: dict | None = None, initial: float = 7.0):
    """A run as parsed from a log (8k context, 100 training tokens, validation every 10 steps): points
    {step: (val_loss, gap, standard error)} become a validation at the step and two train losses in its window,
    mean val_loss - gap apart by 2 x the standard error (at step - 5 and step). Plus a validation at step 0
    (initial)."""
    import report as module

    val, train = [(0, initial, 4.1, 0.0)], []
    for step, (loss, gap, se) in sorted(points.items()):
        mean_train = loss - gap
        train += [(step - 5, 0.0, 100.0, round(mean_train + se, 8)), (step, 0.0, 100.0, round(mean_train - se, 8))]
        val.append((step, loss, loss / 1.7, step * 100.0))
    tokens = steps * tokens_per_step
    return module.Run(file=f"{model}_{seed}.txt", run_id=f"{model}_8192_seed{seed}", model=model, seq_len=8192,
                      seed=seed, config={"val_loss_every": 10, "sdpa_backend": "auto", "grad_accum_requested": 0,
                                         **(extra or {})},
                      train=train, val=val, stopped_early_step=steps, tokens_seen=tokens, train_tokens=100,
                      epochs=round(tokens / 100, 3), final_val_bpb=1.3 if finished else None)


TAIL = (" What the gap does not test: whether a repeated token teaches less than a fresh one, which would raise the val "
        "loss without opening a gap; that needs the same runs on a corpus larger than the tokens they take.")
HEAD = ("Memorisation would show as the gap growing from the first epoch to the end by more than its noise (the model "
        "fitting the text it re-reads better than held-out text).")


def rereading_text(runs) -> str:
    import report as module

    return module.rereading_sentence(module.rereading_rows(runs))


def test_rereading_sentence_no_memorisation():
    """(a) The gap moves by less than its noise: the baseline (9 tokens a step: epochs 0.9 at step 10, 3.6 at step 40)
    rises by +0.0400 against 2 x sqrt(0.02^2 + 0.02^2) = 0.0566; the hybrid (stopped at step 27, 2.43 epochs) falls
    by -0.0150. Its val loss falls by 4.0 over steps 0-10 and 0.02 over 30-40: the lag clause. Non-default and
    unfinished runs, whatever their gap, are not judged."""
    base = rereading_run("baseline", 1, 40, 9, {10: (3.0, -0.02, 0.02), 20: (2.6, 0.01, 0.02), 30: (2.5, -0.03, 0.02),
                                               40: (2.48, 0.02, 0.02)})
    hyb = rereading_run("hybrid", 1, 27, 9, {10: (2.9, 0.01, 0.02), 20: (2.6, 0.03, 0.02), 27: (2.55, -0.005, 0.02)})
    memorising = {10: (3.0, -0.02, 0.02), 40: (2.4, 0.5, 0.02)}
    others = [rereading_run("hybrid", 2, 40, 9, memorising, extra={"sdpa_backend": "math"}),
              rereading_run("baseline", 2, 40, 9, memorising, finished=False)]
    assert rereading_text([hyb, base] + others) == HEAD + (
        " It does in no run: in the run with the most epochs, the baseline at 8k (seed 1, 3.600 epochs), the gap goes "
        "from -0.0200 at step 10 (epoch 0.900) to +0.0200 at step 40 (+0.0400 against a noise of 0.0566), and from "
        "epoch 1 on it stays between -0.0300 and +0.0200. So reading the corpus up to 3.600 times shows no sign of "
        "memorisation that stands out from the noise. The gap does rise in 1 of 2 runs (by +0.0400), by less than "
        "its noise (0.0566): a real rise of that size could hide in the noise; part of it is the lag of the "
        "train-loss mean while the loss still falls fast (in the run with the most epochs the val loss falls by "
        "4.0000 from step 0 to 10, against 0.0200 from step 30 to 40).") + TAIL
    # A rise within the noise while the val loss falls faster at the end than in the first epoch: no lag clause.
    slow = rereading_run("baseline", 1, 40, 9, {10: (3.0, -0.02, 0.02), 30: (2.9, 0.0, 0.02), 40: (2.8, 0.02, 0.02)},
                         initial=3.01)
    assert rereading_text([slow]).endswith("noise. The gap does rise (by +0.0400), by less than its noise (0.0566): a "
                                           "real rise of that size could hide in the noise." + TAIL)
    # No rise anywhere: no clause on rises.
    flat = rereading_run("baseline", 1, 40, 9, {10: (3.0, 0.02, 0.02), 40: (2.48, 0.02, 0.02)})
    assert rereading_text([flat]).endswith("shows no sign of memorisation that stands out from the noise." + TAIL)


def test_rereading_sentence_memorisation():
    """(b) The train loss falls well below the val loss late in the baseline: the gap goes from -0.0200 to +0.3000
    (+0.3200 against 0.0566), growing at each validation; the hybrid's stays within its noise. The baseline has the
    most epochs."""
    base = rereading_run("baseline", 1, 40, 9, {10: (3.0, -0.02, 0.02), 20: (2.7, 0.1, 0.02), 30: (2.6, 0.2, 0.02),
                                               40: (2.6, 0.3, 0.02)})
    hyb = rereading_run("hybrid", 1, 27, 9, {10: (2.9, 0.01, 0.02), 27: (2.55, -0.005, 0.02)})
    assert rereading_text([base, hyb]) == HEAD + (
        " It does in the baseline at 8k (seed 1): in the run with the most epochs, the baseline at 8k (seed 1, 3.600 "
        "epochs), the gap goes from -0.0200 at step 10 (epoch 0.900) to +0.3000 at step 40 (+0.3200 against a noise "
        "of 0.0566), and from epoch 1 on it stays between +0.1000 and +0.3000. So re-reading the corpus shows as "
        "memorisation.") + TAIL
    # Both memorise: both named, the one with the most epochs described.
    hyb = rereading_run("hybrid", 1, 27, 9, {10: (2.9, 0.01, 0.02), 27: (2.55, 0.2, 0.02)})
    assert rereading_text([base, hyb]).startswith(
        HEAD + " It does in the baseline at 8k (seed 1) and the hybrid at 8k (seed 1): in the run with the most epochs, "
        "the baseline at 8k (seed 1, 3.600 epochs)")


def test_rereading_sentence_cannot_judge():
    """Re-reading runs without a gap in their first epoch (a validation only at the end, like the GPU smoke logs),
    or with one train loss per window: no verdict."""
    import report as module

    run = rereading_run("baseline", 1, 40, 9, {40: (2.48, 0.02, 0.02)})
    assert rereading_text([run]).startswith("The runs that re-read the corpus have no gap in their first epoch")
    one = rereading_run("baseline", 1, 40, 9, {10: (3.0, 0.0, 0.0), 40: (2.48, 0.02, 0.0)})
    one.train = [p for p in one.train if p[0] % 10 == 0]  # one train loss per window
    row = module.rereading_row(one)
    assert row["change"] == 0.02 and row["noise"] is None
    assert rereading_text([one]).startswith("The runs that re-read the corpus have no gap in their first epoch")


def test_plot_legends_name_the_published_kernels_short():
    """Legends say 'published kernels' (the full settings label is wider than a plot panel); tables keep the
    full label; a variant with anything besides the published settings keeps its own label in both."""
    import report as module

    published = hybrid_published_32k()
    assert module.run_label(published) == f"hybrid seed 1337 [{published.variant}]"
    assert "SDPA_BACKEND=flash" in published.variant
    assert module.run_label(published, short=True) == "hybrid seed 1337 [published kernels]"
    assert module.run_label(default_32k()[0], short=True) == "baseline seed 42"
    other = run_32k("hybrid", 1337, 1189.73, 505, 1.434, published=True, extra={"fused_projections": True})
    assert other.variant != published.variant
    assert module.run_label(other, short=True) == module.run_label(other) == f"hybrid seed 1337 [{other.variant}]"


def speed_flag_copy(logs: Path, pattern: str) -> None:
    """A copy of the seed-2 fixture log matching pattern, as if it were seed 1 run with FUSED_PROJECTIONS=1
    MUON_BATCHED=1 (its own run_id): a same-seed partner, with other numbers, for the grid's seed-1 run."""
    source = sorted(logs.glob(pattern))[0]
    text = source.read_text(encoding="utf-8")
    text = text.replace("config seed:2", "config fused_projections:True\nconfig muon_batched:True\nconfig seed:1")
    text = re.sub(r"^seed:2$", "seed:1", text, flags=re.M)
    text = text.replace("_seed2_", "_seed1_flags_")
    (logs / source.name.replace("_seed2_", "_seed1_flags_")).write_text(text, encoding="utf-8")


def test_speed_flags_against_the_grid_seed_by_seed(tmp_path, report):
    """Flag runs against the grid's run of the same model, context and seed: a row each with the ratio and the
    change (numbers read from the logs here), and the delta with and without the flags where both models have
    such a pair; no section without flag runs."""
    assert "### The speed flags against the grid's trainers" not in section_of(report["readme"])
    logs = tmp_path / "logs"
    shutil.copytree(FIXTURE_LOGS, logs)
    speed_flag_copy(logs, "hybrid_256_seed2_*.txt")
    speed_flag_copy(logs, "baseline_256_seed2_*.txt")
    result = run_report(tmp_path / "out", logs=logs)
    assert result["proc"].returncode == 0, result["proc"].stderr
    section = section_of(result["readme"])
    rows = tables(section)["The speed flags against the grid's trainers"]
    all_facts = fixture_facts()
    grid = {m: default_runs(all_facts, m, 256)[0] for m in ("baseline", "hybrid")}  # seed 1
    flags = {m: default_runs(all_facts, m, 256)[1] for m in ("baseline", "hybrid")}  # seed 2's numbers, copied
    assert grid["hybrid"]["seed"] == 1 and flags["hybrid"]["seed"] == 2
    assert [(r["model"], r["context"], r["seed"], r["flags on"]) for r in rows] == [
        ("baseline", "256", "1", "FUSED_PROJECTIONS=1 MUON_BATCHED=1"), ("hybrid", "256", "1", "FUSED_PROJECTIONS=1 MUON_BATCHED=1")]
    for row, model in zip(rows, ("baseline", "hybrid")):
        g, f = grid[model], flags[model]
        assert row["ms/step grid"] == f"{g['ms_per_step']:.1f}" and row["ms/step flags"] == f"{f['ms_per_step']:.1f}"
        assert row["flags / grid"] == f"{f['ms_per_step'] / g['ms_per_step']:.3f}"
        assert (row["steps grid"], row["steps flags"]) == (f"{g['steps']:,}", f"{f['steps']:,}")
        assert row["change"] == f"{f['val_bpb'] - g['val_bpb']:+.4f}"
    without = grid["hybrid"]["val_bpb"] - grid["baseline"]["val_bpb"]
    with_flags = flags["hybrid"]["val_bpb"] - flags["baseline"]["val_bpb"]
    assert (f"At 256 (seed 1) the delta (hybrid - baseline) is {without:+.4f} with the grid's trainers and "
            f"{with_flags:+.4f} with FUSED_PROJECTIONS=1 MUON_BATCHED=1: winner") in section
