#!/usr/bin/env python3
"""Results of the long-context study as tables, regenerated from the trainers' logs only.

    python3 scripts/report.py                       # logs_experiment/ -> README block, RESULTS.md, figures/, ...
    python3 scripts/report.py --logs DIR --out OUT  # other logs: all outputs under OUT, the repo untouched

Reads every *.txt trainer log and the RUN_ID.gpu.csv beside it. Cells: GPU, variant (VARIANT_SETTINGS only; a setting
an old log lacks is its default), context, model; the newest finished run per seed counts. Same logs, same bytes.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import re
import sys
from datetime import datetime
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))
from published_study import (PUBLISHED_KERNELS, PUBLISHED_SCHEDULE_STEPS, PUBLISHED_VAL_BPB,  # noqa: E402
                             crossover, markdown_table, published_batch_tokens)

REPO_ROOT = Path(__file__).resolve().parents[1]
BEGIN_MARKER, END_MARKER = "<!-- report:begin -->", "<!-- report:end -->"
MODELS = ("baseline", "hybrid")
TRAINER_FILES = {"baseline": "train_gpt.py", "hybrid": "train_gpt_gdn.py"}
PLOT_TIME, PLOT_SPEED = "val_bpb_vs_time.png", "ms_per_step_vs_context.png"
DEFAULT_VARIANT = "default"
SUBMISSION_BYTE_LIMIT = 16_000_000  # the competition's limit on trainer code + compressed int8 model

# Settings that change the maths: config name -> (default, short variant label). The defaults are the launcher's
# (scripts/launch_long_context.sh), else the trainers'; a dict gives a per-model default, a callable one per context.
# Speed-only settings (fused projections, batched Muon, kept GDN states, compile, auto micro-steps) make no variant.
VARIANT_SETTINGS = {
    "num_layers": (9, "shape"), "model_dim": ({"baseline": 512, "hybrid": 448}, "shape"),
    "num_heads": (8, "shape"), "num_kv_heads": (4, "shape"), "mlp_mult": (2, "shape"),
    "gdn_layers": ([0, 1, 2, 4, 5, 6, 8], "gdn shape"), "gdn_heads": (0, "gdn shape"), "gdn_key_dim": (0, "gdn shape"),
    "gdn_head_dim_ratio": (0.75, "gdn shape"), "gdn_expand_v": (2.0, "gdn shape"),
    "matrix_lr": (0.02, "lr"), "scalar_lr": (0.02, "lr"), "tied_embed_lr": (0.03, "lr"),
    "muon_momentum": (0.99, "momentum"), "muon_momentum_warmup_start": (0.92, "momentum"),
    "warmdown_frac": (0.36, "schedule"), "muon_momentum_warmup_frac": (0.18, "schedule"),
    "warmdown_iters": (1200, "schedule"), "muon_momentum_warmup_steps": (500, "schedule"),
    "train_batch_tokens": (published_batch_tokens, "batch"), "grad_clip_norm": (0.0, "grad clip"),
    "rotary_positions_bf16": (False, "bf16 rotary"), "gdn_conv_bf16": (False, "bf16 conv"),
    "sdpa_backend": ("auto", "kernels"), "grad_accum_steps": (0, "kernels"),
}

RE = {name: re.compile(pattern) for name, pattern in {
    "run_id": r"^run_id:(\S+)", "config": r"^config (\w+):(.*)$", "sdpa": r"^sdpa_backend:(\S+)",
    "world": r"^world_size:(\d+) grad_accum_steps:(\d+) device:(\S+)",
    "batch": r"^train_batch_tokens:(\d+) train_seq_len:(\d+)", "seed": r"^seed:(\d+)",
    "train": r"^step:(\d+)/\d+ train_loss:(\S+) train_time:([\d.]+)ms step_avg:([\d.]+)ms",
    "val": r"^step:(\d+)/\d+ val_loss:(\S+) val_bpb:(\S+) train_time:([\d.]+)ms",
    "tokens": r"^train_tokens_seen:\d+ epochs:([\d.]+)", "peak": r"^peak memory allocated: (\d+) MiB",
    "limit": r"^submission_limit:\d+(?: format:(\S+))? bytes_model:(\d+) bytes_code:(\d+) bytes_total:(\d+) "
             r"within_limit:(True|False)(?: int8_levels:(\d+))?",
    "final": r"^final_int8_zlib_roundtrip_exact val_loss:(\S+) val_bpb:(\S+)",
    "monitor": r"^gpu_monitor: samples:\d+ sm_mhz:(\d+) \S+ power_w:(\d+)",
    "smi_row": r"(?m)^[^,\n]*, *([\d.]+), *([\d.]+), *([\d.]+)",  # header and [N/A] rows do not match
    "cuda": r"^cuda:\S+ device:(.+?) capability:\((\d+), (\d+)\)", "cpu": r"^device:cpu\b",
    "smi_date": r"^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) \w{3} +\d+ \d\d:\d\d:\d\d \d{4}", "id_date": r"(\d{8}_\d{6})",
}.items()}


class Run:
    """One log: .train (step, train_time_ms, step_avg_ms, train_loss), .val (step, val_loss, val_bpb, train_time_ms)."""

    def __init__(self, file: str):
        self.file, self.run_id, self.model, self.gpu, self.capability = file, "", "baseline", "?", (0, 0)
        self.seq_len, self.seed, self.config, self.device, self.world_size = 0, None, {}, "?", 1
        self.grad_accum_steps, self.sdpa_backend, self.train, self.val = None, "?", [], []
        self.epochs = self.peak_alloc_mib = self.date = self.bytes_model = self.bytes_code = self.artifact_format = None
        self.final_val_loss = self.final_val_bpb = self.sm_mhz = self.power_w = self.ms_per_step = self.steps = None
        self.val_bpb_by_step, self.variant = {}, DEFAULT_VARIANT


def variant_of(run: Run) -> str:
    """The short labels of the VARIANT_SETTINGS whose value differs from its default, or 'default'."""
    values = {name: setting_value(run, name)[0] for name in VARIANT_SETTINGS}
    labels = list(dict.fromkeys(label for name, (_, label) in VARIANT_SETTINGS.items()
                                if values[name] != setting_value(run, name)[1]))
    if "kernels" in labels and {k: values[k.lower()] for k in PUBLISHED_KERNELS} == PUBLISHED_KERNELS:
        labels[labels.index("kernels")] = "published kernels"
    steps = (values["muon_momentum_warmup_steps"], values["warmdown_iters"])  # used only when both fractions are 0
    if "schedule" in labels and values["warmdown_frac"] == values["muon_momentum_warmup_frac"] == 0 \
            and steps == PUBLISHED_SCHEDULE_STEPS.get(run.model, {}).get(run.seq_len):
        labels[labels.index("schedule")] = "published schedule"
    return "+".join(labels) or DEFAULT_VARIANT


def setting_value(run: Run, name: str) -> tuple:
    """(the run's value, the default) of a VARIANT_SETTINGS entry; a setting the log lacks is its default."""
    default, config = VARIANT_SETTINGS[name][0], run.config
    default = default.get(run.model) if isinstance(default, dict) else default(run.seq_len) if callable(default) \
        else default
    if name == "grad_accum_steps":  # the request, 0 = automatic; some logs name it grad_accum_requested, and the
        oldest = "grad_accum_memory_fraction" not in config  # oldest (no automatic choice) had a fixed 8, the default
        return float(config.get("grad_accum_requested", 0 if oldest else config.get(name, 0))), default
    value = config.get(name, default)
    return (float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value), default


def split_log(text: str) -> list[str]:
    """The run's lines: everything after the separator line that follows the trainer's source."""
    lines = text.splitlines()
    starts = [i + 1 for i, line in enumerate(lines) if line == "=" * 100]  # the end of the embedded source
    if not starts:
        raise ValueError("no line of 100 '=' (not a trainer log)")
    return lines[next((i for i in starts if lines[i:i + 1] and lines[i].startswith("run_id:")), starts[0]):]


def literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):  # a plain string such as a path
        return text


