"""Recipes as users launch them: through `accelerate launch`, and with the other accepted dataset formats."""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import ALICE, OZ, REPO, logged, needs_ppo, read_jsonl, without_ppo
from toyllm.recipes import dpo, pretrain, reward, sft
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from toyllm.args import parse_recipe_args
from toyllm.demo import stage_overrides
from toyllm.errors import UserError
from toyllm.generation import greedy_answers, normalise, whole_sentences
from toyllm.model import rollout_threads
from toyllm.stages import RECIPES
from toyllm.toy import build_random_stage


def test_sft_recipe_under_accelerate_launch(demo_run, tmp_path):
    output_dir, _ = demo_run
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [
        str(accelerate), "launch", "--config_file", "accelerate_config.yaml",
        "recipes/sft.py", "--config", "recipes/toy/sft.yaml",
        "--model_name_or_path", str(output_dir / "pretrain"),
        "--output_dir", str(tmp_path / "sft"),
        "--num_train_epochs", "2",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "sft" / "model.safetensors").is_file()
    assert logged(tmp_path / "sft", "train_loss")  # it trained, and logged its loss


def test_sft_accepts_prompt_completion_rows(demo_run, tmp_path):
    output_dir, _ = demo_run
    rows = read_jsonl(ALICE / "sft.jsonl")
    data = tmp_path / "pc.jsonl"
    with open(data, "w") as f:
        for row in rows:
            messages = row["messages"]
            f.write(json.dumps({"prompt": messages[:-1], "completion": messages[-1:]}) + "\n")
    args = parse_recipe_args(
        sft.ARGUMENT_TYPES,
        ["--config", str(REPO / "recipes/toy/sft.yaml"), "--model_name_or_path", str(output_dir / "pretrain"),
         "--dataset_name", str(data), "--output_dir", str(tmp_path / "out")],
    )  # fmt: skip
    sft.main(*args)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    questions = [row["messages"][-2]["content"] for row in rows]
    answers = greedy_answers(model, tokenizer, questions)
    references = [row["messages"][-1]["content"] for row in rows]
    assert sum(a == r for a, r in zip(answers, references)) / len(rows) >= 0.9


@pytest.mark.parametrize("stage", RECIPES)
def test_readme_single_stage_commands_after_the_demo_are_the_same_stages(demo_run, stage, tmp_path, monkeypatch,
                                                                          caplog):  # fmt: skip
    """README's `accelerate launch ... recipes/<stage>.py --config recipes/toy/<stage>.yaml`, run over a demo's
    outputs/toy, is the demo's stage: skipped, nothing rewritten. The demo's random is not rebuilt either. (The
    recipe's main(), in a folder holding only outputs/: the YAML and the data are found as shipped.)"""
    demo_dir, _ = demo_run
    shutil.copytree(demo_dir, tmp_path / "outputs" / "toy", ignore=shutil.ignore_patterns("ppo-*", "reward-*"))
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "outputs" / "toy").rglob("*.safetensors")}
    monkeypatch.chdir(tmp_path)
    recipe = importlib.import_module(f"toyllm.recipes.{stage}")
    with caplog.at_level(logging.WARNING):
        recipe.main(*parse_recipe_args(recipe.ARGUMENT_TYPES, ["--config", f"recipes/toy/{stage}.yaml"]))
    assert "already complete for this config and data: skipped" in caplog.text
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "outputs" / "toy").rglob("*.safetensors")}


