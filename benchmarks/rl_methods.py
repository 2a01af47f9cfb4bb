"""PPO against a per-prompt baseline (TRL's RLOOTrainer) from the same SFT model and judge: is PPO's method the limit?

    python benchmarks/rl_methods.py [--stories data tests/data/oz tests/data/pinocchio] [--seeds 0 1 2]

Each run trains random → pretrain → SFT → judge → PPO (round 1) with the demo's own stages, then RLOO from the same
SFT checkpoint against the same judge, and measures both with the demo's evaluation. RLOO scores `--samples-per-
prompt` answers to each prompt and uses the others' mean as each answer's baseline, where PPO whitens advantages from
a value model over a batch of different prompts. It is not in the demo: TRL 1.12's RLOOTrainer needs `requests` (an
unguarded import; `pip install -e .[dev]` brings it). Results go to benchmarks/rl_methods.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from demo_time import machine  # noqa: E402
from story_grid import add_grid_arguments, grid_runs  # noqa: E402

from toyllm.data import DATA_FILES, load_data  # noqa: E402

STAGES = ("random", "pretrain", "sft", "reward", "ppo")


def run_rloo(output_dir: Path, data_dir: Path, seed: int, completions: int, per_prompt: int) -> float:
    """RLOO from `output_dir/sft` against `output_dir/reward`, saved to `output_dir/rloo`; returns its seconds."""
    import torch
    from transformers import AutoTokenizer, set_seed
    from trl import ModelConfig, RLOOConfig, RLOOTrainer

    from toyllm.model import load_causal_lm, load_scorer

    set_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the demo's PPO; restored after, or the next run's stages would differ from a demo's
    sft = str(output_dir / "sft")
    tokenizer = AutoTokenizer.from_pretrained(sft, padding_side="left")
    model_args = ModelConfig(model_name_or_path=sft)
    batch = 2 * per_prompt  # two prompts per step
    args = RLOOConfig(
        output_dir=str(output_dir / "rloo"), seed=seed, num_generations=per_prompt, per_device_train_batch_size=batch,
        max_steps=completions // batch, learning_rate=2.0e-4, beta=0.3,  # PPO's learning rate and KL coefficient
        max_completion_length=12, temperature=1.0, top_k=0, bf16=False, gradient_checkpointing=False, use_cpu=True,
        report_to="none", save_strategy="no", logging_steps=8, disable_tqdm=True,
    )  # fmt: skip
    trainer = RLOOTrainer(
        model=load_causal_lm(sft, model_args, tokenizer),
        reward_funcs=load_scorer(str(output_dir / "reward"), model_args, tokenizer),
        args=args,
        train_dataset=load_data(data_dir / DATA_FILES["prompts"], "prompts"),
        processing_class=tokenizer,
        reward_processing_classes=tokenizer,
    )
    start = time.perf_counter()
    try:
        trainer.train()
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    trainer.save_model(str(output_dir / "rloo"))
    tokenizer.save_pretrained(str(output_dir / "rloo"))
    return round(seconds, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_grid_arguments(parser, "rl_methods.json")
    parser.add_argument("--completions", type=int, default=4096, help="RLOO's answers scored (about PPO's seconds)")
    parser.add_argument("--samples-per-prompt", type=int, default=8)
    args = parser.parse_args()
    from sft_reach import run_stages

    from toyllm.data import DataFolder
    from toyllm.evaluate import evaluate_checkpoints

    runs = []
    for story, seed, data_dir, output_dir in grid_runs(args):
        seconds = run_stages(STAGES, data_dir, output_dir, seed)
        with open(output_dir / "logs" / "rloo.log", "w") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):  # fmt: skip
            seconds["rloo"] = run_rloo(output_dir, data_dir, seed, args.completions, args.samples_per_prompt)
            measured = evaluate_checkpoints(
                {name: output_dir / name for name in ("ppo", "rloo")},
                data_dir / DATA_FILES["eval"],
                output_dir / "reward",
                data=DataFolder(data_dir),
            )[0]
        run = {"story": story, "seed": seed}
        for name in ("ppo", "rloo"):
            run[name] = {split: {key: measured[name][split].get(key) for key in
                                 ("exact_match", "well_formed", "mean_reward")}
                         for split in ("trained", "held_out")} | {"seconds": seconds[name]}  # fmt: skip
        runs.append(run)
        print(f"{run['story']} seed {seed}: held-out exact / well-formed: "
              + ", ".join(f"{name} {run[name]['held_out']['exact_match']:.2f} / "
                          f"{run[name]['held_out']['well_formed']:.2f} ({seconds[name]} s)"
                          for name in ("ppo", "rloo")), flush=True)  # fmt: skip
    summary = {}
    for name in ("ppo", "rloo"):
        held_out = [run[name]["held_out"] for run in runs]
        summary[name] = {
            "held_out_exact_mean": round(sum(h["exact_match"] for h in held_out) / len(runs), 3),
            "held_out_at_least_half": sum(h["exact_match"] >= 0.5 for h in held_out),
            "well_formed_at_least_0.9": sum(
                min(run[name]["trained"]["well_formed"], run[name]["held_out"]["well_formed"]) >= 0.9 for run in runs
            ),
            "runs": len(runs),
        }
    print(summary)
    result = {"machine": machine(), "set": args.set, "completions": args.completions,
              "samples_per_prompt": args.samples_per_prompt, "summary": summary, "runs": runs}  # fmt: skip
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