def gpu_csv_medians(path: Path) -> tuple[float | None, float | None]:
    """Median SM MHz and power (W) over nvidia-smi rows (time, utilization %, MHz, W, ...) at >= 50% utilization."""
    rows = (map(float, m.groups()) for m in RE["smi_row"].finditer(path.read_text(encoding="utf-8", errors="replace")))
    busy = [(mhz, watts) for utilization, mhz, watts in rows if utilization >= 50]
    return (median(b[0] for b in busy), median(b[1] for b in busy)) if busy else (None, None)


# Log lines that set Run attributes: regex name -> (attribute, conversion) per group; None skips a group.
FIELDS = {"sdpa": (("sdpa_backend", str),), "world": (("world_size", int), ("grad_accum_steps", int), ("device", str)),
          "batch": (None, ("seq_len", int)), "seed": (("seed", int),),
          "tokens": (("epochs", float),), "peak": (("peak_alloc_mib", int),),
          "final": (("final_val_loss", float), ("final_val_bpb", float))}


def parse_log(path: Path) -> Run:
    run, monitor, smi_date = Run(file=Path(path).name), [], None
    for line in split_log(Path(path).read_text(encoding="utf-8", errors="replace")):
        line = line.rstrip()
        if m := RE["train"].match(line):
            run.train.append((int(m[1]), float(m[3]), float(m[4]), float(m[2])))
        elif m := RE["val"].match(line):
            run.val.append((int(m[1]), float(m[2]), float(m[3]), float(m[4])))
        elif m := RE["config"].match(line):
            run.config[m[1]] = literal(m[2])
        elif (m := RE["run_id"].match(line)) and not run.run_id:
            run.run_id = m[1]
        elif m := RE["limit"].match(line):
            run.artifact_format = (m[1] or "zlib9") + (f" int8±{m[6]}" if m[6] not in (None, "127") else "")
            run.bytes_model, run.bytes_code = int(m[2]), int(m[3])
        elif m := RE["monitor"].match(line):
            monitor.append((float(m[1]), float(m[2])))
        elif m := RE["cuda"].match(line):
            run.gpu, run.capability = m[1].strip(), (int(m[2]), int(m[3]))
        elif RE["cpu"].match(line):
            run.gpu = "cpu"
        elif smi_date is None and (m := RE["smi_date"].match(line)):
            smi_date = datetime.strptime(" ".join(m[0].split()), "%a %b %d %H:%M:%S %Y")
        else:
            for name, fields in FIELDS.items():
                if m := RE[name].match(line):
                    for i, spec in enumerate(fields, 1):
                        if spec:
                            setattr(run, spec[0], spec[1](m[i]))
                    break
    if not run.run_id:
        raise ValueError("no run_id line after the separator")
    run.model = "hybrid" if "gdn_layers" in run.config else "baseline"
    run.seq_len = run.seq_len or int(run.config.get("train_seq_len", 0))
    run.seed = run.seed if run.seed is not None else run.config.get("seed")
    run.ms_per_step = run.train[-1][2] if run.train else None
    run.steps = max((p[0] for p in run.train + run.val), default=None)  # the last step (stopped early or not)
    run.val_bpb_by_step = {p[0]: p[2] for p in run.val}
    run.variant = variant_of(run)
    ids = RE["id_date"].findall(run.run_id)
    run.date = smi_date or (datetime.strptime(ids[-1], "%Y%m%d_%H%M%S") if ids else None)
    csv = Path(path).with_name(f"{run.run_id}.gpu.csv")
    if csv.is_file():
        run.sm_mhz, run.power_w = gpu_csv_medians(csv)
    elif monitor:
        run.sm_mhz, run.power_w = median(c for c, _ in monitor), median(p for _, p in monitor)
    return run


