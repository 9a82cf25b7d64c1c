#!/usr/bin/env python3
"""Step-time benchmark of the baseline (train_gpt.py) and the GDN hybrid (train_gpt_gdn.py) by context length.

For each model and context the real model and optimizers are built by the trainer's own code
(Hyperparameters, choose_sdpa_backend, build_model, build_optimizers, run_train_step) with its
default settings plus the published batch: TRAIN_BATCH_TOKENS 393,216 at contexts up to 16,384 and
524,288 above (32,768), GRAD_ACCUM_STEPS as the trainer chooses it (auto: one untimed probe step on
CUDA picks the fewest micro-steps that fit memory; 8 on CPU). Any other trainer setting
comes in through --env KEY=VALUE (e.g. SDPA_BACKEND=flash, COMPILE=0, GRAD_ACCUM_STEPS=4); the
shell's environment is NOT read, so a stray exported TRAIN_SEQ_LEN cannot leak in.

Tokens are synthetic: one fixed, seeded random uint16 tensor (vocab 1024) on the CPU, cut into
micro-batches and moved to the device the way the trainer's loader does (slice, int64, .to(device)).
--warmup steps run untimed (compilation, autotuning); then --repeats blocks of --steps optimizer
steps are each timed with torch.cuda.synchronize() + time.perf_counter() around the whole block;
a block's ms/step is its time / --steps. Reported: the median over blocks and the min-max range.
Peak memory is torch.cuda.max_memory_allocated() over the timed blocks (reset after the warm-up).

Model FLOPs utilisation (CUDA only; '-' on CPU):
    FLOPs/step = 6 * N_nonembed * B  +  6 * T^2 * d * L_attn * (B / T)
  B = TRAIN_BATCH_TOKENS (tokens per optimizer step), T = TRAIN_SEQ_LEN, d = MODEL_DIM
  (= query heads x head dim), L_attn = number of causal-attention layers, N_nonembed = all
  parameters except the tied embedding.
  - 6 * N_nonembed * B: every weight does one multiply-add (2 FLOPs) per token forward and two
    backward (input and weight gradients), 2 + 4 = 6.
  - Attention, per layer and sequence: forward QK^T is T*T*d multiply-adds = 2*T^2*d FLOPs, and AV
    the same 2*T^2*d; causal masking halves both (2*T^2*d in all); backward costs twice the
    forward, so x3: 6*T^2*d = 6 x 2 x T x T/2 x d. Grouped KV heads do not change it (the score
    and value products run per query head). FlashAttention's recomputation in the backward pass is
    not counted (model FLOPs, not hardware FLOPs).
  - Left out (so the MFU is slightly conservative): the tied-embedding logit product (6*V*d per
    token; ~3% of the non-attention FLOPs at V=1024, d=512), norms, RoPE, softmax, the optimizer.
  - Hybrid: only its attention layers (3 and 7 by default) get the attention term. Its Gated
    DeltaNet layers' projections are in N_nonembed; their chunked state work (chunk C=64, per head
    about (4*C*K + 2*C*V + 6*K*V) FLOPs per token forward, x3 with backward: ~1.0 MFLOP per token
    and layer at K=42, V=84, 8 heads; ~7% on top of the hybrid's 6*N term with 7 GDN layers) is left
    out, as are the short causal convolutions.
  MFU = FLOPs/step / (ms/step / 1000) / PEAK, PEAK = 989 TFLOP/s, the dense (no sparsity) bf16
  tensor-core peak of the H100 SXM (the H200 has the same compute peak).

Usage:
  python3 scripts/bench_step_time.py [--models baseline,hybrid] [--contexts 4096,8192,16384,32768]
      [--warmup 5] [--steps 10] [--repeats 3] [--env KEY=VALUE ...] [--arm NAME:KEY=VALUE,... ...]
      [--out-json PATH] [--out-md PATH]
      [--tiny] [--device auto|cpu|cuda] [--profile-steps N [--profile-trace-dir DIR]]
  python3 scripts/bench_step_time.py --regenerate-compute-md RESULTS.json [RESULTS.json ...] [--out-md PATH]

--tiny shrinks the model (NUM_LAYERS=2, MODEL_DIM=64, NUM_HEADS=4, NUM_KV_HEADS=2; hybrid
GDN_LAYERS=0, so one GDN and one attention layer), uses contexts 64,128 unless --contexts is given
and batches of 2 micro-steps x 2 sequences, and runs on the CPU unless --device says otherwise: it
tests the script's code paths in seconds. A configuration that fails (out of memory, say) is
recorded with its error and the others still run; the exit status is 1 if any failed.

--arm NAME:KEY=VALUE,... (repeatable; `NAME:` alone = the defaults) compares settings in one process:
for each model and context every arm is built and warmed up, runs one more untimed step (switching
arms may recompile), and then the timed blocks go round-robin (block 1 of every arm, block 2, ...), so
a drift of the GPU clock or temperature falls on every arm alike and two processes' ~5% difference
(measured on the H100) does not enter the comparison. Each arm is compared with the first one block by
block: the ratio of block i to the first arm's block i, median (min-max). --env applies to every arm.

--profile-steps N runs N more steps of each configuration under torch.profiler after the timed blocks
and sums the self time of every CUDA kernel (on the CPU: of every operator) by category (inductor's
fused kernels, attention, the GDN's fla kernels and convolutions, matmuls, optimizer, communication,
copies, other; PROFILE_CATEGORIES), with the top kernels; the wall time of those steps is printed
beside the kernel time, so the gap shows how much of a step the GPU waits for the host. On CUDA
each record also keeps the SM clock, power and clock-limit reasons read with nvidia-smi right
after the timed blocks.

--regenerate-compute-md rebuilds compute_experiment.md (the crossover probe: where the hybrid
becomes faster per step than the baseline, ours against the published) from the given JSON files
only; the output is deterministic (no clock, inputs sorted by path).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from published_study import (PUBLISHED_GRAD_ACCUM, PUBLISHED_MS_PER_STEP, markdown_table,  # noqa: E402
                             published_batch_tokens)
from published_study import crossover as published_crossover  # noqa: E402
from compare_losses import parse_arm  # noqa: E402  (one NAME:KEY=VALUE,... syntax for both scripts)

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SCHEMA = "bench_step_time/1"
MODELS = {"baseline": "train_gpt", "hybrid": "train_gpt_gdn"}
DEFAULT_CONTEXTS = [4096, 8192, 16384, 32768]
TINY_CONTEXTS = [64, 128]
TINY_ENV = {"NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2"}
TINY_HYBRID_ENV = {"GDN_LAYERS": "0"}
TINY_GRAD_ACCUM, TINY_SEQS_PER_MICRO = 2, 2
TOKEN_SEED = 20240520
# Exact speed flags that became the trainers' defaults on 2026-11-23: a result records what each resolved to,
# and the compute table keys its setups by them, so files from before (flags off, unrecorded) never pool
# with files made after under the same "trainer defaults".
FLAGS_ON_BY_DEFAULT = ("FUSED_PROJECTIONS", "MUON_BATCHED", "GDN_KEEP_STATES")
# Of those, the hybrid's own (on by default since 2026-11-23 session 12): the baseline has no such setting, so its
# results record none, and a setup with one on shares the baseline measurements of the setup without it.
HYBRID_ONLY_FLAGS = ("GDN_KEEP_STATES",)

# Dense bf16 tensor-core peak of one H100 SXM (989.4 TFLOP/s without sparsity; the H200 has the same).
PEAK_FLOPS = 989e12

# Published ms/step of the long-context study: one H100 SXM, 8 micro-steps (GRAD_ACCUM_STEPS=8).
PUBLISHED_MS = {model: {ctx: float(ms) for ctx, ms in by_ctx.items()} for model, by_ctx in PUBLISHED_MS_PER_STEP.items()}

TABLE_HEADER = ["model", "context", "batch tokens", "micro-steps", "ms/step median", "min-max", "tokens/s",
                "peak mem GiB", "MFU", "published ms/step", "ours/published"]

FLOP_FORMULA_MD = (
    "MFU = FLOPs per step / step time / 989 TFLOP/s (H100 SXM dense bf16 peak), with "
    "FLOPs per step = 6 x N_nonembed x B + 6 x T^2 x d x L_attn x (B / T): B tokens per optimizer step, "
    "T context, d model width, L_attn causal-attention layers (all 9 for the baseline, only the attention "
    "layers of the hybrid), N_nonembed = parameters without the tied embedding. The attention term is "
    "QK^T and AV (2 x T^2 x d FLOPs each forward), halved for causal masking, x3 for forward + backward. "
    "Left out: the tied-embedding logit product, the hybrid's Gated DeltaNet chunked state work (~7% on top of its "
    "6N term) and convolutions, norms, softmax, the optimizer; so the MFU is slightly conservative.")


# -----------------------------
# Settings
# -----------------------------


def parse_int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} must list positive integers")
    return values


def parse_env_overrides(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            raise SystemExit(f"error: --env {item!r} must be KEY=VALUE with an upper-case trainer variable name")
        env[key] = value
    return env


def config_env(model: str, context: int, tiny: bool, overrides: dict[str, str]) -> dict[str, str]:
    """The trainer's env dict for one configuration: batch and context, tiny shrink, then --env on top."""
    env = {"RUN_ID": "bench", "TRAIN_SEQ_LEN": str(context)}
    if tiny:
        env.update(TINY_ENV)
        if model == "hybrid":
            env.update(TINY_HYBRID_ENV)
        accum = int(overrides.get("GRAD_ACCUM_STEPS", "0") or 0) or TINY_GRAD_ACCUM
        env["GRAD_ACCUM_STEPS"] = str(accum)
        env["TRAIN_BATCH_TOKENS"] = str(accum * TINY_SEQS_PER_MICRO * context)
    else:
        env["TRAIN_BATCH_TOKENS"] = str(published_batch_tokens(context))
    env.update(overrides)
    return env


