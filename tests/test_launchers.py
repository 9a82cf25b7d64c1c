"""The long-context launchers: argument checks, and the exact environment they hand to torchrun.

A fake `torchrun` first on PATH stands in for the real one (which would start training): it prints
one JSON line with its arguments, working directory and environment, and exits.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from compare_losses import parse_arm  # scripts/ is on sys.path (conftest): the --arm syntax of both scripts

REPO_ROOT = Path(__file__).resolve().parents[1]
SINGLE = {"baseline": ("run_baseline_long_context_single_h100.sh", "train_gpt.py"),
          "hybrid": ("run_hybrid_long_context_single_h100.sh", "train_gpt_gdn.py")}
ALL = {"baseline": "run_baseline_long_context_all_single_h100.sh",
       "hybrid": "run_hybrid_long_context_all_single_h100.sh"}
LENGTHS = (8192, 16384, 32768)
BATCH_TOKENS = {8192: "393216", 16384: "393216", 32768: "524288"}
PUBLISHED = {"TIED_EMBED_LR": "0.030", "MATRIX_LR": "0.020", "SCALAR_LR": "0.020", "MUON_MOMENTUM": "0.99",
             "MUON_MOMENTUM_WARMUP_START": "0.92", "WARMUP_STEPS": "20", "VAL_LOSS_EVERY": "50",
             "TRAIN_LOG_EVERY": "10", "MUON_MOMENTUM_WARMUP_FRAC": "0.18", "WARMDOWN_FRAC": "0.36"}
FAKE_TORCHRUN = f"""#!{sys.executable}
import json, os, sys
print(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}))
"""


@pytest.fixture
def fake_env(tmp_path):
    """A clean environment whose PATH starts with a folder holding the fake torchrun."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "torchrun"
    fake.write_text(FAKE_TORCHRUN)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return {"PATH": f"{bin_dir}{os.pathsep}/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}


def launch(script: str, args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO_ROOT / script), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def torchrun_calls(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def assert_bash_that_parses(path: Path) -> str:
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    return text


@pytest.mark.parametrize("script", [s for s, _ in SINGLE.values()] + list(ALL.values()))
def test_scripts_are_strict_executable_bash(script):
    path = REPO_ROOT / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    assert "set -euo pipefail" in assert_bash_that_parses(path)


@pytest.mark.parametrize("model", list(SINGLE))
def test_no_hand_computed_step_counts_and_every_setting_explained(model):
    # The per-model launchers hand over to one shared script that holds the settings.
    assert "scripts/launch_long_context.sh" in (REPO_ROOT / SINGLE[model][0]).read_text()
    text = (REPO_ROOT / "scripts" / "launch_long_context.sh").read_text()
    assert "WARMDOWN_ITERS" not in text and "MUON_MOMENTUM_WARMUP_STEPS" not in text
    for name in PUBLISHED:
        lines = [line for line in text.splitlines() if line.startswith(f"export {name}=")]
        assert len(lines) == 1, name
        assert re.search(r"\S\s+#\s*\S", lines[0]), f"export {name} has no one-line comment: {lines[0]!r}"


@pytest.mark.parametrize("model", list(SINGLE))
@pytest.mark.parametrize("args", [[], ["4096"], ["1024"], ["8k"], ["abc"], [""], ["8192", "16384"]])
def test_single_rejects_missing_or_bad_length(model, args, fake_env, tmp_path):
    proc = launch(SINGLE[model][0], args, fake_env, tmp_path)
    assert proc.returncode != 0
    assert "usage" in proc.stderr.lower()
    for length in LENGTHS:
        assert str(length) in proc.stderr
    assert torchrun_calls(proc) == []  # nothing started


@pytest.mark.parametrize("model", list(SINGLE))
@pytest.mark.parametrize("length", LENGTHS)
def test_single_hands_torchrun_the_published_settings(model, length, fake_env, tmp_path):
    script, trainer = SINGLE[model]
    env = dict(fake_env, SDPA_BACKEND="flash", GRAD_ACCUM_STEPS="8")  # published kernel settings pass through
    proc = launch(script, [str(length)], env, tmp_path)  # run from elsewhere: the script must cd itself
    assert proc.returncode == 0, proc.stderr
    (call,) = torchrun_calls(proc)
    assert call["argv"] == ["--standalone", "--nproc_per_node=1", trainer]
    assert Path(call["cwd"]) == REPO_ROOT
    got = call["env"]
    for name, value in PUBLISHED.items():
        assert got[name] == value, name
    assert got["TRAIN_SEQ_LEN"] == str(length)
    assert got["TRAIN_BATCH_TOKENS"] == BATCH_TOKENS[length]
    assert got["SEED"] == "1337"
    assert re.fullmatch(rf"{model}_{length}_seed1337_\d{{8}}_\d{{6}}", got["RUN_ID"]), got["RUN_ID"]
    assert got["DATA_PATH"] == "./data/datasets/fineweb10B_sp1024"
    assert got["TOKENIZER_PATH"] == "./data/tokenizers/fineweb_1024_bpe.model"
    assert got["MAX_WALLCLOCK_SECONDS"] == "600"
    assert got["LOG_DIR"] == "logs_experiment"
    assert got["SDPA_BACKEND"] == "flash" and got["GRAD_ACCUM_STEPS"] == "8"
    for name in ("WARMDOWN_ITERS", "MUON_MOMENTUM_WARMUP_STEPS", "ITERATIONS"):
        assert name not in got, name


@pytest.mark.parametrize("model", list(SINGLE))
def test_single_respects_overrides(model, fake_env, tmp_path):
    script, trainer = SINGLE[model]
    overrides = {"RUN_ID": "my_run", "SEED": "42", "DATA_PATH": "/data/x", "TOKENIZER_PATH": "/data/t.model",
                 "MAX_WALLCLOCK_SECONDS": "300", "NPROC": "2", "LOG_DIR": "elsewhere", "SOMETHING_ELSE": "kept"}
    proc = launch(script, ["16384"], dict(fake_env, **overrides), tmp_path)
    assert proc.returncode == 0, proc.stderr
    (call,) = torchrun_calls(proc)
    assert call["argv"] == ["--standalone", "--nproc_per_node=2", trainer]
    for name, value in overrides.items():
        if name != "NPROC":
            assert call["env"][name] == value, name
    assert call["env"]["TRAIN_SEQ_LEN"] == "16384"
    # A seed override alone goes into the default RUN_ID.
    proc = launch(script, ["8192"], dict(fake_env, SEED="7"), tmp_path)
    (call,) = torchrun_calls(proc)
    assert re.fullmatch(rf"{model}_8192_seed7_\d{{8}}_\d{{6}}", call["env"]["RUN_ID"])
    assert call["env"]["SEED"] == "7"


@pytest.mark.parametrize("model", list(ALL))
def test_all_runs_three_lengths_in_turn(model, fake_env, tmp_path):
    proc = launch(ALL[model], [], fake_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    calls = torchrun_calls(proc)
    assert [c["env"]["TRAIN_SEQ_LEN"] for c in calls] == [str(n) for n in LENGTHS]
    assert [c["env"]["TRAIN_BATCH_TOKENS"] for c in calls] == [BATCH_TOKENS[n] for n in LENGTHS]
    for call, length in zip(calls, LENGTHS):
        assert call["argv"][-1] == SINGLE[model][1]
        assert call["env"]["MUON_MOMENTUM_WARMUP_FRAC"] == "0.18" and call["env"]["WARMDOWN_FRAC"] == "0.36"
        assert call["env"]["RUN_ID"].startswith(f"{model}_{length}_seed1337_")
    # A RUN_ID set by the user gets the length appended, so the three logs stay distinct.
    proc = launch(ALL[model], [], dict(fake_env, RUN_ID="study", SEED="5"), tmp_path)
    assert [c["env"]["RUN_ID"] for c in torchrun_calls(proc)] == [f"study_{n}" for n in LENGTHS]
    assert launch(ALL[model], ["8192"], fake_env, tmp_path).returncode != 0


@pytest.mark.parametrize("model", list(ALL))
def test_all_stops_at_first_failure(model, fake_env, tmp_path):
    fake = Path(fake_env["PATH"].split(os.pathsep)[0]) / "torchrun"
    fake.write_text(FAKE_TORCHRUN + "sys.exit(3)\n")
    proc = launch(ALL[model], [], fake_env, tmp_path)
    assert proc.returncode == 3
    assert len(torchrun_calls(proc)) == 1


# ---------------------------------------------------------------- the team's lent-GPU helpers


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO_ROOT / "scripts" / "device").glob("*.sh")))
def test_device_scripts_parse(script):
    assert_bash_that_parses(REPO_ROOT / "scripts" / "device" / script)