def load_runs(log_dir: Path) -> tuple[dict, list[Run], list[str]]:
    """(cells {(gpu, variant, seq_len, model): newest finished run per seed, by seed}, runs not scored, skipped)."""
    runs, skipped = [], []
    for path in sorted(log_dir.glob("*.txt")):
        try:
            runs.append(parse_log(path))
        except (ValueError, UnicodeError) as exc:  # not a trainer log: listed as skipped
            skipped.append(f"{path.name}: {exc}")
    finished = sorted((r for r in runs if r.final_val_bpb is not None),
                      key=lambda r: (r.date or datetime.min, r.run_id))
    newest = {(r.gpu, r.variant, r.seq_len, r.model, r.seed): r for r in finished}  # the newest of each seed stays
    cells: dict[tuple, list[Run]] = {}
    for key in sorted(newest, key=lambda k: (k[:4], k[4] if k[4] is not None else -1)):
        cells.setdefault(key[:4], []).append(newest[key])
    return cells, [r for r in runs if r not in newest.values()], skipped  # Run compares by identity


def mean(values) -> float | None:
    return sum(v) / len(v) if (v := [x for x in values if x is not None]) else None


def spread(runs: list[Run]) -> float | None:
    return max(r.final_val_bpb for r in runs) - min(r.final_val_bpb for r in runs) if len(runs) > 1 else None


