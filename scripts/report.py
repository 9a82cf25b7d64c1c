#!/usr/bin/env python3
"""Results of the long-context study (issue 5), regenerated from the trainers' logs only.

    python3 scripts/report.py                       # logs_experiment/ -> README.md, figures/, submission.json
    python3 scripts/report.py --logs DIR --readme R.md --plots-dir D --submission S.json --headline-context 512

Reads every *.txt log in --logs (written by train_gpt.py / train_gpt_gdn.py: the trainer's source,
a line of 100 '=', then the run's lines; only the part after the separator is parsed) and writes:

* the Markdown results section of --readme, between the markers <!-- report:begin --> and
  <!-- report:end --> (appended at the end, markers included, when absent; nothing outside the
  markers is touched);
* two PNG plots in --plots-dir: val_bpb_vs_time.png (one panel per context, one line per run) and
  ms_per_step_vs_context.png (both models);
* --submission, the competition's submission.json for the hybrid at --headline-context.

The tables are also printed to stdout. The same logs give byte-identical outputs: nothing depends on
the current time, the file order on disk or the machine. Every number comes from the logs, except
the published study's numbers (scripts/published_study.py), which are quoted for comparison.

Runs are grouped by model, context, kernel variant and device. The variant is "default" unless the run's
model or optimizer differs from the most common one of its model among the logs (RUN_SETTINGS,
such as NUM_HEADS, GDN_HEADS or MATRIX_LR: named first in the variant) or the run used other kernel
settings than the grid's (SDPA_BACKEND, GDN_BACKEND, GRAD_ACCUM_STEPS other than auto, or one of the speed
flags in SPEED_FLAGS on, such as FUSED_PROJECTIONS=1, which with MUON_BATCHED is a trainer default since
2026-11-23, and the hybrid's GDN_KEEP_STATES since session 12: the grid ran with all three off); those runs
(e.g. the published kernel settings SDPA_BACKEND=flash GRAD_ACCUM_STEPS=8) get their own rows and are never
averaged with the default ones. A log without the final round-trip line (final_int8_zlib_roundtrip_exact) is
an unfinished run: listed, excluded from means.
When one seed has several finished runs in a group, the newest counts and the others are listed as
superseded. Runs with exactly the published kernel settings are also set against the default-kernel runs
of their context and device ("What our kernels are worth"). A run whose trainer logged its artifact over
the competition's byte limit (within_limit:False) is flagged in the Runs table, and a submission.json
built on it says in its notes that it is not a valid entry. "Re-reading the corpus" sets, per
default-kernel run, the gap between the validation loss and the train losses logged before it in the first
epoch against the gap at the end (rereading_row), to tell whether re-reading the corpus shows as
memorisation.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from statistics import stdev

sys.path.insert(0, str(Path(__file__).resolve().parent))
from published_study import (PUBLISHED_KERNELS, PUBLISHED_MS_PER_STEP, PUBLISHED_VAL_BPB,  # noqa: E402
                             crossover, markdown_table)

REPO_ROOT = Path(__file__).resolve().parents[1]
BEGIN_MARKER = "<!-- report:begin -->"
END_MARKER = "<!-- report:end -->"
SEPARATOR = "=" * 100
MODELS = ("baseline", "hybrid")
SUBMIT_MODEL = "hybrid"
PLOT_TIME = "val_bpb_vs_time.png"
PLOT_SPEED = "ms_per_step_vs_context.png"
DEFAULT_DATASET = "fineweb10B_sp1024"
PUBLISHED_SUFFIX = " (published kernels)"  # ends the variant label of a run with the published kernel settings

# Speed flags of the trainers (config name, env name): a run with one on is its own variant, also for the three
# that became defaults after the grid (FUSED_PROJECTIONS, MUON_BATCHED; the hybrid's GDN_KEEP_STATES).
SPEED_FLAGS = (("fused_projections", "FUSED_PROJECTIONS"), ("muon_batched", "MUON_BATCHED"),
               ("muon_compile", "MUON_COMPILE"), ("gdn_fla_fused", "GDN_FLA_FUSED"),
               ("gdn_custom_op", "GDN_CUSTOM_OP"), ("gdn_shift_conv", "GDN_SHIFT_CONV"),
               ("gdn_keep_states", "GDN_KEEP_STATES"))
# Settings that change the model or its training (config name, env name), the same at every context. A run whose
# value differs from the most common value among the runs of its model is its own variant (setting_changes),
# so that, say, a run with power-of-two head dims or another learning rate neither pools with nor supersedes the
# published setting's runs. (The batch differs by context and the compile warm-up changes nothing: not here.)
RUN_SETTINGS = (("num_layers", "NUM_LAYERS"), ("model_dim", "MODEL_DIM"), ("num_heads", "NUM_HEADS"),
                ("num_kv_heads", "NUM_KV_HEADS"), ("mlp_mult", "MLP_MULT"), ("rope_base", "ROPE_BASE"),
                ("logit_softcap", "LOGIT_SOFTCAP"), ("qk_gain_init", "QK_GAIN_INIT"),
                ("tied_embed_init_std", "TIED_EMBED_INIT_STD"),
                ("gdn_layers", "GDN_LAYERS"), ("gdn_heads", "GDN_HEADS"), ("gdn_key_dim", "GDN_KEY_DIM"),
                ("gdn_head_dim_ratio", "GDN_HEAD_DIM_RATIO"), ("gdn_expand_v", "GDN_EXPAND_V"),
                ("gdn_conv_size", "GDN_CONV_SIZE"),
                ("tied_embed_lr", "TIED_EMBED_LR"), ("matrix_lr", "MATRIX_LR"), ("scalar_lr", "SCALAR_LR"),
                ("muon_momentum", "MUON_MOMENTUM"),
                ("muon_momentum_warmup_start", "MUON_MOMENTUM_WARMUP_START"),
                ("muon_momentum_warmup_frac", "MUON_MOMENTUM_WARMUP_FRAC"), ("warmdown_frac", "WARMDOWN_FRAC"),
                ("muon_backend_steps", "MUON_BACKEND_STEPS"), ("beta1", "BETA1"), ("beta2", "BETA2"),
                ("adam_eps", "ADAM_EPS"), ("grad_clip_norm", "GRAD_CLIP_NORM"))


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------

RE_RUN_ID = re.compile(r"^run_id:(\S+)")
RE_CONFIG = re.compile(r"^config (\w+):(.*)$")
RE_SDPA = re.compile(r"^sdpa_backend:(\S+)")
RE_PARAMS = re.compile(r"^model_params:(\d+)")
RE_GDN = re.compile(r"^gdn_layers:\[([^\]]*)\]\s+attn_layers:\[([^\]]*)\]")
RE_WORLD = re.compile(r"^world_size:(\d+) grad_accum_steps:(\d+) device:(\S+)")
RE_BATCH = re.compile(r"^train_batch_tokens:(\d+) train_seq_len:(\d+)")
RE_SEED = re.compile(r"^seed:(\d+)")
RE_TRAIN = re.compile(r"^step:(\d+)/(\d+) train_loss:(\S+) train_time:([\d.]+)ms step_avg:([\d.]+)ms")
RE_VAL = re.compile(r"^step:(\d+)/(\d+) val_loss:(\S+) val_bpb:(\S+) train_time:([\d.]+)ms step_avg:([\d.]+)ms")
RE_STOP = re.compile(r"^stopping_early: wallclock_cap train_time:([\d.]+)ms step:(\d+)/(\d+)")
RE_TOKENS = re.compile(r"^train_tokens_seen:(\d+) epochs:([\d.]+)")
RE_TRAIN_TOKENS = re.compile(r"^train_shards:\d+ train_tokens:(\d+)")
RE_PEAK = re.compile(r"^peak memory allocated: (\d+) MiB reserved: (\d+) MiB")
RE_CODE = re.compile(r"^Code size: (\d+) bytes")
RE_MODEL_BYTES = re.compile(r"^Serialized model int8\+zlib: (\d+) bytes")
RE_TOTAL_BYTES = re.compile(r"^Total submission size int8\+zlib: (\d+) bytes")
RE_LIMIT = re.compile(r"^submission_limit:(\d+) bytes_model:\d+ bytes_code:\d+ bytes_total:\d+ within_limit:(True|False)")
RE_FINAL = re.compile(r"^final_int8_zlib_roundtrip_exact val_loss:(\S+) val_bpb:(\S+)")
RE_MONITOR = re.compile(r"^gpu_monitor: samples:(\d+) sm_mhz:(\d+) ")
RE_CUDA_DEVICE = re.compile(r"^cuda:\S+ device:(.+?) capability:")
RE_CPU_DEVICE = re.compile(r"^device:cpu\b")
RE_SMI_DATE = re.compile(r"^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
                         r" +\d{1,2} \d\d:\d\d:\d\d \d{4}\b")
RE_ID_DATE = re.compile(r"(?<!\d)(\d{8}_\d{6})(?!\d)")


class LogError(ValueError):
    """A file in the logs folder that is not a readable trainer log."""


@dataclass
class Run:
    file: str
    run_id: str = ""
    model: str = "baseline"
    seq_len: int = 0
    seed: int | None = None
    config: dict = field(default_factory=dict)
    device: str = "?"
    world_size: int = 1
    grad_accum_steps: int | None = None
    sdpa_backend: str = "?"
    model_params: int | None = None
    batch_tokens: int | None = None
    train: list = field(default_factory=list)  # (step, train_time_ms, step_avg_ms, train_loss)
    val: list = field(default_factory=list)  # (step, val_loss, val_bpb, train_time_ms)
    iterations: int | None = None
    stopped_early_step: int | None = None
    tokens_seen: int | None = None
    epochs: float | None = None
    train_tokens: int | None = None  # the training shards' tokens (one epoch)
    peak_alloc_mib: int | None = None
    peak_reserved_mib: int | None = None
    bytes_code: int | None = None
    bytes_model: int | None = None
    bytes_total: int | None = None
    byte_limit: int | None = None  # the competition's limit as the trainer logged it, and whether the run kept it
    within_limit: bool | None = None
    final_val_loss: float | None = None
    final_val_bpb: float | None = None
    sm_mhz: list = field(default_factory=list)  # (samples, median SM clock) per interval between validations
    date: datetime | None = None
    superseded: bool = False
    setting_changes: str = ""  # e.g. "NUM_HEADS=7 GDN_HEADS=5": set by load_runs against the other runs

    @property
    def finished(self) -> bool:
        return self.final_val_bpb is not None

    @property
    def counted(self) -> bool:
        return self.finished and not self.superseded

    @property
    def status(self) -> str:
        if not self.finished:
            return "unfinished"
        return "superseded" if self.superseded else "finished"

    @property
    def ms_per_step(self) -> float | None:
        return self.train[-1][2] if self.train else None

    def val_bpb_at(self, step: int) -> float | None:
        """The val_bpb logged at this step (the last one, if logged twice), or None."""
        values = [p[2] for p in self.val if p[0] == step]
        return values[-1] if values else None

    @property
    def sm_mhz_median(self) -> float | None:
        """The SM clock while training: the median over every nvidia-smi sample (each interval's median
        stands for its samples); None for logs from before the trainers sampled it."""
        clocks = sorted(mhz for n, mhz in self.sm_mhz for _ in range(n))
        return clocks[len(clocks) // 2] if clocks else None

    @property
    def steps(self) -> int | None:
        if self.stopped_early_step is not None:
            return self.stopped_early_step
        candidates = [p[0] for p in self.train] + [p[0] for p in self.val]
        return max(candidates) if candidates else None

    @property
    def budget_s(self) -> float | None:
        value = self.config.get("max_wallclock_seconds")
        return float(value) if value is not None else None

    @property
    def dataset(self) -> str:
        path = str(self.config.get("data_path", "?"))
        return Path(path.rstrip("/")).name or path

    @property
    def variant(self) -> str:
        """'default' (the grid's kernels: auto SDPA, auto micro-steps, speed flags off), or what differed."""
        parts = [self.setting_changes] if self.setting_changes else []
        sdpa = self.config.get("sdpa_backend", "auto")
        if sdpa != "auto":
            parts.append(f"SDPA_BACKEND={sdpa}")
        gdn = self.config.get("gdn_backend", "auto")
        if gdn != "auto":
            parts.append(f"GDN_BACKEND={gdn}")
        requested = self.config.get("grad_accum_requested")
        if requested is not None:
            # Trainers that log the request: 0 is auto (the default), whatever micro-steps it chose.
            if int(requested) != 0:
                parts.append(f"GRAD_ACCUM_STEPS={int(requested)}")
        else:
            default_accum = max(1, 8 // max(self.world_size, 1))
            if self.grad_accum_steps is not None and self.grad_accum_steps != default_accum:
                parts.append(f"GRAD_ACCUM_STEPS={self.grad_accum_steps}")
        for config_name, env_name in SPEED_FLAGS:
            if self.config.get(config_name, False) is True:  # logs from before a flag existed lack it: off
                parts.append(f"{env_name}=1")
        if not parts:
            return "default"
        label = " ".join(parts)
        if sdpa == PUBLISHED_KERNELS["SDPA_BACKEND"] and self.grad_accum_steps == PUBLISHED_KERNELS["GRAD_ACCUM_STEPS"]:
            label += PUBLISHED_SUFFIX
        return label

    @property
    def group_key(self) -> tuple:
        return (self.model, self.seq_len, self.variant, self.device)


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def split_log(text: str) -> list[str]:
    """The run's lines: everything after the separator line that follows the trainer's source."""
    lines = text.splitlines()
    positions = [i for i, line in enumerate(lines) if line == SEPARATOR]
    if not positions:
        raise LogError("no line of 100 '=' (not a trainer log)")
    for i in positions:  # prefer the separator followed by the run_id line
        if i + 1 < len(lines) and lines[i + 1].startswith("run_id:"):
            return lines[i + 1:]
    return lines[positions[0] + 1:]


def parse_log(path: Path) -> Run:
    run = Run(file=path.name)
    smi_date = None
    gdn_seen = False
    for line in split_log(path.read_text(encoding="utf-8", errors="replace")):
        line = line.rstrip()
        if m := RE_TRAIN.match(line):
            run.train.append((int(m[1]), float(m[4]), float(m[5]), float(m[3])))
            run.iterations = int(m[2])
        elif m := RE_VAL.match(line):
            run.val.append((int(m[1]), float(m[3]), float(m[4]), float(m[5])))
            run.iterations = int(m[2])
        elif m := RE_CONFIG.match(line):
            run.config[m[1]] = _literal(m[2])
        elif m := RE_RUN_ID.match(line):
            run.run_id = m[1]
        elif m := RE_SDPA.match(line):
            run.sdpa_backend = m[1]
        elif m := RE_PARAMS.match(line):
            run.model_params = int(m[1])
        elif RE_GDN.match(line):
            gdn_seen = True
        elif m := RE_WORLD.match(line):
            run.world_size, run.grad_accum_steps = int(m[1]), int(m[2])
            if run.device == "?":
                run.device = m[3]
        elif m := RE_BATCH.match(line):
            run.batch_tokens, run.seq_len = int(m[1]), int(m[2])
        elif m := RE_SEED.match(line):
            run.seed = int(m[1])
        elif m := RE_STOP.match(line):
            run.stopped_early_step = int(m[2])
        elif m := RE_TOKENS.match(line):
            run.tokens_seen, run.epochs = int(m[1]), float(m[2])
        elif m := RE_TRAIN_TOKENS.match(line):
            run.train_tokens = int(m[1])
        elif m := RE_PEAK.match(line):
            run.peak_alloc_mib, run.peak_reserved_mib = int(m[1]), int(m[2])
        elif m := RE_CODE.match(line):
            run.bytes_code = int(m[1])
        elif m := RE_MODEL_BYTES.match(line):
            run.bytes_model = int(m[1])
        elif m := RE_TOTAL_BYTES.match(line):
            run.bytes_total = int(m[1])
        elif m := RE_LIMIT.match(line):
            run.byte_limit, run.within_limit = int(m[1]), m[2] == "True"
        elif m := RE_FINAL.match(line):
            run.final_val_loss, run.final_val_bpb = float(m[1]), float(m[2])
        elif m := RE_MONITOR.match(line):
            run.sm_mhz.append((int(m[1]), float(m[2])))
        elif m := RE_CUDA_DEVICE.match(line):
            run.device = m[1].strip()
        elif RE_CPU_DEVICE.match(line):
            run.device = "cpu"
        elif smi_date is None and (m := RE_SMI_DATE.match(line)):
            smi_date = datetime.strptime(" ".join(m[0].split()), "%a %b %d %H:%M:%S %Y")
    if not run.run_id:
        raise LogError("no run_id line after the separator")
    if gdn_seen or "gdn_layers" in run.config:
        run.model = "hybrid"
    if not run.seq_len:
        run.seq_len = int(run.config.get("train_seq_len", 0))
    if run.seed is None and "seed" in run.config:
        run.seed = int(run.config["seed"])
    if run.grad_accum_steps is None and "grad_accum_steps" in run.config:
        run.grad_accum_steps = int(run.config["grad_accum_steps"])
    if run.world_size > 1 and run.device != "?":
        run.device = f"{run.world_size}x {run.device}"
    if smi_date is not None:
        run.date = smi_date
    elif ids := RE_ID_DATE.findall(run.run_id):
        try:
            run.date = datetime.strptime(ids[-1], "%Y%m%d_%H%M%S")
        except ValueError:
            run.date = None
    return run


def load_runs(log_dir: Path) -> tuple[list[Run], list[str]]:
    runs, skipped = [], []
    for path in sorted(log_dir.glob("*.txt"), key=lambda p: p.name):
        try:
            runs.append(parse_log(path))
        except LogError as exc:
            skipped.append(f"{path.name}: {exc}")
    label_setting_changes(runs)
    runs.sort(key=run_sort_key)
    # One finished run per seed and group counts: the newest (then the last run_id).
    by_seed: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.finished:
            by_seed.setdefault(run.group_key + (run.seed,), []).append(run)
    for same in by_seed.values():
        same.sort(key=lambda r: (r.date or datetime.min, r.run_id))
        for old in same[:-1]:
            old.superseded = True
    return runs, skipped


def env_value_text(value) -> str:
    """A config value as its environment variable would be written: lists comma-separated."""
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def label_setting_changes(runs: list[Run]) -> None:
    """Per model, the reference value of each RUN_SETTINGS entry is the most common one among the runs that
    logged it (a tie: the smallest text); a run that logged another value gets it in its variant. A log
    without the setting (from before it existed) counts as the reference, as logs without a speed flag count as off."""
    for model in sorted({run.model for run in runs}):
        same_model = [run for run in runs if run.model == model]
        reference = {}
        for config_name, _ in RUN_SETTINGS:
            values = [env_value_text(r.config[config_name]) for r in same_model if config_name in r.config]
            if values:
                reference[config_name] = min(set(values), key=lambda v: (-values.count(v), v))
        for run in same_model:
            run.setting_changes = " ".join(
                f"{env_name}={env_value_text(run.config[config_name])}" for config_name, env_name in RUN_SETTINGS
                if config_name in run.config and env_value_text(run.config[config_name]) != reference[config_name])


def model_rank(model: str) -> int:
    return MODELS.index(model) if model in MODELS else len(MODELS)


def variant_rank(variant: str) -> tuple:
    return (variant != "default", variant)


def run_sort_key(run: Run) -> tuple:
    return (model_rank(run.model), run.seq_len, variant_rank(run.variant), run.device,
            run.seed if run.seed is not None else -1, run.run_id, run.file)


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------


@dataclass
class Group:
    model: str
    seq_len: int
    variant: str
    device: str
    runs: list  # counted runs (finished, not superseded), by seed

    @property
    def key(self) -> tuple:
        return (self.model, self.seq_len, self.variant, self.device)

    def mean(self, attr: str) -> float | None:
        values = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        return sum(values) / len(values) if values else None

    def max(self, attr: str):
        values = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        return max(values) if values else None

    def val_bpb_mean_at(self, step: int) -> float:
        """The mean over seeds of the val_bpb logged at this step (a step every run logged: common_val_steps)."""
        return round(sum(r.val_bpb_at(step) for r in self.runs) / len(self.runs), 8)


def common_val_steps(runs: list[Run]) -> list[int]:
    """The steps at which every one of these runs logged a validation, in order."""
    return sorted(set.intersection(*({p[0] for p in r.val} for r in runs)))


def build_groups(runs: list[Run]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for run in runs:
        if run.counted:
            key = run.group_key
            if key not in groups:
                groups[key] = Group(*key, runs=[])
            groups[key].runs.append(run)
    for group in groups.values():
        group.runs.sort(key=lambda r: (r.seed if r.seed is not None else -1, r.run_id))
    return sorted(groups.values(), key=lambda g: (model_rank(g.model), g.seq_len, variant_rank(g.variant), g.device))


def winner(delta: float) -> str:
    """Who wins for a val_bpb delta (hybrid - baseline; lower is better)."""
    return "hybrid" if delta < 0 else "baseline" if delta > 0 else "tie"


def variant_by_context(rows: list[dict], variant: str = "default") -> list[dict]:
    """The rows of comparisons / equal_step_rows of one variant (the default kernels unless named), by context."""
    return sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["seq_len"])


def comparisons(groups: list[Group]) -> list[dict]:
    """Hybrid vs baseline for every (context, variant, device) where both have finished runs."""
    index = {g.key: g for g in groups}
    rows = []
    keys = sorted({(g.seq_len, g.variant, g.device) for g in groups}, key=lambda k: (k[0], variant_rank(k[1]), k[2]))
    for seq_len, variant, device in keys:
        base = index.get(("baseline", seq_len, variant, device))
        hyb = index.get(("hybrid", seq_len, variant, device))
        if base is None or hyb is None:
            continue
        b, h = round(base.mean("final_val_bpb"), 8), round(hyb.mean("final_val_bpb"), 8)
        delta = round(h - b, 8)
        # Paired by seed (same data order and initial draws): the spread of these is the seed noise of the delta.
        base_by_seed = {r.seed: r.final_val_bpb for r in base.runs}
        paired = {r.seed: round(r.final_val_bpb - base_by_seed[r.seed], 8) for r in hyb.runs if r.seed in base_by_seed}
        rows.append({"seq_len": seq_len, "variant": variant, "device": device, "baseline": b, "hybrid": h,
                     "delta": delta, "winner": winner(delta), "delta_by_seed": dict(sorted(paired.items())),
                     "baseline_by_seed": base_by_seed, "hybrid_by_seed": {r.seed: r.final_val_bpb for r in hyb.runs}})
    return rows


def is_speed_flag_variant(variant: str) -> bool:
    """A variant that differs from the grid's trainers by speed flags only (the same maths, faster)."""
    flags = {f"{env_name}=1" for _, env_name in SPEED_FLAGS}
    return variant != "default" and set(variant.split()) <= flags


def speed_flag_rows(groups: list[Group]) -> list[dict]:
    """Each run with speed flags on against the grid's run (variant 'default') of the same model, context, device
    and seed: same data order and initialisation, so the difference is the flags' (and the GPU's run-to-run)."""
    index = {g.key: g for g in groups}
    rows = []
    for g in groups:
        grid = index.get((g.model, g.seq_len, "default", g.device))
        if not is_speed_flag_variant(g.variant) or grid is None:
            continue
        grid_by_seed = {r.seed: r for r in grid.runs}
        for run in g.runs:
            if (ref := grid_by_seed.get(run.seed)) is not None:
                rows.append({"model": g.model, "seq_len": g.seq_len, "variant": g.variant, "device": g.device,
                             "seed": run.seed, "grid": ref, "flags": run})
    return rows


def speed_flag_delta_sentences(rows: list[dict], comps: list[dict]) -> list[str]:
    """Per context and variant where both models have a same-seed pair: the delta with and without the flags."""
    by_key = {(c["seq_len"], c["variant"], c["device"]): c for c in comps}
    sentences = []
    for seq_len, variant, device in sorted({(r["seq_len"], r["variant"], r["device"]) for r in rows}):
        flags, grid = by_key.get((seq_len, variant, device)), by_key.get((seq_len, "default", device))
        if flags is None or grid is None:
            continue
        seeds = sorted(set(flags["delta_by_seed"]) & set(grid["delta_by_seed"]))
        if not seeds:
            continue
        with_flags = sum(flags["delta_by_seed"][s] for s in seeds) / len(seeds)
        without = sum(grid["delta_by_seed"][s] for s in seeds) / len(seeds)
        seed_text = f"seed{'s' if len(seeds) > 1 else ''} {and_list(map(str, seeds))}"
        sentences.append(f"At {fmt_ctx(seq_len)} ({seed_text}{'' if len(seeds) == 1 else ', mean'}) the delta "
                         f"(hybrid - baseline) is {without:+.4f} with the grid's trainers and {with_flags:+.4f} with "
                         f"{variant}: winner {winner(without)}, then {winner(with_flags)}.")
    return sentences


def and_list(items) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def seed_noise_sentence(comps: list[dict]) -> str:
    """The seed spread of each model (max - min of the final val_bpb over its seeds) against the delta, per
    default-kernel context of comparisons with 2 or more seeds of either model: whether |delta| is larger than
    the spreads added up (then no draw of those seeds could flip the winner), and, where both models ran 2 or
    more of the same seeds, whether each seed's own delta has the mean delta's sign. The contexts with one seed
    of each model are named, since no spread is measured there."""
    rows = variant_by_context(comps)
    out, single = [], []
    for c in rows:
        by_seed = {m: c[f"{m}_by_seed"] for m in MODELS}
        if all(len(v) < 2 for v in by_seed.values()):
            single.append(fmt_ctx(c["seq_len"]))
            continue
        spreads = {m: round(max(v.values()) - min(v.values()), 8) for m, v in by_seed.items() if len(v) >= 2}
        seed_sets = {m: sorted(v) for m, v in by_seed.items()}
        if len({tuple(v) for v in seed_sets.values()}) == 1:
            seeds = f"seeds {and_list(seed_sets[MODELS[0]])} of both models"
        else:
            seeds = ", ".join(f"{m} seed{'s' if len(v) > 1 else ''} {and_list(v)}" for m, v in seed_sets.items())
        measured = and_list(f"{spreads[m]:.4f} for the {m}" for m in MODELS if m in spreads)
        unmeasured = [m for m in MODELS if m not in spreads]
        if unmeasured:
            measured += f" (none for the {unmeasured[0]}, which has one seed)"
        total = round(sum(spreads.values()), 8)
        bound = "the sum of both spreads" if len(spreads) > 1 else f"the {next(iter(spreads))}'s spread"
        definition = " (max - min of the final val_bpb over seeds)" if not out else ""
        if abs(c["delta"]) > total:
            verdict = f"|delta| is larger than {bound} ({total:.4f}), so the seeds do not change the winner"
        else:
            verdict = (f"|delta| is not larger than {bound} ({total:.4f}), so the winner at this context is within "
                       f"seed noise")
        text = (f"At {fmt_ctx(c['seq_len'])} ({seeds}) the seed spread{definition} is {measured}, against a delta "
                f"of {c['delta']:+.4f}: {verdict}")
        paired = c["delta_by_seed"]
        if len(paired) >= 2:
            listing = ", ".join(f"{seed}: {d:+.4f}" for seed, d in paired.items())
            if all(winner(d) == c["winner"] for d in paired.values()):
                text += f"; every per-seed delta ({listing}) has the sign of the mean delta"
            else:
                text += (f"; the per-seed deltas ({listing}) do not all have the sign of the mean delta, so the seeds "
                         f"disagree on the winner")
        out.append(text + ".")
    if single:
        out.append(f"At {and_list(single)} each model has one seed only, so no seed spread is measured there.")
    return " ".join(out)


def equal_step_rows(groups: list[Group], comps: list[dict]) -> list[dict]:
    """Split each comparison into speed (steps in the budget) and quality per step.

    The common step is the largest step at which every counted run of both models logged a
    validation; val_bpb there is the mean over seeds. A hybrid ahead at the common step learns more
    per step; a hybrid that is only ahead at the end wins by taking more steps in the budget.
    """
    index = {g.key: g for g in groups}
    rows = []
    for c in comps:
        base = index[("baseline", c["seq_len"], c["variant"], c["device"])]
        hyb = index[("hybrid", c["seq_len"], c["variant"], c["device"])]
        common = common_val_steps(base.runs + hyb.runs)
        step = common[-1] if common else None

        def val_at(group: Group) -> float | None:
            return None if step is None else group.val_bpb_mean_at(step)

        b_ms, h_ms = base.mean("ms_per_step"), hyb.mean("ms_per_step")
        rows.append({**c, "ms_ratio": round(h_ms / b_ms, 8) if b_ms and h_ms else None,
                     "steps_baseline": base.mean("steps"), "steps_hybrid": hyb.mean("steps"),
                     "common_step": step, "baseline_at_step": val_at(base), "hybrid_at_step": val_at(hyb)})
    return rows


def standing(gap: float) -> str:
    """The hybrid's val_bpb gap (hybrid - baseline; lower is better) in words."""
    return f"ahead by {-gap:.4f}" if gap < 0 else f"behind by {gap:.4f}" if gap > 0 else "level with the baseline"


def steps_sentences(rows: list[dict]) -> list[str]:
    """One generated sentence per default-kernel context of equal_step_rows: speed, steps, and the gap at
    the common step against the gap at the end."""
    out = []
    for e in variant_by_context(rows):
        if None in (e["ms_ratio"], e["steps_baseline"], e["steps_hybrid"], e["baseline_at_step"], e["hybrid_at_step"]):
            continue
        gap = e["hybrid_at_step"] - e["baseline_at_step"]
        out.append(f"At {fmt_ctx(e['seq_len'])} a hybrid step takes {e['ms_ratio']:.2f}x the baseline's, so the hybrid "
                   f"makes {e['steps_hybrid'] / e['steps_baseline']:.2f}x the steps ({fmt_mean_count(e['steps_hybrid'])} "
                   f"vs {fmt_mean_count(e['steps_baseline'])}); at step {e['common_step']} it is {standing(gap)} "
                   f"val_bpb, and at the end {standing(e['delta'])}.")
    return out


def steps_or_learning_sentence(rows: list[dict]) -> str:
    """Whether the winner at each default-kernel context is simply the model that took more steps, and where the
    hybrid is ahead at the common step (what each model learned per step)."""
    rows = [e for e in variant_by_context(rows)
            if None not in (e["steps_baseline"], e["steps_hybrid"], e["baseline_at_step"], e["hybrid_at_step"])]
    if not rows:
        return ""
    more_steps = {e["seq_len"]: "hybrid" if e["steps_hybrid"] > e["steps_baseline"] else "baseline" for e in rows}
    against = [fmt_ctx(e["seq_len"]) for e in rows if e["winner"] != more_steps[e["seq_len"]]]
    first = ("At every context run the winner is the model that fitted more steps into the budget" if not against
             else f"The model with fewer steps wins at {', '.join(against)}")
    # At the common step the model with fewer steps is further into its wall-clock warm-down, which favours it:
    # a lead there counts for more when the leader is the faster model.
    ahead = [e for e in rows if e["hybrid_at_step"] < e["baseline_at_step"]]
    robust = [fmt_ctx(e["seq_len"]) for e in ahead if more_steps[e["seq_len"]] == "hybrid"]
    favoured = [fmt_ctx(e["seq_len"]) for e in ahead if more_steps[e["seq_len"]] == "baseline"]
    behind = [fmt_ctx(e["seq_len"]) for e in rows if e not in ahead]
    parts = [first]
    if robust:
        parts.append(f"the hybrid is ahead at the common step at {', '.join(robust)} although its warm-down is "
                     "less far along there")
    if favoured:
        parts.append(f"at {', '.join(favoured)} the hybrid is ahead at the common step{' as well' if robust else ''}, "
                     "but its warm-down is further along there, which favours it")
    if behind:
        parts.append(f"the baseline is ahead at the common step at {', '.join(behind)}")
    return "; ".join(parts) + "."


def artifact_sentence(runs: list[Run]) -> str:
    """How the artifact's size moves with the steps a run took, per model (default kernels, finished runs with a
    logged limit), and the least headroom under the byte limit: a faster trainer takes more steps, and trained
    weights compress less. Each context is named once: its one run's bytes and steps, or the range of them over
    its seeds; contexts are in order of steps. The bytes grow with the steps when every run with more steps than
    another (of the same model) has more bytes."""
    sized = sorted((r for r in runs if r.counted and r.variant == "default" and r.byte_limit and r.bytes_total
                    and r.steps), key=lambda r: (model_rank(r.model), r.steps))
    if not sized:
        return ""
    parts = []
    for model in dict.fromkeys(r.model for r in sized):
        mine = [r for r in sized if r.model == model]
        by_ctx: dict[int, list[Run]] = {}
        for r in mine:
            by_ctx.setdefault(r.seq_len, []).append(r)
        entries = sorted(by_ctx.items(), key=lambda kv: (min(r.steps for r in kv[1]), max(r.steps for r in kv[1]),
                                                        kv[0]))
        pairs = ", ".join(artifact_entry(ctx, same) for ctx, same in entries)
        grows = len({r.steps for r in mine}) > 1 and all(a.bytes_total < b.bytes_total for a in mine for b in mine
                                                          if a.steps < b.steps)
        parts.append(f"{model}{' (growing with the steps)' if grows else ''}: {pairs}")
    tight = min(sized, key=lambda r: r.byte_limit - r.bytes_total)
    room = tight.byte_limit - tight.bytes_total
    where = f"{tight.model} at {fmt_ctx(tight.seq_len)}, seed {tight.seed}"
    least = (f"the least headroom under the {tight.byte_limit:,}-byte limit is {room:,} bytes ({where})" if room >= 0
             else f"{where} is {-room:,} bytes over the {tight.byte_limit:,}-byte limit")
    return f"Artifact bytes by steps taken: {'; '.join(parts)}; {least}."


def artifact_entry(seq_len: int, runs: list[Run]) -> str:
    """One context's artifact bytes and steps: '14,957,480 at 656 steps (32k)' for one run, and for several
    the ranges over them, '14,957,480-14,957,789 at 656-657 steps (32k, 2 seeds)'."""
    label = fmt_ctx(seq_len)
    if len(runs) > 1:
        # Seeds repeat only where one context was run on several devices.
        seeds = {r.seed for r in runs}
        label += f", {len(runs)} {'seeds' if len(seeds) == len(runs) else 'runs'}"
    return (f"{value_span([r.bytes_total for r in runs], ',', '-')} at "
            f"{value_span([r.steps for r in runs], ',', '-')} steps ({label})")


def crossover_place(hybrid_ahead: dict[int, bool]) -> str:
    """Where the hybrid pulls ahead (faster per step, or the winner) over context -> ahead there, in words:
    'between 8k and 16k', 'at or below 8k' (ahead everywhere), 'not in 8k-32k' (nowhere, or only below
    some context), or 'more than once'."""
    first, last_behind, flips = crossover(hybrid_ahead)
    if flips:
        return "more than once"
    if first is None:
        contexts = sorted(hybrid_ahead)
        return f"not in {fmt_ctx(contexts[0])}-{fmt_ctx(contexts[-1])}" if len(contexts) > 1 else f"not at {fmt_ctx(contexts[0])}"
    return f"between {fmt_ctx(last_behind)} and {fmt_ctx(first)}" if last_behind else f"at or below {fmt_ctx(first)}"


def crossover_sentence(comps: list[dict]) -> str:
    """Where the hybrid starts to win, over the default-kernel contexts that have both models."""
    default = variant_by_context(comps)
    if not default:
        return "Crossover: no context has finished default-kernel runs of both models yet."
    wins = [c["seq_len"] for c in default if c["winner"] == "hybrid"]
    tested = ", ".join(fmt_ctx(c["seq_len"]) for c in default)
    if not wins:
        return f"Crossover: the baseline wins at every context run so far ({tested})."
    place = crossover_place({c["seq_len"]: c["winner"] == "hybrid" for c in default})
    if place.startswith(("between", "at or below")):  # the hybrid wins from its first win up
        return f"Crossover: the hybrid wins from {fmt_ctx(wins[0])} up, so it lies {place} (contexts run: {tested})."
    return f"Crossover: no single one; the hybrid wins at {', '.join(fmt_ctx(s) for s in wins)} of {tested}."


def published_pair(ctx: int) -> tuple[float, float] | None:
    """The published study at one context: (ms/step ratio hybrid / baseline, val_bpb delta hybrid - baseline), or
    None where it has no run."""
    if ctx not in PUBLISHED_VAL_BPB["baseline"] or ctx not in PUBLISHED_MS_PER_STEP["baseline"]:
        return None
    return (PUBLISHED_MS_PER_STEP["hybrid"][ctx] / PUBLISHED_MS_PER_STEP["baseline"][ctx],
            PUBLISHED_VAL_BPB["hybrid"][ctx] - PUBLISHED_VAL_BPB["baseline"][ctx])


def published_crossover_rows(step_rows: list[dict], variant: str = "default") -> list[dict]:
    """Our comparisons of one variant (the default kernels unless named) at the published contexts beside the
    published ones: the ms/step ratio (hybrid / baseline), the val_bpb delta (hybrid - baseline) and the winner."""
    rows = []
    for e in variant_by_context(step_rows, variant):
        published = published_pair(e["seq_len"])
        if published is None:
            continue
        pub_ms_ratio, pub_delta = published
        rows.append({"seq_len": e["seq_len"], "device": e["device"], "ms_ratio": e["ms_ratio"],
                     "pub_ms_ratio": pub_ms_ratio, "delta": e["delta"], "pub_delta": pub_delta, "winner": e["winner"],
                     "pub_winner": winner(pub_delta)})
    return rows


def crossover_variants(step_rows: list[dict]) -> list[str]:
    """The variants whose crossover is set beside the published one: the default kernels, then each other variant
    (not the published kernel settings, which the kernels paragraph covers) compared at two or more published
    contexts, so that it has a crossover of its own."""
    others = sorted({r["variant"] for r in step_rows} - {"default"}, key=variant_rank)
    return ["default"] + [v for v in others if not is_published_kernels(v)
                          and len(published_crossover_rows(step_rows, v)) >= 2]


def published_crossover_sentence(rows: list[dict]) -> str:
    """Where, over the contexts both have, the hybrid's step becomes the faster one and where it starts to win:
    ours against the published study."""
    tested = ", ".join(fmt_ctx(r["seq_len"]) for r in rows)
    ours_speed = crossover_place({r["seq_len"]: r["ms_ratio"] < 1 for r in rows if r["ms_ratio"] is not None})
    pub_speed = crossover_place({r["seq_len"]: r["pub_ms_ratio"] < 1 for r in rows})
    ours_win = crossover_place({r["seq_len"]: r["winner"] == "hybrid" for r in rows})
    pub_win = crossover_place({r["seq_len"]: r["pub_winner"] == "hybrid" for r in rows})
    where = (f"Over {tested}: the hybrid's step becomes the faster one {ours_speed} in our runs and {pub_speed} in "
             f"the published ones; the hybrid starts to win {ours_win} in ours and {pub_win} in the published.")
    # The size of the margins against the size of the speed advantage, context by context.
    sized = [r for r in rows if r["ms_ratio"] is not None and r["pub_delta"] != 0]
    if not sized:
        return where
    margins = ", ".join(f"{abs(r['delta']) / abs(r['pub_delta']):.2f}x at {fmt_ctx(r['seq_len'])}" for r in sized)
    faster = [fmt_ctx(r["seq_len"]) for r in sized if r["ms_ratio"] < r["pub_ms_ratio"]]
    speed = (f"the hybrid's step is relatively faster than in the published runs at {', '.join(faster)}"
             if faster else "the hybrid's step is nowhere relatively faster than in the published runs")
    return f"{where} Our margins (|delta|) are {margins} the published ones, while {speed}."


def is_published_kernels(variant: str) -> bool:
    """Whether a variant is the published kernel settings and nothing else (no speed flag or GDN backend with them)."""
    if not variant.endswith(PUBLISHED_SUFFIX):
        return False
    return all(part.split("=", 1)[0] in PUBLISHED_KERNELS for part in variant[:-len(PUBLISHED_SUFFIX)].split())


def favour(change: float) -> str:
    """Which model a change of the delta (hybrid - baseline; lower is better for the hybrid) favours, at 4 decimals."""
    if f"{abs(change):.4f}" == "0.0000":
        return "in neither's favour"
    return "in the hybrid's favour" if change < 0 else "in the baseline's favour"


def seeds_text(group: Group) -> str:
    seeds = [r.seed for r in group.runs]
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of seeds {and_list(seeds)}"


def kernel_cost(model: str, pk: Group, default: Group | None) -> str:
    """One model's numbers with the published kernels against its default-kernel ones (same context, device)."""
    ctx = pk.seq_len
    pub = PUBLISHED_MS_PER_STEP.get(model, {}).get(ctx)
    pub_text = f" (published study: {pub})" if pub is not None else ""
    if default is None:
        return (f"{fmt(pk.mean('ms_per_step'), 1)} ms/step{pub_text}, {fmt_mean_count(pk.mean('steps'))} steps, "
                f"val_bpb {fmt(pk.mean('final_val_bpb'))} ({seeds_text(pk)}), and no default-kernel run to compare "
                f"with")
    change = round(pk.mean("final_val_bpb"), 8) - round(default.mean("final_val_bpb"), 8)
    return (f"{fmt(pk.mean('ms_per_step'), 1)} vs {fmt(default.mean('ms_per_step'), 1)} ms/step{pub_text}, "
            f"{fmt_mean_count(pk.mean('steps'))} vs {fmt_mean_count(default.mean('steps'))} steps, val_bpb "
            f"{fmt(pk.mean('final_val_bpb'))} vs {fmt(default.mean('final_val_bpb'))} ({change:+.4f}; "
            f"{seeds_text(pk)} vs {seeds_text(default)})")


def equal_step_gaps(pk: Group, default: Group) -> list[tuple[int, float, float]]:
    """(step, gap, spread) at each validation step after 0 that every run of both groups logged: gap = the mean
    val_bpb of the published-kernel runs minus the mean of ours; spread = max - min over our seeds (0 with one)."""
    gaps = []
    for step in [s for s in common_val_steps(pk.runs + default.runs) if s > 0]:
        ours = [r.val_bpb_at(step) for r in default.runs]
        gaps.append((step, round(pk.val_bpb_mean_at(step) - default.val_bpb_mean_at(step), 8),
                     round(max(ours) - min(ours), 8)))
    return gaps


def equal_step_clause(model: str, pk: Group, default: Group | None) -> str:
    """'the hybrid is behind ours at 9 of the 10 validation steps ... (steps 100-500: by ..., where our seeds differ by
    ...)': at how many of the validation steps after 0 that all runs of both groups logged the published-kernel runs
    are behind (or ahead of) ours by more than our seeds' spread there. '' without a default group or a common step."""
    gaps = equal_step_gaps(pk, default) if default is not None else []
    if not gaps:
        return ""
    common = [step for step, _, _ in gaps]
    parts = []
    for word, beyond in (("behind", [g for g in gaps if g[1] > g[2]]), ("ahead of", [g for g in gaps if -g[1] > g[2]])):
        if not beyond:
            continue
        steps = [step for step, _, _ in beyond]
        start = common.index(steps[0])
        where = (f"steps {steps[0]}-{steps[-1]}" if len(steps) > 1 and common[start:start + len(steps)] == steps
                 else f"step{'s' if len(steps) > 1 else ''} {and_list(steps)}")
        spread = (f"where our seeds differ by {value_span([sp for _, _, sp in beyond], '.4f', '-')}"
                  if len(default.runs) > 1 else "one seed of ours, so no spread")
        parts.append(f"{word} ours by more than our seeds' spread at {len(steps)} of the {len(gaps)} validation steps "
                     f"after 0 that all its runs and ours logged ({where}: by "
                     f"{value_span([abs(g) for _, g, _ in beyond], '.4f', '-')}, {spread})")
    return f"the {model} is " + (" and ".join(parts) if parts else
                                 f"within our seeds' spread at all {len(gaps)} validation steps after 0 that all its "
                                 f"runs and ours logged")


def equal_step_sentence(clauses: list[str]) -> str:
    """' At equal steps, ...' from equal_step_clause's clauses; '' if none."""
    clauses = [c for c in clauses if c]
    if not clauses:
        return ""
    return (f" At equal steps, with the published kernels: {'; '.join(clauses)}. At a "
            f"given step the slower run is further into its wall-clock warm-down, which should favour it, so a gap "
            f"beyond the spread is a difference per step (numerics or schedule), not one of speed.")


def kernel_worth_sentence(groups: list[Group], step_rows: list[dict]) -> str:
    """What our kernels are worth, at each context and device with runs of the published kernel settings (finished,
    counted): set against the default-kernel runs of the same context and device, and against the published study.

    With both models: the ms/step ratio (hybrid / baseline) and the delta (hybrid - baseline, means over seeds) with
    the published kernels, with ours and published; the change of our delta due to our kernels (default delta -
    published-kernel delta) and what remains between our published-kernel delta and the published one, which the
    kernels do not explain. With one model: its own numbers, and the other's run named as missing. Each model's
    own cost in both cases: ms/step, steps and val_bpb with the published kernels against ours. No such runs: ''."""
    index = {g.key: g for g in groups}
    rows = {(e["seq_len"], e["variant"], e["device"]): e for e in step_rows}
    keys = sorted({(g.seq_len, g.variant, g.device) for g in groups if is_published_kernels(g.variant)},
                  key=lambda k: (k[0], k[2], k[1]))
    if not keys:
        return ""
    several_devices = len({g.device for g in groups}) > 1
    parts = []
    for ctx, variant, device in keys:
        where = fmt_ctx(ctx) + (f" on {device}" if several_devices else "")
        pk = {m: index.get((m, ctx, variant, device)) for m in MODELS}
        default = {m: index.get((m, ctx, "default", device)) for m in MODELS}
        have = [m for m in MODELS if pk[m] is not None]
        if len(have) == 1:
            (model,), (other,) = have, [m for m in MODELS if m not in have]
            parts.append(f"At {where} the {model} with the published kernels against ours: "
                         f"{kernel_cost(model, pk[model], default[model])}. The {other}'s run with the published "
                         f"kernels at {where} is missing, so the delta cannot yet be split into what our kernels "
                         f"change and what they do not explain."
                         + equal_step_sentence([equal_step_clause(model, pk[model], default[model])]))
            continue
        mine, ours = rows.get((ctx, variant, device)), rows.get((ctx, "default", device))
        published = published_pair(ctx)
        pub_ratio, pub_delta = published or (None, None)
        ratios = [f"{fmt(mine['ms_ratio'], 3)} with the published kernels"]
        deltas = [f"{mine['delta']:+.4f} with the published kernels"]
        if ours is not None:
            ratios.append(f"{fmt(ours['ms_ratio'], 3)} with ours")
            deltas.append(f"{ours['delta']:+.4f} with ours")
        if published:
            ratios.append(f"{pub_ratio:.3f} published")
            deltas.append(f"{pub_delta:+.4f} published")
        text = (f"At {where} the ms/step ratio hybrid / baseline is {and_list(ratios)}; the delta (hybrid - baseline, "
                f"means over seeds) is {and_list(deltas)}.")
        if not published:
            text += f" The published study has no run at {fmt_ctx(ctx)}."
        if ours is None:
            text += (f" Without default-kernel runs of both models at {where}, what our kernels change cannot be "
                     f"measured.")
        else:
            change = round(ours["delta"] - mine["delta"], 8)
            text += (f" Our kernels change our delta by {change:+.4f} (from {mine['delta']:+.4f} to "
                     f"{ours['delta']:+.4f}, {favour(change)})")
            if published:
                rest = round(mine["delta"] - pub_delta, 8)
                text += (f"; the {rest:+.4f} that remains between our published-kernel delta and the published one "
                         f"({favour(rest)}) is what the kernels do not explain: the corpus, among other differences")
            text += "."
        costs = "; ".join(f"the {m} {kernel_cost(m, pk[m], default[m])}" for m in MODELS)
        parts.append(f"{text} Each model with the published kernels against ours: {costs}."
                     + equal_step_sentence([equal_step_clause(m, pk[m], default[m]) for m in MODELS]))
    settings = " ".join(f"{k}={v}" for k, v in PUBLISHED_KERNELS.items())
    return (f"What our kernels are worth: runs with the published kernel settings ({settings}) against our "
            f"default-kernel runs of the same context and device. " + " ".join(parts))


# ---------------------------------------------------------------------------------------------
# Re-reading the corpus
# ---------------------------------------------------------------------------------------------


def gap_window(run: Run) -> int:
    """The width of the train-loss window of the gap: the run's VAL_LOSS_EVERY (50 in our runs; 50 if not logged)."""
    every = run.config.get("val_loss_every")
    return int(every) if isinstance(every, int) and every > 0 else 50


def epoch_at(run: Run, step: int) -> float | None:
    """The epochs of training data a run has taken after `step` steps.

    Every step takes the same number of tokens from the stream (the trainer's loader takes its micro-steps' spans
    whole, and the warm-up's tokens are given back before the clock starts), so with the logged totals
    epoch(S) = S x train_tokens_seen / (steps x train_tokens), train_tokens being the training shards' tokens
    (`train_shards:N train_tokens:T`) and steps the run's last step. Logs without that line fall back on the
    logged epochs (3 decimals): epoch(S) = epochs x S / steps."""
    steps = run.steps
    if not steps:
        return None
    if run.tokens_seen is not None and run.train_tokens:
        return step * run.tokens_seen / (steps * run.train_tokens)
    if run.epochs is not None:
        return run.epochs * step / steps
    return None


def rereading_row(run: Run) -> dict | None:
    """The validation-minus-training gap of one run, in its first epoch and at its end.

    The gap at a validation step S is val_loss(S) minus the mean of the train losses logged at steps in
    (S - W, S], W = gap_window(run) (the validation interval, 50 in our runs): a batch's train loss is measured on
    that batch before the step's update and varies with its documents, hence the mean. A positive gap means the
    training batches are fit better than the held-out text. Validation steps with no train loss in their window
    (step 0) have no gap. "First epoch" is the last validation step with a gap whose epoch (epoch_at) is below
    1.0; "end" is the last validation step with a gap (the run's last step). The noise of the change (end minus
    first epoch) is twice its standard error: each window's mean has the standard error stdev / sqrt(n) of its
    train losses (the validation set is fixed, so val_loss has no sampling noise), and the two add in
    quadrature; None when a window holds fewer than 2 train losses. Also: the gap furthest from 0 at the
    validation steps at or after epoch 1.0 and the range there, and the val loss's fall over the validation
    interval before each of the two steps (the window's mean lags S, so while the loss falls fast the gap reads
    low). None for a run without any gap."""
    window = gap_window(run)
    val = {}
    for step, loss, _, _ in run.val:
        val[step] = loss  # the last one, if logged twice
    points = []
    for step in sorted(val):
        losses = [p[3] for p in run.train if step - window < p[0] <= step]
        epoch = epoch_at(run, step)
        if not losses or epoch is None:
            continue
        se = stdev(losses) / len(losses) ** 0.5 if len(losses) >= 2 else None
        points.append({"step": step, "epoch": epoch, "gap": round(val[step] - sum(losses) / len(losses), 8),
                       "se": se})
    if not points:
        return None
    first = next((p for p in reversed(points) if p["epoch"] < 1.0), None)
    end = points[-1]
    after = [p for p in points if p["epoch"] >= 1.0]
    steps = sorted(val)

    def fall(step: int) -> tuple | None:
        """(previous validation step, val_loss there minus at step), or None at the first validation."""
        i = steps.index(step)
        return (steps[i - 1], round(val[steps[i - 1]] - val[step], 8)) if i > 0 else None

    row = {"run": run, "window": window, "epochs": run.epochs, "first": first, "end": end,
           "change": None, "noise": None, "widest": None, "low": None, "high": None,
           "fall_first": fall(first["step"]) if first else None, "fall_end": fall(end["step"])}
    if first is not None and end is not first:
        row["change"] = round(end["gap"] - first["gap"], 8)
        if first["se"] is not None and end["se"] is not None:
            row["noise"] = round(2 * (first["se"] ** 2 + end["se"] ** 2) ** 0.5, 8)
    if after:
        row["widest"] = max(after, key=lambda p: (abs(p["gap"]), -p["step"]))
        row["low"], row["high"] = min(p["gap"] for p in after), max(p["gap"] for p in after)
    return row


def rereading_rows(runs: list[Run]) -> list[dict]:
    """rereading_row of every counted default-kernel run (finished, not superseded), in the report's run order."""
    rows = [rereading_row(r) for r in sorted(runs, key=run_sort_key) if r.counted and r.variant == "default"]
    return [r for r in rows if r is not None]


def rereading_label(row: dict, devices: bool, epochs: bool = False) -> str:
    r = row["run"]
    extra = f", {fmt(r.epochs, 3)} epochs" if epochs and r.epochs is not None else ""
    return f"the {r.model} at {fmt_ctx(r.seq_len)}{f' on {r.device}' if devices else ''} (seed {r.seed}{extra})"


def rereading_sentence(rows: list[dict]) -> str:
    """Whether re-reading the corpus shows as memorisation: in any run, does the gap (rereading_row) grow from the
    first epoch to the end by more than its noise? The run with the most epochs is described; where the gap rises
    in runs without exceeding the noise, the size of those rises against the noise and the part the window's lag
    may play are said; and what the gap does not test."""
    judged = [r for r in rows if r["change"] is not None and r["noise"] is not None]
    if not judged:
        if any(r["end"]["epoch"] >= 1.0 for r in rows):
            return ("The runs that re-read the corpus have no gap in their first epoch to compare with, or too few "
                    "train losses logged around their validations to measure its noise, so memorisation cannot be "
                    "judged.")
        return ("No run re-reads the corpus (each stops within its first epoch), so there is no memorisation to look "
                "for.")
    devices = len({r["run"].device for r in judged}) > 1
    most = max(judged, key=lambda r: r["end"]["epoch"])  # the first such in run order on a tie
    over = [r for r in judged if r["change"] > r["noise"]]
    f, e = most["first"], most["end"]
    detail = (f"in the run with the most epochs, {rereading_label(most, devices, epochs=True)}, the gap goes from "
              f"{f['gap']:+.4f} at step {f['step']} (epoch {f['epoch']:.3f}) to {e['gap']:+.4f} at step {e['step']} "
              f"({most['change']:+.4f} against a noise of {most['noise']:.4f})")
    if most["low"] is not None:
        detail += f", and from epoch 1 on it stays between {most['low']:+.4f} and {most['high']:+.4f}"
    head = ("Memorisation would show as the gap growing from the first epoch to the end by more than its noise (the "
            "model fitting the text it re-reads better than held-out text).")
    if over:
        text = (f"{head} It does in {and_list(rereading_label(r, devices) for r in over)}: {detail}. So re-reading "
                f"the corpus shows as memorisation.")
    else:
        text = (f"{head} It does in no run: {detail}. So reading the corpus up to {fmt(most['epochs'], 3)} times "
                f"shows no sign of memorisation that stands out from the noise.")
        rising = [r for r in judged if r["change"] > 0]
        if rising:
            if len(judged) == 1:
                count = ""
            else:
                count = (f" in all {len(judged)} runs" if len(rising) == len(judged)
                         else f" in {len(rising)} of {len(judged)} runs")
            text += (f" The gap does rise{count} (by {value_span([r['change'] for r in rising], '+.4f')}), "
                     f"{'each time ' if len(rising) > 1 else ''}by less than its noise "
                     f"({value_span([r['noise'] for r in rising], '.4f')}): a real rise of that size could hide in the noise")
            ff, fe = most["fall_first"], most["fall_end"]
            if most["change"] > 0 and ff and fe and ff[1] / (f["step"] - ff[0]) > fe[1] / (e["step"] - fe[0]):
                text += (f"; part of it is the lag of the train-loss mean while the loss still falls fast (in the run "
                         f"with the most epochs the val loss falls by {ff[1]:.4f} from step {ff[0]} to {f['step']}, "
                         f"against {fe[1]:.4f} from step {fe[0]} to {e['step']})")
            text += "."
    return (f"{text} What the gap does not test: whether a repeated token teaches less than a fresh one, which would "
            f"raise the val loss without opening a gap; that needs the same runs on a corpus larger than the tokens "
            f"they take.")


def value_span(values, spec: str, sep: str = " to ") -> str:
    """The least and the greatest of values in format spec: '+0.0254 to +0.0660' ('+.4f'), '656-657' (',', '-'),
    or one value where both print alike."""
    low, high = format(min(values), spec), format(max(values), spec)
    return low if low == high else f"{low}{sep}{high}"


def rereading_lines(runs: list[Run]) -> list[str]:
    """The "Re-reading the corpus" subsection: its definitions, table and sentence."""
    rows = rereading_rows(runs)
    windows = sorted({r["window"] for r in rows})
    window = f"(S - {windows[0]}, S]" if len(windows) == 1 else "(S - VAL_LOSS_EVERY, S]"
    lines = ["### Re-reading the corpus", "",
             "A run that takes more steps re-reads more of the corpus (the epochs column). If re-reading turned into "
             "memorisation, the training loss would fall below the validation loss as the epochs grow. The gap at a "
             f"validation step S is val_loss(S) minus the mean of the train losses logged at steps in {window} (each "
             "measured on its batch before that step's update; the mean evens out the batches' documents); positive: "
             "the training batches are fit better than held-out text. First epoch: the last validation before epoch "
             "1.0, the epoch at step S being S x train_tokens_seen / (steps x train_tokens); end: the last "
             "validation. Noise: twice the standard error of the change (end minus first epoch), from the scatter of "
             "the train losses in the two windows (the validation set is fixed). Default kernels, finished runs.", ""]
    if not rows:
        return lines + ["No finished default-kernel run has logged a validation with train losses before it yet.", ""]
    devices = len({r["run"].device for r in rows}) > 1

    def at(p: dict | None) -> str:
        return "–" if p is None else f"{p['step']} ({p['epoch']:.3f})"

    def gap(p: dict | None) -> str:
        return "–" if p is None else f"{p['gap']:+.4f}"

    table = []
    for r in rows:
        run = r["run"]
        widest = r["widest"]
        table.append([run.model, run.seq_len, run.seed] + ([run.device] if devices else []) + [
            fmt(r["epochs"], 3), at(r["first"]), gap(r["first"]), at(r["end"]), gap(r["end"]),
            "–" if r["change"] is None else f"{r['change']:+.4f}", fmt(r["noise"]),
            "–" if widest is None else f"{widest['gap']:+.4f} (step {widest['step']})"])
    lines += markdown_table(["model", "context", "seed"] + (["device"] if devices else []) + [
        "epochs", "first-epoch step (epoch)", "gap there", "end step (epoch)", "gap at end", "change", "noise",
        "gap furthest from 0 from epoch 1 on"], table) + [""]
    return lines + [rereading_sentence(rows), ""]


def pick_headline(groups: list[Group], seq_len: int, model: str = SUBMIT_MODEL) -> Group | None:
    """The default-kernel group of `model` at `seq_len`; among devices, the one with most seeds."""
    candidates = [g for g in groups if g.model == model and g.seq_len == seq_len and g.variant == "default"]
    if not candidates:
        return None
    return sorted(candidates, key=lambda g: (-len(g.runs), g.device))[0]


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


def fmt_int(value) -> str:
    return "–" if value is None else f"{int(value):,}"


def fmt_mean_count(value) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def fmt_ctx(seq_len: int) -> str:
    return f"{seq_len // 1024}k" if seq_len % 1024 == 0 and seq_len >= 1024 else str(seq_len)


def fmt_budget(budget: float | None) -> str:
    if budget is None:
        return "?"
    return "uncapped (ITERATIONS)" if budget <= 0 else f"{budget:g} s"


def run_label(run: Run, short: bool = False) -> str:
    """'hybrid seed 1337', with the variant in brackets; short (plot legends): the published kernel settings
    named as such, since their full label is wider than a panel."""
    label = f"{run.model} seed {run.seed}"
    if run.variant != "default":
        label += f" [{variant_name(run.variant) if short else run.variant}]"
    return label


def variant_name(variant: str) -> str:
    return PUBLISHED_SUFFIX.strip(" ()") if is_published_kernels(variant) else variant


def build_section(runs: list[Run], skipped: list[str], groups: list[Group], curve_ctx: int, plot_paths: dict,
                  submission_note: str) -> str:
    finished = [r for r in runs if r.finished]
    unfinished = [r for r in runs if not r.finished]
    lines = ["## Results: long-context baseline vs GDN hybrid", "",
             f"_Generated by `python3 scripts/report.py` from {len(runs)} logs ({len(finished)} finished, "
             f"{len(unfinished)} unfinished); do not edit between the report markers by hand._", ""]
    datasets = sorted({r.dataset for r in runs})
    devices = sorted({r.device for r in runs})
    budgets = sorted({fmt_budget(r.budget_s) for r in runs})
    lines += [f"Data: {', '.join(f'`{d}`' for d in datasets)}. Device: {', '.join(devices)}. "
              f"Wall-clock budget: {', '.join(budgets)}. val_bpb is the final score after the int8+zlib round "
              f"trip; ms/step is the last logged `step_avg`; means are over seeds (finished runs only).", ""]

    # Speed, steps, data, memory, size.
    lines += ["### Speed, steps, data seen, memory and artifact size", ""]
    rows = []
    for g in groups:
        rows.append([g.model, g.seq_len, g.variant, g.device, len(g.runs), fmt(g.mean("ms_per_step"), 1),
                     fmt_mean_count(g.mean("steps")), fmt(g.mean("epochs"), 3), fmt_int(g.max("peak_alloc_mib")),
                     fmt_int(g.max("peak_reserved_mib")), fmt_int(g.max("bytes_total"))])
    lines += markdown_table(["model", "context", "variant", "device", "runs", "ms/step", "steps", "epochs",
                    "peak alloc MiB (max)", "peak reserved MiB (max)", "artifact bytes (max)"], rows) + [""]
    sizes = artifact_sentence(runs)
    lines += [sizes, ""] if sizes else []

    # Final val_bpb.
    lines += ["### Final val_bpb (int8+zlib round trip)", ""]
    rows = []
    for g in groups:
        per_seed = ", ".join(f"{r.seed}: {fmt(r.final_val_bpb)}" for r in g.runs)
        rows.append([g.model, g.seq_len, g.variant, g.device, fmt(g.mean("final_val_bpb")),
                     fmt(g.mean("final_val_loss")), per_seed])
    lines += markdown_table(["model", "context", "variant", "device", "val_bpb (mean)", "val_loss (mean)",
                    "val_bpb per seed"], rows) + [""]

    # Hybrid vs baseline.
    lines += ["### Hybrid vs baseline", ""]
    comps = comparisons(groups)
    if comps:
        rows = [[c["seq_len"], c["variant"], c["device"], fmt(c["baseline"]), fmt(c["hybrid"]),
                 f"{c['delta']:+.4f}", ", ".join(f"{seed}: {d:+.4f}" for seed, d in c["delta_by_seed"].items()) or "–",
                 c["winner"]] for c in comps]
        lines += markdown_table(["context", "variant", "device", "baseline val_bpb", "hybrid val_bpb",
                        "delta (hybrid - baseline)", "delta per seed", "winner"], rows) + [""]
        noise = seed_noise_sentence(comps)
        lines += [noise, ""] if noise else []
    else:
        lines += ["No context has finished runs of both models yet.", ""]

    # The exact speed flags against the grid's trainers, seed by seed.
    flag_rows = speed_flag_rows(groups)
    if flag_rows:
        lines += ["### The speed flags against the grid's trainers", ""]
        rows = []
        for r in flag_rows:
            grid, flags = r["grid"], r["flags"]
            ratio = (f"{flags.ms_per_step / grid.ms_per_step:.3f}" if flags.ms_per_step and grid.ms_per_step else "–")
            rows.append([r["model"], r["seq_len"], r["seed"], r["variant"], r["device"], fmt(grid.ms_per_step, 1),
                         fmt(flags.ms_per_step, 1), ratio, fmt_int(grid.steps), fmt_int(flags.steps),
                         fmt(grid.final_val_bpb), fmt(flags.final_val_bpb),
                         f"{flags.final_val_bpb - grid.final_val_bpb:+.4f}"])
        lines += markdown_table(["model", "context", "seed", "flags on", "device", "ms/step grid", "ms/step flags",
                                 "flags / grid", "steps grid", "steps flags", "val_bpb grid", "val_bpb flags",
                                 "change"], rows) + [""]
        lines += ["Same model, context and seed (the same data order and initialisation), so each row is what the "
                  "flags changed in a run of the same budget, together with the GPU's run-to-run noise."
                  + "".join(" " + x for x in speed_flag_delta_sentences(flag_rows, comps)), ""]

    # Speed against quality per step.
    lines += ["### More steps, or better steps?", ""]
    step_rows = equal_step_rows(groups, comps)
    if comps:
        rows = [[e["seq_len"], e["variant"], e["device"], fmt(e["ms_ratio"], 3), fmt_mean_count(e["steps_baseline"]),
                 fmt_mean_count(e["steps_hybrid"]), "–" if e["common_step"] is None else str(e["common_step"]), fmt(e["baseline_at_step"]),
                 fmt(e["hybrid_at_step"]), f"{e['delta']:+.4f}", e["winner"]] for e in step_rows]
        lines += markdown_table(["context", "variant", "device", "ms/step hybrid / baseline", "steps baseline",
                                 "steps hybrid", "common step", "baseline val_bpb at it", "hybrid val_bpb at it",
                                 "final delta", "winner"], rows) + [""]
        lines += ["The common step is the last step at which both models (every seed) were validated: val_bpb "
                  "there compares what each model learned per step; the final delta adds the effect of the "
                  "steps each fitted into the budget. Both learning-rate schedules run on the wall clock, so at "
                  "the common step the slower model is further into its warm-down, which favours it there.", ""]
        reading = steps_sentences(step_rows) + [steps_or_learning_sentence(step_rows)]
        lines += [" ".join(r for r in reading if r), ""] if any(reading) else []
    lines += [crossover_sentence(comps), ""]

    # Re-reading the corpus: does it show as memorisation?
    lines += rereading_lines(runs)

    # val_bpb by step at the curve context.
    lines += [f"### val_bpb by step at context {curve_ctx}", ""]
    curve_runs = [r for r in runs if r.seq_len == curve_ctx and r.val]
    if curve_runs:
        steps = sorted({p[0] for r in curve_runs for p in r.val})
        header = ["step"] + [run_label(r) + ("" if r.counted else f" ({r.status})") for r in curve_runs]
        rows = []
        for step in steps:
            row = [step]
            for r in curve_runs:
                row.append(fmt(r.val_bpb_at(step)))
            rows.append(row)
        lines += markdown_table(header, rows) + [""]
    else:
        lines += [f"No run at context {curve_ctx} has logged a validation yet.", ""]

    # Published study.
    lines += ["### Compared with the published study", ""]
    pub_bpb, pub_ms = PUBLISHED_VAL_BPB, PUBLISHED_MS_PER_STEP
    pub_ctx = sorted(pub_bpb["baseline"])
    pub_winners = [winner(pub_bpb["hybrid"][c] - pub_bpb["baseline"][c]) for c in pub_ctx]
    lines += ["Published (FineWeb, one H100, 600 s) at " + " / ".join(fmt_ctx(c) for c in pub_ctx) + ": val_bpb baseline "
              + " / ".join(f"{pub_bpb['baseline'][c]:.4f}" for c in pub_ctx) + ", hybrid "
              + " / ".join(f"{pub_bpb['hybrid'][c]:.4f}" for c in pub_ctx) + " (winner "
              + " / ".join(pub_winners) + "); ms/step baseline "
              + " / ".join(str(pub_ms["baseline"][c]) for c in pub_ctx) + ", hybrid "
              + " / ".join(str(pub_ms["hybrid"][c]) for c in pub_ctx) + ".", ""]
    ours = [g for g in groups if g.variant == "default" and g.seq_len in pub_bpb.get(g.model, {})]
    if ours:
        rows = [[g.model, g.seq_len, g.device, fmt(g.mean("final_val_bpb")), f"{pub_bpb[g.model][g.seq_len]:.4f}",
                 fmt(g.mean("ms_per_step"), 1), pub_ms[g.model][g.seq_len]] for g in ours]
        lines += markdown_table(["model", "context", "device", "val_bpb (ours)", "val_bpb (published)", "ms/step (ours)",
                        "ms/step (published)"], rows) + [""]
    else:
        ctxs = sorted({g.seq_len for g in groups})
        lines += [f"None of our finished default-kernel contexts ({', '.join(map(str, ctxs)) or 'none'}) is a "
                  f"published one, so there is nothing to set side by side.", ""]
    other_data = [d for d in datasets if d != DEFAULT_DATASET]
    if other_data:
        lines += [f"Our runs use {', '.join(f'`{d}`' for d in other_data)}, not `{DEFAULT_DATASET}`: val_bpb "
                  f"is measured on different validation text and is not comparable with the published numbers; "
                  f"the comparison between our two models is.", ""]
    worth = kernel_worth_sentence(groups, step_rows)
    lines += [worth, ""] if worth else []
    for variant in crossover_variants(step_rows):
        both = published_crossover_rows(step_rows, variant)
        if not both:
            continue
        lines += ["### Where the hybrid pulls ahead: ours and published" if variant == "default" else
                  f"### Where the hybrid pulls ahead with {variant}: ours and published", ""]
        rows = [[r["seq_len"], r["device"], fmt(r["ms_ratio"], 3), f"{r['pub_ms_ratio']:.3f}", f"{r['delta']:+.4f}",
                 f"{r['pub_delta']:+.4f}", r["winner"], r["pub_winner"]] for r in both]
        lines += markdown_table(["context", "device", "ms/step hybrid / baseline (ours)",
                                 "ms/step hybrid / baseline (published)", "delta (ours)", "delta (published)",
                                 "winner (ours)", "winner (published)"], rows) + [""]
        lines += [published_crossover_sentence(both), ""]

    # Runs.
    lines += ["### Runs", ""]
    rows = []
    for r in runs:
        rows.append([r.run_id, r.model, r.seq_len, r.seed, r.variant, r.device, r.sdpa_backend,
                     fmt_int(r.steps), fmt(r.ms_per_step, 1), fmt(r.sm_mhz_median, 0), fmt(r.epochs, 3),
                     fmt_int(r.peak_alloc_mib), artifact_cell(r), fmt(r.final_val_bpb), r.status])
    lines += markdown_table(["run_id", "model", "context", "seed", "variant", "device", "sdpa", "steps", "ms/step",
                             "SM MHz", "epochs", "peak alloc MiB", "artifact bytes", "val_bpb", "status"], rows) + [""]
    lines += ["SM MHz: the median SM clock over the trainer's nvidia-smi samples while training (`gpu_monitor:` "
              "lines; – for logs from before 2026-11-23 session 7, which have none).", ""]
    if unfinished:
        lines += ["Unfinished (no final round-trip line; excluded from means): "
                  + ", ".join(f"`{r.run_id}`" for r in unfinished) + ".", ""]
    if skipped:
        lines += ["Not trainer logs (skipped): " + "; ".join(f"`{s}`" for s in skipped) + ".", ""]

    # Submission and plots.
    lines += ["### Submission", "", submission_note, ""]
    lines += ["### Plots", "",
              f"![val_bpb against training time, one panel per context]({plot_paths['time']})", "",
              f"![ms/step against context for both models]({plot_paths['speed']})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def artifact_cell(run: Run) -> str:
    """The artifact's bytes, flagged when the trainer logged them over the competition's limit."""
    if run.within_limit is False:
        return f"{fmt_int(run.bytes_total)} (over the {run.byte_limit:,} limit)"
    return fmt_int(run.bytes_total)


def build_submission(runs: list[Run], groups: list[Group], headline_ctx: int) -> tuple[dict | None, str]:
    """(submission.json's contents or None, what the README says about it)."""
    group = pick_headline(groups, headline_ctx)
    if group is None:
        return None, (f"No submission: no finished {SUBMIT_MODEL} run with default kernels at context "
                      f"{headline_ctx} (`--headline-context`).")
    dated = [r.date for r in runs if r.date is not None]
    date = max(dated).strftime("%Y-%m-%d") if dated else None
    seeds = [r.seed for r in group.runs]
    seed_results = {str(r.seed): {"val_bpb": r.final_val_bpb, "val_loss": r.final_val_loss} for r in group.runs}
    val_bpb = round(group.mean("final_val_bpb"), 8)
    val_loss = round(group.mean("final_val_loss"), 8)
    budget = sorted({fmt_budget(r.budget_s) for r in group.runs})
    notes = [f"Gated DeltaNet hybrid (GDN blocks {group.runs[0].config.get('gdn_layers', '?')}, the others causal "
             f"attention) at TRAIN_SEQ_LEN={headline_ctx} on {group.device}, wall-clock budget {', '.join(budget)}; "
             f"mean of {len(seeds)} seed(s) after the int8+zlib round trip; "
             f"{fmt_mean_count(group.mean('steps'))} steps at {fmt(group.mean('ms_per_step'), 1)} ms/step, "
             f"{fmt(group.mean('epochs'), 3)} epochs of data {', '.join(sorted({r.dataset for r in group.runs}))}."]
    base = next((g for g in groups if g.key == ("baseline", headline_ctx, "default", group.device)), None)
    if base is not None:
        b = round(base.mean("final_val_bpb"), 8)
        notes.append(f"Full-attention baseline at the same context: val_bpb {b:.4f} "
                     f"(delta hybrid - baseline {val_bpb - b:+.4f}).")
    over = [r for r in group.runs if r.within_limit is False]
    if over:
        notes.append(f"NOT A VALID ENTRY: seed(s) {', '.join(str(r.seed) for r in over)} produced artifacts over "
                     f"the {over[0].byte_limit:,}-byte limit ({', '.join(f'{r.bytes_total:,}' for r in over)} bytes).")
    notes.append("Generated by scripts/report.py from the run logs.")
    submission = {
        "track": "non_record_16mb",
        "name": f"GDN hybrid, {fmt_ctx(headline_ctx)} context",
        "date": date,
        "val_bpb": val_bpb,
        "val_loss": val_loss,
        "seeds": seeds,
        "seed_results": seed_results,
        "bytes_total": group.max("bytes_total"),
        "bytes_code": group.max("bytes_code"),
        "notes": " ".join(notes),
    }
    readme_line = (f"`submission.json`: {submission['name']}, val_bpb {val_bpb:.4f} (mean of seeds "
                   f"{', '.join(map(str, seeds))}), {submission['bytes_total']:,} bytes total.")
    if over:
        readme_line += " **Over the competition's byte limit: not a valid entry** (see its notes)."
    return submission, readme_line


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------

MODEL_COLORS = {"baseline": ("#1f77b4", "#6baed6", "#08519c", "#9ecae1"),
                "hybrid": ("#d62728", "#fc9272", "#a50f15", "#fcbba1")}


def make_plots(runs: list[Run], groups: list[Group], plots_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    # Matplotlib's own defaults, whatever a local matplotlibrc says, so the PNGs depend on the logs only.
    defaults = {k: v for k, v in matplotlib.rcParamsDefault.items() if k != "backend"}
    with matplotlib.rc_context(defaults):
        contexts = sorted({r.seq_len for r in runs if r.val})
        # Top row: whole runs. Bottom row: the second half of training, where the gaps that decide the
        # winner are a few hundredths of a bit and the first validations would flatten them.
        fig, axes = plt.subplots(2, max(len(contexts), 1), figsize=(5 * max(len(contexts), 1), 8), squeeze=False)
        for col, ctx in enumerate(contexts):
            ctx_runs = [r for r in runs if r.seq_len == ctx and r.val]
            end_s = max(p[3] for r in ctx_runs for p in r.val) / 1000.0
            for ax in axes[:, col]:
                shade: dict[str, int] = {}
                for r in ctx_runs:
                    i = shade.get(r.model, 0)
                    shade[r.model] = i + 1
                    colors = MODEL_COLORS.get(r.model, ("#444444",))
                    style = (":" if not r.counted else "-" if r.variant == "default" else "--")
                    label = run_label(r, short=True) + ("" if r.counted else f" ({r.status})")
                    ax.plot([p[3] / 1000.0 for p in r.val], [p[2] for p in r.val], style, marker="o", markersize=3,
                            color=colors[i % len(colors)], label=label)
                ax.set_xlabel("training time (s)")
                ax.set_ylabel("val_bpb")
                ax.grid(True, alpha=0.3)
                ax.legend(fontsize=7)
            axes[0, col].set_title(f"context {ctx}")
            late = [p[2] for r in ctx_runs for p in r.val if p[3] / 1000.0 >= end_s / 2]
            if late:
                pad = max(0.01, 0.05 * (max(late) - min(late)))
                axes[1, col].set_xlim(end_s / 2 - 0.02 * end_s, end_s * 1.02)
                axes[1, col].set_ylim(min(late) - pad, max(late) + pad)
            axes[1, col].set_title(f"context {ctx}, second half")
        if not contexts:
            axes[0][0].text(0.5, 0.5, "no validation logged yet", ha="center", va="center")
        fig.tight_layout()
        fig.savefig(plots_dir / PLOT_TIME, dpi=100, metadata={"Software": None})
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(6, 4))
        series: dict[tuple, list[Group]] = {}
        for g in groups:
            series.setdefault((g.model, g.variant, g.device), []).append(g)
        for n, ((model, variant, device), gs) in enumerate(sorted(series.items(), key=lambda kv: (
                model_rank(kv[0][0]), variant_rank(kv[0][1]), kv[0][2]))):
            gs.sort(key=lambda g: g.seq_len)
            label = model + ("" if variant == "default" else f" [{variant_name(variant)}]") + (f" ({device})" if len(
                {g.device for g in groups}) > 1 else "")
            colors = MODEL_COLORS.get(model, ("#444444",))
            ax.plot([g.seq_len for g in gs], [g.mean("ms_per_step") for g in gs], "-" if variant == "default" else "--",
                    marker="o", color=colors[0 if variant == "default" else 2], label=label)
        pub_ms = PUBLISHED_MS_PER_STEP
        ours_ctx = {g.seq_len for g in groups}
        for model in MODELS:
            pts = sorted(c for c in pub_ms[model] if c in ours_ctx)
            if pts:
                ax.plot(pts, [pub_ms[model][c] for c in pts], ":", marker="x", color=MODEL_COLORS[model][1],
                        label=f"{model} (published)")
        if groups:
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(ours_ctx), [str(c) for c in sorted(ours_ctx)])
            ax.minorticks_off()
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("ms/step (mean over seeds)")
        ax.set_title("training step time")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(plots_dir / PLOT_SPEED, dpi=100, metadata={"Software": None})
        plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


def replace_section(readme_text: str, section: str) -> str:
    block = f"{BEGIN_MARKER}\n{section}{END_MARKER}"
    begin, end = readme_text.find(BEGIN_MARKER), readme_text.find(END_MARKER)
    if begin == -1 and end == -1:
        sep = "" if readme_text == "" else ("\n" if readme_text.endswith("\n") else "\n\n")
        return readme_text + sep + block + "\n"
    if begin == -1 or end == -1 or end < begin or readme_text.count(BEGIN_MARKER) != 1 \
            or readme_text.count(END_MARKER) != 1:
        raise SystemExit(f"error: the README must hold exactly one {BEGIN_MARKER} followed by one {END_MARKER}")
    return readme_text[:begin] + block + readme_text[end + len(END_MARKER):]


def write_if_changed(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def relative_link(target: Path, readme: Path) -> str:
    return Path(os.path.relpath(target.resolve(), readme.resolve().parent)).as_posix()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--logs", type=Path, default=REPO_ROOT / "logs_experiment", help="folder of trainer logs (*.txt)")
    ap.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md")
    ap.add_argument("--plots-dir", type=Path, default=REPO_ROOT / "figures")
    ap.add_argument("--submission", type=Path, default=REPO_ROOT / "submission.json")
    ap.add_argument("--headline-context", type=int, default=32768,
                    help="context of the submitted hybrid (submission.json)")
    ap.add_argument("--curve-context", type=int, default=None,
                    help="context of the val_bpb-by-step table (default: the headline context)")
    args = ap.parse_args(argv)
    curve_ctx = args.curve_context if args.curve_context is not None else args.headline_context

    if not args.logs.is_dir():
        print(f"error: {args.logs} is not a folder of logs", file=sys.stderr)
        return 2
    runs, skipped = load_runs(args.logs)
    if not runs:
        print(f"error: no trainer logs (*.txt) in {args.logs}", file=sys.stderr)
        return 2
    groups = build_groups(runs)
    submission, submission_note = build_submission(runs, groups, args.headline_context)
    plot_paths = {"time": relative_link(args.plots_dir / PLOT_TIME, args.readme),
                  "speed": relative_link(args.plots_dir / PLOT_SPEED, args.readme)}
    section = build_section(runs, skipped, groups, curve_ctx, plot_paths, submission_note)

    make_plots(runs, groups, args.plots_dir)
    readme_text = args.readme.read_text(encoding="utf-8") if args.readme.exists() else ""
    write_if_changed(args.readme, replace_section(readme_text, section).encode("utf-8"))
    if submission is not None:
        write_if_changed(args.submission, (json.dumps(submission, indent=2) + "\n").encode("utf-8"))
    sys.stdout.write(section)
    if submission is None:
        print(f"warning: {submission_note} {args.submission} not written.", file=sys.stderr)
    for s in skipped:
        print(f"warning: skipped {s}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
