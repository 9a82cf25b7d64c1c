"""
train_gpt_gdn.py: the Parameter Golf hybrid for long-context runs: Gated DeltaNet + full attention.

The baseline's GPT with Gated DeltaNet mixers in blocks GDN_LAYERS (default 0,1,2,4,5,6,8; 3 and 7 attend) at
MODEL_DIM 448, the baseline's parameter count; on CUDA with fla-core 0.6.0 the GDN layers run fla's kernels.

Trained with Muon + Adam under a wall-clock budget, then scored by val_bpb after an int8 round trip of the
weights (the smaller of zlib and lzma ships). Configured by environment variables only (Hyperparameters);
launched with `torchrun --standalone --nproc_per_node=N <this file>` or `python3 <this file>`; with `--check`
it only checks the settings and inputs. train_gpt.py and train_gpt_gdn.py keep one skeleton: their diff is
the mixer and what it needs.
"""

from __future__ import annotations

import copy
import glob
import hashlib
import io
import json
import lzma
import math
import os
import platform
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

# -----------------------------
# HYPERPARAMETERS
# -----------------------------


class ConfigError(ValueError):
    """A bad setting or input file, found before training starts; the message names the fix."""


def env_value(env: dict, name: str, default, cast):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return cast(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {cast.__name__} (default {default!r})") from None


def env_flag(env: dict, name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
        return default if raw == "" else raw in ("1", "true", "yes", "on")
    raise ConfigError(f"{name}={raw!r} must be 0 or 1")


SDPA_BACKENDS = ("auto", "cudnn", "flash", "efficient", "math")


def require(checks: list[tuple[bool, str]]) -> None:
    """Raise ConfigError with the message of the first failed (ok, message) check."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


class Hyperparameters:
    """Every setting of a run, read once from the environment (the competition's variable names)."""

    def __init__(self, env: dict | None = None):
        env = dict(os.environ if env is None else env)
        # Data and run identity.
        self.data_path = env_value(env, "DATA_PATH", "./data/datasets/fineweb10B_sp1024", str)
        self.train_files = os.path.join(self.data_path, "fineweb_train_*.bin")
        self.val_files = os.path.join(self.data_path, "fineweb_val_*.bin")
        self.tokenizer_path = env_value(env, "TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model", str)
        self.run_id = env_value(env, "RUN_ID", time.strftime("%Y%m%d_%H%M%S") + "_" + uuid.uuid4().hex[:8], str)
        self.log_dir = env_value(env, "LOG_DIR", "logs", str)
        self.artifact_dir = env_value(env, "ARTIFACT_DIR", "artifacts", str)
        self.seed = env_value(env, "SEED", 1337, int)
        # Evaluation and logging cadence.
        self.val_batch_size = env_value(env, "VAL_BATCH_SIZE", 524_288, int)
        self.val_loss_every = env_value(env, "VAL_LOSS_EVERY", 1000, int)
        self.train_log_every = env_value(env, "TRAIN_LOG_EVERY", 200, int)
        # Length of training and schedules.
        self.iterations = env_value(env, "ITERATIONS", 20_000, int)
        self.warmup_steps = env_value(env, "WARMUP_STEPS", 20, int)  # compile warm-up, undone before the clock starts
        self.warmdown_iters = env_value(env, "WARMDOWN_ITERS", 1200, int)
        # WARMDOWN_FRAC > 0 replaces WARMDOWN_ITERS: a fraction of the budget, not step counts computed by hand.
        self.warmdown_frac = env_value(env, "WARMDOWN_FRAC", 0.0, float)
        self.train_batch_tokens = env_value(env, "TRAIN_BATCH_TOKENS", 524_288, int)
        self.train_seq_len = env_value(env, "TRAIN_SEQ_LEN", 1024, int)
        # 0 = auto: on CUDA the fewest micro-steps that fit memory (choose_grad_accum_steps); else 8 // world size.
        self.grad_accum_steps = env_value(env, "GRAD_ACCUM_STEPS", 0, int)
        self.grad_accum_memory_fraction = env_value(env, "GRAD_ACCUM_MEMORY_FRACTION", 0.8, float)
        self.max_wallclock_seconds = env_value(env, "MAX_WALLCLOCK_SECONDS", 600.0, float)
        # Model shape.
        self.vocab_size = env_value(env, "VOCAB_SIZE", 1024, int)
        self.num_layers = env_value(env, "NUM_LAYERS", 9, int)
        self.model_dim = env_value(env, "MODEL_DIM", 448, int)
        self.num_heads = env_value(env, "NUM_HEADS", 8, int)
        self.num_kv_heads = env_value(env, "NUM_KV_HEADS", 4, int)
        self.mlp_mult = env_value(env, "MLP_MULT", 2, int)
        self.rope_base = env_value(env, "ROPE_BASE", 10000.0, float)
        self.logit_softcap = env_value(env, "LOGIT_SOFTCAP", 30.0, float)
        self.qk_gain_init = env_value(env, "QK_GAIN_INIT", 1.5, float)
        self.tied_embed_init_std = env_value(env, "TIED_EMBED_INIT_STD", 0.005, float)
        # Optimizers.
        self.tied_embed_lr = env_value(env, "TIED_EMBED_LR", 0.05, float)
        self.matrix_lr = env_value(env, "MATRIX_LR", 0.04, float)
        self.scalar_lr = env_value(env, "SCALAR_LR", 0.04, float)
        self.muon_momentum = env_value(env, "MUON_MOMENTUM", 0.95, float)
        self.muon_backend_steps = env_value(env, "MUON_BACKEND_STEPS", 5, int)
        self.muon_momentum_warmup_start = env_value(env, "MUON_MOMENTUM_WARMUP_START", 0.85, float)
        self.muon_momentum_warmup_steps = env_value(env, "MUON_MOMENTUM_WARMUP_STEPS", 500, int)
        # MUON_MOMENTUM_WARMUP_FRAC > 0 replaces the step count with a fraction of the budget.
        self.muon_momentum_warmup_frac = env_value(env, "MUON_MOMENTUM_WARMUP_FRAC", 0.0, float)
        self.beta1 = env_value(env, "BETA1", 0.9, float)
        self.beta2 = env_value(env, "BETA2", 0.95, float)
        self.adam_eps = env_value(env, "ADAM_EPS", 1e-8, float)
        self.grad_clip_norm = env_value(env, "GRAD_CLIP_NORM", 0.0, float)
        # Kernels.
        self.compile = env_flag(env, "COMPILE", True)  # only takes effect on CUDA
        self.sdpa_backend = env_value(env, "SDPA_BACKEND", "auto", str).lower()
        # Published numerics: rotary positions in bf16, as the published trainers' model.bfloat16() left them.
        self.rotary_positions_bf16 = env_flag(env, "ROTARY_POSITIONS_BF16", False)
        # Gated DeltaNet mixer.
        self.gdn_layers = env_int_list(env, "GDN_LAYERS", [0, 1, 2, 4, 5, 6, 8])
        self.gdn_head_dim_ratio = env_value(env, "GDN_HEAD_DIM_RATIO", 0.75, float)  # key head dim / attention head dim
        self.gdn_expand_v = env_value(env, "GDN_EXPAND_V", 2.0, float)  # value head dim / key head dim
        self.gdn_conv_size = env_value(env, "GDN_CONV_SIZE", 4, int)
        self.gdn_heads = env_value(env, "GDN_HEADS", 0, int)  # shape variants, e.g. 4 heads of key dim 64; 0 = derived
        self.gdn_key_dim = env_value(env, "GDN_KEY_DIM", 0, int)
        self.gdn_backend = env_value(env, "GDN_BACKEND", "auto", str).lower()
        # Published numerics: GDN conv weights kept in bf16 and updated by Adam in bf16 (no fp32 master copy).
        self.gdn_conv_bf16 = env_flag(env, "GDN_CONV_BF16", False)

    def resolve(self, world_size: int) -> None:
        """Fill derived values and check everything that can be checked without reading data."""
        self.grad_accum_requested = self.grad_accum_steps
        if self.grad_accum_steps == 0:
            self.grad_accum_steps = max(1, 8 // world_size)  # auto starts here; a CUDA probe may lower it
        # Counts first: the checks after them divide by these.
        require([
            (self.num_layers >= 1, f"NUM_LAYERS={self.num_layers} must be >= 1"),
            (self.num_heads >= 1 and self.num_kv_heads >= 1,
             f"NUM_HEADS={self.num_heads} and NUM_KV_HEADS={self.num_kv_heads} must be >= 1"),
            (self.train_seq_len >= 1, f"TRAIN_SEQ_LEN={self.train_seq_len} must be >= 1"),
            (self.grad_accum_steps >= 1, f"GRAD_ACCUM_STEPS={self.grad_accum_steps} must be >= 0 (0 = auto)"),
        ])
        micro_tokens = world_size * self.grad_accum_steps * self.train_seq_len
        require([
            (self.model_dim % self.num_heads == 0,
             f"MODEL_DIM={self.model_dim} must be divisible by NUM_HEADS={self.num_heads}"),
            (self.num_heads % self.num_kv_heads == 0,
             f"NUM_HEADS={self.num_heads} must be divisible by NUM_KV_HEADS={self.num_kv_heads}"),
            ((self.model_dim // self.num_heads) % 2 == 0,
             f"head dim MODEL_DIM/NUM_HEADS={self.model_dim // self.num_heads} must be even for RoPE"),
            (self.mlp_mult >= 1, f"MLP_MULT={self.mlp_mult} must be >= 1"),
            (2 <= self.vocab_size <= 65_536, f"VOCAB_SIZE={self.vocab_size} must fit uint16 tokens (2..65536)"),
            (0.05 <= self.grad_accum_memory_fraction <= 1.0,
             f"GRAD_ACCUM_MEMORY_FRACTION={self.grad_accum_memory_fraction} must be in [0.05, 1]"),
            (self.iterations >= 0 and self.warmup_steps >= 0, "ITERATIONS and WARMUP_STEPS must be >= 0"),
            (self.max_wallclock_seconds >= 0, "MAX_WALLCLOCK_SECONDS must be >= 0 (0 disables the cap)"),
            (0.0 <= self.warmdown_frac <= 1.0, f"WARMDOWN_FRAC={self.warmdown_frac} must be in [0, 1]"),
            (0.0 <= self.muon_momentum_warmup_frac <= 1.0,
             f"MUON_MOMENTUM_WARMUP_FRAC={self.muon_momentum_warmup_frac} must be in [0, 1]"),
            (self.sdpa_backend in SDPA_BACKENDS, f"SDPA_BACKEND={self.sdpa_backend!r} must be one of {SDPA_BACKENDS}"),
            ("/" not in self.run_id and self.run_id not in ("", ".", ".."),
             f"RUN_ID={self.run_id!r} must be a plain file name"),
            (self.train_batch_tokens > 0 and self.train_batch_tokens % micro_tokens == 0,
             f"TRAIN_BATCH_TOKENS={self.train_batch_tokens} must split into whole sequences per micro-step: "
             f"a multiple of world_size({world_size}) x GRAD_ACCUM_STEPS({self.grad_accum_steps}) x "
             f"TRAIN_SEQ_LEN({self.train_seq_len}) = {micro_tokens}"),
            (self.val_batch_size >= micro_tokens,
             f"VAL_BATCH_SIZE={self.val_batch_size} must hold one sequence per micro-step (>= {micro_tokens})"),
        ])
        require(mixer_config_checks(self))

    def as_log_lines(self) -> list[str]:
        return [f"config {name}:{value!r}" for name, value in sorted(vars(self).items())]


# -----------------------------
# MUON OPTIMIZER
# -----------------------------


def zeropower_via_newtonschulz5(grad: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """Approximately orthogonalise a matrix (U V^T of its SVD) with a quintic Newton-Schulz iteration in bf16.
    grad: (rows, cols), or (n, rows, cols) for n matrices of one shape, each orthogonalised on its own."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    x = grad.bfloat16()
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)  # Frobenius norm of each matrix
    transposed = grad.size(-2) > grad.size(-1)
    if transposed:
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT  # (..., short, short)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if transposed else x


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose 2-D updates are orthogonalised; ranks split the work, then share it.
    Foreach momentum, and Newton-Schulz once per shape on the stacked matrices: per-matrix maths, few launches."""

    def __init__(self, params, lr: float, momentum: float, backend_steps: int, nesterov: bool = True):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        distributed = dist.is_available() and dist.is_initialized()
        world_size = dist.get_world_size() if distributed else 1
        rank = dist.get_rank() if distributed else 0
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            offsets = np.cumsum([0] + [p.numel() for p in params]).tolist()
            updates_flat = torch.zeros(offsets[-1], device=params[0].device, dtype=torch.bfloat16)
            # This rank orthogonalises every world_size-th matrix; the all-reduce shares the results.
            mine = [i for i, p in enumerate(params) if i % world_size == rank and p.grad is not None]
            for i, update in zip(mine, self._updates(group, [params[i] for i in mine])):
                update = update * max(1.0, update.size(0) / update.size(1)) ** 0.5  # same RMS, tall or wide
                updates_flat[offsets[i] : offsets[i + 1]] = update.reshape(-1)
            if distributed:
                dist.all_reduce(updates_flat, op=dist.ReduceOp.SUM)
            flat = updates_flat.to(params[0].dtype)
            torch._foreach_add_(params, [flat[offsets[i] : offsets[i + 1]].view_as(p) for i, p in enumerate(params)],
                                alpha=-group["lr"])

    def _updates(self, group: dict, params: list[Tensor]) -> list[Tensor]:
        """Nesterov momentum, then Newton-Schulz: one orthogonalised update per parameter, in order."""
        if not params:  # foreach ops refuse empty lists (a rank with no matrix, or no gradient, this step)
            return []
        grads = [p.grad for p in params]
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad)
        bufs = [self.state[p]["momentum_buffer"] for p in params]
        torch._foreach_mul_(bufs, group["momentum"])
        torch._foreach_add_(bufs, grads)
        gs = torch._foreach_add(grads, bufs, alpha=group["momentum"]) if group["nesterov"] else bufs
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for k, g in enumerate(gs):
            by_shape.setdefault(tuple(g.shape), []).append(k)
        updates: list[Tensor] = [None] * len(gs)  # type: ignore[list-item]
        for ks in by_shape.values():
            stacked = zeropower_via_newtonschulz5(torch.stack([gs[k] for k in ks]), steps=group["backend_steps"])
            for k, update in zip(ks, stacked.unbind(0)):
                updates[k] = update
        return updates


# -----------------------------
# TOKENIZER-AGNOSTIC EVALUATION
# -----------------------------


def build_sentencepiece_luts(sp: spm.SentencePieceProcessor, vocab_size: int, device: torch.device):
    """Per-token UTF-8 byte counts, so val_bpb does not depend on the tokenizer. A leading '▁' is one space
    byte, counted only after a non-boundary token (no space is printed after BOS), and not also in base_bytes."""
    table_size = max(int(sp.vocab_size()), vocab_size)
    base_bytes = np.zeros(table_size, dtype=np.int16)
    has_leading_space = np.zeros(table_size, dtype=np.bool_)
    is_boundary = np.ones(table_size, dtype=np.bool_)
    for token_id in range(int(sp.vocab_size())):
        if sp.is_control(token_id) or sp.is_unknown(token_id) or sp.is_unused(token_id):
            continue
        is_boundary[token_id] = False
        if sp.is_byte(token_id):
            base_bytes[token_id] = 1
            continue
        piece = sp.id_to_piece(token_id)
        if piece.startswith("\u2581"):
            has_leading_space[token_id] = True
            piece = piece[1:]
        base_bytes[token_id] = len(piece.encode("utf-8"))
    return tuple(torch.tensor(table, device=device) for table in (base_bytes, has_leading_space, is_boundary))


def count_target_bytes(prev_ids: Tensor, target_ids: Tensor, luts) -> Tensor:
    """UTF-8 bytes that the target tokens decode to, given the token before each one."""
    base_bytes, has_leading_space, is_boundary = luts
    return base_bytes[target_ids].to(torch.int64) + (has_leading_space[target_ids] & ~is_boundary[prev_ids]).long()


def eval_val(h: Hyperparameters, model: nn.Module, rank: int, world_size: int, device: torch.device,
             val_tokens: Tensor, luts, autocast_enabled: bool) -> tuple[float, float]:
    """Mean loss and bits per byte over the whole validation split, split by sequences across ranks."""
    seq_len = h.train_seq_len
    local_batch_seqs = max(1, h.val_batch_size // (world_size * h.grad_accum_steps * seq_len))
    total_seqs = (val_tokens.numel() - 1) // seq_len
    seq_start, seq_end = total_seqs * rank // world_size, total_seqs * (rank + 1) // world_size
    loss_sum, token_count, byte_count = (torch.zeros((), device=device, dtype=torch.float64) for _ in range(3))
    model.eval()
    # no_grad, not inference_mode: the rotary tables cached here are reused in training, where inference tensors
    # cannot be saved for backward (WARMUP_STEPS=0 evaluates step 0 first).
    with torch.no_grad():
        for batch_start in range(seq_start, seq_end, local_batch_seqs):
            batch_end = min(batch_start + local_batch_seqs, seq_end)
            chunk = val_tokens[batch_start * seq_len : batch_end * seq_len + 1].to(device=device, dtype=torch.int64)
            x, y = chunk[:-1].reshape(-1, seq_len), chunk[1:].reshape(-1, seq_len)  # [batch, seq_len] each
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast_enabled):
                batch_loss = model(x, y).detach()
            n = float(y.numel())
            loss_sum += batch_loss.to(torch.float64) * n
            token_count += n
            byte_count += count_target_bytes(x.reshape(-1), y.reshape(-1), luts).sum().to(torch.float64)
    if dist.is_available() and dist.is_initialized():
        for t in (loss_sum, token_count, byte_count):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    model.train()
    val_loss = (loss_sum / token_count).item()
    return val_loss, val_loss / math.log(2.0) * token_count.item() / byte_count.item()  # bits/token x tokens/byte


# -----------------------------
# POST-TRAINING QUANTIZATION
# -----------------------------

CONTROL_TENSOR_NAME_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weights")
INT8_KEEP_FLOAT_MAX_NUMEL = 65_536  # small tensors cost little and are stored as floats
INT8_CLIP_QUANTILE = 0.9999984  # per-row clip before scaling, so one outlier does not set the step
INT8_LEVELS = (127, 121, 116, 111, 106, 101, 96, 91, 87, 83)  # q in [-levels, levels]: the first that fits
SUBMISSION_BYTE_LIMIT = 16_000_000


def keeps_fp32(name: str) -> bool:
    return any(pattern in name for pattern in CONTROL_TENSOR_NAME_PATTERNS + MIXER_FP32_NAME_PATTERNS)


def quantize_tensor_int8(t: Tensor, levels: int = 127) -> tuple[Tensor, Tensor]:
    """Symmetric int8 in [-levels, levels]: per row for matrices (scale [rows]), one scale otherwise."""
    t32 = t.float()
    if t32.ndim == 2:
        clip = torch.quantile(t32.abs(), INT8_CLIP_QUANTILE, dim=1) if t32.numel() else t32.new_zeros(t32.shape[0])
        # Quantise with the fp16 scale that is stored, so dequantising is off by at most half a step.
        scale = (clip / levels).clamp_min(1.0 / levels).to(torch.float16)
        clipped = torch.maximum(torch.minimum(t32, clip[:, None]), -clip[:, None])
        q = torch.clamp(torch.round(clipped / scale.float()[:, None]), -levels, levels).to(torch.int8)
        return q.contiguous(), scale.contiguous()
    clip = float(torch.quantile(t32.abs().flatten(), INT8_CLIP_QUANTILE)) if t32.numel() else 0.0
    scale = torch.tensor(clip / levels if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip, clip) / scale), -levels, levels).to(torch.int8)
    return q.contiguous(), scale


def quantize_state_dict_int8(state_dict: dict[str, Tensor], levels: int = 127) -> dict:
    quantized, scales, dtypes, passthrough = {}, {}, {}, {}
    for name, tensor in state_dict.items():
        t = tensor.detach().cpu().contiguous()
        if not t.is_floating_point():
            passthrough[name] = t
            continue
        dtypes[name] = str(t.dtype).removeprefix("torch.")
        if t.numel() <= INT8_KEEP_FLOAT_MAX_NUMEL:
            passthrough[name] = t.float() if keeps_fp32(name) else t.to(torch.float16)
        else:
            quantized[name], scales[name] = quantize_tensor_int8(t, levels)
    return {"format": "int8_per_row_v1", "quantized": quantized, "scales": scales, "dtypes": dtypes,
            "passthrough": passthrough}


def dequantize_state_dict_int8(obj: dict) -> dict[str, Tensor]:
    out = {}
    for name, q in obj["quantized"].items():
        scale = obj["scales"][name].float()
        values = q.float() * (scale[:, None] if q.ndim == 2 else scale)
        out[name] = values.to(getattr(torch, obj["dtypes"][name]))
    for name, t in obj["passthrough"].items():
        out[name] = t.to(getattr(torch, obj["dtypes"][name])) if name in obj["dtypes"] else t
    return out


# The limit counts bytes whatever the lossless format: both standard-library compressors run and the smaller ships
# (the competition's baseline used zlib-9). The score cannot depend on it: both give back the same int8 payload.
LZMA_MAGIC = b"\xfd7zXZ\x00"


def compress_int8(state_dict: dict[str, Tensor], levels: int = 127) -> dict[str, bytes]:
    """The int8 payload compressed each way: {"zlib9": ..., "lzma": ...}."""
    buffer = io.BytesIO()
    torch.save(quantize_state_dict_int8(state_dict, levels), buffer)
    raw = buffer.getvalue()
    return {"zlib9": zlib.compress(raw, level=9), "lzma": lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)}


def fit_artifact(state_dict: dict[str, Tensor], code_bytes: int, log, limit: int = SUBMISSION_BYTE_LIMIT):
    """(blob, format, levels): the smaller format at 127 levels, else at the first coarser step (~4% each, ~0.06 bit
    less per weight; no lossless format is 1% below zlib on int8 weights) where model + code fits, else the last."""
    for levels in INT8_LEVELS:
        blobs = compress_int8(state_dict, levels)
        chosen = min(blobs, key=lambda name: len(blobs[name]))
        log(f"artifact_sizes: zlib9:{len(blobs['zlib9'])} lzma:{len(blobs['lzma'])} chosen:{chosen} int8_levels:{levels}")
        if len(blobs[chosen]) + code_bytes <= limit:
            break
    return blobs[chosen], chosen, levels


def decompress_int8(blob: bytes) -> dict[str, Tensor]:
    raw = lzma.decompress(blob) if blob.startswith(LZMA_MAGIC) else zlib.decompress(blob)
    return dequantize_state_dict_int8(torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True))


# -----------------------------
# DATA LOADING
# -----------------------------

SHARD_MAGIC, SHARD_VERSION, SHARD_HEADER_INTS = 20240520, 1, 256


def read_shard_header(path: Path) -> int:
    """Token count of a shard, after checking its magic, version and size."""
    header_bytes = SHARD_HEADER_INTS * 4
    size = path.stat().st_size
    if size < header_bytes:
        raise ConfigError(f"shard {path}: {size} bytes is shorter than the {header_bytes}-byte header; "
                          f"rebuild it with data/prepare_local.py or download it again")
    header = np.fromfile(path, dtype="<i4", count=SHARD_HEADER_INTS)
    if int(header[0]) != SHARD_MAGIC or int(header[1]) != SHARD_VERSION:
        raise ConfigError(f"shard {path}: header magic/version {int(header[0])}/{int(header[1])}, expected "
                          f"{SHARD_MAGIC}/{SHARD_VERSION}: not a shard of this format")
    num_tokens = int(header[2])
    if num_tokens < 0 or size != header_bytes + 2 * num_tokens:
        raise ConfigError(f"shard {path}: {size} bytes, but its header says {num_tokens} tokens "
                          f"({header_bytes + 2 * num_tokens} bytes): the file is truncated or corrupt")
    return num_tokens


def load_data_shard(path: Path) -> Tensor:
    tokens = np.fromfile(path, dtype="<u2", count=read_shard_header(path), offset=SHARD_HEADER_INTS * 4)
    return torch.from_numpy(tokens.astype(np.uint16, copy=False))


def find_shards(pattern: str, what: str) -> list[Path]:
    files = [Path(p) for p in sorted(glob.glob(pattern))]
    if not files:
        raise ConfigError(f"no {what} shards match {pattern}: set DATA_PATH to a folder of fineweb_train/val_*.bin "
                          f"(data/cached_challenge_fineweb.py downloads them, data/prepare_local.py builds them)")
    return files


def load_validation_tokens(pattern: str, seq_len: int) -> Tensor:
    tokens = torch.cat([load_data_shard(f) for f in find_shards(pattern, "validation")])
    usable = ((tokens.numel() - 1) // seq_len) * seq_len
    if usable <= 0:
        raise ConfigError(f"the validation split ({tokens.numel()} tokens) is shorter than one sequence of "
                          f"TRAIN_SEQ_LEN={seq_len} + 1: use a shorter context or a larger validation split")
    return tokens[: usable + 1]


class TokenStream:
    """Reads the training shards in order, wrapping around at the end; counts tokens for epochs."""

    def __init__(self, files: list[Path]):
        self.files, self.file_idx, self.pos, self.tokens_taken = files, 0, 0, 0
        self.tokens = load_data_shard(files[0])

    def take(self, n: int) -> Tensor:
        chunks, remaining = [], n
        while remaining > 0:
            if self.pos >= self.tokens.numel():  # next file, wrapping around
                self.file_idx = (self.file_idx + 1) % len(self.files)
                self.tokens, self.pos = load_data_shard(self.files[self.file_idx]), 0
                continue
            k = min(remaining, self.tokens.numel() - self.pos)
            chunks.append(self.tokens[self.pos : self.pos + k])
            self.pos, remaining = self.pos + k, remaining - k
        self.tokens_taken += n
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


class DistributedTokenLoader:
    """Each call takes one micro-step's tokens for all ranks from the stream; each rank keeps its span."""

    def __init__(self, files: list[Path], rank: int, world_size: int, device: torch.device):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.stream = TokenStream(files)

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[Tensor, Tensor]:
        span = global_tokens // (self.world_size * grad_accum_steps) + 1  # one extra token for the shifted targets
        chunk = self.stream.take(span * self.world_size)
        local = chunk[self.rank * span : (self.rank + 1) * span].to(dtype=torch.int64)
        x, y = local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)  # [sequences, seq_len] each
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


# -----------------------------
# TRANSFORMER MODULES
# -----------------------------


class CastedLinear(nn.Linear):
    """Linear layer whose fp32 master weight is cast to the activation dtype at use."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype) if self.bias is not None else None)


def fused_linear(x: Tensor, layers: list[CastedLinear]) -> Tensor:
    """x through several bias-free CastedLinears in one matmul (narrow ones use the GPU poorly one at a time):
    their outputs side by side. The weights stack at each call, so the parameters stay separate."""
    weight = torch.cat([layer.weight for layer in layers]).to(x.dtype)  # [sum of out_features, in_features]
    return F.linear(x, weight)  # [..., sum of out_features]


class RMSNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.size(-1),))


class Rotary(nn.Module):
    """cos/sin tables for one sequence length, rebuilt on a new length or device; fp32, computed here rather than
    kept in a buffer that model.bfloat16() would round. published_bf16 (ROTARY_POSITIONS_BF16) does what that rounding
    did in the published trainers: bf16 inverse frequencies, positions (exact up to 256: ~1,150 distinct at 32k),
    products and cos/sin."""

    def __init__(self, dim: int, base: float = 10000.0, published_bf16: bool = False):
        super().__init__()
        self.dim, self.base, self.published_bf16 = dim, base, published_bf16
        self._cached_len, self._cos, self._sin = 0, None, None

    def forward(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        if self._cos is None or self._cached_len != seq_len or self._cos.device != device:
            table_dtype = torch.bfloat16 if self.published_bf16 else torch.float32
            inv_freq = 1.0 / (self.base ** (torch.arange(0, self.dim, 2, dtype=torch.float32, device=device) / self.dim))
            positions = torch.arange(seq_len, device=device, dtype=table_dtype)
            freqs = torch.outer(positions, inv_freq.to(table_dtype))  # [seq_len, dim/2]
            self._cos, self._sin = freqs.cos()[None, None], freqs.sin()[None, None]
            self._cached_len = seq_len
        return self._cos.to(dtype), self._sin.to(dtype)


def apply_rotary_emb(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)  # the two halves of each head
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    """Causal GQA attention with RoPE and QK-norm. expand_kv: repeat the KV heads for an SDPA backend
    that cannot take grouped heads itself (choose_sdpa_backend finds out)."""

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, rope_base: float, qk_gain_init: float,
                 expand_kv: bool = False, rotary_positions_bf16: bool = False):
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        self.kv_dim = num_kv_heads * self.head_dim
        self.expand_kv = expand_kv and num_kv_heads != num_heads
        self.c_q = CastedLinear(dim, dim, bias=False)
        self.c_k = CastedLinear(dim, self.kv_dim, bias=False)
        self.c_v = CastedLinear(dim, self.kv_dim, bias=False)
        self.proj = CastedLinear(dim, dim, bias=False)
        self.proj._zero_init = True
        self.q_gain = nn.Parameter(torch.full((num_heads,), qk_gain_init, dtype=torch.float32))
        self.rotary = Rotary(self.head_dim, base=rope_base, published_bf16=rotary_positions_bf16)

    def forward(self, x: Tensor) -> Tensor:
        bsz, seq_len, dim = x.shape
        qkv = fused_linear(x, [self.c_q, self.c_k, self.c_v])  # [B, T, dim + 2 kv_dim]
        q, k, v = qkv.split([dim, self.kv_dim, self.kv_dim], dim=-1)
        q = q.reshape(bsz, seq_len, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, T, hd]
        k = k.reshape(bsz, seq_len, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [B, KV, T, hd]
        v = v.reshape(bsz, seq_len, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = F.rms_norm(q, (self.head_dim,)), F.rms_norm(k, (self.head_dim,))
        cos, sin = self.rotary(seq_len, x.device, q.dtype)
        q = apply_rotary_emb(q, cos, sin) * self.q_gain.to(q.dtype)[None, :, None, None]
        k = apply_rotary_emb(k, cos, sin)
        if self.expand_kv:
            k, v = (t.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1) for t in (k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=k.size(1) < self.num_heads)  # [B,H,T,hd]
        return self.proj(y.transpose(1, 2).reshape(bsz, seq_len, dim))


class MLP(nn.Module):
    def __init__(self, dim: int, mlp_mult: int):
        super().__init__()
        self.fc = CastedLinear(dim, mlp_mult * dim, bias=False)
        self.proj = CastedLinear(mlp_mult * dim, dim, bias=False)
        self.proj._zero_init = True

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(torch.relu(self.fc(x)).square())


# -----------------------------
# SEQUENCE MIXERS
# -----------------------------
# Gated DeltaNet (Yang et al., 2024), as in Olmo Hybrid. Per head, with a K x V state S:
#   S_t = exp(g_t) S_{t-1};  S_t += beta_t k_t (v_t - k_t^T S_t)^T;  o_t = scale * q_t^T S_t
# beta_t = 2 sigmoid(b_t) in (0, 2), so (I - beta k k^T) can have a negative eigenvalue, and g_t = -exp(A_log)
# softplus(a_t + dt_bias) < 0. Backends: "fla" (CUDA, fla-core 0.6.0's chunked Triton/TileLang kernels) and "torch"
# (the same maths in PyTorch, chunked), both checked against the step-by-step fp32 recurrence in tests/gdn_reference.py.

MIXER_FP32_NAME_PATTERNS: tuple[str, ...] = ("A_log", "dt_bias")
GDN_BACKENDS = ("auto", "fla", "torch")
GDN_CHUNK_SIZE, GDN_NORM_EPS = 64, 1e-6
# The fla backend calls this version's internal kernels one by one; another may differ, so it is refused by name.
FLA_CORE_VERSION = "0.6.0"


def env_int_list(env: dict, name: str, default: list[int]) -> list[int]:
    raw = env.get(name, ",".join(map(str, default))).replace(" ", "")  # set but empty: none, not the default
    try:
        return [int(part) for part in raw.split(",") if part != ""]
    except ValueError:
        raise ConfigError(f"{name}={raw!r} must be a comma-separated list of integers, e.g. 0,1,2") from None


def gdn_dims(h: Hyperparameters) -> tuple[int, int, int]:
    """(heads, key head dim, value head dim). Published: one GDN head per attention head, key dim
    round(GDN_HEAD_DIM_RATIO x attention head dim), value dim GDN_EXPAND_V x key dim."""
    heads = h.gdn_heads or h.num_heads
    key_dim = h.gdn_key_dim or round(h.gdn_head_dim_ratio * (h.model_dim // h.num_heads))
    return heads, key_dim, int(h.gdn_expand_v * key_dim)


def fla_core_version() -> str | None:
    import importlib.metadata
    return next((d.version for d in importlib.metadata.distributions(name="fla-core")), None)


def fla_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import fla.ops.gated_delta_rule  # noqa: F401
        import fla.modules  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install counts as absent; the log records the version
        return False
    return True


def gdn_backend_for(h: Hyperparameters) -> str:
    return ("fla" if fla_available() else "torch") if h.gdn_backend == "auto" else h.gdn_backend


def mixer_config_checks(h: Hyperparameters) -> list[tuple[bool, str]]:
    heads, key_dim, value_dim = gdn_dims(h)
    checks = [
        (all(0 <= i < h.num_layers for i in h.gdn_layers),
         f"GDN_LAYERS={h.gdn_layers} has an index outside 0..NUM_LAYERS-1={h.num_layers - 1}"),
        (len(set(h.gdn_layers)) == len(h.gdn_layers), f"GDN_LAYERS={h.gdn_layers} repeats a layer"),
        (h.gdn_conv_size >= 1, f"GDN_CONV_SIZE={h.gdn_conv_size} must be >= 1"),
        (h.gdn_heads >= 0 and h.gdn_key_dim >= 0, "GDN_HEADS and GDN_KEY_DIM must be >= 0 (0 = derived)"),
        (key_dim >= 1, f"GDN_HEAD_DIM_RATIO={h.gdn_head_dim_ratio} / GDN_KEY_DIM={h.gdn_key_dim} give an empty key head"),
        (value_dim >= 1, f"GDN_EXPAND_V={h.gdn_expand_v} gives an empty value head"),
        (h.gdn_backend in GDN_BACKENDS, f"GDN_BACKEND={h.gdn_backend!r} must be one of {GDN_BACKENDS}"),
        (h.gdn_backend != "fla" or fla_available(),
         f"GDN_BACKEND=fla needs CUDA and fla-core (pip install fla-core=={FLA_CORE_VERSION})"),
    ]
    if h.gdn_layers and gdn_backend_for(h) == "fla":
        found = fla_core_version()
        checks.append((found == FLA_CORE_VERSION,
                       f"the GDN layers run fla-core {FLA_CORE_VERSION}'s internal kernels, found fla-core "
                       f"{found or 'none'}: pip install -r requirements-gpu.txt, or set GDN_BACKEND=torch"))
    return checks


def l2_normalize(x: Tensor) -> Tensor:
    """x / ||x|| over the last dim, in fp32, with the eps of fla's l2norm kernel."""
    x32 = x.float()
    return (x32 * torch.rsqrt((x32 * x32).sum(-1, keepdim=True) + GDN_NORM_EPS)).to(x.dtype)


def gated_delta_rule_chunked(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float,
                             chunk_size: int = GDN_CHUNK_SIZE) -> Tensor:
    """The torch backend: the delta rule in chunks (WY form), fp32, differentiable by autograd.
    q, k: [B, T, H, K]; v: [B, T, H, V]; g, beta: [B, T, H] -> [B, T, H, V].

    Within a chunk with cumulative log-decay G and start state S0, the pseudo-values
    U = (I + A)^-1 (beta V - diag(beta e^G) K S0), A_ij = beta_i e^(G_i - G_j) k_i.k_j (j < i),
    give every output and the next state with matrix products; only S crosses chunks.
    """
    bsz, seq_len, heads, key_dim = q.shape
    value_dim, out_dtype, c = v.shape[-1], v.dtype, chunk_size
    pad = (-seq_len) % c  # zero-padded tail: beta = 0 and g = 0 leave the state alone
    q, k, v, g, beta = (F.pad(t.float(), (0, 0) * (t.ndim - 2) + (0, pad)) for t in (q, k, v, g, beta))
    n = (seq_len + pad) // c
    q, k, v = (t.view(bsz, n, c, heads, -1).permute(0, 3, 1, 2, 4) for t in (q, k, v))  # [B, H, N, C, *]
    g, beta = (t.view(bsz, n, c, heads).permute(0, 3, 1, 2) for t in (g, beta))  # [B, H, N, C]
    cum_g = g.cumsum(-1)
    lower_incl = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    lower_strict = lower_incl.tril(-1)
    decay = (cum_g[..., :, None] - cum_g[..., None, :]).masked_fill(~lower_incl, float("-inf")).exp()  # [B,H,N,C,C]
    a = (beta[..., :, None] * decay * (k @ k.transpose(-1, -2))).masked_fill(~lower_strict, 0.0)
    unit_lower = a + torch.eye(c, device=q.device, dtype=a.dtype)
    w = torch.linalg.solve_triangular(unit_lower, (beta * cum_g.exp())[..., None] * k, upper=False, unitriangular=True)
    u0 = torch.linalg.solve_triangular(unit_lower, beta[..., None] * v, upper=False, unitriangular=True)
    qk = (q @ k.transpose(-1, -2)) * decay  # [B, H, N, C, C], causal incl. the diagonal
    q_decayed = q * cum_g.exp()[..., None]
    k_to_end = k * (cum_g[..., -1:] - cum_g).exp()[..., None]  # decay from each position to the chunk end
    state = q.new_zeros(bsz, heads, key_dim, value_dim)  # [B, H, K, V]
    outputs = []
    for i in range(n):
        u = u0[:, :, i] - w[:, :, i] @ state  # [B, H, C, V]
        outputs.append(q_decayed[:, :, i] @ state + qk[:, :, i] @ u)
        state = state * cum_g[:, :, i, -1].exp()[..., None, None] + k_to_end[:, :, i].transpose(-1, -2) @ u
    o = torch.stack(outputs, dim=2) * scale  # [B, H, N, C, V]
    return o.permute(0, 2, 3, 1, 4).reshape(bsz, n * c, heads, value_dim)[:, :seq_len].to(out_dtype)


def fla_device(t: Tensor):
    """fla launches on the current CUDA device, so its calls run under t's (a CPU tensor, in tests, has none)."""
    import contextlib  # here, not at the top: the trainers' shared imports stay identical
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


class GatedDeltaRuleKeepStates(torch.autograd.Function):
    """fla-core 0.6.0's chunk_gated_delta_rule (fla/ops/gated_delta_rule/chunk.py: no initial state, no final
    state, chunk 64, no in-kernel norm, gate or beta), its kernels called one by one so that the backward
    reuses the forward's w, h and v_new instead of recomputing them: the same numbers, ~4.5% faster steps at
    8k-32k (docs/LOG.md), ~0.8 GB more per layer and micro-step at 32k. On Hopper with Triton < 3.7.1 fla
    still sends the gated backward to TileLang inside chunk_bwd_dqkwg (fla issue #640)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")  # fla's autocast_custom_fwd: the backward sees the same autocast state
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float) -> Tensor:
        from fla.ops.common.chunk_delta_h import chunk_gated_delta_rule_fwd_h
        from fla.ops.common.chunk_o import chunk_fwd_o
        from fla.ops.gated_delta_rule.chunk_fwd import chunk_gated_delta_rule_fwd_intra
        from fla.ops.utils import chunk_local_cumsum
        from fla.ops.utils.constant import RCP_LN2

        q, k, v, g, beta = (t.contiguous() for t in (q, k, v, g, beta))  # fla's input_guard: raw pointers
        with fla_device(q):
            g_cumsum = chunk_local_cumsum(g, chunk_size=GDN_CHUNK_SIZE, scale=RCP_LN2)  # [B, T, H] fp32, log2
            w, u, A = chunk_gated_delta_rule_fwd_intra(k=k, v=v, g=g_cumsum, beta=beta,
                                                       chunk_size=GDN_CHUNK_SIZE)  # w [B,T,H,K], u [B,T,H,V]
            h, v_new, _ = chunk_gated_delta_rule_fwd_h(k=k, w=w, u=u, g=g_cumsum, initial_state=None,
                                                       output_final_state=False,
                                                       chunk_size=GDN_CHUNK_SIZE)  # h [B, T/64, H, K, V]
            o = chunk_fwd_o(q=q, k=k, v=v_new, h=h, g=g_cumsum, scale=scale, chunk_size=GDN_CHUNK_SIZE)
        ctx.save_for_backward(q, k, v, g_cumsum, beta, A, w, h, v_new)
        ctx.scale, ctx.g_dtype = scale, g.dtype
        return o.to(q.dtype)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, do: Tensor) -> tuple:
        from fla.ops.common.chunk_delta_h import chunk_gated_delta_rule_bwd_dhu
        from fla.ops.common.chunk_o import chunk_bwd_dqkwg, chunk_bwd_dv_local
        from fla.ops.gated_delta_rule.wy_fast import prepare_wy_repr_bwd
        from fla.ops.utils import chunk_local_cumsum

        q, k, v, g_cumsum, beta, A, w, h, v_new = ctx.saved_tensors
        do, scale = do.contiguous(), ctx.scale
        with fla_device(q):
            # fla's chunk_gated_delta_rule_bwd from chunk_bwd_dv_local on; the forward kept what it recomputes.
            dv = chunk_bwd_dv_local(q=q, k=k, g=g_cumsum, do=do, scale=scale, chunk_size=GDN_CHUNK_SIZE)
            dh, _, dv = chunk_gated_delta_rule_bwd_dhu(q=q, k=k, w=w, g=g_cumsum, h0=None, dht=None, do=do, dv=dv,
                                                       scale=scale, chunk_size=GDN_CHUNK_SIZE)
            dq, dk, dw, dg = chunk_bwd_dqkwg(q=q, k=k, v=v_new, w=w, g=g_cumsum, h=h, dv=dv, do=do, dh=dh,
                                             scale=scale, chunk_size=GDN_CHUNK_SIZE)
            dk2, dv, dbeta, dg2 = prepare_wy_repr_bwd(k=k, v=v, beta=beta, g=g_cumsum, A=A, dw=dw, du=dv)
            dk.add_(dk2)
            dg.add_(dg2)
            dg = chunk_local_cumsum(dg, chunk_size=GDN_CHUNK_SIZE, reverse=True)  # back to per-step gates
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dg.to(ctx.g_dtype), dbeta.to(beta.dtype), None


@torch.compiler.disable  # dynamo would trace into fla's Python and recompile it per layer
def gated_delta_rule_fla(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float) -> Tensor:
    """The fla backend; shapes as gated_delta_rule_chunked. g in fp32, beta (already 2*sigmoid(b)) in q's dtype, as
    fla's wrapper takes them; fla's own beta activation stays off (fla 0.6.0's allow_neg_eigval requires it on)."""
    return GatedDeltaRuleKeepStates.apply(q, k, v, g.float(), beta.to(q.dtype), scale)


@torch.compiler.disable
def causal_conv_silu_fla(x: Tensor, weight: Tensor) -> Tensor:
    from fla.modules.causal_conv1d import causal_conv1d
    return causal_conv1d(x, weight.squeeze(1).to(x.dtype), activation="silu")[0]


def causal_conv_silu(x: Tensor, weight: Tensor, backend: str) -> Tensor:
    """Depthwise causal convolution then SiLU, by fla's kernel or F.conv1d. x: [B, T, C]; weight: [C, 1, W]."""
    if backend == "fla":
        return causal_conv_silu_fla(x, weight)
    y = F.conv1d(x.transpose(1, 2), weight.to(x.dtype), padding=weight.shape[-1] - 1, groups=x.shape[-1])
    return F.silu(y[..., : x.shape[1]].transpose(1, 2))  # [B, T, C]


class GatedDeltaNet(nn.Module):
    """The GDN mixer, laid out like fla's GatedDeltaNet layer: projections, short convolutions on q, k, v, the gated
    delta rule, a per-head RMSNorm and an output gate. The six input projections run as one matmul and the three
    convolutions as one (depthwise: stacked filters change nothing); the parameters stay those of six layers."""

    def __init__(self, dim: int, num_heads: int, key_dim: int, value_dim: int, conv_size: int, backend: str):
        super().__init__()
        self.num_heads, self.key_dim, self.value_dim, self.backend = num_heads, key_dim, value_dim, backend
        key_width, value_width = num_heads * key_dim, num_heads * value_dim
        self.q_proj = CastedLinear(dim, key_width, bias=False)
        self.k_proj = CastedLinear(dim, key_width, bias=False)
        self.v_proj = CastedLinear(dim, value_width, bias=False)
        self.a_proj = CastedLinear(dim, num_heads, bias=False)  # decay input, per head
        self.b_proj = CastedLinear(dim, num_heads, bias=False)  # write strength, per head
        self.g_proj = CastedLinear(dim, value_width, bias=False)  # output gate
        self.o_proj = CastedLinear(value_width, dim, bias=False)
        self.o_proj._zero_init = True
        # Depthwise causal convolutions, no bias; nn.Conv1d's default init (bound 1/sqrt(fan_in)).
        self.q_conv = nn.Parameter(torch.empty(key_width, 1, conv_size).uniform_(-conv_size**-0.5, conv_size**-0.5))
        self.k_conv = nn.Parameter(torch.empty(key_width, 1, conv_size).uniform_(-conv_size**-0.5, conv_size**-0.5))
        self.v_conv = nn.Parameter(torch.empty(value_width, 1, conv_size).uniform_(-conv_size**-0.5, conv_size**-0.5))
        # Mamba-style decay init: A ~ U[1, 16]; dt log-uniform in [1e-3, 1e-1], dt_bias = softplus^-1(dt).
        self.A_log = nn.Parameter(torch.empty(num_heads, dtype=torch.float32).uniform_(1, 16).log())
        dt = torch.exp(torch.empty(num_heads).uniform_(math.log(1e-3), math.log(1e-1))).clamp_min(1e-4)
        self.dt_bias = nn.Parameter((dt + torch.log(-torch.expm1(-dt))).float())
        self.o_norm_weight = nn.Parameter(torch.ones(value_dim, dtype=torch.float32))  # shared by all heads

    def forward(self, x: Tensor) -> Tensor:
        bsz, seq_len, _ = x.shape
        heads, key_width, value_width = self.num_heads, self.num_heads * self.key_dim, self.num_heads * self.value_dim
        projections = fused_linear(x, [self.q_proj, self.k_proj, self.v_proj, self.a_proj, self.b_proj, self.g_proj])
        qkv, a, b, gate = projections.split([2 * key_width + value_width, heads, heads, value_width], dim=-1)
        # fla's causal_conv1d also works channel by channel and reads this strided slice as it is.
        qkv = causal_conv_silu(qkv, torch.cat([self.q_conv, self.k_conv, self.v_conv]), self.backend)  # [B, T, 2K+V]
        q, k, v = qkv.split([key_width, key_width, value_width], dim=-1)
        q = l2_normalize(q.view(bsz, seq_len, heads, self.key_dim))  # [B, T, H, K]
        k = l2_normalize(k.view(bsz, seq_len, heads, self.key_dim))
        v = v.view(bsz, seq_len, heads, self.value_dim)  # [B, T, H, V]
        beta = 2.0 * torch.sigmoid(b.float())  # [B, T, H] in (0, 2)
        g = -self.A_log.exp() * F.softplus(a.float() + self.dt_bias)  # [B, T, H] log-decay < 0
        rule = gated_delta_rule_fla if self.backend == "fla" else gated_delta_rule_chunked
        o = rule(q, k, v, g, beta, self.key_dim**-0.5)  # [B, T, H, V]
        o = F.rms_norm(o.float(), (self.value_dim,), self.o_norm_weight, eps=GDN_NORM_EPS).to(x.dtype)
        o = o * F.silu(gate.view(bsz, seq_len, heads, self.value_dim))
        return self.o_proj(o.reshape(bsz, seq_len, value_width))


def make_mixer(h: Hyperparameters, layer_idx: int, expand_kv: bool) -> nn.Module:
    if layer_idx in h.gdn_layers:
        heads, key_dim, value_dim = gdn_dims(h)
        return GatedDeltaNet(h.model_dim, heads, key_dim, value_dim, h.gdn_conv_size, gdn_backend_for(h))
    return CausalSelfAttention(h.model_dim, h.num_heads, h.num_kv_heads, h.rope_base, h.qk_gain_init,
                               expand_kv=expand_kv, rotary_positions_bf16=h.rotary_positions_bf16)


def mixer_bf16_param(h: Hyperparameters, name: str) -> bool:
    """GDN_CONV_BF16: the GDN convolutions stay bf16 on every device, as in the published trainer."""
    return h.gdn_conv_bf16 and name.endswith(("q_conv", "k_conv", "v_conv"))


def mixer_log_lines(h: Hyperparameters) -> list[str]:
    heads, key_dim, value_dim = gdn_dims(h)
    return [f"gdn_layers:{sorted(h.gdn_layers)} attn_layers:{sorted(set(range(h.num_layers)) - set(h.gdn_layers))}",
            f"gdn_backend:{gdn_backend_for(h)} gdn_heads:{heads} gdn_key_dim:{key_dim} "
            f"gdn_value_dim:{value_dim} gdn_conv_size:{h.gdn_conv_size} gdn_conv_bf16:{h.gdn_conv_bf16}"]


def mixer_compile_fullgraph(h: Hyperparameters) -> bool:
    return not (h.gdn_layers and gdn_backend_for(h) == "fla")  # fla's kernels are opaque to dynamo: graph breaks


# -----------------------------
# MODEL
# -----------------------------


class Block(nn.Module):
    def __init__(self, dim: int, mlp_mult: int, mixer: nn.Module):
        super().__init__()
        self.attn_norm, self.mlp_norm = RMSNorm(), RMSNorm()
        self.attn = mixer
        self.mlp = MLP(dim, mlp_mult)
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        # Learned mix of the running residual with the block-0 input embedding x0.
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())

    def forward(self, x: Tensor, x0: Tensor) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0][None, None, :] * x + mix[1][None, None, :] * x0
        x = x + self.attn_scale.to(x.dtype)[None, None, :] * self.attn(self.attn_norm(x))
        x = x + self.mlp_scale.to(x.dtype)[None, None, :] * self.mlp(self.mlp_norm(x))
        return x


