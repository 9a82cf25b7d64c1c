#!/usr/bin/env python3
"""Step time of the baseline (train_gpt.py) and the GDN hybrid (train_gpt_gdn.py) by context length.

Each configuration is built by the trainer's own code (Hyperparameters from an env dict, choose_sdpa_backend,
build_model, build_optimizers, run_train_step) with the published batch (393,216 tokens per step up to 16,384,
524,288 above) and GRAD_ACCUM_STEPS as given, else as the trainer picks it (on CUDA one untimed probe step).
Other settings come in through --env KEY=VALUE; the shell's environment is not read. Tokens are synthetic (a
seeded uint16 tensor cut into micro-batches as the trainer's loader does). --warmup steps run untimed
(compile, autotune), then --repeats blocks of --steps steps are timed with a device synchronize around each
block: ms/step = block time / steps, reported as the median over blocks (min-max), with tokens/s, the peak
memory over the timed blocks and, on CUDA, the MFU.

--arm NAME:KEY=VALUE,... (repeatable; NAME: alone = the defaults) runs several settings in one process: all
arms are built and warmed up, then the timed blocks go round-robin (block 1 of each arm, then block 2, ...)
so clock or thermal drift falls on every arm alike; each arm's ratio to the first arm is taken block by
block (block i over the first arm's block i), median (min-max).

MFU = FLOPs per step / step time / 989 TFLOP/s (H100/H200 dense bf16 peak); FLOPs per step = 6 N B +
6 T^2 d L_attn B/T: N parameters without the tied embedding, B tokens per step, T context, d model width,
L_attn causal-attention layers (forward + backward of a multiply-add = 6 FLOPs; QK^T and AV halved by the
causal mask). Left out: the logits, the GDN state work, norms, the optimizer (so slightly conservative).

--out-json (schema bench_step_time/2: command, environment, settings, and per result model, context, arm,
settings {KEY: VALUE on top of the trainer defaults, GRAD_ACCUM_STEPS unless the probe chose it}, status,
error, kernels, batch_tokens, flops_per_step, block_ms_per_step, peak_mem_gib, reference_arm and
ratio_vs_reference) is rewritten after every configuration, so a cut-off run keeps what it measured. A
failing configuration (out of memory, say) is recorded with its error, the others run, the exit status is 1.
--tiny: a tiny model and contexts on the CPU, a check of the code paths. --regenerate-compute-md rebuilds
compute_experiment.md from COMPUTE_SOURCES alone (deterministic).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "scripts"), str(REPO_ROOT)]  # the shared scripts, then the trainers
from compare_losses import OneLineErrors, bad_input, parse_arm, parse_env  # noqa: E402  (one syntax for both scripts)
from report import write_if_changed  # noqa: E402
from published_study import (PUBLISHED_GRAD_ACCUM, PUBLISHED_KERNELS, PUBLISHED_MS_PER_STEP,  # noqa: E402
                             crossover, markdown_table, published_batch_tokens)

SCHEMA = "bench_step_time/2"
MODELS = {"baseline": "train_gpt", "hybrid": "train_gpt_gdn"}
DEFAULT_CONTEXTS = [4096, 8192, 16384, 32768]
TINY_CONTEXTS = [64, 128]
TINY_ENV = {"NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2", "GDN_LAYERS": "0"}
TINY_GRAD_ACCUM, TINY_SEQS_PER_MICRO = 2, 2
TOKEN_SEED = 20240520
PEAK_FLOPS = 989e12
# The files compute_experiment.md is built from (H100 measurements), relative to the repository root.
COMPUTE_SOURCES = [f"logs_experiment/bench/{name}.json" for name in (
    "h100_accum1", "h100_baseline", "h100_fast", "h100_fast_baseline", "h100_hybrid", "h100_hybrid_accum2",
    "h100_keep_states_16k_8k", "h100_keep_states_32k", "h100_order", "h100_profile_32k", "h100_speed_32k", "h200_4k")]
COMPUTE_MD = "compute_experiment.md"
# Settings the trainers do not have: their fast path is the only one. Results measured with one of them
# at 0 ran the code of the logged grid runs (logs_experiment/*.txt).
RETIRED_SETTINGS = {"FUSED_PROJECTIONS": "q, k, v and the GDN projections each as one matmul",
                    "MUON_BATCHED": "Muon's Newton-Schulz over same-shape matrices as one batch",
                    "GDN_KEEP_STATES": "the GDN chunk states kept from the forward pass for the backward"}


def parse_int_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip().isdigit()]
    if not values or min(values) <= 0 or len(values) != len([p for p in text.split(",") if p.strip()]):
        raise argparse.ArgumentTypeError(f"{text!r} must be a comma-separated list of positive integers")
    return values


def config_env(model: str, context: int, tiny: bool, settings: dict[str, str]) -> dict[str, str]:
    """The trainer's env dict for one configuration: context and batch, the tiny shrink, then the settings."""
    env = {"RUN_ID": "bench", "TRAIN_SEQ_LEN": str(context), "TRAIN_BATCH_TOKENS": str(published_batch_tokens(context))}
    if tiny:
        env.update(TINY_ENV)  # the baseline ignores GDN_LAYERS
        accum = int(settings.get("GRAD_ACCUM_STEPS", "0") or 0) or TINY_GRAD_ACCUM
        env.update(GRAD_ACCUM_STEPS=str(accum), TRAIN_BATCH_TOKENS=str(accum * TINY_SEQS_PER_MICRO * context))
    return {**env, **settings}