def winner(base: list[Run], hybrid: list[Run]) -> str:
    """'hybrid' / 'baseline' where |delta| exceeds both models' seed spread, else why none is called."""
    if len(base) < 2 or len(hybrid) < 2:
        return "1 seed"
    delta = mean(r.final_val_bpb for r in hybrid) - mean(r.final_val_bpb for r in base)
    noise = abs(delta) <= max(spread(base), spread(hybrid))
    return "within seed noise" if noise else "hybrid" if delta < 0 else "baseline"


def crossover_text(winners: dict[int, str]) -> str:
    """The smallest context from which the hybrid wins at every larger context where a winner is called."""
    first, lost, _ = crossover({c: w == "hybrid" for c, w in winners.items() if w in MODELS})
    if first is None:
        return "none" if "baseline" in winners.values() else "not called"
    uncalled = [fmt_ctx(c) for c in sorted(winners) if winners[c] not in MODELS and (lost is None or c > lost)]
    return f"from {fmt_ctx(first)}" + (f" (not called: {', '.join(uncalled)})" if uncalled else "")


def fmt(value, digits: int = 4, sign: str = "") -> str:
    return "–" if value is None else f"{value:{sign}.{digits}f}"


def fmt_ctx(seq_len: int) -> str:
    return f"{seq_len // 1024}k" if seq_len % 1024 == 0 and seq_len >= 1024 else str(seq_len)


def gpu_order(cells: dict) -> list[str]:
    """GPU models, the newest (highest compute capability, then name) first."""
    caps = {gpu: max(rs[0].capability for (g, *_), rs in cells.items() if g == gpu) for gpu, *_ in cells}
    return sorted(caps, key=lambda g: (caps[g], g), reverse=True)


def baseline_variant(variant: str) -> str:  # a baseline has no GDN settings: a hybrid pairs without their labels
    return "+".join(v for v in variant.split("+") if v not in ("gdn shape", "bf16 conv")) or DEFAULT_VARIANT


def pair(cells: dict, gpu: str, v: str, ctx: int) -> tuple[list, list]:  # (baseline runs, hybrid runs) of a variant
    return cells.get((gpu, baseline_variant(v), ctx, "baseline"), []), cells.get((gpu, v, ctx, "hybrid"), [])


def section_variants(cells: dict, gpu: str) -> list[str]:
    """Every hybrid variant (with its paired baseline), then the baseline variants that no hybrid variant pairs."""
    hybrids = {k[1] for k in cells if k[0] == gpu and k[3] == "hybrid"}
    alone = {k[1] for k in cells if k[0] == gpu and k[3] == "baseline"} - {baseline_variant(v) for v in hybrids}
    return sorted(hybrids | alone, key=lambda v: (v != DEFAULT_VARIANT, v))


