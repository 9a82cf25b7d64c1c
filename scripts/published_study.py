"""What the scripts share: the published long-context study's numbers and settings, and the Markdown
table format.

The study: FineWeb sp1024, one H100 SXM, 600 s per run, 8 gradient-accumulation micro-steps,
FLASH attention; baseline = train_gpt.py's architecture, hybrid = 7 GDN + 2 attention layers.
"""

from __future__ import annotations

# Final int8+zlib round-trip val_bpb and steady-state ms per optimizer step, by model and context.
PUBLISHED_VAL_BPB = {"baseline": {8192: 1.3507, 16384: 1.4353, 32768: 1.7059},
                     "hybrid": {8192: 1.3810, 16384: 1.3999, 32768: 1.4709}}
PUBLISHED_MS_PER_STEP = {"baseline": {8192: 594, 16384: 952, 32768: 2202},
                         "hybrid": {8192: 757, 16384: 847, 32768: 1361}}
PUBLISHED_GRAD_ACCUM = 8
# The kernel settings that reproduce the study's (our trainers default to cuDNN and auto micro-steps).
PUBLISHED_KERNELS = {"SDPA_BACKEND": "flash", "GRAD_ACCUM_STEPS": PUBLISHED_GRAD_ACCUM}
# The study's hand-set Muon momentum warm-up and LR warm-down step counts (PUBLISHED_SCHEDULE=1 in the launcher).
PUBLISHED_SCHEDULE_STEPS = {"baseline": {8192: (190, 381), 16384: (118, 236), 32768: (50, 100)},
                            "hybrid": {8192: (160, 320), 16384: (104, 208), 32768: (79, 158)}}
# The published numerics arm, as environment settings: the study's kernels, rotary positions computed in bf16,
# GDN conv weights kept in bf16 (hybrid only), and the launcher's published step-count schedule.
PUBLISHED_ARM = {**{name: str(value) for name, value in PUBLISHED_KERNELS.items()}, "ROTARY_POSITIONS_BF16": "1",
                 "GDN_CONV_BF16": "1", "PUBLISHED_SCHEDULE": "1"}


def published_batch_tokens(context: int) -> int:
    """393,216 tokens per step up to 16,384 (24/48 sequences at 16k/8k), 524,288 above (16 sequences of 32k)."""
    return 393_216 if context <= 16_384 else 524_288


def crossover(hybrid_ahead: dict[int, bool]) -> tuple[int | None, int | None, bool]:
    """Where the hybrid pulls ahead, for context -> whether the hybrid is ahead there (faster, or better).

    Returns (the first context from which the hybrid is ahead at it and every larger context, the
    largest context below that where it is not, whether the comparison flips more than once).
    """
    contexts = sorted(hybrid_ahead)
    ahead = [hybrid_ahead[c] for c in contexts]
    first = None
    for context, is_ahead in zip(reversed(contexts), reversed(ahead)):
        if not is_ahead:
            break
        first = context
    last_behind = None
    for context, is_ahead in zip(contexts, ahead):
        if not is_ahead and (first is None or context < first):
            last_behind = context
    flips = sum(1 for a, b in zip(ahead, ahead[1:]) if a != b)
    return first, last_behind, flips > 1


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """A GitHub Markdown table as lines; '|' and newlines inside cells are escaped."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


if __name__ == "__main__":  # the published arm as settings: env $(python3 scripts/published_study.py) ./run_...
    print(" ".join(f"{key}={value}" for key, value in PUBLISHED_ARM.items()))