def environment_info(device: torch.device) -> dict:
    versions = {}
    for key, dist in (("triton", "triton"), ("fla", "fla-core")):
        try:
            versions[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[key] = "unavailable"
    git = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"], cwd=REPO_ROOT, capture_output=True,
                         text=True).stdout.strip() or "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__, **versions, "git": git,
            "device_type": device.type, "cuda": torch.version.cuda, "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"}


class SyntheticBatches:
    """A fixed seeded uint16 token tensor on the CPU, cut into micro-batches like the trainer's loader."""

    def __init__(self, vocab_size: int, micro_tokens: int, seq_len: int, device: torch.device, count: int):
        self.span, self.count, self.seq_len, self.device, self.index = micro_tokens + 1, count, seq_len, device, 0
        pool = np.random.default_rng(TOKEN_SEED).integers(0, vocab_size, size=self.span * count, dtype=np.uint16)
        self.tokens = torch.from_numpy(pool)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        start = (self.index % self.count) * self.span
        self.index += 1
        local = self.tokens[start:start + self.span].to(dtype=torch.int64)
        x, y = local[:-1].reshape(-1, self.seq_len), local[1:].reshape(-1, self.seq_len)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def model_flops_per_step(n_nonembed: int, batch_tokens: int, seq_len: int, model_dim: int, attn_layers: int) -> float:
    """6 N B + 6 T^2 d L_attn (B / T): see the module docstring."""
    return 6.0 * n_nonembed * batch_tokens + 6.0 * seq_len * seq_len * model_dim * attn_layers * batch_tokens / seq_len


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Arm:
    """One arm of one configuration, built and warmed up: its step closure holds the model and optimizers."""

    def __init__(self, record: dict, tiny: bool, device: torch.device, warmup: int, log):
        self.record, self.device = record, device
        model, context, name, settings = record["model"], record["context"], record["arm"], dict(record["settings"])
        trainer = self.trainer = importlib.import_module(MODELS[model])
        h = self.h = trainer.Hyperparameters(config_env(model, context, tiny, settings))
        h.resolve(world_size=1)
        use_cuda = device.type == "cuda"
        torch.manual_seed(h.seed)
        if use_cuda:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        backend, expand_kv = self.select_attention(h.sdpa_backend)
        base_model, model_fn, compiled = trainer.build_model(h, device, expand_kv)
        optimizers = trainer.build_optimizers(h, base_model, fused=use_cuda)
        n_params = sum(p.numel() for p in base_model.parameters())
        attn_layers = sum(isinstance(block.attn, trainer.CausalSelfAttention) for block in base_model.blocks)
        self.record.update(sdpa_backend=backend, expand_kv=expand_kv, compile=compiled, n_params=n_params,
                           mixer_lines=list(trainer.mixer_log_lines(h)))
        batches = {}

        def step() -> torch.Tensor:
            if h.grad_accum_steps not in batches:  # the memory probe can change the micro-step count
                batches[h.grad_accum_steps] = SyntheticBatches(
                    h.vocab_size, h.train_batch_tokens // h.grad_accum_steps, h.train_seq_len, device,
                    h.grad_accum_steps)
            return trainer.run_train_step(h, model_fn, base_model, optimizers, batches[h.grad_accum_steps], 1.0,
                                          h.muon_momentum, distributed=False, autocast_enabled=use_cuda)

        self.step = step
        if use_cuda and h.grad_accum_requested == 0:
            log(f"  {trainer.probe_grad_accum_steps(h, 1, device, False, step)}")
        else:
            self.record["settings"]["GRAD_ACCUM_STEPS"] = str(h.grad_accum_steps)
        flops = model_flops_per_step(n_params - base_model.tok_emb.weight.numel(), h.train_batch_tokens,
                                     h.train_seq_len, h.model_dim, attn_layers)
        self.record.update(batch_tokens=h.train_batch_tokens, grad_accum_steps=h.grad_accum_steps, flops_per_step=flops)
        t0 = time.perf_counter()
        for _ in range(warmup):
            step()
        sync(device)
        log(f"  {model} {context} [{name}]: sdpa {backend} compile {compiled}, {h.grad_accum_steps} micro-steps, "
            f"warm-up {warmup} steps {time.perf_counter() - t0:.1f} s")

    def select_attention(self, requested: str) -> tuple[str, bool]:
        """The trainer's choose_sdpa_backend: enables one backend process-wide (arms may differ in it)."""
        h = self.h
        return self.trainer.choose_sdpa_backend(requested, h.model_dim // h.num_heads, h.num_heads, h.num_kv_heads,
                                                self.device)

    def time_block(self, steps: int) -> float:
        """One timed block of `steps` optimizer steps; its ms/step is appended to the record and returned."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = self.step()
        sync(self.device)
        self.record["block_ms_per_step"].append(1000.0 * (time.perf_counter() - t0) / steps)
        self.record["final_loss"] = float(loss.item())
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**30
            self.record["peak_mem_gib"] = max(peak, self.record.get("peak_mem_gib", 0.0))
        return self.record["block_ms_per_step"][-1]


def round_robin(arm_names: list[str], repeats: int) -> list[tuple[int, str]]:
    """The timed blocks' order: (block, arm) with block 1 of every arm, then block 2, ..."""
    return [(block, name) for block in range(1, repeats + 1) for name in arm_names]