# -----------------------------
# Environment record
# -----------------------------


def package_version(dist_names: list[str], module_name: str) -> str:
    for name in dist_names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        module = importlib.import_module(module_name)
        return str(getattr(module, "__version__", "?"))
    except Exception:  # noqa: BLE001 - absent or broken: recorded as such
        return "unavailable"


def git_revision() -> str:
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        rev = proc.stdout.strip() if proc.returncode == 0 else ""
        if not re.fullmatch(r"[0-9a-f]{40}", rev):
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_info(device: torch.device) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "triton": package_version(["triton", "pytorch-triton"], "triton"),
        "fla": package_version(["fla-core", "flash-linear-attention"], "fla"),
        "device_type": device.type,
        "git": git_revision(),
        "host": platform.node(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=str(torch.backends.cudnn.version()),
                    capability=list(torch.cuda.get_device_capability(device)),
                    gpu_memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count)
    else:
        info.update(device_name=f"cpu ({platform.processor() or platform.machine()}, "
                                f"{torch.get_num_threads()} threads)")
    return info


# -----------------------------
# One configuration
# -----------------------------


class SyntheticBatches:
    """A fixed seeded uint16 token tensor on the CPU, cut into micro-batches like the trainer's loader."""

    def __init__(self, vocab_size: int, micro_tokens: int, seq_len: int, device: torch.device,
                 distinct_micro_batches: int, seed: int = TOKEN_SEED):
        rng = np.random.default_rng(seed)
        self.span = micro_tokens + 1  # one extra token for the shifted targets
        self.count = distinct_micro_batches
        pool = rng.integers(0, vocab_size, size=self.span * self.count, dtype=np.uint16)
        self.tokens = torch.from_numpy(pool)
        self.seq_len, self.device, self.index = seq_len, device, 0

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        start = (self.index % self.count) * self.span
        self.index += 1
        local = self.tokens[start : start + self.span].to(dtype=torch.int64)
        x = local[:-1].reshape(-1, self.seq_len)
        y = local[1:].reshape(-1, self.seq_len)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def model_flops_per_step(n_nonembed: int, batch_tokens: int, seq_len: int, model_dim: int, attn_layers: int) -> float:
    """6 N B + 6 T^2 d L_attn (B/T): see the module docstring."""
    sequences = batch_tokens / seq_len
    return 6.0 * n_nonembed * batch_tokens + 6.0 * seq_len * seq_len * model_dim * attn_layers * sequences


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Prepared:
    """One arm of one configuration, built and warmed up: what its timed blocks need (the step closure holds
    the model and optimizers)."""
    trainer: object
    h: object
    step: object  # () -> loss of one optimizer step
    record: dict
    peak_bytes: int = 0