class GPT(nn.Module):
    def __init__(self, h: Hyperparameters, expand_kv: bool = False):
        super().__init__()
        self.logit_softcap = h.logit_softcap
        self.tok_emb = nn.Embedding(h.vocab_size, h.model_dim)
        # U-Net: the first half of the blocks store their outputs, the second half add them back in reverse.
        self.num_encoder_layers = h.num_layers // 2
        self.num_decoder_layers = h.num_layers - self.num_encoder_layers
        num_skips = min(self.num_encoder_layers, self.num_decoder_layers)
        # With one layer there are no skips; an empty tensor that wants a gradient would trip DDP.
        self.skip_weights = nn.Parameter(torch.ones(num_skips, h.model_dim, dtype=torch.float32),
                                         requires_grad=num_skips > 0)
        self.blocks = nn.ModuleList([Block(h.model_dim, h.mlp_mult, make_mixer(h, i, expand_kv))
                                     for i in range(h.num_layers)])
        self.final_norm = RMSNorm()
        nn.init.normal_(self.tok_emb.weight, mean=0.0, std=h.tied_embed_init_std)
        for module in self.modules():
            if isinstance(module, nn.Linear) and getattr(module, "_zero_init", False):
                nn.init.zeros_(module.weight)

    def forward(self, input_ids: Tensor, target_ids: Tensor) -> Tensor:
        x = F.rms_norm(self.tok_emb(input_ids), (self.tok_emb.embedding_dim,))  # [B, T, D]
        x0 = x
        skips: list[Tensor] = []
        for i in range(self.num_encoder_layers):
            x = self.blocks[i](x, x0)
            skips.append(x)
        for i in range(self.num_decoder_layers):
            if skips:
                x = x + self.skip_weights[i].to(x.dtype)[None, None, :] * skips.pop()
            x = self.blocks[self.num_encoder_layers + i](x, x0)
        x = self.final_norm(x).reshape(-1, x.size(-1))  # [B*T, D]
        logits = F.linear(x, self.tok_emb.weight.to(x.dtype))  # tied embeddings
        logits = self.logit_softcap * torch.tanh(logits / self.logit_softcap)
        return F.cross_entropy(logits.float(), target_ids.reshape(-1), reduction="mean")