def comparison_rows(cells: dict, gpu: str, variant: str) -> list[dict]:
    """Per context: both models' val_bpb, delta, winner, the equal-step comparison and the published numbers;
    then the crossover row (ours under 'winner', the published study's under 'published delta')."""
    rows, winners = [], {}
    for ctx in sorted({k[2] for k in cells if k[:2] == (gpu, variant)}):
        base, hyb = pair(cells, gpu, variant, ctx)
        b, h = mean(r.final_val_bpb for r in base), mean(r.final_val_bpb for r in hyb)
        winners[ctx] = winner(base, hyb) if base and hyb else "–"
        step = max(common_steps(base) & common_steps(hyb), default=None)
        eb, eh = (step_mean(base, step), step_mean(hyb, step)) if step is not None else (None, None)
        pb, ph = PUBLISHED_VAL_BPB["baseline"].get(ctx), PUBLISHED_VAL_BPB["hybrid"].get(ctx)
        rows.append({"context": fmt_ctx(ctx), "seeds b/h": f"{len(base)}/{len(hyb)}", "baseline": fmt(b),
                     "hybrid": fmt(h), "delta": fmt(None if b is None or h is None else h - b, sign="+"),
                     "winner": winners[ctx], "fits 16 MB b/h": f"{fits(base)}/{fits(hyb)}",
                     "equal step": "–" if step is None else step, "baseline at step": fmt(eb),
                     "hybrid at step": fmt(eh), "delta at step": fmt(None if eb is None else eh - eb, sign="+"),
                     "published baseline": fmt(pb), "published hybrid": fmt(ph),
                     "published delta": fmt(None if pb is None or ph is None else ph - pb, sign="+")})
    published = {c: PUBLISHED_VAL_BPB["hybrid"][c] < b for c, b in PUBLISHED_VAL_BPB["baseline"].items()}
    rows.append({"context": "crossover", "winner": crossover_text({c: w for c, w in winners.items() if w != "–"}),
                 "published delta": f"from {fmt_ctx(crossover(published)[0])}"})
    return rows


def fits(runs: list[Run]) -> str:  # whether every run's artifact (int8 model + code, as logged) is within the limit
    sizes = [r.bytes_model + r.bytes_code for r in runs if r.bytes_model is not None and r.bytes_code is not None]
    return "–" if not sizes else "yes" if max(sizes) <= SUBMISSION_BYTE_LIMIT else "no"


def table(rows: list[dict], columns: list[str]) -> list[str]:
    return markdown_table(columns, [[row.get(c, "") for c in columns] for row in rows]) + [""]


HEADLINE_COLUMNS = ["context", "seeds b/h", "baseline", "hybrid", "delta", "winner", "fits 16 MB b/h",
                    "published baseline", "published hybrid", "published delta"]


def headline_block(cells: dict, submission_line: str, source: str) -> list[str]:
    lines = [f"Generated by `scripts/report.py` from `{source}/`; full tables: [RESULTS.md](RESULTS.md).", ""]
    for gpu in gpu_order(cells):
        if any(k[:2] == (gpu, DEFAULT_VARIANT) for k in cells):
            lines += [f"### {gpu}: final val_bpb (int8 round trip), default settings", ""]
            lines += table(comparison_rows(cells, gpu, DEFAULT_VARIANT), HEADLINE_COLUMNS)
    lines += [f"![val_bpb vs time](figures/{PLOT_TIME})", "", f"![ms/step vs context](figures/{PLOT_SPEED})", "",
              submission_line, ""]
    return lines


def common_steps(runs: list[Run]) -> set[int]:
    return set.intersection(*(set(r.val_bpb_by_step) for r in runs)) if runs else set()


def step_mean(runs: list[Run], step: int) -> float:
    return mean(r.val_bpb_by_step[step] for r in runs)


MODEL_COLUMNS = ["context", "model", "seeds", "ms/step", "steps", "epochs", "val_bpb", "per seed", "spread",
                 "bytes model (max)", "bytes code", "bytes total", "format", "SM MHz (median)", "power W (median)"]