def apply_sdpa_settings(prepared: Prepared, device: torch.device) -> None:
    """Restore this arm's process-wide attention settings (torch.backends' enabled SDPA backend and the trainer's
    SDPA_EXPAND_KV global) through the trainer's own choose_sdpa_backend, asked for the backend the arm got:
    arms of one run may choose different backends or head layouts."""
    h = prepared.h
    _, prepared.trainer.SDPA_EXPAND_KV = prepared.trainer.choose_sdpa_backend(
        prepared.record["sdpa_backend"], h.model_dim // h.num_heads, h.num_heads, h.num_kv_heads, device)


def resolved_speed_flags(trainer, h) -> dict[str, bool]:
    """FLAGS_ON_BY_DEFAULT as this trainer runs them: GDN_KEEP_STATES only where the hybrid takes its path."""
    flags = {name: bool(getattr(h, name.lower())) for name in FLAGS_ON_BY_DEFAULT if hasattr(h, name.lower())}
    if "GDN_KEEP_STATES" in flags:
        flags["GDN_KEEP_STATES"] = bool(trainer.gdn_keep_states_active(h))
    return flags


def prepare_config(model_name: str, env: dict[str, str], device: torch.device, warmup: int, record: dict,
                   log) -> Prepared:
    """Build and warm up one configuration, filling `record` as it goes (so a failure keeps what was known)."""
    trainer = importlib.import_module(MODELS[model_name])
    h = trainer.Hyperparameters(env)
    h.resolve(world_size=1)
    micro_tokens = h.train_batch_tokens // h.grad_accum_steps
    record.update(batch_tokens=h.train_batch_tokens, grad_accum_steps=h.grad_accum_steps,
                  seqs_per_micro_step=micro_tokens // h.train_seq_len, model_dim=h.model_dim,
                  num_layers=h.num_layers, mixer_lines=list(trainer.mixer_log_lines(h)),
                  speed_flags=resolved_speed_flags(trainer, h))
    use_cuda = device.type == "cuda"
    torch.manual_seed(h.seed)
    if use_cuda:
        torch.cuda.manual_seed_all(h.seed)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    head_dim = h.model_dim // h.num_heads
    backend, expand_kv = trainer.choose_sdpa_backend(h.sdpa_backend, head_dim, h.num_heads, h.num_kv_heads, device)
    trainer.SDPA_EXPAND_KV = expand_kv
    record.update(sdpa_backend=backend, expand_kv=expand_kv)

    t_build = time.perf_counter()
    base_model, model, compiled = trainer.build_model(h, device)
    optimizers = trainer.build_optimizers(h, base_model, fused=use_cuda, compiled=compiled)
    n_params = sum(p.numel() for p in base_model.parameters())
    n_nonembed = n_params - base_model.tok_emb.weight.numel()
    attn_layers = sum(isinstance(block.attn, trainer.CausalSelfAttention) for block in base_model.blocks)
    flops = model_flops_per_step(n_nonembed, h.train_batch_tokens, h.train_seq_len, h.model_dim, attn_layers)
    record.update(compile=compiled, n_params=n_params, n_nonembed_params=n_nonembed, attn_layers=attn_layers,
                  flops_per_step=flops, build_s=round(time.perf_counter() - t_build, 3))
    log(f"  built: params {n_params:,} (non-embedding {n_nonembed:,}), attention layers {attn_layers}, "
        f"sdpa {backend} expand_kv {expand_kv}, compile {compiled}, batch {h.train_batch_tokens:,} tokens = "
        f"{h.grad_accum_steps} x {micro_tokens // h.train_seq_len} x {h.train_seq_len}")
    for line in record["mixer_lines"]:
        log(f"  {line}")

    lr_scale, momentum = 1.0, h.muon_momentum
    batches = {}

    def step() -> torch.Tensor:
        # One synthetic micro-batch source per micro-step count (the memory probe can change it).
        if h.grad_accum_steps not in batches:
            batches[h.grad_accum_steps] = SyntheticBatches(
                h.vocab_size, h.train_batch_tokens // h.grad_accum_steps, h.train_seq_len, device,
                distinct_micro_batches=h.grad_accum_steps)
        return trainer.run_train_step(h, model, base_model, optimizers, batches[h.grad_accum_steps], lr_scale,
                                      momentum, distributed=False, autocast_enabled=use_cuda)

    t_warm = time.perf_counter()
    if use_cuda and h.grad_accum_requested == 0:
        # GRAD_ACCUM_STEPS not given: choose it as the trainer does (one probe step, untimed).
        log(f"  {trainer.probe_grad_accum_steps(h, 1, device, False, step)}")
        micro_tokens = h.train_batch_tokens // h.grad_accum_steps
        record.update(grad_accum_steps=h.grad_accum_steps, seqs_per_micro_step=micro_tokens // h.train_seq_len,
                      grad_accum_auto=True)
    for _ in range(warmup):
        step()
    sync(device)
    record["warmup_s"] = round(time.perf_counter() - t_warm, 3)
    record["block_s"], record["block_ms_per_step"] = [], []
    log(f"  warm-up: {warmup} steps in {record['warmup_s']:.1f} s (compile/autotune, untimed)")
    return Prepared(trainer, h, step, record)


def time_block(prepared: Prepared, steps: int, device: torch.device) -> float:
    """One timed block of `steps` optimizer steps; appends to the record and returns its ms/step."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = prepared.step()
    sync(device)
    seconds = time.perf_counter() - t0
    record = prepared.record
    record["block_s"].append(seconds)
    record["block_ms_per_step"].append(1000.0 * seconds / steps)
    record["final_loss"] = float(loss.item())
    if device.type == "cuda":
        prepared.peak_bytes = max(prepared.peak_bytes, torch.cuda.max_memory_allocated(device))
        record["peak_mem_gib"] = prepared.peak_bytes / 2**30
        record["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    return record["block_ms_per_step"][-1]


def finish_config(prepared: Prepared, device: torch.device, log, profile_n: int = 0,
                  trace_path: Path | None = None, show_arm: bool = False) -> None:
    """After the timed blocks: the clock reading and, with profile_n, the profiled steps."""
    record = prepared.record
    if device.type == "cuda":
        record["gpu_clocks_after_timing"] = gpu_clocks()
    if profile_n > 0:
        record["profile"] = profile_steps(prepared.step, profile_n, device, trace_path)
        log(profile_text(record, show_arm))


def run_arms(model_name: str, context: int, arms: list[tuple[str, dict[str, str]]], shared: dict[str, str],
             device: torch.device, args: argparse.Namespace, log) -> list[dict]:
    """Every arm of one (model, context), in one process: build and warm up each, one untimed step each
    again (switching arms may recompile), then the timed blocks round-robin (block 1 of every arm, then
    block 2, ...) so that clock and thermal drift fall on all arms alike. Returns one record per arm."""
    records, live = [], {}
    several = len(arms) > 1

    def switch_to(p: Prepared) -> None:
        """The process-wide attention settings are those of the arm built last: another arm's steps need its own
        (a probe of one attention step, outside the timed blocks; one arm alone keeps what it was built with)."""
        if several:
            apply_sdpa_settings(p, device)

    def survive(name: str, action) -> None:
        """Run one arm's action; a failure marks that arm failed and drops it, the others go on."""
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - one failing arm must not stop the others
            fail(live.pop(name).record, exc, log, several)

    for arm_name, arm_env in arms:
        env = config_env(model_name, context, args.tiny, {**shared, **arm_env})
        record = {"model": model_name, "trainer": MODELS[model_name] + ".py", "context": context,
                  "arm": arm_name, "arm_env": dict(arm_env), "device_type": device.type, "env": env,
                  "status": "running"}
        records.append(record)
        if several:
            log(f"  arm {arm_name}: {' '.join(f'{k}={v}' for k, v in arm_env.items()) or '(unchanged)'}")
        try:
            live[arm_name] = prepare_config(model_name, env, device, args.warmup, record, log)
        except Exception as exc:  # noqa: BLE001 - one failing arm must not stop the others
            fail(record, exc, log, several)
    if len(live) > 1:
        for name, prepared in list(live.items()):
            survive(name, lambda p=prepared: (switch_to(p), p.step(), sync(device)))
    for block in range(1, args.repeats + 1):
        for name, prepared in list(live.items()):
            def timed(p=prepared):
                switch_to(p)
                ms = time_block(p, args.steps, device)
                log(f"  block {block}/{args.repeats}{arm_tag(p.record, several)}: {ms:.1f} ms/step")
            survive(name, timed)
    for name, prepared in list(live.items()):
        trace = None
        if args.profile_steps > 0 and args.profile_trace_dir is not None:
            suffix = f"_{name}" if several else ""
            trace = Path(args.profile_trace_dir) / f"trace_{model_name}_{context}{suffix}.json.gz"
        survive(name, lambda p=prepared, t=trace: (switch_to(p),
                                                    finish_config(p, device, log, args.profile_steps, t, several)))
    for prepared in live.values():
        prepared.record["status"] = "ok"
    live.clear()
    return records


def fail(record: dict, exc: BaseException, log, show_arm: bool = False) -> None:
    record["status"] = "failed"
    record["error"] = f"{type(exc).__name__}: {exc}".strip()
    record["traceback"] = traceback.format_exc()[-4000:]
    log(f"  FAILED{arm_tag(record, show_arm)}: {record['error'].splitlines()[0][:300]}")


def arm_tag(record: dict, show: bool) -> str:
    """' [arm]' after a configuration's name when a run compares several arms, else ''."""
    return f" [{record.get('arm', 'default')}]" if show else ""


def summarise(record: dict, tiny: bool) -> None:
    """Median / range / throughput / MFU / published comparison from the raw block times."""
    ms = record.get("block_ms_per_step") or []
    if record.get("status") != "ok" or not ms:
        return
    median = statistics.median(ms)
    record.update(ms_per_step_median=median, ms_per_step_min=min(ms), ms_per_step_max=max(ms),
                  tokens_per_s=record["batch_tokens"] / (median / 1000.0))
    record["mfu"] = (record["flops_per_step"] / (median / 1000.0) / PEAK_FLOPS
                     if record["device_type"] == "cuda" else None)
    published = None if tiny else PUBLISHED_MS.get(record["model"], {}).get(record["context"])
    record["published_ms_per_step"] = published
    record["ratio_vs_published"] = median / published if published else None


def compare_arms(records: list[dict]) -> None:
    """Each arm against the first arm of the same (model, context): the ratio of ms/step block by block
    (block i of an arm against block i of the reference, timed one after the other), median and range."""
    reference = records[0]
    if reference.get("status") != "ok":
        return
    for record in records[1:]:
        if record.get("status") != "ok":
            continue
        ratios = [ms / ref for ms, ref in zip(record["block_ms_per_step"], reference["block_ms_per_step"])]
        record.update(reference_arm=reference["arm"], ratio_vs_reference=statistics.median(ratios),
                      ratio_vs_reference_min=min(ratios), ratio_vs_reference_max=max(ratios))


ARMS_HEADER = ["model", "context", "arm", "settings", "ms/step median", "min-max", "vs first arm (paired blocks)",
               "peak mem GiB"]


def arms_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for r in results:
        settings = " ".join(f"{k}={v}" for k, v in (r.get("arm_env") or {}).items()) or "(unchanged)"
        base = [r["model"], str(r["context"]), r.get("arm", "default"), settings]
        if r.get("status") != "ok":
            rows.append(base + ["FAILED", "-", "-", "-"])
            continue
        if "ratio_vs_reference" in r:
            versus = (f"{r['ratio_vs_reference']:.3f} ({r['ratio_vs_reference_min']:.3f}-"
                      f"{r['ratio_vs_reference_max']:.3f})")
        else:
            versus = "reference"
        rows.append(base + [f"{r['ms_per_step_median']:.1f}", f"{r['ms_per_step_min']:.1f}-{r['ms_per_step_max']:.1f}",
                            versus, fmt(r.get("peak_mem_gib"), ".2f")])
    return rows


def free_memory(device: torch.device) -> None:
    gc.collect()
    try:
        torch._dynamo.reset()
    except Exception:  # noqa: BLE001 - dynamo absent or broken: nothing compiled to reset
        pass
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -----------------------------
# Where the time goes (--profile-steps)
# -----------------------------

# Kernel (CUDA) or operator (CPU) names -> a category; the first pattern that matches wins. Inductor names
# its generated kernels triton_{poi,red,per,tem}_*, so it goes first: a fused kernel's name can contain the
# names of the ops it fused (e.g. "convolution").
PROFILE_CATEGORIES = [
    ("inductor fused (elementwise, norms, rotary)", r"^triton_(poi|red|per|tem)_"),
    ("attention (sdpa)", r"flash|fmha|cudnn|sdpa|scaled_dot_product|attention"),
    # fla's Triton kernels by name; "kernel_kernel" is what TileLang calls the kernel it generates for fla's
    # gated backward on Hopper (14 calls per step at 32k = 7 GDN layers x 2 micro-steps).
    ("gdn (fla kernels, conv)", r"chunk|gated_delta|recompute_w_u|wy_repr|solve_tril|kkt|l2norm|cumsum|causal_conv|"
                                r"conv1d|convolution|fla|^kernel_kernel$"),
    ("matmul", r"gemm|cutlass|xmma|nvjet|cublas|matmul|aten::mm|aten::bmm|aten::addmm|aten::linear"),
    ("optimizer (muon, adam)", r"optimizer|muon|multi_tensor|adam|foreach"),
    ("communication", r"nccl|all_reduce|allreduce"),
    ("copies", r"memcpy|memset|copy_|fill_"),
]
PROFILE_TOP = 15


def profile_category(name: str) -> str:
    for category, pattern in PROFILE_CATEGORIES:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return category
    return "other"


def profile_summary(events: list[tuple[str, float, int]], n_steps: int, wall_s: float) -> dict:
    """events: (name, self time in microseconds, calls) per distinct kernel (CUDA) or operator (CPU), summed
    over n_steps steps. Returns per-step milliseconds by category and the top kernels; busy = the sum of
    kernel times (kernels on different streams can overlap, so it can exceed the wall time)."""
    busy_us = sum(us for _, us, _ in events)
    by_category: dict[str, float] = {}
    for name, us, _ in events:
        category = profile_category(name)
        by_category[category] = by_category.get(category, 0.0) + us
    per_step = 1e-3 / n_steps  # microseconds over n_steps -> milliseconds per step
    categories = [{"category": c, "ms_per_step": us * per_step, "share_of_busy": us / busy_us if busy_us else 0.0}
                  for c, us in sorted(by_category.items(), key=lambda kv: -kv[1])]
    top = [{"name": name, "category": profile_category(name), "ms_per_step": us * per_step,
            "calls_per_step": calls / n_steps}
           for name, us, calls in sorted(events, key=lambda e: -e[1])[:PROFILE_TOP]]
    return {"steps": n_steps, "wall_ms_per_step": 1000.0 * wall_s / n_steps, "busy_ms_per_step": busy_us * per_step,
            "categories": categories, "top": top}


def profile_steps(step, n_steps: int, device: torch.device, trace_path: Path | None = None) -> dict:
    """Run n_steps more steps under torch.profiler and sum the self time of every CUDA kernel (on CPU: of every
    operator). The profiler's own overhead makes the wall time longer than a timed block's. trace_path: also
    write the timeline (Chrome trace format, gzip) to find where the GPU waits for the host."""
    from torch.profiler import ProfilerActivity, profile

    on_cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if on_cuda else [ProfilerActivity.CPU]
    sync(device)
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(n_steps):
            step()
        sync(device)
        wall_s = time.perf_counter() - t0
    wanted = torch.autograd.DeviceType.CUDA if on_cuda else torch.autograd.DeviceType.CPU
    events = []
    for e in prof.key_averages():
        # A record_function range (e.g. "Optimizer.step#Muon.step") also shows on the GPU timeline, spanning
        # the kernels it launched: counting it would count those kernels twice.
        if e.device_type != wanted or getattr(e, "is_user_annotation", False):
            continue
        us = e.self_device_time_total if on_cuda else e.self_cpu_time_total
        if us > 0:
            events.append((e.key, float(us), int(e.count)))
    summary = profile_summary(events, n_steps, wall_s)
    if trace_path is not None:
        trace_path.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace_path))  # a .gz path: torch.profiler compresses it
        summary["trace"] = str(trace_path)
    return summary