def restore_low_dim_params_to_fp32(model: nn.Module) -> None:
    """After model.bfloat16(): vectors, gains, convolutions and control tensors stay fp32."""
    for name, param in model.named_parameters():
        if param.ndim != 2 or keeps_fp32(name):
            param.data = param.data.float()


def split_params_for_optimizers(model: GPT) -> tuple[list[Tensor], list[Tensor]]:
    """Muon takes the blocks' 2-D matrices; Adam takes every other block tensor and the skip weights."""
    named = list(model.blocks.named_parameters())
    matrices = {name for name, p in named if p.ndim == 2 and not keeps_fp32(name)}
    return [p for n, p in named if n in matrices], [p for n, p in named if n not in matrices] + [model.skip_weights]


# -----------------------------
# TRAINING
# -----------------------------


def build_model(h: Hyperparameters, device: torch.device, expand_kv: bool = False) -> tuple[GPT, nn.Module, bool]:
    """The model, and the module to call: compiled on CUDA (unless COMPILE=0). On CUDA the weights are bf16
    but for fp32 masters of the linear weights and small tensors, under bf16 autocast; on CPU all fp32."""
    base_model = GPT(h, expand_kv).to(device)
    if device.type == "cuda":
        base_model = base_model.bfloat16()
        for module in base_model.modules():
            if isinstance(module, CastedLinear):
                module.float()
        restore_low_dim_params_to_fp32(base_model)
    for name, param in base_model.named_parameters():
        if mixer_bf16_param(h, name):
            param.data = param.data.bfloat16()
    compiled = device.type == "cuda" and h.compile
    if not compiled:
        return base_model, base_model, False
    # Nine distinct blocks (and graph breaks around opaque kernels) each cost a compiled variant;
    # the default limit of 8 silently drops the rest to eager mode.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return base_model, torch.compile(base_model, dynamic=False, fullgraph=mixer_compile_fullgraph(h)), True


