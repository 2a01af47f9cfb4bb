from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALICE = REPO / "data"
OZ = Path(__file__).resolve().parent / "data" / "oz"
PINOCCHIO = Path(__file__).resolve().parent / "data" / "pinocchio"
GOLDILOCKS = Path(__file__).resolve().parent / "data" / "goldilocks"  # written as people write, pairs for
JACK = Path(__file__).resolve().parent / "data" / "jack"  # the held-out questions only
DATASETS = {"alice": ALICE, "oz": OZ, "pinocchio": PINOCCHIO, "goldilocks": GOLDILOCKS, "jack": JACK}
ACCELERATE = Path(sys.executable).with_name("accelerate")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def log_history(folder: Path) -> list[dict]:
    """What the trainer logged, as saved with the stage (trainer_state.json)."""
    return json.loads((Path(folder) / "trainer_state.json").read_text())["log_history"]


def logged(folder: Path, key: str = "loss") -> dict[int, float]:
    """{step: value} of one logged quantity."""
    return {log["step"]: log[key] for log in log_history(folder) if key in log}


def prompt_prefix_mismatches(tokenizer, data_dir: Path) -> list:
    """Prompts whose tokens are not a prefix of prompt + answer, over every SFT and preference row of a data folder:
    the property TRL's "Mismatch between tokenized prompt..." warning checks, asserted directly."""
    pairs = [(row["messages"][:-1], row["messages"][-1:]) for row in read_jsonl(data_dir / "sft.jsonl")]
    for row in read_jsonl(data_dir / "preference.jsonl"):
        pairs += [(row["prompt"], row["chosen"]), (row["prompt"], row["rejected"])]
    mismatches = []
    for prompt, answer in pairs:
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True)["input_ids"]
        if tokenizer.apply_chat_template(prompt + answer)["input_ids"][: len(prompt_ids)] != prompt_ids:
            mismatches.append(prompt)
    return mismatches


def accelerate_two_processes(*script_and_args: str) -> subprocess.CompletedProcess:
    command = [
        str(ACCELERATE), "launch", "--config_file", "recipes/accelerate_configs/ddp.yaml",
        "--num_processes", "2", "--main_process_port", "0",  # a free port: other runs may hold 29500
        *script_and_args,
    ]  # fmt: skip
    # No GPU, and no ACCELERATE_USE_CPU: the recipes must notice and run both processes on the CPU over gloo.
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"} | {"CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[Path, dict]:
    """One full demo on the shipped data, seed 0: the checkpoints every stage test looks at."""
    from toyllm.demo import run_demo

    output_dir = tmp_path_factory.mktemp("demo")
    metrics = run_demo(ALICE, output_dir, seed=0)
    return output_dir, metrics