def block_stats(values: list[float]) -> dict | None:
    """Median, min and max (None for no values)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else None


def paired_ratio(blocks: list[float], reference_blocks: list[float]) -> dict | None:
    """Block i over the reference's block i, for the blocks both have: median, min, max."""
    return block_stats([ms / ref for ms, ref in zip(blocks, reference_blocks)])


def fail(record: dict, exc: BaseException, log) -> None:
    record.update(status="failed", error=f"{type(exc).__name__}: {exc}".strip())
    log(f"  FAILED {record['model']} {record['context']} [{record['arm']}]: {record['error'].splitlines()[0][:300]}")


def run_config(model: str, context: int, arms: list[tuple[str, dict]], args, device: torch.device, log) -> list[dict]:
    """Every arm of one (model, context) in this process, timed blocks round-robin; one record per arm."""
    records, live = [], {}
    for name, settings in arms:
        record = {"model": model, "context": context, "arm": name, "settings": dict(settings), "status": "running",
                  "block_ms_per_step": []}
        try:
            live[name] = Arm(record, args.tiny, device, args.warmup, log)
        except Exception as exc:  # noqa: BLE001 - one failing arm must not stop the others
            fail(record, exc, log)
        records.append(record)
    for block, name in round_robin(list(live), args.repeats):
        if name not in live:
            continue  # failed in an earlier block
        arm = live[name]
        try:
            if len(arms) > 1:
                arm.select_attention(arm.record["sdpa_backend"])  # the arm built last set it process-wide
                if block == 1:
                    arm.step()  # switching arms may recompile: one untimed step
            ms = arm.time_block(args.steps)
            log(f"  block {block}/{args.repeats} [{name}]: {ms:.1f} ms/step")
        except Exception as exc:  # noqa: BLE001
            fail(live.pop(name).record, exc, log)
    for arm in live.values():
        arm.record["status"] = "ok"
    ref = records[0]
    for record in (r for r in records[1:] if r["status"] == ref["status"] == "ok"):
        record.update(reference_arm=ref["arm"],
                      ratio_vs_reference=paired_ratio(record["block_ms_per_step"], ref["block_ms_per_step"]))
    return records


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def ms_cell(stats: dict | None, digits: int = 1) -> str:  # median (min-max)
    return "-" if stats is None else "{median:.{d}f} ({min:.{d}f}-{max:.{d}f})".format(**stats, d=digits)