def build_optimizers(h: Hyperparameters, base_model: GPT, fused: bool) -> list[torch.optim.Optimizer]:
    """Adam for the tied embedding, Muon for block matrices, Adam for the rest; each group keeps base_lr."""
    matrix_params, scalar_params = split_params_for_optimizers(base_model)
    adam_kwargs = dict(betas=(h.beta1, h.beta2), eps=h.adam_eps, fused=fused)
    optimizer_tok = torch.optim.Adam([{"params": [base_model.tok_emb.weight], "lr": h.tied_embed_lr,
                                       "base_lr": h.tied_embed_lr}], **adam_kwargs)
    optimizer_muon = Muon(matrix_params, lr=h.matrix_lr, momentum=h.muon_momentum, backend_steps=h.muon_backend_steps)
    for group in optimizer_muon.param_groups:
        group["base_lr"] = h.matrix_lr
    optimizer_scalar = torch.optim.Adam([{"params": scalar_params, "lr": h.scalar_lr, "base_lr": h.scalar_lr}],
                                        **adam_kwargs)
    return [optimizer_tok, optimizer_muon, optimizer_scalar]


def run_train_step(h: Hyperparameters, model: nn.Module, base_model: GPT, optimizers: list[torch.optim.Optimizer],
                   next_batch, lr_scale: float, momentum: float, distributed: bool, autocast_enabled: bool) -> Tensor:
    """One optimizer step over GRAD_ACCUM_STEPS micro-batches from next_batch(); returns the mean loss."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    train_loss = torch.zeros((), device=base_model.tok_emb.weight.device)
    for micro_step in range(h.grad_accum_steps):
        if distributed:
            model.require_backward_grad_sync = micro_step == h.grad_accum_steps - 1  # all-reduce once per step
        x, y = next_batch()
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=autocast_enabled):
            loss = model(x, y)
        train_loss += loss.detach()
        (loss / h.grad_accum_steps).backward()
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * lr_scale
            if "momentum" in group:
                group["momentum"] = momentum  # Muon only
    if h.grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(base_model.parameters(), h.grad_clip_norm)
    for opt in optimizers:
        opt.step()
    return train_loss / h.grad_accum_steps


def choose_grad_accum_steps(h: Hyperparameters, world_size: int, bytes_per_micro_token: float,
                            device_bytes: int) -> int:
    """The fewest micro-steps (whole sequences each) whose predicted peak memory fits the budget: the probe's
    peak per micro-batch token, fixed costs included, so it errs large; never more than the probe used."""
    seqs_per_rank = h.train_batch_tokens // (world_size * h.train_seq_len)
    budget = h.grad_accum_memory_fraction * device_bytes
    for steps in range(1, h.grad_accum_steps + 1):
        if seqs_per_rank % steps == 0 and bytes_per_micro_token * (seqs_per_rank // steps) * h.train_seq_len <= budget:
            return steps
    return h.grad_accum_steps


def probe_grad_accum_steps(h: Hyperparameters, world_size: int, device: torch.device, distributed: bool,
                           one_step) -> str:
    """CUDA: one_step()'s peak memory sets h.grad_accum_steps (choose_grad_accum_steps); returns the log line."""
    torch.cuda.reset_peak_memory_stats(device)
    one_step()
    peak = torch.tensor(float(torch.cuda.max_memory_allocated(device)), device=device)
    if distributed:
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)  # every rank must pick the same number
    micro_tokens = h.train_batch_tokens // (world_size * h.grad_accum_steps)
    chosen = choose_grad_accum_steps(h, world_size, peak.item() / micro_tokens,
                                     torch.cuda.get_device_properties(device).total_memory)
    h.grad_accum_steps = chosen
    return (f"grad_accum_probe: micro_tokens:{micro_tokens} peak:{peak.item() / 2**30:.2f}GiB "
            f"memory_fraction:{h.grad_accum_memory_fraction} -> grad_accum_steps:{chosen}")


