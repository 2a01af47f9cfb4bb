"""What every recipe does before and after its trainer: parse the YAML, save a Hub-ready checkpoint."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import transformers
from transformers import Trainer, TrainingArguments, set_seed
from trl import TrlParser

from toyllm.card import recipe_command, write_model_card
from toyllm.config import check_config_file, check_model_path, check_report_to
from toyllm.model import bf16_supported
from toyllm.validate import UserError, exit_on_user_error  # noqa: F401  (recipes import it from here)

logger = logging.getLogger(__name__)


# Fields that change how a run is watched, not what it produces: left out of a stage's fingerprint.
UNTRACKED_FIELDS = {
    "resume_from_checkpoint", "overwrite", "logging_dir", "logging_steps", "report_to", "disable_tqdm", "run_name",
    "push_to_hub", "hub_model_id", "hub_token", "hub_private_repo", "log_level", "log_level_replica", "output_dir",
}  # fmt: skip
MARKER = "toyllm_stage.json"  # written last: a folder without it holds no finished checkpoint


@dataclass
class RecipeArguments:
    """What every recipe reads besides its trainer's config and the model arguments."""

    dataset_name: str = field(metadata={"help": "JSONL file or Hub dataset id."})
    truncate_long_rows: bool = field(
        default=False, metadata={"help": "Truncate rows longer than the context instead of stopping with an error."}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Replace a finished checkpoint made from a different config or data."}
    )


