from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from toyllm.versions import PPO_MODULE, has_module

REPO = Path(__file__).resolve().parents[1]
ALICE = REPO / "data"
OZ = Path(__file__).resolve().parent / "data" / "oz"
PINOCCHIO = Path(__file__).resolve().parent / "data" / "pinocchio"
GOLDILOCKS = Path(__file__).resolve().parent / "data" / "goldilocks"  # written as people write, pairs for
JACK = Path(__file__).resolve().parent / "data" / "jack"  # the held-out questions only
DATASETS = {"alice": ALICE, "oz": OZ, "pinocchio": PINOCCHIO, "goldilocks": GOLDILOCKS, "jack": JACK}
ACCELERATE = Path(sys.executable).with_name("accelerate")

# TRL 1.13 and later have no PPO: .ci/run also runs the toy demo and the recipe tests with the newest TRL.
PPO_INSTALLED = has_module(PPO_MODULE)
needs_ppo = pytest.mark.skipif(not PPO_INSTALLED, reason="this TRL has no PPO (removed in TRL 1.13)")
without_ppo = pytest.mark.skipif(PPO_INSTALLED, reason="checks a TRL without PPO (.ci/run's newest-TRL run)")


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


def generated(capsys, path: Path, question: str, flags: list[str]) -> str:
    """What `toyllm generate` prints for this checkpoint, question and flags."""
    from toyllm.cli import main

    main(["generate", "--model", str(path), *flags, question])
    return capsys.readouterr().out.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving_app(toyllm: Path, output_dir: Path, log_path: Path) -> Iterator[str]:
    """`toyllm app` serving a run on 127.0.0.1, as a user starts it; yields its URL."""
    port = free_port()
    command = [str(toyllm), "app", "--output-dir", str(output_dir), "--port", str(port)]
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "0"}
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"toyllm app did not answer on {url}: {log_path.read_text()[-2000:]}")
                    time.sleep(0.5)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=30)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")  # Debian's; .ci/run installs it
# Chromium as root in a closed network: no sandbox, and none of its own background connections.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
