"""PPO episodes/s on a GPU: the toy's PPO stage (recipes/ppo.py, recipes/toy/ppo.yaml) with rollouts of 64 answers,
on the SFT model and judge of a `toyllm demo` run. The goal: at least 100 episodes/s on one H100.

    python benchmarks/gpu_ppo.py [--demo-dir outputs/toy]   # on a GPU; writes benchmarks/gpu_ppo.json
    python benchmarks/gpu_ppo.py --micro                    # the random toy as policy and judge, 64 CPU episodes

An episode is one answer generated, scored by the judge and the value model, and optimised on.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from gpu_common import device  # noqa: E402
from toyllm.recipes import ppo  # noqa: E402

from toyllm.args import parse_recipe_args  # noqa: E402
from toyllm.demo import run_demo  # noqa: E402
from toyllm.ppo import PPOTrainer  # noqa: E402
from toyllm.resources import ALICE_DIR, TOY_CONFIG_DIR  # noqa: E402
from toyllm.toy import build_random_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro", action="store_true", help="the random toy as policy and judge, 64 CPU episodes")
    parser.add_argument("--demo-dir", help="a finished `toyllm demo` folder (default: run one)")
    parser.add_argument("--episodes", type=int, default=None, help="episodes (default: 8192; 64 with --micro)")
    parser.add_argument("--batch", type=int, default=None, help="answers per rollout (default: 64; 8 with --micro)")
    parser.add_argument("--output", default=None, help="JSON result (default: benchmarks/gpu_ppo.json)")
    args = parser.parse_args()
    episodes, batch = args.episodes or (64 if args.micro else 8192), args.batch or (8 if args.micro else 64)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.micro:
            policy = judge = build_random_checkpoint(ALICE_DIR, TOY_CONFIG_DIR, tmp / "random", seed=0)
        else:
            demo_dir = Path(args.demo_dir) if args.demo_dir else tmp / "demo"
            if not args.demo_dir:
                run_demo(ALICE_DIR, demo_dir, seed=0, feedback_rounds=1)
            policy, judge = demo_dir / "sft", demo_dir / "reward"
        overrides = [
            "--config", str(REPO / "recipes" / "toy" / "ppo.yaml"), "--model_name_or_path", str(policy),
            "--reward_model_path", str(judge), "--dataset_name", str(ALICE_DIR / "prompts.jsonl"),
            "--gold_data_dir", "", "--output_dir", str(tmp / "ppo"), "--total_episodes", str(episodes),
            "--per_device_train_batch_size", str(batch), "--local_rollout_forward_batch_size", str(batch),
        ]  # fmt: skip
        seconds = {}
        train = PPOTrainer.train

        def timed_train(self):
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
                torch.cuda.synchronize()
            start = time.perf_counter()
            try:
                return train(self)
            finally:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                seconds["train"] = time.perf_counter() - start

        PPOTrainer.train = timed_train
        try:
            ppo.main(*parse_recipe_args(ppo.ARGUMENT_TYPES, overrides))
        finally:
            PPOTrainer.train = train
    result = {
        "benchmark": "PPO, toy" + (" (micro)" if args.micro else ""), "device": device(), "episodes": episodes,
        "answers_per_rollout": batch, "episodes_per_s": episodes / seconds["train"], "goal_episodes_per_s": 100,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
    }  # fmt: skip
    print(f"{result['benchmark']} on {result['device']}: {result['episodes_per_s']:.0f} episodes/s")
    output = args.output or (None if args.micro else Path(__file__).with_name("gpu_ppo.json"))
    if output:
        Path(output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