def _config_path(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def parse_recipe_args(dataclass_types: tuple, args: list[str] | None = None) -> tuple:
    """`--config recipe.yaml` plus command-line overrides, the way TRL's own scripts read them.

    The YAML is checked first (unknown keys, wrong types: one line each). `--resume` is short for
    `--resume_from_checkpoint true`. Precision is the one field chosen for the machine: when neither the YAML nor the
    command line sets `bf16`, it is on where the GPU supports it and off elsewhere (TRL's configs default it on,
    which fails on a CPU).
    """
    use_cpu_for_multi_process_without_gpu()
    args = ["--resume_from_checkpoint" if a == "--resume" else a for a in (sys.argv[1:] if args is None else args)]
    if "--resume_from_checkpoint" in args:
        i = args.index("--resume_from_checkpoint")
        if i + 1 == len(args) or args[i + 1].startswith("--"):
            args.insert(i + 1, "true")
    config_path = _config_path(args)
    config = check_config_file(config_path, dataclass_types) if config_path else {}
    if "bf16" not in config and not any(a == "--bf16" or a.startswith("--bf16=") for a in args):
        args = ["--bf16", str(bf16_supported())] + args
    try:
        parsed = tuple(TrlParser(dataclass_types).parse_args_and_config(args))
    except ValueError as error:  # TrlParser's own checks, e.g. a config class rejecting a value
        raise UserError(f"{config_path or 'arguments'}: {error}") from None
    for obj in parsed:
        if hasattr(obj, "model_name_or_path"):
            check_model_path("model_name_or_path", obj.model_name_or_path)
        if getattr(obj, "reward_model_path", None):
            check_model_path("reward_model_path", obj.reward_model_path)
        if isinstance(obj, TrainingArguments):
            _resolve_resume(obj)
            on_command_line = any(a == "--report_to" or a.startswith("--report_to=") for a in args)
            check_report_to(obj.report_to, config_path if "report_to" in config and not on_command_line else None)
            if obj.push_to_hub:  # before any training: the Trainer would fail on it only after loading everything
                from toyllm.hub import require_token

                require_token(obj.hub_token)
    return parsed


def use_cpu_for_multi_process_without_gpu() -> None:
    """`accelerate launch --num_processes N` (or a DDP config) on a machine without a GPU: N CPU processes over gloo.

    accelerate's multi-process launcher (torchrun) does not tell the processes to use the CPU, and each would then
    train alone on its own copy of the data: N independent runs writing one output_dir. `ACCELERATE_USE_CPU` makes
    the Trainer and accelerate set up the gloo process group instead.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "ACCELERATE_USE_CPU" not in os.environ:
        import torch

        if not torch.accelerator.is_available():
            os.environ["ACCELERATE_USE_CPU"] = "true"
            logger.info("No GPU: running the %s processes on the CPU (gloo).", os.environ["WORLD_SIZE"])


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest `checkpoint-N` whose trainer state was written (the Trainer writes it last): a process killed
    mid-save leaves a newer, half-written folder that must not be resumed from."""
    folders = sorted(Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for folder in folders:
        try:
            json.loads((folder / "trainer_state.json").read_text())
            return str(folder)
        except (OSError, ValueError):
            logger.warning(f"{folder} is incomplete (interrupted while saving): skipped.")
    return None


def _resolve_resume(training_args: TrainingArguments) -> None:
    """`resume_from_checkpoint: true` means the last complete checkpoint in output_dir, if there is one."""
    if str(training_args.resume_from_checkpoint).lower() not in {"true", "1", "yes"}:
        return
    last = last_complete_checkpoint(training_args.output_dir)
    if last is None:
        logger.warning(f"No checkpoint in {training_args.output_dir} to resume from: starting the stage afresh.")
    training_args.resume_from_checkpoint = last


def read_marker(folder: str | Path) -> dict | None:
    try:
        return json.loads((Path(folder) / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _input_identity(key: str, value: str) -> str:
    """What a stage's input is, independent of where it lies: a file's content, a checkpoint's own fingerprint."""
    path = Path(value)
    if key == "dataset_name" and path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    marker = read_marker(path) if key in {"model_name_or_path", "reward_model_path"} else None
    return marker["fingerprint"] if marker else value


def stage_fingerprint(*parsed_args) -> str:
    """A hash of the config, the data file and the checkpoints the stage starts from (not of where they lie)."""
    values = {}
    for obj in parsed_args:
        for key, value in dataclasses.asdict(obj).items():
            if key in UNTRACKED_FIELDS:
                continue
            values[key] = _input_identity(key, value) if isinstance(value, str) and value else value
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def begin_stage(*parsed_args) -> str:
    """Refuse to replace a finished checkpoint of a different config unless asked; return this run's fingerprint.

    Also seeds every random draw of the stage with `seed`: the Trainer seeds itself only after the models are
    loaded, so a new score head or LoRA's A matrices would otherwise depend on whatever ran before in the process
    (the demo runs every stage in one), and a stage would not give the same result alone as in the chain.
    """
    script_args = parsed_args[0]
    training_args = next(obj for obj in parsed_args if isinstance(obj, TrainingArguments))
    set_seed(training_args.seed)
    fingerprint = stage_fingerprint(*parsed_args)
    marker = read_marker(training_args.output_dir)
    if marker and marker["fingerprint"] != fingerprint and not getattr(script_args, "overwrite", False):
        raise UserError(
            f"{training_args.output_dir}: holds a finished {marker['stage']} checkpoint made from a different config "
            "or data; pass --overwrite to replace it, or choose another output_dir"
        )
    return fingerprint


def write_marker(folder: str | Path, stage: str, fingerprint: str) -> None:
    atomic_write_text(Path(folder) / MARKER, json.dumps({"stage": stage, "fingerprint": fingerprint}) + "\n")


def atomic_write_text(path: Path, text: str) -> None:
    """Write then rename, so a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def setup_logging(training_args: TrainingArguments) -> None:
    level = training_args.get_process_log_level()
    transformers.utils.logging.set_verbosity(level)
    logging.getLogger("toyllm").setLevel(level)


def save_stage(
    trainer: Trainer,
    stage: str,
    fingerprint: str,
    base_model: str | None,
    dataset: str | None,
    command: str | None = None,
) -> Path:
    """Save weights (safetensors), config, tokenizer with its chat template, generation config and model card.

    Everything is written to a scratch folder first and moved into output_dir file by file (write then rename); the
    stage marker goes last, so an interrupted save never looks like a finished checkpoint.
    """
    output_dir = Path(trainer.args.output_dir)
    scratch = output_dir / ".saving"
    save_weights(trainer, scratch)  # on every rank: under FSDP or ZeRO-3 saving gathers the shards
    if trainer.accelerator.is_main_process:
        (output_dir / MARKER).unlink(missing_ok=True)
        trainer.state.save_to_json(str(scratch / "trainer_state.json"))  # log history, for plots and tests
        model = trainer.accelerator.unwrap_model(trainer.model)
        model = getattr(model, "policy", model)  # PPO wraps policy and value model together
        if getattr(model, "generation_config", None) is not None and stage != "reward":
            model.generation_config.save_pretrained(scratch)
        history = trainer.state.log_history
        final_loss = next((log["train_loss"] for log in reversed(history) if "train_loss" in log), None)
        write_model_card(
            scratch,
            stage=stage,
            trainer_name=type(trainer).__name__,
            base_model=base_model,
            dataset=dataset,
            command=command or recipe_command(),
            metrics={"train_loss": final_loss} if final_loss is not None else None,
        )
        for item in scratch.iterdir():
            target = output_dir / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
        scratch.rmdir()
        write_marker(output_dir, stage, fingerprint)
    trainer.accelerator.wait_for_everyone()
    if trainer.args.push_to_hub:
        push_stage(trainer, output_dir)
    return output_dir


def save_weights(trainer: Trainer, folder: Path) -> None:
    """`trainer.save_model`, with TRL's PPOTrainer made to save under DDP.

    PPOTrainer.save_model looks for `.policy` on the model it holds, which under DDP is the DistributedDataParallel
    wrapper: it misses it and tries to save policy and value model together (safetensors refuses their shared
    tensors). It also never sets an attribute Trainer._save reads on the other ranks. Handing it the unwrapped model
    for the save fixes both; DeepSpeed's engine forwards `.policy` and needs nothing.
    `_internal_call=True` keeps the Trainer from pushing this scratch save to the Hub: `push_stage` pushes the
    finished folder.
    """
    wrapped = trainer.model
    unwrapped = trainer.accelerator.unwrap_model(wrapped)
    if not hasattr(wrapped, "policy") and hasattr(unwrapped, "policy"):
        trainer.model = unwrapped
        if not hasattr(trainer, "is_distributed_loading_by_transformers"):
            trainer.is_distributed_loading_by_transformers = False
    try:
        trainer.save_model(str(folder), _internal_call=True)
    finally:
        trainer.model = wrapped


def push_stage(trainer: Trainer, output_dir: Path) -> None:
    """Push the finished checkpoint (weights, tokenizer, chat template, generation config, our model card).

    Called on every rank, like `trainer.push_to_hub` (alignment-handbook#198); the weights were already gathered by
    `save_weights` on every rank, so only the main process uploads, and the others wait for it. `trainer.push_to_hub`
    itself is not used: it saves the model a second time and replaces our README.md with TRL's generic card.
    """
    from toyllm.hub import push_folder

    args = trainer.args
    if trainer.accelerator.is_main_process:
        repo_id = getattr(trainer, "hub_model_id", None) or args.hub_model_id or output_dir.name
        push_folder(output_dir, repo_id, private=args.hub_private_repo, token=args.hub_token)
    trainer.accelerator.wait_for_everyone()