def model_row(ctx: int, model: str, runs: list[Run]) -> dict:
    models = [r.bytes_model for r in runs if r.bytes_model is not None]
    codes = [r.bytes_code for r in runs if r.bytes_code is not None]
    return dict(zip(MODEL_COLUMNS, [
        fmt_ctx(ctx), model, len(runs), fmt(mean(r.ms_per_step for r in runs), 1), fmt(mean(r.steps for r in runs), 0),
        fmt(mean(r.epochs for r in runs), 3), fmt(mean(r.final_val_bpb for r in runs)),
        ", ".join(f"{r.seed}: {r.final_val_bpb:.4f}" for r in runs), fmt(spread(runs)),
        max(models, default="–"), max(codes, default="–"), max(models) + max(codes) if models and codes else "–",
        "/".join(sorted({r.artifact_format or "–" for r in runs})), fmt(mean(r.sm_mhz for r in runs), 0),
        fmt(mean(r.power_w for r in runs), 0)]))


def results_lines(cells: dict, unscored: list[Run], skipped: list[str]) -> list[str]:
    lines = ["# Results", "", "Generated by `scripts/report.py` from the trainer logs. val_bpb: final int8 round trip, "
             "mean over seeds; spread: max - min; delta: hybrid - baseline; a winner only if |delta| > both spreads.",
             "", "## Variants (a hybrid's label pairs with the baseline's without the GDN labels)", ""]
    lines += markdown_table(["setting", "default", "variant label"], [
        [n, d if not callable(d) else "by context (393216 up to 16k, else 524288)", label]
        for n, (d, label) in VARIANT_SETTINGS.items()]) + [""]
    for gpu in gpu_order(cells):
        for variant in section_variants(cells, gpu):
            contexts = sorted({k[2] for k in cells if k[:2] == (gpu, variant)})
            lines += [f"## {gpu}, variant {variant}", ""]
            lines += table([model_row(ctx, m, runs) for ctx in contexts
                            for m, runs in zip(MODELS, pair(cells, gpu, variant, ctx)) if runs], MODEL_COLUMNS)
            lines += table(comparison_rows(cells, gpu, variant), ["context", "seeds b/h", "baseline", "hybrid", "delta",
                           "winner", "equal step", "baseline at step", "hybrid at step", "delta at step"])
            for ctx in contexts:
                by_model = [(rs, common_steps(rs)) for rs in pair(cells, gpu, variant, ctx)]  # in MODELS order
                steps = sorted(set().union(*(common for _, common in by_model)))
                lines += [f"val_bpb by step, {fmt_ctx(ctx)} (mean over seeds):", ""]
                lines += markdown_table(["step"] + list(MODELS), [
                    [s] + [fmt(step_mean(rs, s)) if rs and s in common else "–" for rs, common in by_model]
                    for s in steps]) + [""]
        for ctx in sorted({k[2] for k in cells if k[0] == gpu}):
            if len(rows := decomposition_rows(cells, gpu, ctx)) > 1:
                lines += [f"## {gpu}, {fmt_ctx(ctx)}: the margin by variant", ""]
                lines += markdown_table(["variant", "delta", "spread baseline", "spread hybrid",
                                         "delta - default's delta"], rows) + [""]
    if unscored or skipped:
        lines += ["## Runs not scored", ""]
        lines += markdown_table(["log", "status"], [
            [r.file, "superseded by a newer run" if r.final_val_bpb is not None else "incomplete"] for r in unscored]
            + [s.split(": ", 1) for s in skipped]) + [""]
    return lines


def decomposition_rows(cells: dict, gpu: str, ctx: int) -> list[list]:
    """Per variant at one GPU and context: delta, both seed spreads, and what its settings change in the delta."""
    def delta(variant: str) -> float | None:
        b, h = (mean(r.final_val_bpb for r in runs) for runs in pair(cells, gpu, variant, ctx))
        return None if b is None or h is None else h - b
    variants = [v for v in section_variants(cells, gpu) if (gpu, v, ctx, "hybrid") in cells]
    default = delta(DEFAULT_VARIANT)
    return [[v, fmt(d := delta(v), sign="+"), *(fmt(spread(runs)) for runs in pair(cells, gpu, v, ctx)),
             fmt(None if default is None or d is None else d - default, sign="+")] for v in variants]