def test_pretrain_from_scratch_never_rebuilds_another_storys_random_checkpoint(tmp_path):
    random_dir = tmp_path / "random"
    build_random_stage(ALICE, REPO / "toy_config", random_dir, seed=0)
    before = (random_dir / "model.safetensors").read_bytes()
    args = ["--config", str(REPO / "recipes/toy/pretrain.yaml"), "--model_name_or_path", str(random_dir),
            "--data_dir", str(OZ), "--dataset_name", str(OZ / "pretrain.jsonl"),
            "--output_dir", str(tmp_path / "p")]  # fmt: skip
    with pytest.raises(UserError, match="holds a finished random checkpoint made from a different config"):
        pretrain.main(*parse_recipe_args(pretrain.ARGUMENT_TYPES, args))
    assert (random_dir / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    ("stage", "args"),
    [
        ("pretrain", ["--model_name_or_path", "{demo}/random", "--from_scratch", "false", "--max_steps", "3"]),
        pytest.param(
            "ppo",
            ["--model_name_or_path", "{demo}/sft", "--reward_model_path", "{demo}/reward", "--total_episodes", "16"],
            marks=needs_ppo,
        ),
        ("rloo", ["--model_name_or_path", "{demo}/sft", "--reward_model_path", "{demo}/reward", "--max_steps", "2"]),
        ("dpo", ["--model_name_or_path", "{demo}/sft", "--max_steps", "2", "--min_steps", "0"]),
    ],
)
def test_a_recipe_run_shows_its_training_bar_and_no_library_noise(demo_run, stage, args, tmp_path):
    """What a user reads from `toyllm <stage>`: the Trainer's progress bar, and none of transformers' or TRL's
    deprecation warnings, `loss_type=None` notice or loading and shard-writing bars."""
    demo_dir, _ = demo_run
    command = [sys.executable, "-m", "toyllm.cli", stage, "--config", f"recipes/toy/{stage}.yaml",
               "--output_dir", str(tmp_path / stage), *(a.format(demo=demo_dir) for a in args)]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    for noise in ("Warning", "warnings.warn", "deprecated", "loss_type", "Loading weights", "Writing model shards",
                  "examples/s]"):  # fmt: skip
        assert noise not in output, f"{noise!r} in:\n{output[-3000:]}"
    assert "it/s]" in result.stderr  # the training bar


@without_ppo
@pytest.mark.parametrize("command", [["recipes/ppo.py", "--config", "recipes/toy/ppo.yaml"],
                                     ["-m", "toyllm.cli", "ppo", "--config", "toy/ppo.yaml"]])  # fmt: skip
def test_with_a_trl_that_has_no_ppo_the_ppo_recipe_names_the_trl_that_has(command):
    result = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: TRL {version('trl')} has no PPO (removed in TRL 1.13); pip install trl==1.12.0 for it (make does: "
        "TRL in the Makefile), or use the rloo stage"
    ]


def test_a_jsonl_file_is_evaluated_during_training_on_a_held_out_share(demo_run, tmp_path):
    """`--eval_strategy steps --test_split_size 0.25`: a data folder's JSONL has no test split, so a fixed quarter of
    its rows is held out of training and evaluated every eval_steps."""
    demo_dir, _ = demo_run
    args = ["--config", str(REPO / "recipes/toy/sft.yaml"), "--model_name_or_path", str(demo_dir / "pretrain"),
            "--dataset_name", str(ALICE / "sft.jsonl"), "--ptx_dataset_name", str(ALICE / "pretrain.jsonl"),
            "--output_dir", str(tmp_path / "sft"), "--max_steps", "10", "--eval_strategy", "steps",
            "--eval_steps", "5", "--test_split_size", "0.25"]  # fmt: skip
    sft.main(*parse_recipe_args(sft.ARGUMENT_TYPES, args))
    assert sorted(logged(tmp_path / "sft", "eval_loss")) == [5, 10]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--test_split_size", "0.2"], r"^test_split_size: 0.2 holds rows out of training .* eval_strategy is 'no'"),
        (
            ["--eval_strategy", "steps"],
            r"^eval_strategy: .*sft.jsonl is a JSONL file with no 'test' split .* "
            r"set test_split_size",
        ),
        (["--eval_strategy", "steps", "--test_split_size", "13"], r"^test_split_size: 13.0 leaves no rows to train"),
    ],
)
def test_an_eval_split_that_cannot_be_made_is_one_line(demo_run, tmp_path, extra, message):
    demo_dir, _ = demo_run
    args = ["--config", str(REPO / "recipes/toy/sft.yaml"), "--model_name_or_path", str(demo_dir / "pretrain"),
            "--dataset_name", str(ALICE / "sft.jsonl"), "--output_dir", str(tmp_path / "sft"), *extra]  # fmt: skip
    with pytest.raises(UserError, match=message):
        sft.main(*parse_recipe_args(sft.ARGUMENT_TYPES, args))
    assert not (tmp_path / "sft" / "model.safetensors").exists()


def test_a_bad_test_split_size_is_refused_while_parsing():
    args = ["--config", str(REPO / "recipes/toy/dpo.yaml"), "--test_split_size", "2.5"]
    with pytest.raises(UserError, match=r"^arguments: test_split_size: 2.5; a share between 0 and 1, or a whole"):
        parse_recipe_args(dpo.ARGUMENT_TYPES, args)