def gpu_clocks() -> dict | None:
    """SM clock, power and the active clock-limit reasons from nvidia-smi (None without it): some sustained runs on
    the lent H100 sat at 1800 of 1980 MHz under its software power cap (0x4), which a short bench may not."""
    query = "clocks.sm,clocks.max.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active"
    try:  # the trainers' own nvidia-smi reading (the one their GPU monitor samples with)
        sm, sm_max, power, temp, reasons = importlib.import_module(MODELS["baseline"]).nvidia_smi_query(query, "0")
        return {"sm_mhz": float(sm), "sm_max_mhz": float(sm_max), "power_w": float(power), "temp_c": float(temp),
                "limit_reasons": reasons}
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def profile_text(record: dict, show_arm: bool = False) -> str:
    prof = record["profile"]
    unit = "kernel" if record["device_type"] == "cuda" else "operator"
    head = (f"{record['model']} @ {record['context']}{arm_tag(record, show_arm)}: {prof['steps']} profiled steps, wall "
            f"{prof['wall_ms_per_step']:.1f} ms/step (profiler on), {unit} time {prof['busy_ms_per_step']:.1f} ms/step")
    cats = text_table(["category", "ms/step", "share"],
                      [[c["category"], f"{c['ms_per_step']:.1f}", f"{100 * c['share_of_busy']:.1f}%"]
                       for c in prof["categories"]])
    top = text_table([unit, "category", "ms/step", "calls/step"],
                     [[t["name"][:90], t["category"], f"{t['ms_per_step']:.2f}", f"{t['calls_per_step']:g}"]
                      for t in prof["top"]])
    return "\n".join([head, cats, "", top])


