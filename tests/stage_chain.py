"""Every recipe, full and LoRA, on one real-architecture checkpoint, in one process group.

    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml --num_processes 2 \
        tests/stage_chain.py --base BASE --upstream UPSTREAM --output-dir OUT --processes 2

Each stage runs the recipe's own `main()` on arguments parsed from its toy YAML, exactly what `recipes/<stage>.py`
does, so the nine runs share one start-up instead of nine (on 2 CPU cores the start-up is most of each run).
The per-device batch is the toy YAML's divided by the number of processes, so the global batch is the same.
Stages that start from SFT (and PPO's judge) read them from UPSTREAM, so a two-process chain can start from the
very checkpoints of a one-process chain and the two compare step by step.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import yaml

from toyllm.args import parse_recipe_args
from toyllm.stages import STAGE, TRAINED

REPO = Path(__file__).resolve().parents[1]
LORA = ["--use_peft", "true", "--lora_r", "8", "--lora_alpha", "16", "--lora_target_modules", "all-linear"]
RECIPES = {stage: importlib.import_module(f"toyllm.recipes.{STAGE[stage].recipe}") for stage in TRAINED}
TOY_BATCH = {  # the per-device batch each toy YAML ships with
    stage: yaml.safe_load((REPO / "recipes" / "toy" / f"{stage}.yaml").read_text())["per_device_train_batch_size"]
    for stage in RECIPES
}


def _source(stage: str) -> str:
    """Where a chain stage starts: the real checkpoint itself in place of the toy's random or pretrained model (a
    real base model is both), else the upstream chain's checkpoint of the stage the table names."""
    starts_from = STAGE[stage].starts_from
    return "base" if starts_from in ("random", "pretrain") else f"upstream:{starts_from}"


# name: (recipe, where it starts from, extra arguments), every trained stage of the table, then each but pretrain
# with LoRA
CHAIN = {
    stage: (stage, _source(stage), ["--from_scratch", "false"] if stage == "pretrain" else []) for stage in TRAINED
}
CHAIN |= {f"{stage}-lora": (stage, _source(stage), LORA) for stage in TRAINED if stage != "pretrain"}


def stage_arguments(name: str, base: Path, upstream: Path, output_dir: Path, processes: int) -> list[str]:
    stage, source, extra = CHAIN[name]
    model = base if source == "base" else upstream / source.removeprefix("upstream:")
    batch = TOY_BATCH[stage] // processes
    args = [
        "--config", str(REPO / "recipes" / "toy" / f"{stage}.yaml"),
        "--model_name_or_path", str(model), "--output_dir", str(output_dir / name),
        "--per_device_train_batch_size", str(batch), "--logging_steps", "1", *extra,
    ]  # fmt: skip
    if STAGE[stage].judge:  # an RL stage, scored by the upstream chain's judge
        args += ["--reward_model_path", str(upstream / STAGE[stage].judge)]
    if stage == "ppo":  # two rollouts of the toy's global batch, one optimisation pass each
        args += ["--total_episodes", str(2 * TOY_BATCH["ppo"])]
        args += ["--num_ppo_epochs", "1", "--local_rollout_forward_batch_size", str(batch)]
    else:
        args += ["--max_steps", "2"]
    return args


def run_chain(base: Path, upstream: Path, output_dir: Path, processes: int) -> None:
    for name, (stage, _, _) in CHAIN.items():
        recipe = RECIPES[stage]
        args = stage_arguments(name, Path(base), Path(upstream), Path(output_dir), processes)
        recipe.main(*parse_recipe_args(recipe.ARGUMENT_TYPES, args))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--upstream", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--processes", type=int, required=True)
    options = parser.parse_args()
    run_chain(options.base, options.upstream, options.output_dir, options.processes)