def build_submission(cells: dict, headline_ctx: int) -> tuple[dict | None, str]:
    """The hybrid's default-variant cell at the headline context; among GPUs, the one with most seeds."""
    keys = [k for k in cells if k[1:] == (DEFAULT_VARIANT, headline_ctx, "hybrid")]
    if not keys:
        return None, f"No submission: no finished hybrid run with default settings at context {headline_ctx}."
    runs = cells[key := sorted(keys, key=lambda k: (-len(cells[k]), k[0]))[0]]
    bytes_code = (REPO_ROOT / TRAINER_FILES["hybrid"]).stat().st_size  # the trainer file as it ships
    bytes_model = max((r.bytes_model for r in runs if r.bytes_model is not None), default=0)
    dates = [r.date for r in runs if r.date is not None]
    val_bpb = round(mean(r.final_val_bpb for r in runs), 8)
    base = cells.get((key[0], DEFAULT_VARIANT, headline_ctx, "baseline"))
    notes = (f"Gated DeltaNet hybrid (7 GDN + 2 attention layers) at TRAIN_SEQ_LEN={headline_ctx} on {key[0]}; "
             f"mean of {len(runs)} seed(s) after the int8 round trip; {fmt(mean(r.ms_per_step for r in runs), 1)} "
             f"ms/step, {fmt(mean(r.steps for r in runs), 0)} steps. bytes_code: {TRAINER_FILES['hybrid']} as shipped; "
             f"bytes_total = bytes_code + the max over seeds of the logged bytes_model "
             f"({'/'.join(sorted({r.artifact_format or 'zlib9' for r in runs}))}).")
    if base:
        notes += f" Baseline at the same context: val_bpb {mean(r.final_val_bpb for r in base):.4f}."
    if bytes_code + bytes_model > SUBMISSION_BYTE_LIMIT:
        notes += " Over the 16,000,000-byte limit: not a valid entry."
    submission = {"track": "non_record_16mb", "name": f"GDN hybrid, {fmt_ctx(headline_ctx)} context",
                  "date": max(dates).strftime("%Y-%m-%d") if dates else None, "val_bpb": val_bpb,
                  "val_loss": round(mean(r.final_val_loss for r in runs), 8), "seeds": [r.seed for r in runs],
                  "seed_results": {str(r.seed): {"val_bpb": r.final_val_bpb, "val_loss": r.final_val_loss}
                                   for r in runs},
                  "bytes_total": bytes_code + bytes_model, "bytes_code": bytes_code, "notes": notes}
    return submission, (f"`submission.json`: {submission['name']} on {key[0]}, val_bpb {val_bpb:.4f} (seeds "
                        f"{', '.join(map(str, submission['seeds']))}), {submission['bytes_total']:,} bytes total.")


COLORS = {"baseline": ("#1f77b4", "#6baed6", "#08519c", "#9ecae1"),
          "hybrid": ("#d62728", "#fc9272", "#a50f15", "#fcbba1")}


