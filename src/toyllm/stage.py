"""What every recipe does before and after its trainer: parse the YAML, save a Hub-ready checkpoint."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import transformers
import yaml
from transformers import Trainer, TrainingArguments
from trl import TrlParser

from toyllm.card import recipe_command, write_model_card
from toyllm.model import bf16_supported

logger = logging.getLogger(__name__)


def _config_path(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def parse_recipe_args(dataclass_types: tuple, args: list[str] | None = None) -> tuple:
    """`--config recipe.yaml` plus command-line overrides, the way TRL's own scripts read them.

    Precision is the one field chosen for the machine: when neither the YAML nor the command line sets `bf16`, it
    is on where the GPU supports it and off elsewhere (TRL's configs default it on, which fails on a CPU).
    """
    args = list(sys.argv[1:] if args is None else args)
    config_path = _config_path(args)
    config = yaml.safe_load(Path(config_path).read_text()) or {} if config_path else {}
    if "bf16" not in config and not any(a == "--bf16" or a.startswith("--bf16=") for a in args):
        args = ["--bf16", str(bf16_supported())] + args
    return tuple(TrlParser(dataclass_types).parse_args_and_config(args))


def setup_logging(training_args: TrainingArguments) -> None:
    level = training_args.get_process_log_level()
    transformers.utils.logging.set_verbosity(level)
    logging.getLogger("toyllm").setLevel(level)


def save_stage(
    trainer: Trainer,
    stage: str,
    base_model: str | None,
    dataset: str | None,
    command: str | None = None,
) -> Path:
    """Save weights (safetensors), config, tokenizer with its chat template, generation config and model card."""
    output_dir = Path(trainer.args.output_dir)
    trainer.save_model(str(output_dir))
    if trainer.accelerator.is_main_process:
        trainer.state.save_to_json(str(output_dir / "trainer_state.json"))  # log history, for plots and tests
        model = trainer.accelerator.unwrap_model(trainer.model)
        model = getattr(model, "policy", model)  # PPO wraps policy and value model together
        if getattr(model, "generation_config", None) is not None and stage != "reward":
            model.generation_config.save_pretrained(output_dir)
        history = trainer.state.log_history
        final_loss = next((log["train_loss"] for log in reversed(history) if "train_loss" in log), None)
        write_model_card(
            output_dir,
            stage=stage,
            trainer_name=type(trainer).__name__,
            base_model=base_model,
            dataset=dataset,
            command=command or recipe_command(),
            metrics={"train_loss": final_loss} if final_loss is not None else None,
        )
    if trainer.args.push_to_hub:
        trainer.push_to_hub()
    return output_dir
