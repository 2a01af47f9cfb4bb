"""Experiment tracking the ecosystem's way: `report_to: tensorboard` and `report_to: trackio` in any recipe.

Each backend is run as a user runs it, the recipe script with its toy YAML and one override, and what the backend
stored is read back with the backend's own reader and compared with the trainer's log history.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, logged


def run_recipe(stage: str, *args: str, env: dict | None = None) -> None:
    command = [sys.executable, f"recipes/{stage}.py", "--config", f"recipes/toy/{stage}.yaml", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize(
    "stage, sources, key",
    [
        ("sft", ["--model_name_or_path", "pretrain"], "loss"),
        ("ppo", ["--model_name_or_path", "sft"], "objective/scores"),
    ],
)
def test_report_to_tensorboard(demo_run, tmp_path, stage, sources, key):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    demo_dir, _ = demo_run
    out = tmp_path / stage
    paths = [sources[0], str(demo_dir / sources[1])]
    if stage == "ppo":
        paths += ["--reward_model_path", str(demo_dir / "reward"), "--total_episodes", "64"]
    else:
        paths += ["--max_steps", "6", "--logging_steps", "2"]
    run_recipe(stage, *paths, "--output_dir", str(out), "--report_to", "tensorboard")

    events = sorted(out.glob("runs/*/events.out.tfevents.*"))
    assert len(events) == 1, "one run, one event file, beside the checkpoint"
    accumulator = EventAccumulator(str(events[0]))
    accumulator.Reload()
    scalars = {event.step: event.value for event in accumulator.Scalars(f"train/{key}")}
    expected = logged(out, key)
    assert expected and scalars.keys() == expected.keys()
    assert all(scalars[step] == pytest.approx(value, rel=1e-6) for step, value in expected.items())


def test_report_to_trackio(demo_run, tmp_path):
    pytest.importorskip("trackio")
    demo_dir, _ = demo_run
    out, store = tmp_path / "pretrain", tmp_path / "trackio"
    run_recipe(
        "pretrain", "--model_name_or_path", str(demo_dir / "random"), "--from_scratch", "false",
        "--output_dir", str(out), "--max_steps", "6", "--logging_steps", "2",
        "--report_to", "trackio", "--project", "toyllm-test", "--run_name", "pretrain",
        env={"TRACKIO_DIR": str(store)},  # trackio's local store; the default is ~/.cache/huggingface/trackio
    )  # fmt: skip

    read = (
        "import json, sys\n"
        "from trackio.sqlite_storage import SQLiteStorage\n"
        "print(json.dumps(SQLiteStorage.get_logs('toyllm-test', 'pretrain')))\n"
    )  # trackio reads TRACKIO_DIR when imported, so it is read back in a process of its own
    result = subprocess.run(
        [sys.executable, "-c", read], capture_output=True, text=True, env={**os.environ, "TRACKIO_DIR": str(store)}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    # trackio counts its own steps; the trainer's step is logged beside each value
    losses = {row["train/global_step"]: row["train/loss"] for row in rows if row.get("train/loss") is not None}
    expected = logged(out, "loss")
    assert expected and losses.keys() == expected.keys()
    assert all(losses[step] == pytest.approx(value, rel=1e-6) for step, value in expected.items())