def settings_text(settings: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(settings.items())) or "defaults"


RUN_HEADER = ["model", "context", "arm", "settings", "micro-steps", "ms/step median (min-max)", "tokens/s",
              "peak mem GiB", "MFU", "vs first arm (paired blocks)", "published ms/step", "ours/published"]


def run_rows(doc: dict) -> list[list[str]]:
    rows, first_arm = [], {}
    for r in doc["results"]:
        first_arm.setdefault((r["model"], r["context"]), r["arm"])  # the reference of the paired ratios
        head = [r["model"], str(r["context"]), r["arm"], settings_text(r["settings"]),
                fmt(r.get("grad_accum_steps"), "d")]
        if r["status"] != "ok":
            rows.append(head + ["FAILED: " + r.get("error", "?").splitlines()[0][:100]] + ["-"] * 6)
            continue
        stats, ratio, on_cuda = block_stats(r["block_ms_per_step"]), r.get("ratio_vs_reference"), "peak_mem_gib" in r
        seconds = stats["median"] / 1000.0
        pub = None if doc["settings"]["tiny"] else PUBLISHED_MS_PER_STEP[r["model"]].get(r["context"])
        reference = r["arm"] == first_arm[(r["model"], r["context"])]
        rows.append(head + [ms_cell(stats), f"{r['batch_tokens'] / seconds:,.0f}", fmt(r.get("peak_mem_gib"), ".2f"),
                            f"{100 * r['flops_per_step'] / seconds / PEAK_FLOPS:.1f}%" if on_cuda else "-",
                            "reference" if reference else ms_cell(ratio, 3),
                            fmt(pub, ".0f"), "-" if pub is None else f"{stats['median'] / pub:.2f}"])
    return rows