def test_device_queue_runs_each_job_through_the_launcher(fake_env, tmp_path):
    """queue_runs.sh waits for the data flag, then hands each job to the launcher in order, extras included."""
    device_tmp = tmp_path / "device"
    (device_tmp / "data").mkdir(parents=True)
    (device_tmp / "data" / "ready").touch()
    env = dict(fake_env, DEVICE_TMP=str(device_tmp), REPO=str(REPO_ROOT))
    jobs = ["hybrid 32768 1337", "baseline 8192 42 SDPA_BACKEND=flash GRAD_ACCUM_STEPS=8"]
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "device" / "queue_runs.sh"), *jobs], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    ends = [line for line in proc.stdout.splitlines() if " end " in line]
    assert [line.split(" end ")[1] for line in ends] == [f"{job} rc=0" for job in jobs]
    logs = device_tmp / "logs"
    hybrid = json.loads((logs / "stdout_hybrid_32768_1337.out").read_text().splitlines()[-1])
    baseline = json.loads((logs / "stdout_baseline_8192_42.out").read_text().splitlines()[-1])
    assert hybrid["argv"][-1] == "train_gpt_gdn.py" and baseline["argv"][-1] == "train_gpt.py"
    assert hybrid["env"]["DATA_PATH"] == str(device_tmp / "data" / "datasets" / "corpus_sp1024")
    assert hybrid["env"]["LOG_DIR"] == str(logs)
    # compile caches under the device folder, where caches.sh packs them for the next machine
    assert {hybrid["env"][k] for k in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TILELANG_CACHE_DIR")} == {
        str(device_tmp / "cache" / name) for name in ("inductor", "triton", "tilelang")}
    assert (hybrid["env"]["SEED"], hybrid["env"]["TRAIN_SEQ_LEN"]) == ("1337", "32768")
    assert hybrid["env"]["RUN_ID"].startswith("hybrid_32768_seed1337_")
    assert "SDPA_BACKEND" not in hybrid["env"]
    assert (baseline["env"]["SEED"], baseline["env"]["SDPA_BACKEND"], baseline["env"]["GRAD_ACCUM_STEPS"]) == (
        "42", "flash", "8")


