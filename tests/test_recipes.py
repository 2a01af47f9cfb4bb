"""Recipes as users launch them: through `accelerate launch`, and with the other accepted dataset formats."""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ALICE, OZ, REPO, logged, read_jsonl
from toyllm.recipes import pretrain, sft
from transformers import AutoModelForCausalLM, AutoTokenizer

from toyllm.args import parse_recipe_args
from toyllm.errors import UserError
from toyllm.evaluate import greedy_answers
from toyllm.model import build_random_stage
from toyllm.stages import RECIPES


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