def run_benchmark(args, argv: list[str]) -> int:
    arms = [(name, {**dict(args.env), **own}) for name, own in (args.arm or [("default", {})])]
    models = [m for m in args.models.split(",") if m]
    if len({name for name, _ in arms}) != len(arms):
        bad_input("--arm names must differ; give each arm its own NAME")
    if not models or set(models) - set(MODELS):
        bad_input(f"--models {args.models!r}: choose from {','.join(MODELS)}")
    if args.warmup < 0 or args.steps < 1 or args.repeats < 1:
        bad_input("--warmup must be >= 0, --steps and --repeats >= 1")
    use_cuda = not args.tiny and torch.cuda.is_available()
    device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    if args.tiny:
        torch.set_num_threads(1)  # tiny matrices gain nothing from threads
    doc = {"schema": SCHEMA, "command": shlex.join(["python3", "scripts/bench_step_time.py", *argv]),
           "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "environment": environment_info(device),
           "settings": {"warmup": args.warmup, "steps": args.steps, "repeats": args.repeats, "tiny": args.tiny,
                        "token_seed": TOKEN_SEED}, "results": []}
    env = doc["environment"]
    print(f"device: {env['device_name']}, torch {env['torch']}, git {env['git']}", flush=True)
    for model in models:
        for context in args.contexts or (TINY_CONTEXTS if args.tiny else DEFAULT_CONTEXTS):
            print(f"{model} context {context}", flush=True)
            doc["results"].extend(run_config(model, context, arms, args, device, lambda m: print(m, flush=True)))
            gc.collect()
            torch._dynamo.reset()
            if use_cuda:
                torch.cuda.empty_cache()
            if args.out_json:
                write_if_changed(Path(args.out_json), (json.dumps(doc, indent=1) + "\n").encode())  # never half-written
    table = "\n".join(markdown_table(RUN_HEADER, run_rows(doc)))
    print("\n" + table)
    if args.out_md:
        write_if_changed(Path(args.out_md), (
            f"# Step-time benchmark\n\nCommand: `{doc['command']}`\n\nDevice: {env['device_name']}, torch "
            f"{env['torch']}, git {env['git']}. Warm-up {args.warmup} steps, {args.repeats} blocks of {args.steps} "
            f"steps. Published: one H100 SXM, {PUBLISHED_GRAD_ACCUM} micro-steps.\n\n{table}\n").encode())
    return 1 if any(r["status"] != "ok" for r in doc["results"]) else 0


def load_results(paths: list[str]) -> list[dict]:
    """The results of these files (relative to the repository root, or absolute), in path order, each with its
    file ('source'), device name, torch version and tiny flag."""
    results = []
    for shown in sorted(set(paths)):
        path = REPO_ROOT / shown
        if not path.is_file():
            bad_input(f"{shown}: no such results file; restore it or remove it from COMPUTE_SOURCES")
        doc = json.loads(path.read_text(encoding="utf-8"))
        problems = ([f"schema {doc.get('schema')!r}, not {SCHEMA}"] if doc.get("schema") != SCHEMA else
                    [f"a result lacks {key}" for r in doc["results"] for key in
                     ("model", "context", "arm", "settings", "status", "block_ms_per_step") if key not in r])
        if problems:
            bad_input(f"{shown}: {problems[0]}; measure it again with this script")
        results += [dict(r, source=shown, device_name=doc["environment"]["device_name"], tiny=doc["settings"]["tiny"],
                         torch=doc["environment"]["torch"]) for r in doc["results"]]
    return results


def model_setup(model: str, settings: dict[str, str]) -> tuple:
    """The settings that apply to a model: the baseline ignores the GDN_ ones, so one baseline result serves
    every setup that differs from it only in those."""
    return tuple(sorted((k, v) for k, v in settings.items() if model == "hybrid" or not k.startswith("GDN_")))


def setup_title(setup: tuple) -> str:
    """A setup's heading: the code path (retired settings at 0 name the grid runs' code), micro-steps, the rest."""
    retired = " ".join(f"{k}={v}" for k, v in setup if k in RETIRED_SETTINGS)
    others = [f"{k}={v}" for k, v in setup if k not in RETIRED_SETTINGS and k != "GRAD_ACCUM_STEPS"]
    return ", ".join([f"Trainers with {retired}" if retired else "Current trainers",
                      "micro-steps " + dict(setup).get("GRAD_ACCUM_STEPS", "auto"), *others])


def crossover_text(ms: dict[int, tuple[float, float]]) -> str:
    """Where the hybrid becomes faster per step, from context -> (baseline ms, hybrid ms)."""
    first, last_slower, flips = crossover({c: hybrid < base for c, (base, hybrid) in ms.items()})
    text = ("no context with both models measured" if not ms else
            f"the hybrid is not faster per step at the largest context measured ({max(ms)})" if first is None else
            f"the hybrid is faster per step at every context measured (from {first} on)" if last_slower is None else
            f"the hybrid is faster per step from {first} on (slower at {last_slower})")
    return text + ("; the order flips more than once" if flips else "")


SETUP_HEADER = ["context", "batch tokens", "baseline ms/step", "hybrid ms/step", "published baseline / hybrid",
                "ours / published: baseline, hybrid", "hybrid / baseline: ours (published)", "faster per step"]