def lr_multiplier(h: Hyperparameters, step: int, elapsed_ms: float) -> float:
    """LR scale: 1, then linear to 0 over the last WARMDOWN_FRAC of the budget (of ITERATIONS when uncapped), or
    else over WARMDOWN_ITERS steps turned into milliseconds at the pace so far (the competition's rule)."""
    max_ms = 1000.0 * h.max_wallclock_seconds
    if max_ms <= 0:
        warmdown = round(h.warmdown_frac * h.iterations) if h.warmdown_frac > 0 else h.warmdown_iters
        return 1.0 if warmdown <= 0 else min(1.0, max(h.iterations - step, 0) / warmdown)
    if h.warmdown_frac > 0:
        warmdown_ms = h.warmdown_frac * max_ms
    elif h.warmdown_iters > 0:
        warmdown_ms = h.warmdown_iters * elapsed_ms / max(step, 1)
    else:
        return 1.0
    return min(1.0, max(max_ms - elapsed_ms, 0.0) / max(warmdown_ms, 1e-9))


def muon_momentum_at(h: Hyperparameters, step: int, elapsed_ms: float) -> float:
    """Muon momentum, linear from MUON_MOMENTUM_WARMUP_START to MUON_MOMENTUM over the first
    MUON_MOMENTUM_WARMUP_FRAC of the budget (of ITERATIONS when uncapped), else MUON_MOMENTUM_WARMUP_STEPS."""
    max_ms = 1000.0 * h.max_wallclock_seconds
    if h.muon_momentum_warmup_frac > 0 and max_ms > 0:
        frac = min(elapsed_ms / (h.muon_momentum_warmup_frac * max_ms), 1.0)
    elif h.muon_momentum_warmup_frac > 0:
        frac = min(step / max(h.muon_momentum_warmup_frac * h.iterations, 1.0), 1.0)
    elif h.muon_momentum_warmup_steps > 0:
        frac = min(step / h.muon_momentum_warmup_steps, 1.0)
    else:
        frac = 1.0
    return (1 - frac) * h.muon_momentum_warmup_start + frac * h.muon_momentum