def test_device_mark_ready_checks_every_shard(tiny_data, tmp_path):
    """mark_ready.py creates the flag only when the device-built shards equal the manifest built here."""
    script = REPO_ROOT / "scripts" / "device" / "mark_ready.py"
    dataset = tmp_path / "built"
    shutil.copytree(tiny_data["data_path"], dataset)
    manifest = tiny_data["data_path"] / "manifest.json"
    flag = tmp_path / "data" / "ready"

    def mark() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), str(dataset), str(manifest), str(flag)],
                              capture_output=True, text=True, timeout=60)

    ok = mark()
    assert ok.returncode == 0 and flag.exists(), ok.stdout + ok.stderr
    flag.unlink()
    shard = sorted(dataset.glob("fineweb_train_*.bin"))[-1]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1  # one token differs
    shard.write_bytes(bytes(data))
    bad = mark()
    assert bad.returncode == 1 and not flag.exists()
    assert f"{shard.name}: sha256" in bad.stdout
    shard.unlink()
    missing = mark()
    assert missing.returncode == 1 and f"{shard.name}: missing" in missing.stdout and not flag.exists()


def test_device_caches_save_and_restore(tmp_path):
    """caches.sh save packs $T/cache into parts; restore on a fresh device folder brings back every file."""
    script = REPO_ROOT / "scripts" / "device" / "caches.sh"
    first, second, parts = tmp_path / "first", tmp_path / "second", tmp_path / "out"
    files = {"inductor/fxgraph/ab/entry": b"graph", "triton/XYZ/kernel.cubin": bytes(range(256)) * 40,
             "tilelang/k/lib.so": b"\x7fELF"}
    for rel, data in files.items():
        (first / "cache" / rel).parent.mkdir(parents=True, exist_ok=True)
        (first / "cache" / rel).write_bytes(data)

    def caches(device_tmp: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(script), *args], env=dict(os.environ, DEVICE_TMP=str(device_tmp)),
                              capture_output=True, text=True, timeout=60)

    saved = caches(first, "save", str(parts))
    assert saved.returncode == 0, saved.stderr
    assert [p.name for p in sorted(parts.iterdir())] == ["caches.tgz.00"]
    restored = caches(second, "restore", str(parts))
    assert restored.returncode == 0, restored.stderr
    for rel, data in files.items():
        assert (second / "cache" / rel).read_bytes() == data
    missing = caches(second, "restore", str(tmp_path / "nothing"))
    assert missing.returncode == 1 and "no caches.tgz" in missing.stdout
    assert caches(second, "bogus").returncode == 2