def setup_table(device: str, setup: tuple, results: list[dict]) -> list[str]:
    """One setup's section of one GPU's results: per context both models' ms/step (all blocks) against the published."""
    cells = {}
    for r in results:
        if model_setup(r["model"], r["settings"]) == model_setup(r["model"], dict(setup)):
            cells.setdefault((r["model"], r["context"]), []).append(r)
    rows, ours = [], {}
    for context in sorted({c for _, c in cells}):
        runs = {m: cells.get((m, context), []) for m in MODELS}
        stats = {m: block_stats([ms for r in runs[m] for ms in r["block_ms_per_step"]]) for m in MODELS}
        pub = {m: PUBLISHED_MS_PER_STEP[m].get(context) for m in MODELS}
        (b, hy), ratio, faster = stats.values(), "-", "-"
        if b and hy:
            ours[context] = (b["median"], hy["median"])
            faster = ("hybrid" if hy["median"] < b["median"] else "baseline") + (
                " (ranges overlap)" if hy["min"] <= b["max"] and b["min"] <= hy["max"] else "")
            ratio = f"{hy['median'] / b['median']:.2f}"
        if pub["baseline"] and pub["hybrid"]:
            ratio += f" ({pub['hybrid'] / pub['baseline']:.2f})"
        rows.append([str(context), ", ".join(sorted({f"{r['batch_tokens']:,}" for m in MODELS for r in runs[m]})),
                     *(ms_cell(stats[m]) + (f", {len(runs[m])} runs" if len(runs[m]) > 1 else "") for m in MODELS),
                     f"{fmt(pub['baseline'], '.0f')} / {fmt(pub['hybrid'], '.0f')}",
                     ", ".join(fmt(stats[m] and pub[m] and stats[m]["median"] / pub[m], ".2f") for m in MODELS),
                     ratio, faster])
    found = [r for rs in cells.values() for r in rs]
    kernels = sorted({f"{r['model']}: sdpa {r['sdpa_backend']}, compile {r['compile']}, micro-steps "
                      f"{r['grad_accum_steps']}" for r in found})
    return [f"## {device}: {setup_title(setup)}", "",
            f"Device: {'; '.join(sorted({r['device_name'] + ', torch ' + r['torch'] for r in found}))}. "
            f"Kernels: {'; '.join(kernels)}. Files: "
            + ", ".join(f"`{f}`" for f in sorted({r["source"] for r in found}))
            + ".", "", *markdown_table(SETUP_HEADER, rows), "", f"Crossover (ours): {crossover_text(ours)}.", ""]


def paired_rows(results: list[dict]) -> list[list[str]]:
    """Every arm measured against a reference arm of its file: both ms/step and the paired ratio."""
    rows = []
    for r in results:
        for ref in (x for x in results if (x["source"], x["model"], x["context"], x["arm"]) ==
                    (r["source"], r["model"], r["context"], r.get("reference_arm"))):
            ratio = paired_ratio(r["block_ms_per_step"], ref["block_ms_per_step"])
            rows.append([r["model"], str(r["context"]), settings_text(ref["settings"]), settings_text(r["settings"]),
                         ms_cell(block_stats(ref["block_ms_per_step"])), ms_cell(block_stats(r["block_ms_per_step"])),
                         ms_cell(ratio, 3), f"`{r['source']}`"])
    return sorted(rows, key=lambda row: (row[0], int(row[1]), row[2], row[3], row[7]))


