"""What the scripts share: the published long-context study's numbers and the Markdown table format.

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


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """A GitHub Markdown table as lines; '|' and newlines inside cells are escaped."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines
