"""Episodes/s of the toy PPO stage and where its time goes: generation, scoring, reference and optimisation.

    python benchmarks/ppo_throughput.py [--demo-dir outputs/toy] [--episodes 1024]

Runs recipes/ppo.py's main() on the toy SFT and reward checkpoints (made by `toyllm demo`, or by this script in a
temporary folder), with TRL's own generation, reward and forward functions wrapped in timers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import trl.experimental.ppo.ppo_trainer as ppo_trainer

from toyllm.demo import recipe_args, run_demo

REPO = Path(__file__).resolve().parents[1]
seconds: dict[str, float] = defaultdict(float)


def timed(name: str, function):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - start

    return wrapper


def main() -> None:
    from demo_time import machine  # benchmarks/ is the script's own folder

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--demo-dir", help="a finished `toyllm demo` output folder (default: make one)")
    parser.add_argument("--episodes", type=int, default=1024)
    parser.add_argument("--output", default=str(Path(__file__).with_name("ppo_throughput.json")))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        demo_dir = Path(args.demo_dir) if args.demo_dir else Path(tmp) / "demo"
        if not args.demo_dir:
            run_demo(REPO / "data", demo_dir, seed=0)
        recipe, parsed = recipe_args("ppo", REPO / "data", demo_dir, seed=0, overwrite=True)
        _, training_args, _ = parsed
        training_args.output_dir = str(Path(tmp) / "ppo")
        training_args.total_episodes = args.episodes

        ppo_trainer.batch_generation = timed("generation", ppo_trainer.batch_generation)
        ppo_trainer.get_reward = timed("scoring (judge + value)", ppo_trainer.get_reward)
        train = ppo_trainer.PPOTrainer.train
        ppo_trainer.PPOTrainer.train = timed("train", train)
        start = time.perf_counter()
        recipe.main(*parsed)
        total = time.perf_counter() - start

    # forward() is called for the reference log-probs and for every optimisation step alike; the optimisation share
    # is what remains of train() once generation and scoring are taken out.
    train_seconds = seconds.pop("train")
    split = dict(seconds)
    split["reference, optimisation and bookkeeping"] = train_seconds - sum(seconds.values())
    result = {
        "machine": machine(),
        "episodes": args.episodes,
        "episodes_per_s": args.episodes / train_seconds,
        "train_seconds": train_seconds,
        "stage_seconds_with_loading": total,
        "split_seconds": split,
    }
    print(f"\nPPO, toy, {args.episodes} episodes: {result['episodes_per_s']:.0f} episodes/s "
          f"({train_seconds:.1f} s in train(), {total:.1f} s with loading and saving)\n")  # fmt: skip
    print("| part | seconds | share |\n|---|---|---|")
    for name, value in split.items():
        print(f"| {name} | {value:.2f} | {value / train_seconds:.0%} |")
    print(f"\n{result['machine']}")
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