def compute_markdown(sources: list[str]) -> str:
    results = [r for r in load_results(sources) if r["status"] == "ok" and not r["tiny"]]
    published = {c: (ms, PUBLISHED_MS_PER_STEP["hybrid"][c]) for c, ms in PUBLISHED_MS_PER_STEP["baseline"].items()}
    lines = ["# Compute experiment: step time by context, baseline vs hybrid (the crossover probe)", "",
             "<!-- Generated by `python3 scripts/bench_step_time.py --regenerate-compute-md` from the files in its "
             "COMPUTE_SOURCES; do not edit by hand. -->", "",
             "Question: from which context is the Gated-DeltaNet hybrid (train_gpt_gdn.py) faster per optimizer "
             f"step than the full-attention baseline (train_gpt.py)? Published (one H100 SXM, {PUBLISHED_GRAD_ACCUM} "
             f"micro-steps, {' '.join(f'{k}={v}' for k, v in PUBLISHED_KERNELS.items())}): "
             f"{crossover_text(published)}.", "",
             "Each run times blocks of optimizer steps after an untimed warm-up (synthetic tokens, the published "
             "batch: 393,216 tokens per step up to 16,384, 524,288 at 32,768); a cell is the median ms/step over "
             "the blocks of every run of that setup, min-max in brackets. Settings the trainers do not have "
             "name the code a measurement ran: " + "; ".join(f"{k} ({v})" for k, v in RETIRED_SETTINGS.items())
             + "; each at 0 is the path of the grid runs in logs_experiment/, at 1 the trainers' only path.",
             "", "Sources: " + ", ".join(f"`{s}`" for s in sorted(sources)) + ".", ""]
    for device in sorted({r["device_name"] for r in results}, reverse=True):  # GPUs never pool; newest name first
        on_device = [r for r in results if r["device_name"] == device]
        hybrid_setups = {model_setup("hybrid", r["settings"]) for r in on_device if r["model"] == "hybrid"}
        covered = {model_setup("baseline", dict(s)) for s in hybrid_setups}  # setups whose baseline is shown anyway
        for setup in sorted(hybrid_setups | ({model_setup("baseline", r["settings"]) for r in on_device} - covered)):
            lines += setup_table(device, setup, on_device)
    paired = paired_rows(results)
    if paired:
        lines += ["## Arms of one process: paired ratios", "", "Arms timed in one process, blocks round-robin: the "
                  "median (min-max) of block i of the compared arm over block i of the reference arm.", "",
                  *markdown_table(["model", "context", "reference", "compared", "reference ms/step",
                                   "compared ms/step", "compared / reference", "file"], paired), ""]
    return "\n".join(lines + [
        "## How to regenerate", "", "Measure on one GPU (each file holds the command that made it), e.g.:", "",
        "```bash", "python3 scripts/bench_step_time.py --contexts 8192,16384,32768 --warmup 3 --steps 5 --repeats 3 "
        "--out-json logs_experiment/bench/NAME.json", "```", "", "add the file to COMPUTE_SOURCES in "
        "scripts/bench_step_time.py and rebuild this file from those files alone (same files, same bytes):", "",
        "```bash", "python3 scripts/bench_step_time.py --regenerate-compute-md", "```"]) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrors(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="baseline,hybrid", help="comma-separated: baseline, hybrid")
    p.add_argument("--contexts", type=parse_int_list, help="comma-separated (default 4096,8192,16384,32768)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile, autotune)")
    p.add_argument("--steps", type=int, default=10, help="optimizer steps per timed block")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per arm")
    p.add_argument("--env", type=parse_env, action="append", default=[], metavar="KEY=VALUE",
                   help="a trainer setting for every arm, e.g. SDPA_BACKEND=flash")
    p.add_argument("--arm", type=parse_arm, action="append", metavar="NAME:KEY=VALUE[,KEY=VALUE...]",
                   help="settings compared in this one process; the first arm is the reference")
    p.add_argument("--out-json", help="every result with its raw block times; rewritten after each configuration")
    p.add_argument("--out-md", help="the results table as Markdown (with --regenerate-compute-md: the output path)")
    p.add_argument("--tiny", action="store_true", help="tiny model and contexts, on the CPU: a code-path check")
    p.add_argument("--regenerate-compute-md", action="store_true",
                   help=f"write {COMPUTE_MD} from COMPUTE_SOURCES, then exit")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if not args.regenerate_compute_md:
        return run_benchmark(args, argv)
    out = Path(args.out_md or REPO_ROOT / COMPUTE_MD)
    write_if_changed(out, compute_markdown(COMPUTE_SOURCES).encode("utf-8"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