def choose_sdpa_backend(requested: str, head_dim: int, num_heads: int, num_kv_heads: int,
                        device: torch.device) -> tuple[str, bool]:
    """Enable one SDPA backend; return it and whether KV heads must be expanded. 'auto' prefers cuDNN (1.5-1.65x
    FLASH's speed at 8k-32k on an H100), each tried on the real head shape so a misfit is skipped, not fatal."""
    if device.type != "cuda":
        return "math" if requested == "auto" else requested, False
    flags = {"cudnn": torch.backends.cuda.enable_cudnn_sdp, "flash": torch.backends.cuda.enable_flash_sdp,
             "efficient": torch.backends.cuda.enable_mem_efficient_sdp, "math": torch.backends.cuda.enable_math_sdp}
    order = list(flags) if requested == "auto" else [requested]  # auto: in this order of preference
    errors = []
    for backend in order:
        for name, enable in flags.items():
            enable(name == backend)
        for expand_kv in ([False, True] if num_kv_heads != num_heads else [False]):
            heads_kv = num_heads if expand_kv else num_kv_heads
            q, k, v = (torch.randn(1, heads, 256, head_dim, device=device, dtype=torch.bfloat16, requires_grad=True)
                       for heads in (num_heads, heads_kv, heads_kv))
            try:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=heads_kv != num_heads)
                y.float().sum().backward()
                torch.cuda.synchronize()
                return backend, expand_kv
            except RuntimeError as exc:
                errors.append(f"{backend}(expand_kv={expand_kv}): {str(exc).splitlines()[0]}")
    raise ConfigError(f"SDPA_BACKEND={requested}: no usable attention backend for head_dim={head_dim}: "
                      + "; ".join(errors))


