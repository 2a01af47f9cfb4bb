"""Recipes as users launch them: through `accelerate launch`, and with the other accepted dataset formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ALICE, REPO, logged, read_jsonl
from toyllm.recipes import sft
from transformers import AutoModelForCausalLM, AutoTokenizer

from toyllm.args import parse_recipe_args
from toyllm.evaluate import greedy_answers


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
