"""The long-context launchers: argument checks, the --check before torchrun, the GPU sampler beside the log,
and the exact environment they hand to torchrun.

Fakes first on PATH stand in for the real programs: `torchrun` (which would start training) prints one JSON
line with its arguments, working directory and environment, and exits; `python3` (the trainer's --check)
appends the same to a record file and exits with FAKE_CHECK_STATUS; `nvidia-smi` (the sampler) writes its
arguments and pid, then a CSV header and a row every 0.1 s until it is killed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SINGLE = {"baseline": ("run_baseline_long_context_single_h100.sh", "train_gpt.py"),
          "hybrid": ("run_hybrid_long_context_single_h100.sh", "train_gpt_gdn.py")}
ALL = {"baseline": "run_baseline_long_context_all_single_h100.sh",
       "hybrid": "run_hybrid_long_context_all_single_h100.sh"}
LENGTHS = (4096, 8192, 16384, 32768, 65536)
STUDY_LENGTHS = (8192, 16384, 32768)  # what the "all" launchers run
# The published study's batch: 393,216 tokens (12 sequences of 32k) up to 16k, 16 sequences of 32k from there.
BATCH_TOKENS = {4096: "393216", 8192: "393216", 16384: "393216", 32768: "524288", 65536: "524288"}
PUBLISHED = {"TIED_EMBED_LR": "0.030", "MATRIX_LR": "0.020", "SCALAR_LR": "0.020", "MUON_MOMENTUM": "0.99",
             "MUON_MOMENTUM_WARMUP_START": "0.92", "WARMUP_STEPS": "20", "VAL_LOSS_EVERY": "50",
             "TRAIN_LOG_EVERY": "10", "MUON_MOMENTUM_WARMUP_FRAC": "0.18", "WARMDOWN_FRAC": "0.36"}
# The published launchers' hand-set (MUON_MOMENTUM_WARMUP_STEPS, WARMDOWN_ITERS) per model and context.
PUBLISHED_STEPS = {("baseline", 8192): ("190", "381"), ("baseline", 16384): ("118", "236"),
                   ("baseline", 32768): ("50", "100"), ("hybrid", 8192): ("160", "320"),
                   ("hybrid", 16384): ("104", "208"), ("hybrid", 32768): ("79", "158")}
FAKE_TORCHRUN = f"""#!{sys.executable}
import json, os, sys
print(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}))
"""
FAKE_PYTHON3 = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_RECORD"], "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}) + "\\n")
status = int(os.environ.get("FAKE_CHECK_STATUS", "0"))
print("error: TRAIN_SEQ_LEN is wrong; set it right" if status else "ok: checked", file=sys.stderr if status else sys.stdout)
sys.exit(status)
"""
FAKE_NVIDIA_SMI = f"""#!{sys.executable}
import json, os, sys, time
with open(os.environ["FAKE_SAMPLER"], "w") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "pid": os.getpid()}}))
print("timestamp, utilization.gpu [%], clocks.current.sm [MHz], power.draw [W], clocks_event_reasons.active", flush=True)
while True:
    print("2026/11/23 17:35:02.000, 100, 1980, 690.00, 0x0000000000000004", flush=True)
    time.sleep(0.1)
"""