# -----------------------------
# Formatting
# -----------------------------


def fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def table_row(r: dict, error_chars: int = 120, show_arm: bool = False) -> list[str]:
    base = [r["model"] + arm_tag(r, show_arm), str(r["context"]), fmt(r.get("batch_tokens"), ","), fmt(r.get("grad_accum_steps"), "d")]
    if r.get("status") != "ok":
        error = (r.get("error") or "failed").splitlines()[0]
        return base + [f"FAILED: {error[:error_chars]}"] + ["-"] * 4 + [fmt(r.get("published_ms_per_step"), ".0f"), "-"]
    mfu = r.get("mfu")
    return base + [
        f"{r['ms_per_step_median']:.1f}",
        f"{r['ms_per_step_min']:.1f}-{r['ms_per_step_max']:.1f}",
        f"{r['tokens_per_s']:,.0f}",
        fmt(r.get("peak_mem_gib"), ".2f"),
        "-" if mfu is None else f"{100.0 * mfu:.1f}%",
        fmt(r.get("published_ms_per_step"), ".0f"),
        fmt(r.get("ratio_vs_published"), ".2f"),
    ]


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows)
    return "\n".join(lines)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(markdown_table(header, rows))


def bench_markdown(doc: dict) -> str:
    env, settings = doc["environment"], doc["settings"]
    arms = settings.get("arms") or {}
    several = len(arms) > 1
    rows = [table_row(r, show_arm=several) for r in doc["results"]]
    overrides = " ".join(f"{k}={v}" for k, v in sorted(settings["env_overrides"].items())) or "none"
    details = []
    for r in doc["results"]:
        if r.get("sdpa_backend") is None:
            continue
        details.append(f"- {r['model']} @ {r['context']}{arm_tag(r, several)}: sdpa {r['sdpa_backend']} (expand_kv {r.get('expand_kv')}), "
                       f"compile {r.get('compile')}, params {fmt(r.get('n_params'), ',')}, attention layers "
                       f"{r.get('attn_layers')}; " + "; ".join(r.get("mixer_lines") or []))
    out = [
        "# Step-time benchmark",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Device: {env.get('device_name')}; torch {env.get('torch')}, triton {env.get('triton')}, "
        f"fla {env.get('fla')}, CUDA {env.get('cuda', '-')}; git {env.get('git')}.",
        f"Warm-up {settings['warmup']} steps (untimed), then {settings['repeats']} blocks of {settings['steps']} "
        f"steps; ms/step = median over blocks (range min-max). Synthetic tokens (seed {TOKEN_SEED}). "
        f"Env overrides: {overrides}. Tiny: {settings['tiny']}.",
        "",
        md_table(TABLE_HEADER, rows),
        "",
        *([f"Arms, each against the first ({next(iter(arms))}): the ms/step ratio of block i to the first arm's "
           "block i (timed one after the other in this process), median (min-max) over the blocks.", "",
           md_table(ARMS_HEADER, arms_rows(doc["results"])), ""] if several else []),
        f"Published ms/step: one H100 SXM, {PUBLISHED_GRAD_ACCUM} micro-steps. {FLOP_FORMULA_MD}",
        "",
        *details,
        "",
    ]
    for r in doc["results"]:
        if r.get("profile"):
            tag = arm_tag(r, several)
            out += [f"## Where the time goes: {r['model']} @ {r['context']}{tag}", "", "```",
                    profile_text(r, several), "```", ""]
    return "\n".join(out)


# -----------------------------
# Benchmark driver
# -----------------------------


def write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def run_benchmark(args: argparse.Namespace) -> int:
    overrides = parse_env_overrides(args.env)
    arms = args.arm or [("default", {})]
    several = len(arms) > 1
    for name, arm_env in arms:
        parse_env_overrides([f"{k}={v}" for k, v in arm_env.items()])  # the same key rule as --env
    if len({name for name, _ in arms}) != len(arms):
        raise SystemExit("error: --arm names must differ")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise SystemExit(f"error: --models {args.models!r}: choose from {','.join(MODELS)}")
    contexts = args.contexts or (TINY_CONTEXTS if args.tiny else DEFAULT_CONTEXTS)
    if args.device == "auto":
        device = torch.device("cpu") if args.tiny or not torch.cuda.is_available() else torch.device("cuda", 0)
    else:
        device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif args.tiny:
        torch.set_num_threads(1)  # tiny matrices gain nothing from threads; on a busy CPU they cost ~10x
    if args.warmup < 0 or args.steps < 1 or args.repeats < 1 or args.profile_steps < 0:
        raise SystemExit("error: --warmup and --profile-steps must be >= 0, --steps and --repeats >= 1")

    def log(msg: str) -> None:
        print(msg, flush=True)

    doc = {
        "schema": SCHEMA,
        "command": shlex.join(["python3", "scripts/bench_step_time.py", *args.argv]),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": environment_info(device),
        "settings": {"models": models, "contexts": contexts, "warmup": args.warmup, "steps": args.steps,
                     "repeats": args.repeats, "profile_steps": args.profile_steps,
                     "env_overrides": overrides, "arms": {name: env for name, env in arms}, "tiny": args.tiny,
                     "token_seed": TOKEN_SEED, "peak_flops": PEAK_FLOPS, "timer": "perf_counter+synchronize"},
        "flop_formula": FLOP_FORMULA_MD,
        "results": [],
    }
    env_info = doc["environment"]
    log(f"device: {env_info['device_name']}  torch {env_info['torch']}  triton {env_info['triton']}  "
        f"fla {env_info['fla']}  cuda {env_info.get('cuda', '-')}  git {env_info['git']}")
    log(f"env overrides: {overrides or 'none'}  tiny: {args.tiny}  warmup {args.warmup}  "
        f"{args.repeats} x {args.steps} timed steps")

    configs = [(m, c) for m in models for c in contexts]
    for i, (model_name, context) in enumerate(configs, 1):
        log(f"[{i}/{len(configs)}] {model_name} context {context}")
        records = run_arms(model_name, context, arms, overrides, device, args, log)
        # The failures' exceptions (and their frames holding models) are gone here; now memory can be freed.
        free_memory(device)
        for record in records:
            summarise(record, args.tiny)
        compare_arms(records)
        doc["results"].extend(records)
        if args.out_json:
            write_json(Path(args.out_json), doc)

    log("")
    log(text_table(TABLE_HEADER, [table_row(r, error_chars=60, show_arm=several) for r in doc["results"]]))
    log("")
    if several:
        log(text_table(ARMS_HEADER, arms_rows(doc["results"])))
        log("")
    log(f"published: one H100 SXM, {PUBLISHED_GRAD_ACCUM} micro-steps. MFU peak {PEAK_FLOPS / 1e12:.0f} TFLOP/s.")
    for r in doc["results"]:
        if r.get("sdpa_backend") is not None:
            log(f"{r['model']} @ {r['context']}{arm_tag(r, several)}: sdpa {r['sdpa_backend']} expand_kv {r.get('expand_kv')} "
                f"compile {r.get('compile')} | " + " | ".join(r.get("mixer_lines") or []))
    if args.out_json:
        write_json(Path(args.out_json), doc)
        log(f"wrote {args.out_json}")
    if args.out_md:
        path = Path(args.out_md)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(bench_markdown(doc), encoding="utf-8")
        log(f"wrote {args.out_md}")
    failed = [r for r in doc["results"] if r["status"] != "ok"]
    if failed:
        log(f"{len(failed)} of {len(doc['results'])} configurations failed: "
            + ", ".join(f"{r['model']}@{r['context']}[{r['arm']}]" for r in failed))
        return 1
    return 0