def run_gpu_checks_with_fake_python(tmp_path: Path, steps: list[str], extra_env: dict[str, str] | None = None):
    """gpu_checks.sh STEPS with a python3 on PATH that only records its arguments and a ready flag in place:
    -> (the finished process, each python3 call's argv)."""
    bin_dir, record = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "open(os.environ['RECORD'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    device_tmp = tmp_path / "device"
    (device_tmp / "data").mkdir(parents=True)
    (device_tmp / "data" / "ready").touch()
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path),
           "DEVICE_TMP": str(device_tmp), "REPO": str(REPO_ROOT), "RECORD": str(record), **(extra_env or {})}
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "device" / "gpu_checks.sh"), *steps],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc, [json.loads(line) for line in record.read_text().splitlines()]


def test_device_gpu_checks_runs_every_step_with_settings_the_trainers_read(tmp_path):
    """gpu_checks.sh, with python3 faked to record its arguments: every step runs in order, an unknown one is
    named, and every setting a check passes (its arms and shared --env) is a variable the trainers read, so a
    typo cannot cost a GPU session a silently unchanged arm."""
    steps = ["fla_tests", "micro_steps", "variants", "published_kernels", "bench_fast", "bench_order", "custom_op_tests",
             "muon_tests", "bench_variants", "keep_states", "two_gpus", "profile"]
    proc, calls = run_gpu_checks_with_fake_python(tmp_path, [*steps, "nosuch"])
    assert [line.split(" end ")[1] for line in proc.stdout.splitlines() if " end " in line] == [
        f"{step} rc=0" for step in steps]
    unknown = [line for line in proc.stdout.splitlines() if line.startswith("unknown step nosuch")]
    assert unknown and all(step in unknown[0] for step in steps)  # the message lists every step there is

    sources = {name: (REPO_ROOT / name).read_text(encoding="utf-8") for name in ("train_gpt.py", "train_gpt_gdn.py")}
    checked = set()
    for argv in calls:
        if argv[0].endswith("compare_losses.py"):
            trainer = sources[argv[argv.index("--trainer") + 1]]
            settings = [value for flag, value in zip(argv, argv[1:]) if flag == "--env"]
        elif argv[0].endswith("bench_step_time.py"):
            trainer = sources["train_gpt_gdn.py"]  # the baseline ignores GDN settings; the hybrid reads them all
            settings = (list(itertools.takewhile(lambda a: not a.startswith("--"), argv[argv.index("--env") + 1:]))
                        if "--env" in argv else [])
        else:
            continue
        for flag, value in zip(argv, argv[1:]):
            if flag == "--arm":  # read as both scripts read it
                settings += [f"{key}={v}" for key, v in parse_arm(value)[1].items()]
        for key in (kv.partition("=")[0] for kv in settings):
            if key != "NPROC":  # compare_losses' own: torchrun's process count
                assert f'"{key}"' in trainer, f"{key} is not read by the trainer: {argv}"
                checked.add(key)
    assert {"MUON_COMPILE", "MUON_BATCHED", "GDN_SHIFT_CONV", "GDN_HEADS", "GRAD_ACCUM_STEPS", "FUSED_PROJECTIONS",
            "NUM_KV_HEADS", "SDPA_BACKEND", "GDN_KEEP_STATES"} <= checked
    benches = [argv for argv in calls if argv[0].endswith("bench_step_time.py") and "--arm" in argv]
    assert len(benches) == 4 and all(argv.count("--arm") >= 2 for argv in benches)  # both arms in one process