def install(bin_dir: Path, name: str, text: str) -> Path:
    path = bin_dir / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def fake_env(tmp_path):
    """A clean environment whose PATH starts with a folder holding the fake torchrun and python3."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    install(bin_dir, "torchrun", FAKE_TORCHRUN)
    install(bin_dir, "python3", FAKE_PYTHON3)
    return {"PATH": f"{bin_dir}{os.pathsep}/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
            "FAKE_RECORD": str(tmp_path / "checks.jsonl")}


def launch(script: str, args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO_ROOT / script), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def torchrun_calls(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def check_calls(env: dict) -> list[dict]:
    record = Path(env["FAKE_RECORD"])
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def assert_bash_that_parses(path: Path) -> str:
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    return text


@pytest.mark.parametrize("script", [s for s, _ in SINGLE.values()] + list(ALL.values()) + [
    "scripts/launch_long_context.sh", "scripts/launch_long_context_all.sh", "scripts/demo_cpu.sh"])
def test_scripts_are_strict_executable_bash(script):
    path = REPO_ROOT / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    assert "set -euo pipefail" in assert_bash_that_parses(path)


@pytest.mark.parametrize("model", list(SINGLE))
def test_no_hand_computed_step_counts_and_every_setting_explained(model):
    """Schedules are wall-clock fractions; the one table of step counts is the published study's, used only
    with PUBLISHED_SCHEDULE=1, and each of its rows is a model and context the study ran."""
    # The per-model launchers hand over to one shared script that holds the settings.
    assert "scripts/launch_long_context.sh" in (REPO_ROOT / SINGLE[model][0]).read_text()
    text = (REPO_ROOT / "scripts" / "launch_long_context.sh").read_text()
    for name in PUBLISHED:
        lines = [line for line in text.splitlines() if line.startswith(f"export {name}=")]
        assert len(lines) == 1, name
        assert re.search(r"\S\s+#\s*\S", lines[0]), f"export {name} has no one-line comment: {lines[0]!r}"
    rows = re.findall(r"^\s+(baseline|hybrid):(\d+)\) echo \"(\d+) (\d+)\" ;;$", text, flags=re.M)
    assert {(m, int(n)): (a, b) for m, n, a, b in rows} == PUBLISHED_STEPS and len(rows) == len(PUBLISHED_STEPS)
    for name in ("WARMDOWN_ITERS", "MUON_MOMENTUM_WARMUP_STEPS"):
        (line,) = [line for line in text.splitlines() if name in line and not line.startswith("#")]
        assert line.startswith("    export ") and not re.search(rf"{name}=\d", line), line  # from the table
    branch = text[text.index('if [[ "$PUBLISHED_SCHEDULE" == 1 ]]; then'):]
    assert branch.index("WARMDOWN_ITERS") < branch.index("fi\n")  # set only on that branch


@pytest.mark.parametrize("model", list(SINGLE))
@pytest.mark.parametrize("args", [[], ["1024"], ["2048"], ["131072"], ["8k"], ["abc"], [""], ["8192", "16384"]])
def test_single_rejects_missing_or_bad_length(model, args, fake_env, tmp_path):
    proc = launch(SINGLE[model][0], args, fake_env, tmp_path)
    assert proc.returncode == 2
    assert "usage" in proc.stderr.lower()
    for length in LENGTHS:
        assert str(length) in proc.stderr
    assert torchrun_calls(proc) == [] and check_calls(fake_env) == []  # nothing started


@pytest.mark.parametrize("model", list(SINGLE))
@pytest.mark.parametrize("length", LENGTHS)
def test_single_checks_then_hands_torchrun_the_published_settings(model, length, fake_env, tmp_path):
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
    assert got["LOG_DIR"] == "logs"  # never the published results' folder unless asked for
    assert got["SDPA_BACKEND"] == "flash" and got["GRAD_ACCUM_STEPS"] == "8"
    for name in ("WARMDOWN_ITERS", "MUON_MOMENTUM_WARMUP_STEPS", "ITERATIONS"):
        assert name not in got, name
    # The trainer's --check ran first, in the same folder, with the same settings and the world size.
    (check,) = check_calls(fake_env)
    assert check["argv"] == [trainer, "--check"] and Path(check["cwd"]) == REPO_ROOT
    assert check["env"]["WORLD_SIZE"] == "1"
    for name in [*PUBLISHED, "TRAIN_SEQ_LEN", "TRAIN_BATCH_TOKENS", "RUN_ID", "LOG_DIR", "DATA_PATH", "SDPA_BACKEND"]:
        assert check["env"][name] == got[name], name


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
    assert check_calls(fake_env)[-1]["env"]["WORLD_SIZE"] == "2"
    # A seed override alone goes into the default RUN_ID.
    proc = launch(script, ["8192"], dict(fake_env, SEED="7"), tmp_path)
    (call,) = torchrun_calls(proc)
    assert re.fullmatch(rf"{model}_8192_seed7_\d{{8}}_\d{{6}}", call["env"]["RUN_ID"])
    assert call["env"]["SEED"] == "7"


@pytest.mark.parametrize("model", list(SINGLE))
def test_failed_check_stops_before_torchrun_with_its_status(model, fake_env, tmp_path):
    proc = launch(SINGLE[model][0], ["8192"], dict(fake_env, FAKE_CHECK_STATUS="2"), tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc.stderr) == "error: TRAIN_SEQ_LEN is wrong; set it right"
    assert torchrun_calls(proc) == [] and len(check_calls(fake_env)) == 1


@pytest.mark.parametrize("model", list(SINGLE))
def test_exit_status_is_torchruns(model, fake_env, tmp_path):
    install(tmp_path / "bin", "torchrun", FAKE_TORCHRUN + "sys.exit(3)\n")
    proc = launch(SINGLE[model][0], ["8192"], fake_env, tmp_path)
    assert proc.returncode == 3 and len(torchrun_calls(proc)) == 1


@pytest.mark.parametrize("model, length", sorted(PUBLISHED_STEPS))
def test_published_schedule_hands_over_the_published_step_counts(model, length, fake_env, tmp_path):
    proc = launch(SINGLE[model][0], [str(length)], dict(fake_env, PUBLISHED_SCHEDULE="1"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    (call,) = torchrun_calls(proc)
    got = call["env"]
    assert (got["MUON_MOMENTUM_WARMUP_STEPS"], got["WARMDOWN_ITERS"]) == PUBLISHED_STEPS[model, length]
    assert got["MUON_MOMENTUM_WARMUP_FRAC"] == "0" and got["WARMDOWN_FRAC"] == "0"  # the step counts rule
    assert got["TRAIN_BATCH_TOKENS"] == BATCH_TOKENS[length] and got["MATRIX_LR"] == "0.020"
    assert check_calls(fake_env)[0]["env"]["WARMDOWN_ITERS"] == got["WARMDOWN_ITERS"]


@pytest.mark.parametrize("model", list(SINGLE))
@pytest.mark.parametrize("length, setting", [(4096, "1"), (65536, "1"), (8192, "yes"), (8192, "2")])
def test_published_schedule_refuses_what_the_study_never_set(model, length, setting, fake_env, tmp_path):
    proc = launch(SINGLE[model][0], [str(length)], dict(fake_env, PUBLISHED_SCHEDULE=setting), tmp_path)
    assert proc.returncode == 2
    assert f"PUBLISHED_SCHEDULE={setting}" in one_error_line(proc.stderr)
    assert torchrun_calls(proc) == [] and check_calls(fake_env) == []


@pytest.mark.parametrize("nproc", ["0", "two", "-1", ""])
def test_bad_process_count_is_refused(nproc, fake_env, tmp_path):
    proc = launch(SINGLE["hybrid"][0], ["8192"], dict(fake_env, NPROC=nproc), tmp_path)
    if nproc == "":  # empty is unset: the default, one process
        assert proc.returncode == 0 and torchrun_calls(proc)[0]["argv"][1] == "--nproc_per_node=1"
        return
    assert proc.returncode == 2 and f"NPROC={nproc}" in one_error_line(proc.stderr)
    assert torchrun_calls(proc) == []


def test_gpu_sampler_writes_beside_the_log_and_ends_with_the_run(fake_env, tmp_path):
    bin_dir = tmp_path / "bin"  # fake_env's bin folder
    install(bin_dir, "nvidia-smi", FAKE_NVIDIA_SMI)
    install(bin_dir, "torchrun", FAKE_TORCHRUN + "import time; time.sleep(0.5)\nsys.exit(4)\n")
    sampler_record = tmp_path / "sampler.json"
    env = dict(fake_env, LOG_DIR=str(tmp_path / "runs"), RUN_ID="r1", CUDA_VISIBLE_DEVICES="3,5",
               FAKE_SAMPLER=str(sampler_record))
    proc = launch(SINGLE["hybrid"][0], ["8192"], env, tmp_path)
    assert proc.returncode == 4  # torchrun's, through the sampler's cleanup
    sampler = json.loads(sampler_record.read_text())
    argv = sampler["argv"]
    assert argv[argv.index("-i") + 1] == "3" and argv[argv.index("-l") + 1] == "5"
    assert argv[0].partition("=")[2].split(",") == ["timestamp", "utilization.gpu", "clocks.sm", "power.draw",
                                                    "clocks_throttle_reasons.active"]
    rows = (tmp_path / "runs" / "r1.gpu.csv").read_text().splitlines()
    assert rows[0].startswith("timestamp,") and len(rows) >= 2 and rows[1].split(", ")[2] == "1980"
    time.sleep(0.3)
    with pytest.raises(ProcessLookupError):  # killed (and reaped) when the run ended
        os.kill(sampler["pid"], 0)


FAKE_TORCHRUN_UNTIL_TERM = f"""#!{sys.executable}
import os, signal, sys, time
def stop(signum, frame):
    open(os.environ["FAKE_STOPPED"], "w").write(str(signum))
    sys.exit(7)