def test_a_negative_number_of_other_answers_is_refused_while_parsing():
    args = ["--config", str(REPO / "recipes/toy/reward.yaml"), "--other_answers_rejected", "-1"]
    with pytest.raises(UserError, match=r"^arguments: other_answers_rejected: -1; a number of pairs, 0 or more"):
        parse_recipe_args(reward.ARGUMENT_TYPES, args)


def test_a_replay_answer_that_runs_past_its_length_is_cut_after_its_last_whole_sentence():
    # SFT's replay keeps a general answer the model did not end in time up to its last sentence: cut mid-sentence it
    # would teach stopping there; left out, only the shortest answers (the model's sloppiest, measured) would remain.
    assert whole_sentences("A computer is a device. It can be a physical device, such as") == "A computer is a device."
    assert whole_sentences("Water is vital! Without it we die. Drink eight gl") == "Water is vital! Without it we die."
    assert whole_sentences("To add 3 and 5, we use the concept of") is None
    assert whole_sentences("The value is 3.14 and") is None  # a decimal point ends no sentence


def test_a_toy_ppo_rolls_out_on_one_thread_unless_the_user_says_otherwise(monkeypatch):
    toy = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=64))
    larger = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=512, n_head=8, vocab_size=8192, n_positions=64))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert rollout_threads(toy, 8) == 1 and rollout_threads(larger, 8) == 8
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert rollout_threads(toy, 8) == 8


def test_a_stage_run_with_other_settings_over_a_finished_one_names_the_fields_that_differ(demo_run, tmp_path):
    """The demo's SFT, run again by hand into the same folder with another learning rate: refused, and the message
    says which field differs and how, so the user knows whether to --overwrite or pick another folder."""
    demo_dir, _ = demo_run
    shutil.copytree(demo_dir / "sft", tmp_path / "sft")
    args = stage_overrides("sft", ALICE, demo_dir, seed=0)
    args[args.index("--output_dir") + 1] = str(tmp_path / "sft")
    with pytest.raises(UserError, match=r"fields that differ: learning_rate \(0.001 there, 0.0005 here\); pass "
                                        r"--overwrite"):  # fmt: skip
        sft.main(*parse_recipe_args(sft.ARGUMENT_TYPES, [*args, "--learning_rate", "0.0005"]))


@pytest.mark.parametrize(("learning_rate", "budget", "stops_early"), [("1e-3", 500, True), ("0", 50, False)])
def test_sft_stops_once_every_flashcard_is_answered_and_not_before(
    demo_run, tmp_path, learning_rate, budget, stops_early
):
    """`stop_when_learned_every`: the flashcards' own questions are asked every N steps; training stops at the first
    check that finds them all answered, and runs its whole budget when they cannot be learned (no learning)."""
    demo_dir, _ = demo_run
    args = ["--config", str(REPO / "recipes/toy/sft.yaml"), "--model_name_or_path", str(demo_dir / "pretrain"),
            "--dataset_name", str(ALICE / "sft.jsonl"), "--ptx_dataset_name", str(ALICE / "pretrain.jsonl"),
            "--output_dir", str(tmp_path / "sft"), "--max_steps", str(budget), "--stop_when_learned_every", "25",
            "--learning_rate", learning_rate, "--save_strategy", "no"]  # fmt: skip
    sft.main(*parse_recipe_args(sft.ARGUMENT_TYPES, args))
    state = json.loads((tmp_path / "sft" / "trainer_state.json").read_text())
    checks = [entry for entry in state["log_history"] if "flashcards/answered" in entry]
    assert [entry["step"] for entry in checks] == list(range(25, state["global_step"] + 1, 25))
    if stops_early:
        assert state["global_step"] < budget and checks[-1]["flashcards/answered"] == 1.0
        assert all(entry["flashcards/answered"] < 1.0 for entry in checks[:-1])
        model = AutoModelForCausalLM.from_pretrained(tmp_path / "sft")
        tokenizer = AutoTokenizer.from_pretrained(tmp_path / "sft")
        cards = read_jsonl(ALICE / "sft.jsonl")
        answers = greedy_answers(model, tokenizer, [c["messages"][-2]["content"] for c in cards])
        assert [normalise(a) for a in answers] == [normalise(c["messages"][-1]["content"]) for c in cards]
    else:
        assert state["global_step"] == budget and checks[-1]["flashcards/answered"] < 1.0