@pytest.mark.parametrize("contexts", [None, "16384,8192"])
def test_device_bench_variants_contexts_follow_variant_contexts(contexts, tmp_path):
    """bench_variants benchmarks 32k and 16k unless VARIANT_CONTEXTS names others (what a session cut off
    is resumed without repeating the contexts already measured)."""
    _, calls = run_gpu_checks_with_fake_python(tmp_path, ["bench_variants"],
                                               {"VARIANT_CONTEXTS": contexts} if contexts else None)
    (argv,) = calls
    assert argv[argv.index("--contexts") + 1] == (contexts or "32768,16384")


def test_device_poll_logs_returns_run_logs_and_check_results(tmp_path):
    """poll_logs.sh: the run logs, their stdout files and gpu_checks.sh's JSON results (not its raw logs or traces,
    since a device call returns at most 8 files) land in $OUT; WANT=1 returns as soon as one run has finished."""
    device_tmp, out = tmp_path / "device", tmp_path / "out"
    (device_tmp / "logs").mkdir(parents=True)
    (device_tmp / "checks" / "logs").mkdir(parents=True)
    out.mkdir()
    (device_tmp / "logs" / "hybrid_32768_seed42_x.txt").write_text(
        "step:10/20000 train_loss:5.9 train_time:9000ms step_avg:900.00ms\n"
        "final_int8_zlib_roundtrip_exact val_loss:2.3 val_bpb:1.37\n")
    (device_tmp / "logs" / "stdout_hybrid_32768_42.out").write_text("")
    (device_tmp / "logs" / "baseline_8192_seed1337_y.txt").write_text(  # still training: 550 of its 600 s done
        "config max_wallclock_seconds:600.0\n"
        "step:1300/20000 val_loss:2.1813 val_bpb:1.3006 train_time:542204ms step_avg:417.08ms\n"
        "step:1320/20000 train_loss:2.1911 train_time:550206ms step_avg:416.82ms\n")
    (device_tmp / "logs" / "hybrid_16384_seed1337_z.txt").write_text("config max_wallclock_seconds:600.0\n")
    (device_tmp / "logs" / "queue.out").write_text("start hybrid 32768 42\n")
    (device_tmp / "checks" / "bench_fast.json").write_text("{}")
    (device_tmp / "checks" / "bench_fast.out").write_text("raw")
    (device_tmp / "checks" / "logs" / "compare_default.txt").write_text("raw")
    (device_tmp / "checks.out").write_text("04:44:00 start bench_fast\n")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "DEVICE_TMP": str(device_tmp), "OUT": str(out)}
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "device" / "poll_logs.sh"), "60", "1"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 or "nvidia-smi" in proc.stderr, proc.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "baseline_8192_seed1337_y.txt", "checks/bench_fast.json", "checks/checks.out", "hybrid_16384_seed1337_z.txt",
        "hybrid_32768_seed42_x.txt", "queue.out", "stdout_hybrid_32768_42.out"]
    assert "start bench_fast" in proc.stdout and "val_bpb:1.37" in proc.stdout
    # what each unfinished run still needs (the finished one gets no such line)
    left = [line for line in proc.stdout.splitlines() if line.startswith("left:")]
    assert left == ["left: ~50 s of training, then the final validation and round trip (~1 min)",
                    "left: not training yet (warm-up): the whole budget, then ~1 min"]


def test_compare_losses_names_what_is_missing(tmp_path):
    """compare_losses.py: without --from-json the run's arguments are required and named; a missing or foreign
    --from-json file is an error that names it."""
    script = [sys.executable, str(REPO_ROOT / "scripts" / "compare_losses.py")]
    proc = subprocess.run(script + ["--trainer", "train_gpt.py"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--arm, --data-path, --tokenizer-path" in proc.stderr
    proc = subprocess.run(script + ["--from-json", str(tmp_path / "nosuch.json")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "nosuch.json: no such file" in proc.stderr
    other = tmp_path / "bench.json"
    other.write_text(json.dumps({"schema": "bench_step_time/1", "results": []}))
    proc = subprocess.run(script + ["--from-json", str(other)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "holds no arms" in proc.stderr