signal.signal(signal.SIGTERM, stop)
open(os.environ["FAKE_STARTED"], "w").close()
time.sleep(60)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_launcher_stops_torchrun_and_the_sampler(signum, fake_env, tmp_path):
    """A TERM or INT sent to the launcher alone reaches torchrun as TERM; the launcher waits for it, returns
    its status and leaves no sampler behind."""
    bin_dir = tmp_path / "bin"  # fake_env's bin folder
    install(bin_dir, "nvidia-smi", FAKE_NVIDIA_SMI)
    install(bin_dir, "torchrun", FAKE_TORCHRUN_UNTIL_TERM)
    started, stopped, sampler_record = tmp_path / "started", tmp_path / "stopped", tmp_path / "sampler.json"
    env = dict(fake_env, LOG_DIR=str(tmp_path / "runs"), RUN_ID="r1", FAKE_STARTED=str(started),
               FAKE_STOPPED=str(stopped), FAKE_SAMPLER=str(sampler_record))
    proc = subprocess.Popen([str(REPO_ROOT / SINGLE["baseline"][0]), "8192"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (started.exists() and sampler_record.exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signum)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 7  # torchrun's own status after its TERM handler
    assert stopped.read_text() == str(int(signal.SIGTERM))
    time.sleep(0.3)
    with pytest.raises(ProcessLookupError):
        os.kill(json.loads(sampler_record.read_text())["pid"], 0)


def test_no_sampler_without_nvidia_smi(fake_env, tmp_path):
    if any((Path(d) / "nvidia-smi").exists() for d in fake_env["PATH"].split(os.pathsep)):
        pytest.skip("a real nvidia-smi is on this machine's PATH")
    proc = launch(SINGLE["baseline"][0], ["8192"], dict(fake_env, LOG_DIR=str(tmp_path / "runs")), tmp_path)
    assert proc.returncode == 0 and len(torchrun_calls(proc)) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("model", list(ALL))
def test_all_runs_three_lengths_in_turn(model, fake_env, tmp_path):
    proc = launch(ALL[model], [], fake_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    calls = torchrun_calls(proc)
    assert [c["env"]["TRAIN_SEQ_LEN"] for c in calls] == [str(n) for n in STUDY_LENGTHS]
    assert [c["env"]["TRAIN_BATCH_TOKENS"] for c in calls] == [BATCH_TOKENS[n] for n in STUDY_LENGTHS]
    for call, length in zip(calls, STUDY_LENGTHS):
        assert call["argv"][-1] == SINGLE[model][1]
        assert call["env"]["MUON_MOMENTUM_WARMUP_FRAC"] == "0.18" and call["env"]["WARMDOWN_FRAC"] == "0.36"
        assert call["env"]["RUN_ID"].startswith(f"{model}_{length}_seed1337_")
    # A RUN_ID set by the user gets the length appended, so the three logs stay distinct.
    proc = launch(ALL[model], [], dict(fake_env, RUN_ID="study", SEED="5"), tmp_path)
    assert [c["env"]["RUN_ID"] for c in torchrun_calls(proc)] == [f"study_{n}" for n in STUDY_LENGTHS]
    assert launch(ALL[model], ["8192"], fake_env, tmp_path).returncode != 0


@pytest.mark.parametrize("model", list(ALL))
def test_all_stops_at_first_failure(model, fake_env, tmp_path):
    install(tmp_path / "bin", "torchrun", FAKE_TORCHRUN + "sys.exit(3)\n")
    proc = launch(ALL[model], [], fake_env, tmp_path)
    assert proc.returncode == 3
    assert len(torchrun_calls(proc)) == 1