def render_plots(cells: dict) -> dict[str, bytes]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    images, style = {}, {k: v for k, v in matplotlib.rcParamsDefault.items() if k != "backend"}  # not a local rc
    with matplotlib.rc_context({**style, "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 6}):
        contexts = sorted({k[2] for k in cells})
        fig, axes = plt.subplots(1, max(len(contexts), 1), figsize=(5 * max(len(contexts), 1), 4), squeeze=False)
        for ax, ctx in zip(axes[0], contexts):
            for n, key in enumerate(k for k in sorted(cells) if k[2] == ctx):
                for i, r in enumerate(cells[key]):
                    ax.plot([p[3] / 1000 for p in r.val], [p[2] for p in r.val], "-" if key[1] == DEFAULT_VARIANT
                            else "--", marker="o", markersize=2, color=COLORS[key[3]][(n + i) % 4],
                            label=f"{key[3]} seed {r.seed} [{key[0]}, {key[1]}]")
            low = min(p[2] for k in cells if k[2] == ctx for r in cells[k] for p in r.val)  # zoom on the late gaps
            ax.set(title=f"context {ctx}", xlabel="training time (s)", ylabel="val_bpb", ylim=(low - 0.02, low + 0.6))
            ax.legend()
        figures = {PLOT_TIME: fig}
        fig, ax = plt.subplots(figsize=(6, 4))
        for n, (gpu, variant, model) in enumerate(sorted({(k[0], k[1], k[3]) for k in cells})):
            ctxs = sorted(k[2] for k in cells if (k[0], k[1], k[3]) == (gpu, variant, model))
            ax.plot(ctxs, [mean(r.ms_per_step for r in cells[(gpu, variant, c, model)]) for c in ctxs],
                    "-" if variant == DEFAULT_VARIANT else "--", marker="o", color=COLORS[model][n % 4],
                    label=f"{model} [{gpu}, {variant}]")
        ax.set_xscale("log", base=2)
        ax.set_xticks(contexts, [str(c) for c in contexts])
        ax.minorticks_off()
        ax.legend()
        ax.set(xlabel="context length (tokens)", ylabel="ms/step (mean over seeds)", title="training step time")
        figures[PLOT_SPEED] = fig
        for name, fig in figures.items():
            fig.tight_layout()
            fig.savefig(buffer := io.BytesIO(), format="png", dpi=100, metadata={"Software": None})  # no date inside
            images[name] = buffer.getvalue()
            plt.close(fig)
    return images


def replace_block(readme_text: str, block: str) -> str:
    block = f"{BEGIN_MARKER}\n{block}{END_MARKER}"
    if readme_text.count(BEGIN_MARKER) == 0 and readme_text.count(END_MARKER) == 0:
        return readme_text + ("\n" if readme_text and not readme_text.endswith("\n") else "") + block + "\n"
    begin, end = readme_text.find(BEGIN_MARKER), readme_text.find(END_MARKER)
    if readme_text.count(BEGIN_MARKER) != 1 or readme_text.count(END_MARKER) != 1 or end < begin:
        raise ValueError(f"needs exactly one {BEGIN_MARKER} followed by one {END_MARKER}; fix the markers")
    return readme_text[:begin] + block + readme_text[end + len(END_MARKER):]


def write_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        (tmp := path.with_name(f".{path.name}.tmp")).write_bytes(data)
        tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--logs", type=Path, help="folder of trainer logs (*.txt); default logs_experiment/")
    ap.add_argument("--out", type=Path, help="folder for README.md's block, RESULTS.md, figures/, submission.json")
    ap.add_argument("--headline-context", type=int, default=32768, help="context of the submitted hybrid")
    args = ap.parse_args(argv)
    logs = args.logs or REPO_ROOT / "logs_experiment"
    if args.out is None and logs.resolve() != (REPO_ROOT / "logs_experiment").resolve():
        sys.exit(f"error: --logs {logs} needs --out DIR (outputs of other logs never go into the repository)")
    if not logs.is_dir():
        sys.exit(f"error: {logs} is not a folder of trainer logs; pass --logs DIR")
    cells, unscored, skipped = load_runs(logs)
    if not cells:
        sys.exit(f"error: no finished trainer logs (*.txt with final_int8_zlib_roundtrip_exact) in {logs}")
    out = args.out or REPO_ROOT
    readme = out / "README.md"
    submission, submission_line = build_submission(cells, args.headline_context)
    block = "\n".join(headline_block(cells, submission_line, logs.name))
    try:
        readme_text = replace_block(readme.read_text(encoding="utf-8") if readme.exists() else "", block)
    except ValueError as exc:
        sys.exit(f"error: {readme}: {exc}")
    results = "\n".join(results_lines(cells, unscored, skipped)).rstrip("\n") + "\n"
    write_if_changed(readme, readme_text.encode("utf-8"))
    write_if_changed(out / "RESULTS.md", results.encode("utf-8"))
    for name, data in render_plots(cells).items():
        write_if_changed(out / "figures" / name, data)
    if submission is not None:
        write_if_changed(out / "submission.json", (json.dumps(submission, indent=2) + "\n").encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
