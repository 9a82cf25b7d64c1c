#!/usr/bin/env python3
"""Run a trainer under several settings ("arms") on the same data and seed; compare the first losses.

How a speed change is checked: the first steps' train losses of the changed code must agree with the
unchanged code within bf16 noise. Each arm is a fresh trainer process started the way users start it
(torchrun when the arm sets NPROC, plain python3 otherwise), with the trainer's own logging; this script
reads the logs back. An arm's TRAINER=PATH runs another copy of the trainer, e.g. the code before a change:

    git show HEAD~1:train_gpt.py > /tmp/old_train_gpt.py
    python3 scripts/compare_losses.py --trainer train_gpt.py --steps 20 --data-path DIR \
        --tokenizer-path MODEL --env TRAIN_SEQ_LEN=8192 --arm old:TRAINER=/tmp/old_train_gpt.py --arm new:

Every arm gets VAL_LOSS_EVERY=0 unless --env says otherwise, then the --env settings, then
ITERATIONS=--steps, TRAIN_LOG_EVERY=1 and MAX_WALLCLOCK_SECONDS=0 (no cap, so no wall-clock
warm-down: the LR schedule is the same in every arm whatever its speed), then the arm's own.
The first arm is the reference. Printed: the losses side by side with each arm's largest
|difference| from the reference, and each arm's ms/step as the median (min-max) of the per-step
train_time increments after --skip-steps (the first steps of a fresh process are slower).
--out-json writes the same numbers; --max-abs-diff makes the exit status 1 when an arm's largest
difference exceeds it (the losses are logged with 4 decimals). --from-json FILE prints the tables of
such a file again (nothing runs). "vs first arm" is the ratio of medians of separate processes, which
differ by a few per cent for one setting; for step times use scripts/bench_step_time.py --arm.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402  (the one parser of trainer logs)
from published_study import markdown_table  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def bad_input(message: str):
    """Bad input: one line `error: ...` on stderr and exit status 2 (argparse's status for bad arguments)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class OneLineErrors(argparse.ArgumentParser):
    """Bad arguments: one `error:` line (bad_input), no usage block."""

    def error(self, message: str):
        bad_input(f"{message}; see --help")


def existing_file(text: str, what: str) -> Path:
    """A path as given (absolute, or relative to the current directory, else to the repository root)."""
    for path in (Path(text), REPO_ROOT / text):
        if path.is_file():
            return path.resolve()
    bad_input(f"{what} {text}: no such file; give the path of an existing file")


def parse_arm(text: str) -> tuple[str, dict[str, str]]:
    """'name:KEY=VALUE,KEY=VALUE' -> (name, {KEY: VALUE}); 'name:' alone is the unchanged setting."""
    name, sep, settings = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--arm {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE...] (NAME: for none)")
    return name, dict(parse_env(item, f"--arm {text!r}") for item in filter(None, settings.split(",")))


def parse_env(text: str, where: str = "--env") -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"{where}: {text!r} is not KEY=VALUE")
    if key == "NPROC" and not value.isdigit():
        raise argparse.ArgumentTypeError(f"{where}: NPROC={value} is not a number of processes")
    return key, value