def run_versions() -> list[str]:
    lines = [f"python:{platform.python_version()} torch:{torch.__version__} numpy:{np.__version__} "
             f"sentencepiece:{getattr(spm, '__version__', '?')}"]
    for name in ("triton", "fla", "tilelang"):
        try:
            lines.append(f"{name}:{getattr(__import__(name), '__version__', '?')}")
        except Exception as exc:  # noqa: BLE001 - any import failure just means "not available"
            lines.append(f"{name}:unavailable ({type(exc).__name__})")
    if torch.cuda.is_available():
        lines.append(f"cuda:{torch.version.cuda} device:{torch.cuda.get_device_name()} "
                     f"capability:{torch.cuda.get_device_capability()}")
        try:
            smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
            lines.extend(smi.rstrip().splitlines())
        except (OSError, subprocess.SubprocessError):
            lines.append("nvidia-smi: unavailable")
    else:
        lines.append(f"device:cpu threads:{torch.get_num_threads()}")
    return lines


def load_tokenizer(h: Hyperparameters) -> spm.SentencePieceProcessor:
    """The SentencePiece model: it loads, has VOCAB_SIZE pieces, and made the shards when DATA_PATH/manifest.json
    says which (another one would change val_bpb silently)."""
    path = Path(h.tokenizer_path)
    if not path.is_file():
        raise ConfigError(f"TOKENIZER_PATH={path} does not exist: point it at the SentencePiece .model that made "
                          f"the shards in DATA_PATH")
    manifest_path = Path(h.data_path) / "manifest.json"
    if manifest_path.is_file():
        try:
            recorded = json.loads(manifest_path.read_text(encoding="utf-8")).get("tokenizer", {}).get("sha256")
        except (ValueError, AttributeError):
            raise ConfigError(f"{manifest_path} is not a dataset manifest: rebuild the dataset "
                              f"(data/prepare_local.py) or remove the file") from None
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if recorded and recorded != actual:
            raise ConfigError(f"TOKENIZER_PATH={path} (sha256 {actual[:12]}...) is not the tokenizer that made "
                              f"DATA_PATH={h.data_path} ({manifest_path.name} records {recorded[:12]}...): "
                              f"use the .model built with that dataset")
    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as exc:
        raise ConfigError(f"TOKENIZER_PATH={path} is not a SentencePiece model ({str(exc).splitlines()[0][:120]}): "
                          f"point it at the .model file, not the .vocab, or rebuild it") from None
    if int(sp.vocab_size()) != h.vocab_size:
        raise ConfigError(f"TOKENIZER_PATH={path} has vocab size {int(sp.vocab_size())} but "
                          f"VOCAB_SIZE={h.vocab_size}: set VOCAB_SIZE to match the tokenizer")
    return sp


def check_inputs(h: Hyperparameters, world_size: int) -> tuple:
    """Everything checked before a log exists (settings, shards, tokenizer, unused log and artifact paths)."""
    h.resolve(world_size)
    train_files = find_shards(h.train_files, "training")
    train_tokens_total = sum(read_shard_header(f) for f in train_files)
    val_tokens = load_validation_tokens(h.val_files, h.train_seq_len)
    sp = load_tokenizer(h)
    log_path = Path(h.log_dir) / f"{h.run_id}.txt"
    artifact_path = Path(h.artifact_dir) / f"{h.run_id}.int8.ptz"
    for path in (log_path, artifact_path):
        if path.exists():
            raise ConfigError(f"{path} exists: RUN_ID={h.run_id} was already used; pick a new RUN_ID "
                              f"(a run never overwrites another run's log or artifact)")
    return train_files, train_tokens_total, val_tokens, sp, log_path, artifact_path


def main() -> None:
    code = Path(__file__).read_text(encoding="utf-8")
    h = Hyperparameters()
    if sys.argv[1:] == ["--check"]:  # the launchers run this before torchrun, so an error is one line
        train_files, _, val_tokens, _, log_path, _ = check_inputs(h, env_value(dict(os.environ), "WORLD_SIZE", 1, int))
        print(f"ok: {len(train_files)} training shards, {val_tokens.numel() - 1} validation tokens, log {log_path}")
        return
    if sys.argv[1:]:
        raise ConfigError(f"unknown arguments {sys.argv[1:]}: the only one is --check (settings are env variables)")

    # Distributed set-up: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; plain python is one process.
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    master = rank == 0
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if distributed:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)

    train_files, train_tokens_total, val_tokens, sp, log_path, artifact_path = check_inputs(h, world_size)
    if distributed:
        dist.barrier()  # every rank has checked the log path before rank 0 creates it
    if master:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        logfile = open(log_path, "x", encoding="utf-8")  # "x": fail rather than append to an existing log

    def log0(msg: str, console: bool = True) -> None:
        if not master:
            return
        if console:
            print(msg, flush=True)
        logfile.write(msg + "\n")
        logfile.flush()

    log0(code, console=False)
    log0("=" * 100, console=False)
    log0(f"run_id:{h.run_id} log:{log_path}")
    for line in run_versions() + h.as_log_lines():
        log0(line, console=False)

    torch.manual_seed(h.seed)
    np.random.seed(h.seed)
    if use_cuda:
        torch.cuda.manual_seed_all(h.seed)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    sdpa_backend, expand_kv = choose_sdpa_backend(h.sdpa_backend, h.model_dim // h.num_heads, h.num_heads,
                                                  h.num_kv_heads, device)
    log0(f"sdpa_backend:{sdpa_backend} expand_kv:{expand_kv}")

    base_model, model_core, compiled = build_model(h, device, expand_kv)
    autocast_enabled = use_cuda
    model = DDP(model_core, device_ids=[local_rank] if use_cuda else None, broadcast_buffers=False) if distributed else model_core
    optimizers = build_optimizers(h, base_model, fused=use_cuda)

    log0(f"model_params:{sum(p.numel() for p in base_model.parameters())}")
    for line in mixer_log_lines(h):
        log0(line)
    log0(f"train_batch_tokens:{h.train_batch_tokens} train_seq_len:{h.train_seq_len} iterations:{h.iterations} "
         f"warmup_steps:{h.warmup_steps} max_wallclock_seconds:{h.max_wallclock_seconds:.3f}")
    log0(f"train_shards:{len(train_files)} train_tokens:{train_tokens_total} val_tokens:{val_tokens.numel() - 1}")
    log0(f"seed:{h.seed}")

    luts = build_sentencepiece_luts(sp, h.vocab_size, device)
    max_wallclock_ms = 1000.0 * h.max_wallclock_seconds if h.max_wallclock_seconds > 0 else None

    def sync() -> None:
        if use_cuda:
            torch.cuda.synchronize()

    def train_step(loader: DistributedTokenLoader, lr_scale: float, momentum: float) -> Tensor:
        return run_train_step(h, model, base_model, optimizers,
                              lambda: loader.next_batch(h.train_batch_tokens, h.train_seq_len, h.grad_accum_steps),
                              lr_scale, momentum, distributed, autocast_enabled)

    # Warm-up: compile and autotune on real steps, then restore the initial weights and optimizer states.
    train_loader = DistributedTokenLoader(train_files, rank, world_size, device)
    probe_memory = h.grad_accum_requested == 0 and use_cuda
    if h.warmup_steps > 0 or probe_memory:
        initial_model_state = {k: v.detach().clone() for k, v in base_model.state_dict().items()}
        initial_optimizer_states = [copy.deepcopy(opt.state_dict()) for opt in optimizers]
        warmup_t0 = time.perf_counter()
        if probe_memory:
            # One step at the most micro-steps measures memory per micro-batch token; the warm-up then
            # compiles the chosen shape. Fewer, larger micro-steps launch fewer kernels (the hybrid's
            # GDN layers are launch-bound at 8 micro-steps) and compute the same gradient.
            log0(probe_grad_accum_steps(h, world_size, device, distributed,
                                        lambda: train_step(train_loader, 1.0, h.muon_momentum_warmup_start)))
        for warmup_step in range(h.warmup_steps):
            train_step(train_loader, 1.0, h.muon_momentum_warmup_start)
            if h.warmup_steps <= 20 or (warmup_step + 1) % 10 == 0 or warmup_step + 1 == h.warmup_steps:
                log0(f"warmup_step:{warmup_step + 1}/{h.warmup_steps}")
        sync()
        log0(f"warmup_time:{1000.0 * (time.perf_counter() - warmup_t0):.0f}ms (excluded from train_time)")
        base_model.load_state_dict(initial_model_state, strict=True)
        for opt, state in zip(optimizers, initial_optimizer_states, strict=True):
            opt.load_state_dict(state)
        train_loader = DistributedTokenLoader(train_files, rank, world_size, device)
    if use_cuda:
        torch.cuda.reset_peak_memory_stats(device)  # the logged peak is the timed run's, not the probe's
    log0(f"world_size:{world_size} grad_accum_steps:{h.grad_accum_steps} device:{device} compile:{compiled}")

    training_time_ms = 0.0
    stop_after_step: int | None = None
    sync()
    t0 = time.perf_counter()
    step = 0
    while True:
        last_step = step == h.iterations or (stop_after_step is not None and step >= stop_after_step)
        if last_step or (h.val_loss_every > 0 and step % h.val_loss_every == 0):
            sync()
            training_time_ms += 1000.0 * (time.perf_counter() - t0)
            val_loss, val_bpb = eval_val(h, model, rank, world_size, device, val_tokens, luts, autocast_enabled)
            log0(f"step:{step}/{h.iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} "
                 f"train_time:{training_time_ms:.0f}ms step_avg:{training_time_ms / max(step, 1):.2f}ms")
            sync()
            t0 = time.perf_counter()
        if last_step:
            if stop_after_step is not None and step < h.iterations:
                log0(f"stopping_early: wallclock_cap train_time:{training_time_ms:.0f}ms step:{step}/{h.iterations}")
            break
        elapsed_ms = training_time_ms + 1000.0 * (time.perf_counter() - t0)
        train_loss = train_step(train_loader, lr_multiplier(h, step, elapsed_ms), muon_momentum_at(h, step, elapsed_ms))
        step += 1
        approx_training_time_ms = training_time_ms + 1000.0 * (time.perf_counter() - t0)
        if h.train_log_every > 0 and (step <= 10 or step % h.train_log_every == 0 or stop_after_step is not None):
            if distributed:  # every rank reaches this line: the condition depends on the step only
                dist.all_reduce(train_loss, op=dist.ReduceOp.SUM)  # the global batch's loss, not rank 0's share
                train_loss /= world_size  # (gloo has no AVG)
            log0(f"step:{step}/{h.iterations} train_loss:{train_loss.item():.4f} "
                 f"train_time:{approx_training_time_ms:.0f}ms step_avg:{approx_training_time_ms / step:.2f}ms")
        reached_cap = max_wallclock_ms is not None and approx_training_time_ms >= max_wallclock_ms
        if distributed and max_wallclock_ms is not None:
            cap_tensor = torch.tensor(int(reached_cap), device=device)
            dist.all_reduce(cap_tensor, op=dist.ReduceOp.MAX)
            reached_cap = bool(cap_tensor.item())
        if stop_after_step is None and reached_cap:
            stop_after_step = step

    tokens_seen = train_loader.stream.tokens_taken
    log0(f"train_tokens_seen:{tokens_seen} epochs:{tokens_seen / max(train_tokens_total, 1):.3f}")
    if use_cuda:
        log0(f"peak memory allocated: {torch.cuda.max_memory_allocated() // 1024 // 1024} MiB "
             f"reserved: {torch.cuda.max_memory_reserved() // 1024 // 1024} MiB")

    # Score the artifact that ships: int8 within the limit, the smaller format written, read back, loaded, evaluated.
    code_bytes = len(code.encode("utf-8"))
    if master:
        blob, chosen, levels = fit_artifact(base_model.state_dict(), code_bytes, log0)
        artifact_path.parent.mkdir(parents=True, exist_ok=True)
        (tmp_path := artifact_path.with_suffix(".tmp")).write_bytes(blob)
        tmp_path.replace(artifact_path)  # whole or not at all
        log0(f"Serialized model int8+{chosen}: {len(blob)} bytes ({artifact_path})")
        log0(f"Code size: {code_bytes} bytes")
        log0(f"Total submission size int8+{chosen}: {(total := len(blob) + code_bytes)} bytes")
        log0(f"submission_limit:{SUBMISSION_BYTE_LIMIT} format:{chosen} bytes_model:{len(blob)} bytes_code:{code_bytes} "
             f"bytes_total:{total} within_limit:{total <= SUBMISSION_BYTE_LIMIT} int8_levels:{levels}")
    if distributed:
        dist.barrier()
    base_model.load_state_dict(decompress_int8(artifact_path.read_bytes()), strict=True)
    sync()
    t_eval = time.perf_counter()
    q_val_loss, q_val_bpb = eval_val(h, model, rank, world_size, device, val_tokens, luts, autocast_enabled)
    sync()
    log0(f"final_int8_zlib_roundtrip val_loss:{q_val_loss:.4f} val_bpb:{q_val_bpb:.4f} "
         f"eval_time:{1000.0 * (time.perf_counter() - t_eval):.0f}ms")
    log0(f"final_int8_zlib_roundtrip_exact val_loss:{q_val_loss:.8f} val_bpb:{q_val_bpb:.8f}")
    if master:
        logfile.close()
    if distributed:
        # Free DDP (its reducer holds the process group) while the group is alive: freeing it after
        # destroy_process_group can deadlock gloo's teardown (a worker thread waits for the GIL).
        del model
        dist.destroy_process_group()


if __name__ == "__main__":
    try:
        main()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