# -----------------------------
# compute_experiment.md: the crossover probe, from the JSON files only
# -----------------------------


def display_path(path: Path) -> str:
    resolved = path.resolve()
    try:
        return resolved.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return resolved.as_posix()


def crossover(ms_by_context: dict[int, tuple[float, float]]) -> tuple[int | None, int | None, bool]:
    """published_study.crossover on step time: ms_by_context maps context -> (baseline ms/step, hybrid
    ms/step), for contexts with both measured; the hybrid is ahead where it is faster."""
    return published_crossover({c: hybrid < base for c, (base, hybrid) in ms_by_context.items()})


def describe_crossover(first: int | None, last_slower: int | None, non_monotone: bool, measured: list[int]) -> str:
    if not measured:
        return "no context with both models measured"
    if first is None:
        text = f"the hybrid is not faster per step at the largest context measured ({max(measured)})"
    elif last_slower is None:
        text = f"the hybrid is faster per step at every context measured (from {first} on)"
    else:
        text = f"the hybrid is faster per step from {first} on (slower at {last_slower})"
    if non_monotone:
        text += "; the order flips more than once across contexts"
    return text


def load_results(paths: list[Path]) -> list[dict]:
    docs = []
    for shown, path in sorted({display_path(p): p for p in paths}.items()):  # each file once
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("schema") != SCHEMA:
            raise SystemExit(f"error: {path} is not a {SCHEMA} file (schema {doc.get('schema')!r})")
        doc["_path"] = shown
        docs.extend(split_by_arm(doc))
    return docs


def split_by_arm(doc: dict) -> list[dict]:
    """A file with --arm runs holds several setups: one document per arm, its settings as --env plus the
    arm's own, so that only runs of the same settings pool (files from before --arm have no arms)."""
    arms = (doc.get("settings") or {}).get("arms")
    if not arms:
        return [doc]
    parts = []
    for name, arm_env in arms.items():
        part = dict(doc, results=[r for r in doc.get("results", []) if r.get("arm", "default") == name])
        settings = dict(doc.get("settings") or {})
        settings["env_overrides"] = {**(settings.get("env_overrides") or {}), **arm_env}
        part["settings"] = settings
        parts.append(part)
    return parts


def setup_key(doc: dict) -> tuple:
    """(device, torch, tiny, settings): files with the same key are pooled cell by cell. Without a
    GRAD_ACCUM_STEPS override the micro-steps are named when the memory probe did not choose them (files
    from before the trainers' auto default ran 8; a CPU run too), so those never pool with auto ones."""
    env, settings = doc.get("environment", {}), doc.get("settings", {})
    overrides = dict(settings.get("env_overrides") or {})
    ok = [r for r in doc.get("results", []) if r.get("status") == "ok"]
    if "GRAD_ACCUM_STEPS" not in overrides and ok and not any(r.get("grad_accum_auto") for r in ok):
        overrides["GRAD_ACCUM_STEPS"] = ",".join(str(n) for n in sorted({r.get("grad_accum_steps") for r in ok}))
    flags = [speed_flags_on(r, overrides) for r in ok] or [speed_flags_on({}, overrides)]
    for name in FLAGS_ON_BY_DEFAULT:  # named when on, whether by default or by override; off is the old default
        overrides.pop(name, None)
        applies = [f[name] for f in flags if name in f]  # a hybrid-only flag: the hybrid's results decide
        if applies and all(applies):
            overrides[name] = "1"
    return (str(env.get("device_name", "?")), str(env.get("torch", "?")), bool(settings.get("tiny", False)),
            tuple(sorted(overrides.items())))


def speed_flags_on(record: dict, overrides: dict[str, str]) -> dict[str, bool]:
    """Each of FLAGS_ON_BY_DEFAULT that the record's model has, as it ran: as the result records it (files from
    2026-11-23 on), else as asked in the overrides, read by the trainers' own env_flag; not asked means off, the
    old default (GDN_KEEP_STATES: unrecorded before session 12, when it was off by default)."""
    env_flag = importlib.import_module(MODELS["baseline"]).env_flag
    recorded = record.get("speed_flags") or {}
    names = [n for n in FLAGS_ON_BY_DEFAULT if record.get("model") != "baseline" or n not in HYBRID_ONLY_FLAGS]
    return {name: bool(recorded[name]) if name in recorded else env_flag({name: overrides.get(name, "0")}, name, False)
            for name in names}


def share_baseline(groups: dict[tuple, list[dict]]) -> None:
    """A setup with hybrid-only flags on (HYBRID_ONLY_FLAGS) and no baseline result of its own takes the baseline
    results of the setup without those flags: the baseline runs the same code either way. The borrowed documents
    keep their path and are marked `_shared`, which the goals table leaves out (it lists them once)."""
    for key, group in groups.items():
        device_name, torch_version, tiny, overrides = key
        if not any(name in HYBRID_ONLY_FLAGS for name, _ in overrides):
            continue
        if any(r.get("model") == "baseline" for d in group for r in d.get("results", [])):
            continue
        without = (device_name, torch_version, tiny, tuple(kv for kv in overrides if kv[0] not in HYBRID_ONLY_FLAGS))
        for doc in groups.get(without, []):
            baseline = [r for r in doc.get("results", []) if r.get("model") == "baseline"]
            if baseline:
                group.append(dict(doc, results=baseline, _shared=True))


def settings_text(record: dict, overrides: dict[str, str]) -> str:
    """One arm's settings as they ran: the speed flags resolved (on ones named), then any other override."""
    flags = speed_flags_on(record, overrides)
    words = [f"{name}=1" for name in FLAGS_ON_BY_DEFAULT if flags.get(name)] or ["speed flags off"]
    words += [f"{k}={v}" for k, v in sorted(overrides.items()) if k not in FLAGS_ON_BY_DEFAULT]
    return " ".join(words)


# Issue 4's goals: our ms/step as a fraction of the published one, per model and context, at the same maths.
SPEED_GOALS = {"baseline": {8192: 0.6, 16384: 0.6, 32768: 0.65}, "hybrid": {8192: 0.5, 16384: 0.5, 32768: 0.5}}
GOALS_HEADER = ["settings", "model", "context", "ms/step (ours)", "published", "ours / published (min-max)", "goal",
                "met"]


def results_by_cell(group: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """The results of one setup's files by (model, context): what a table cell pools."""
    by = {}
    for r in (r for d in group for r in d.get("results", [])):
        by.setdefault((r.get("model"), int(r.get("context", 0))), []).append(r)
    return by


def goal_rows(groups: dict[tuple, list[dict]]) -> list[list[str]]:
    """Against SPEED_GOALS, for the setups at the same maths as published (no override but the exact speed flags):
    'yes' when every block is within the goal, 'no' when none is, else 'within the spread'."""
    rows = []
    for key in sorted(groups):
        device_name, _, tiny, overrides = key
        if tiny or any(name not in FLAGS_ON_BY_DEFAULT for name, _ in overrides):
            continue
        by = results_by_cell([d for d in groups[key] if not d.get("_shared")])
        setting_text = " ".join(f"{k}={v}" for k, v in overrides) or "speed flags off"
        for model in MODELS:
            for context, goal in sorted(SPEED_GOALS[model].items()):
                stats = pooled(by.get((model, context), []))
                if stats is None:
                    continue
                published = PUBLISHED_MS[model][context]
                low, mid, high = (stats[k] / published for k in ("min", "median", "max"))
                met = "yes" if high <= goal else "no" if low > goal else "within the spread"
                rows.append([f"{setting_text} ({device_name})", model, str(context), ms_cell(stats), f"{published:.0f}",
                             f"{mid:.2f} ({low:.2f}-{high:.2f})", f"{goal:.2f}", met])
    return rows


PAIRED_HEADER = ["device", "model", "context", "reference arm", "compared arm", "reference ms/step",
                 "compared ms/step", "compared / reference (paired blocks)", "compared / published", "source"]


def paired_rows(docs: list[dict]) -> list[list[str]]:
    """Every arm that ran against a reference arm in one process (bench --arm): both arms' ms/step and the
    paired ratio as the run computed it (median of block i / block i, min-max), one row per file, so the
    same comparison in two files gives two rows: the repeats."""
    arms = {}  # (file, model, context, arm) -> (record, the arm's overrides, its file's document)
    for doc in docs:
        if not (doc.get("settings") or {}).get("arms"):
            continue
        overrides = dict((doc.get("settings") or {}).get("env_overrides") or {})
        for r in doc.get("results", []):
            if r.get("status") == "ok":
                arms[(doc["_path"], r["model"], int(r["context"]), r.get("arm"))] = (r, overrides, doc)
    rows = []
    for (path, model, context, _), (r, overrides, doc) in arms.items():
        if "ratio_vs_reference" not in r or (path, model, context, r.get("reference_arm")) not in arms:
            continue
        ref, ref_overrides, _ = arms[(path, model, context, r["reference_arm"])]
        arm_stats = pooled([r])
        published = None if (doc.get("settings") or {}).get("tiny") else PUBLISHED_MS[model].get(context)
        rows.append([str((doc.get("environment") or {}).get("device_name", "?")), model, str(context),
                     settings_text(ref, ref_overrides), settings_text(r, overrides),
                     ms_cell(pooled([ref])), ms_cell(arm_stats),
                     f"{r['ratio_vs_reference']:.3f} ({r['ratio_vs_reference_min']:.3f}-{r['ratio_vs_reference_max']:.3f})",
                     f"{arm_stats['median'] / published:.2f}" if published else "-", f"`{path}`"])
    return sorted(rows, key=lambda row: (row[0], row[1], int(row[2]), row[3], row[4], row[9]))


def pooled(results: list[dict]) -> dict | None:
    """Median and range over the blocks of every ok run of one (model, context) in one setup."""
    blocks = [ms for r in results if r.get("status") == "ok" for ms in (r.get("block_ms_per_step") or [])]
    if not blocks:
        return None
    return {"median": statistics.median(blocks), "min": min(blocks), "max": max(blocks),
            "runs": sum(1 for r in results if r.get("status") == "ok"), "blocks": len(blocks)}


def ms_cell(stats: dict | None, failed: bool = False) -> str:
    if stats is None:
        return "failed" if failed else "-"
    runs = f", {stats['runs']} runs" if stats["runs"] > 1 else ""
    return f"{stats['median']:.1f} ({stats['min']:.1f}-{stats['max']:.1f}{runs})"


def compute_markdown(docs: list[dict], out_display: str) -> str:
    sources = list(dict.fromkeys(d["_path"] for d in docs))  # a file split by arm is listed once
    commands = list(dict.fromkeys(d.get("command", "(command not recorded)") for d in docs))
    published_first, published_last_slower, published_flips = crossover(
        {c: (PUBLISHED_MS["baseline"][c], PUBLISHED_MS["hybrid"][c])
         for c in PUBLISHED_MS["baseline"] if c in PUBLISHED_MS["hybrid"]})
    published_text = describe_crossover(published_first, published_last_slower, published_flips,
                                        sorted(PUBLISHED_MS["baseline"]))
    lines = [
        "# Compute experiment: step time by context, baseline vs hybrid (the crossover probe)",
        "",
        "<!-- Generated by scripts/bench_step_time.py --regenerate-compute-md from the JSON files listed below;",
        "     do not edit by hand. -->",
        "",
        "Question: at which context length does the Gated-DeltaNet hybrid (train_gpt_gdn.py) become faster per",
        "optimizer step than the full-attention baseline (train_gpt.py)? Published (one H100 SXM, 8 micro-steps): "
        f"{published_text}.",
        "",
        "## How to regenerate",
        "",
        "1. Measure (one GPU; each command writes one JSON of raw block times, commit it under "
        "`logs_experiment/bench/`). The commands that made the files used here:",
        "",
        "```bash",
        *commands,
        "```",
        "",
        "2. Rebuild this file from those JSON files alone (deterministic: same files, same bytes):",
        "",
        "```bash",
        shlex.join(["python3", "scripts/bench_step_time.py", "--regenerate-compute-md", *sources,
                    "--out-md", out_display]),
        "```",
        "",
        "Step time: each run times `repeats` blocks of `steps` optimizer steps after an untimed warm-up; a cell "
        "is the median ms/step over all blocks of all runs of that setup (min-max over blocks in brackets). "
        "Published ms/step: the long-context study's logs, one H100 SXM, 8 micro-steps. "
        "Published batch: 393,216 tokens per step up to 16,384, 524,288 at 32,768.",
        "",
    ]
    groups: dict[tuple, list[dict]] = {}
    for doc in docs:
        groups.setdefault(setup_key(doc), []).append(doc)
    share_baseline(groups)
    for key in sorted(groups):
        group = groups[key]
        device_name, torch_version, tiny, overrides = key
        by = results_by_cell(group)
        results = [r for cell in by.values() for r in cell]
        contexts = sorted({c for (_, c) in by} | (set() if tiny else set(PUBLISHED_MS["baseline"])))
        details = sorted({f"{r.get('model')}: sdpa {r.get('sdpa_backend')}, compile {r.get('compile')}, "
                          f"micro-steps {r.get('grad_accum_steps')}" for r in results if r.get("status") == "ok"})
        setting_text = (" ".join(f"{k}={v}" for k, v in overrides)
                        or "auto micro-steps, speed flags off (the trainer defaults until 2026-11-23)")
        lines += [
            f"## {device_name}, torch {torch_version}, settings: {setting_text}" + (" (tiny model)" if tiny else ""),
            "",
            "Sources: " + ", ".join(f"`{d['_path']}`" + (" (its baseline)" if d.get("_shared") else "")
                                    for d in group) + ".",
            "Kernels: " + ("; ".join(details) if details else "none measured") + ".",
            "",
        ]
        header = ["context", "batch tokens", "baseline ms/step (ours)", "baseline published",
                  "hybrid ms/step (ours)", "hybrid published", "hybrid/baseline (ours)",
                  "hybrid/baseline (published)", "faster per step (ours)", "faster (published)"]
        rows, ours_pairs = [], {}
        for c in contexts:
            stats = {m: pooled(by.get((m, c), [])) for m in MODELS}
            failed = {m: any(r.get("status") != "ok" for r in by.get((m, c), [])) for m in MODELS}
            batches = sorted({r.get("batch_tokens") for m in MODELS for r in by.get((m, c), [])
                              if r.get("batch_tokens")})
            pub = {m: (None if tiny else PUBLISHED_MS[m].get(c)) for m in MODELS}
            b, hy = stats["baseline"], stats["hybrid"]
            ours_ratio = ours_faster = "-"
            if b and hy:
                ours_pairs[c] = (b["median"], hy["median"])
                ours_ratio = f"{hy['median'] / b['median']:.2f}"
                ours_faster = "hybrid" if hy["median"] < b["median"] else "baseline"
                if hy["min"] <= b["max"] and b["min"] <= hy["max"]:
                    ours_faster += " (ranges overlap)"
            pub_ratio = pub_faster = "-"
            if pub["baseline"] and pub["hybrid"]:
                pub_ratio = f"{pub['hybrid'] / pub['baseline']:.2f}"
                pub_faster = "hybrid" if pub["hybrid"] < pub["baseline"] else "baseline"
            if not batches and not tiny:
                batches = [published_batch_tokens(c)]
            rows.append([str(c), ", ".join(f"{bt:,}" for bt in batches) or "-",
                         ms_cell(b, failed["baseline"]), fmt(pub["baseline"], ".0f"),
                         ms_cell(hy, failed["hybrid"]), fmt(pub["hybrid"], ".0f"),
                         ours_ratio, pub_ratio, ours_faster, pub_faster])
        first, last_slower, flips = crossover(ours_pairs)
        ours_text = describe_crossover(first, last_slower, flips, sorted(ours_pairs))
        if tiny:
            verdict = "Tiny-model run: a code-path check, not comparable with the published numbers."
        elif not ours_pairs:
            verdict = "No context has both models measured: no crossover can be read."
        elif not all((hyb < base) == (published_first is not None and c >= published_first)
                     for c, (base, hyb) in ours_pairs.items()):  # a context where the other model is faster
            ours_at = "never within the measured contexts" if first is None else f"from {first} on"
            verdict = (f"Ours differs from the published crossover: hybrid faster per step {ours_at}, "
                       f"published from {published_first} on.")
        elif first == published_first and last_slower is not None:
            verdict = f"Ours agrees with the published crossover: the hybrid is faster per step from {first} on."
        else:  # the same faster model at every context measured, but no measured context on one side of it
            verdict = (f"Ours is consistent with the published crossover (from {published_first} on) at every "
                       f"context measured ({', '.join(map(str, sorted(ours_pairs)))}); these do not place it.")
        lines += [
            md_table(header, rows),
            "",
            f"Crossover (ours): {ours_text}.",
            f"Crossover (published): {published_text}.",
            "",
            f"**{verdict}**",
            "",
        ]
    goals = goal_rows(groups)
    if goals:
        lines += [
            "## Against the speed goals (issue 4)",
            "",
            "The goals at the same maths as the published runs: baseline <= 0.6x the published ms/step at 8k and "
            "16k and <= 0.65x at 32k, hybrid <= 0.5x at each. Setups above with no setting but the exact speed "
            "flags; ratios from the median and the min-max over blocks.",
            "",
            md_table(GOALS_HEADER, goals),
            "",
        ]
    paired = paired_rows(docs)
    if paired:
        lines += [
            "## Arms of one process: paired ratios",
            "",
            "Files made with `--arm` time every arm in one process, blocks round-robin; the ratio is the median of "
            "block i of the compared arm over block i of the reference arm (min-max over the pairs), which "
            "leaves out the few per cent two processes of one configuration can differ by. Arms are named by "
            "the settings they ran with (the speed flags as resolved). One row per file: the same comparison "
            "in two files is two repeats.",
            "",
            md_table(PAIRED_HEADER, paired),
            "",
        ]
    return "\n".join(lines).rstrip("\n") + "\n"


def regenerate_compute_md(json_paths: list[str], out_path: str | None) -> int:
    paths = [Path(p) for p in json_paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"error: no such results file: {', '.join(missing)}")
    out = Path(out_path) if out_path else REPO_ROOT / "compute_experiment.md"
    text = compute_markdown(load_results(paths), display_path(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(text.encode("utf-8"))
    print(f"wrote {out}")
    return 0


# -----------------------------
# CLI
# -----------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Step time of train_gpt.py / train_gpt_gdn.py by context length.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("Usage:")[0])
    p.add_argument("--models", default="baseline,hybrid", help="comma-separated: baseline, hybrid")
    p.add_argument("--contexts", type=parse_int_list, default=None,
                   help="comma-separated context lengths (default 4096,8192,16384,32768; tiny: 64,128)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile, autotune)")
    p.add_argument("--steps", type=int, default=10, help="optimizer steps per timed block")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks")
    p.add_argument("--env", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="trainer settings on top of the defaults, e.g. SDPA_BACKEND=flash COMPILE=0")
    p.add_argument("--arm", type=parse_arm, action="append", metavar="NAME:KEY=VALUE[,KEY=VALUE...]",
                   help="one arm per flag (NAME: alone = the defaults), on top of --env; every arm of a configuration "
                        "runs in this one process, its timed blocks round-robin with the other arms', and each arm "
                        "is compared with the first one block by block")
    p.add_argument("--profile-steps", type=int, default=0,
                   help="after timing, this many more steps under torch.profiler: kernel time by category and "
                        "the top kernels (CPU: operators), printed and in the JSON")
    p.add_argument("--profile-trace-dir", help="with --profile-steps: also write each configuration's timeline "
                                               "there as trace_<model>_<context>.json.gz (Chrome trace format)")
    p.add_argument("--out-json", help="write every result, raw block times included, as JSON")
    p.add_argument("--out-md", help="write the Markdown table (with --regenerate-compute-md: the output path, "
                                    "default compute_experiment.md at the repository root)")
    p.add_argument("--tiny", action="store_true", help="tiny model and contexts: a CPU check of the code paths")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when available (CPU with --tiny)")
    p.add_argument("--regenerate-compute-md", nargs="+", metavar="RESULTS.json",
                   help="write compute_experiment.md from these JSON files only, then exit")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.regenerate_compute_md:
        return regenerate_compute_md(args.regenerate_compute_md, args.out_md)
    return run_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