def run_arm(trainer: Path, name: str, env: dict[str, str], own: dict[str, str], log_dir: Path,
            timeout_s: float) -> dict:
    """One fresh trainer process with env (shared settings and the arm's own, `own`); its log read back.
    NPROC=N starts it with torchrun on N processes; TRAINER=PATH runs that file instead of `trainer`."""
    env = dict(env)
    nproc = env.pop("NPROC", "0")  # digits: parse_env checked
    trainer = existing_file(env.pop("TRAINER"), f"arm {name}: TRAINER") if "TRAINER" in env else trainer
    run_id = f"compare_{name}_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"
    full_env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    full_env.update(env)
    full_env.update({"RUN_ID": run_id, "LOG_DIR": str(log_dir)})
    if int(nproc):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(trainer)]
    else:
        cmd = [sys.executable, str(trainer)]
    started = time.perf_counter()
    try:
        result = subprocess.run(cmd, cwd=REPO_ROOT, env=full_env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        bad_input(f"arm {name} ran past --timeout {timeout_s:g} s; raise --timeout or run fewer --steps")
    wall_s = time.perf_counter() - started
    log_path = log_dir / f"{run_id}.txt"
    if result.returncode != 0 or not log_path.is_file():
        print((result.stderr or result.stdout)[-2000:], file=sys.stderr)
        bad_input(f"arm {name} failed (exit {result.returncode}, its output above); fix it and rerun")
    run = report.parse_log(log_path)
    return {"name": name, "settings": dict(own), "log": str(log_path), "trainer": str(trainer),
            "world_size": run.world_size, "grad_accum_steps": run.grad_accum_steps, "device": run.device,
            "sdpa_backend": run.sdpa_backend, "wall_s": round(wall_s, 1),
            "steps": [p[0] for p in run.train], "losses": [p[3] for p in run.train],
            "train_time_ms": [p[1] for p in run.train], "peak_alloc_mib": run.peak_alloc_mib}


def step_times(arm: dict, skip_steps: int) -> list[float]:
    """Per-step ms from consecutive train_time values (logged every step), after skip_steps."""
    pairs = list(zip(arm["steps"], arm["train_time_ms"]))
    return [t1 - t0 for (s0, t0), (s1, t1) in zip(pairs, pairs[1:]) if s1 == s0 + 1 and s0 >= skip_steps]


def summarize(arms: list[dict], skip_steps: int) -> None:
    reference = arms[0]
    for arm in arms:
        n = min(len(arm["losses"]), len(reference["losses"]))
        if n == 0 or arm["steps"][:n] != reference["steps"][:n]:
            bad_input(f"arm {arm['name']!r} logged steps {arm['steps'][:n]}, the first arm {reference['steps'][:n]}")
        diffs = [abs(a - b) for a, b in zip(arm["losses"][:n], reference["losses"][:n])]
        arm["max_abs_diff"] = max(diffs)
        arm["mean_abs_diff"] = sum(diffs) / n
        times = step_times(arm, skip_steps)
        arm["ms_per_step"] = statistics.median(times) if times else None
        arm["ms_per_step_range"] = [min(times), max(times)] if times else None
    ref_ms = reference["ms_per_step"]
    for arm in arms:  # one process per arm: ~5% between two processes of one setting on the H100 is noise
        arm["ms_ratio_vs_reference"] = (arm["ms_per_step"] / ref_ms if arm["ms_per_step"] is not None and ref_ms
                                        else None)


def print_tables(arms: list[dict]) -> None:
    names = [a["name"] for a in arms]
    rows = [[step] + [f"{a['losses'][i]:.4f}" if i < len(a["losses"]) else "-" for a in arms]
            for i, step in enumerate(arms[0]["steps"])]
    print("\n".join(markdown_table(["step"] + names, rows)))
    print()
    rows = []
    for a in arms:
        timing = "-" if a["ms_per_step"] is None else (
            f"{a['ms_per_step']:.1f} ({a['ms_per_step_range'][0]:.1f}-{a['ms_per_step_range'][1]:.1f})")
        ratio = a.get("ms_ratio_vs_reference")
        rows.append([a["name"], ",".join(f"{k}={v}" for k, v in a["settings"].items()) or "(unchanged)",
                     f"{a['world_size']}x{a['grad_accum_steps']}", f"{a['max_abs_diff']:.4f}",
                     f"{a['mean_abs_diff']:.4f}", timing, "-" if ratio is None else f"{ratio:.2f}",
                     a["peak_alloc_mib"] if a["peak_alloc_mib"] is not None else "-"])
    print("\n".join(markdown_table(["arm", "settings", "world size x micro-steps", "max abs diff", "mean abs diff",
                                     "ms/step median (min-max)", "vs first arm", "peak MiB"], rows)))


def print_saved(path: Path, skip_steps: int) -> int:
    """The tables of a saved --out-json file, recomputed from the losses and step times it holds."""
    if not path.is_file():
        bad_input(f"--from-json {path}: no such file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        arms = doc.get("arms") or []
        if arms:
            summarize(arms, skip_steps)
    except (ValueError, AttributeError, KeyError, TypeError):
        arms = []
    if not arms:
        bad_input(f"--from-json {path} holds no arms with losses: not a compare_losses.py --out-json file")
    print(f"trainer {doc.get('trainer')}, {doc.get('steps')} steps, shared settings: "
          + ",".join(f"{k}={v}" for k, v in (doc.get("env") or {}).items()) + f" (from {path})")
    print_tables(arms)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = OneLineErrors(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-json", metavar="RESULTS.json",
                        help="print the tables of an earlier --out-json file (its arms' logged losses and step "
                             "times) and exit; nothing runs")
    parser.add_argument("--trainer", help="train_gpt.py or train_gpt_gdn.py (an arm's TRAINER=PATH overrides it)")
    parser.add_argument("--arm", type=parse_arm, action="append",
                        help="NAME:KEY=VALUE[,KEY=VALUE...]; the first arm is the reference; NPROC=N uses torchrun; "
                             "TRAINER=PATH runs another copy of the trainer")
    parser.add_argument("--env", type=parse_env, action="append", default=[], help="KEY=VALUE for every arm")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--skip-steps", type=int, default=5, help="steps left out of ms/step")
    parser.add_argument("--data-path")
    parser.add_argument("--tokenizer-path")
    parser.add_argument("--log-dir", default="logs", help="where the arms' trainer logs go")
    parser.add_argument("--out-json")
    parser.add_argument("--max-abs-diff", type=float)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per arm")
    args = parser.parse_args(argv)
    if args.from_json:
        return print_saved(Path(args.from_json), args.skip_steps)
    missing = [flag for flag, value in (("--trainer", args.trainer), ("--arm", args.arm),
                                        ("--data-path", args.data_path), ("--tokenizer-path", args.tokenizer_path))
               if not value]
    if missing:
        parser.error(f"the following arguments are required without --from-json: {', '.join(missing)}")

    trainer = existing_file(args.trainer, "--trainer")
    for name, settings in args.arm:
        if "TRAINER" in settings:
            existing_file(settings["TRAINER"], f"arm {name}: TRAINER")
    data_path, tokenizer = Path(args.data_path), Path(args.tokenizer_path)
    if not sorted(data_path.glob("fineweb_train_*.bin")):
        parser.error(f"--data-path {data_path}: no fineweb_train_*.bin shards there; give the dataset folder")
    if not tokenizer.is_file():
        parser.error(f"--tokenizer-path {tokenizer}: no such file; give the tokenizer's .model file")
    if len({name for name, _ in args.arm}) != len(args.arm):
        parser.error("--arm names must differ")
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    log_dir = Path(args.log_dir).resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    common = {"VAL_LOSS_EVERY": "0"}
    common.update(dict(args.env))
    # What the comparison needs comes last: every step logged, the same step count, no wall-clock cap.
    common.update({"DATA_PATH": str(data_path.resolve()), "TOKENIZER_PATH": str(tokenizer.resolve()),
                   "ITERATIONS": str(args.steps), "TRAIN_LOG_EVERY": "1", "MAX_WALLCLOCK_SECONDS": "0"})
    arms = []
    for name, settings in args.arm:
        print(f"arm {name}: {settings or '(unchanged)'}", file=sys.stderr, flush=True)
        arms.append(run_arm(trainer, name, {**common, **settings}, settings, log_dir, args.timeout))
    summarize(arms, args.skip_steps)
    print(f"trainer {args.trainer}, {args.steps} steps, shared settings: "
          + ",".join(f"{k}={v}" for k, v in dict(args.env).items()))
    print_tables(arms)
    if args.out_json:
        Path(args.out_json).write_text(json.dumps({"trainer": args.trainer, "steps": args.steps, "env": dict(args.env),
                                                   "arms": arms}, indent=1) + "\n", encoding="utf-8")
    if args.max_abs_diff is not None and any(a["max_abs_diff"] > args.max_abs_diff for a in arms):
        worst = max(arms, key=lambda a: a["max_abs_diff"])
        print(f"arm {worst['name']} differs by {worst['max_abs_diff']:.4f} > --max-abs-diff {args.max_abs_diff}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
