"""A stage's checkpoint from start to finish: fingerprint it, refuse to overwrite another one, save it atomically
with its marker and card, push it if asked (resuming is toyllm.resume's).

A finished checkpoint folder holds the stage marker (`toyllm_stage.json`, written last) with a fingerprint of the
config, the data and the checkpoints the stage started from; a folder without it holds no finished checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import transformers

from toyllm.card import Made, recipe_command, write_model_card
from toyllm.data import DataFolder
from toyllm.errors import UserError
from toyllm.files import atomic_write_text
from toyllm.hub import push_folder
from toyllm.launch import global_batch, world_size
from toyllm.model_source import carry_source, model_folder
from toyllm.resume import check_resume_source
from toyllm.stages import STAGE

if TYPE_CHECKING:
    from transformers import Trainer

logger = logging.getLogger(__name__)


# Fields that change how a run is watched, not what it produces: left out of a stage's fingerprint.
UNTRACKED_FIELDS = {
    "resume_from_checkpoint", "overwrite", "logging_dir", "logging_steps", "report_to", "disable_tqdm", "run_name",
    "push_to_hub", "hub_model_id", "hub_token", "hub_private_repo", "log_level", "log_level_replica", "output_dir",
    "project", "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id", "save_steps", "save_total_limit",
    "from_scratch",  # the random checkpoint it builds has a fingerprint of its own, read through model_name_or_path
    "gold_data_dir",  # PPO's greedy gold check: logged, it changes nothing trained
    "dataloader_pin_memory",  # off where there is no GPU to pin for: the same stage either way
}  # fmt: skip
MARKER = "toyllm_stage.json"  # written last: a folder without it holds no finished checkpoint


def read_marker(folder: str | Path) -> dict | None:
    try:
        return json.loads((Path(folder) / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def files_digest(paths, digest=None):
    """A sha256 over each file's name and bytes, in the given order (continuing `digest` when given)."""
    digest = digest or hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode() + Path(path).read_bytes())
    return digest


def _input_identity(key: str, value: str) -> str:
    """What a stage's input is, independent of where it lies: a file's content, a checkpoint's own fingerprint."""
    path = Path(value)
    if key in {"dataset_name", "ptx_dataset_name", "flashcards_dataset_name", "replay_prompts_dataset_name"} and (
        path.is_file()
    ):
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if key == "data_dir" and path.is_dir():  # what the vocabulary is built from: never the eval file
        return files_digest(p for p in DataFolder(path).training_files if p.is_file()).hexdigest()
    if key == "toy_config_dir" and path.is_dir():
        return files_digest(sorted(p for p in path.iterdir() if p.is_file())).hexdigest()
    marker = read_marker(path) if key in {"model_name_or_path", "reward_model_path"} else None
    return marker["fingerprint"] if marker else value


class Fingerprint(str):
    """A stage's hash, carrying what it hashed: the stage marker keeps that, so that a refusal can name the fields
    that differ between a finished checkpoint and the run that would replace it."""

    inputs: dict | None

    def __new__(cls, digest: str, inputs: dict | None = None):
        fingerprint = super().__new__(cls, digest)
        fingerprint.inputs = inputs
        return fingerprint


def stage_fingerprint(*parsed_args) -> Fingerprint:
    """A hash of the config, the data file and the checkpoints the stage starts from (not of where they lie)."""
    values = {}
    for obj in parsed_args:
        for key, value in dataclasses.asdict(obj).items():
            if key in UNTRACKED_FIELDS:
                continue
            values[key] = _input_identity(key, value) if isinstance(value, str) and value else value
    if "per_device_train_batch_size" in values:  # 2 processes x 8 is the same stage as 1 x 16
        values["global_batch"] = (
            values.pop("per_device_train_batch_size") * values.pop("gradient_accumulation_steps", 1) * world_size()
        )
    text = json.dumps(values, sort_keys=True, default=str)
    return Fingerprint(hashlib.sha256(text.encode()).hexdigest(), json.loads(text))


def _differences(old: dict | None, new: dict | None) -> str:
    """'; fields that differ: learning_rate (0.001 there, 0.002 here), dataset_name (another file's content)'."""
    if not old or not new:
        return ""

    def shown(value) -> str:  # file contents and checkpoints enter the fingerprint as sha256 digests
        if isinstance(value, str) and re.fullmatch("[0-9a-f]{64}", value):
            return "a file's or checkpoint's content"
        return repr(value)

    changed = [key for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]
    if not changed:
        return ""
    parts = [f"{key} ({shown(old.get(key))} there, {shown(new.get(key))} here)" for key in changed[:5]]
    more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
    return f"; fields that differ: {', '.join(parts)}{more}"


def is_finished(folder: str | Path, fingerprint: str, overwrite: bool) -> bool:
    """True when `folder` already holds this exact stage; an error when it holds another one's, unless `overwrite`."""
    marker = read_marker(folder)
    if marker is None:
        return False
    if marker["fingerprint"] == fingerprint:
        return True
    if not overwrite:
        differences = _differences(marker.get("inputs"), getattr(fingerprint, "inputs", None))
        raise UserError(
            f"{folder}: holds a finished {marker['stage']} checkpoint made from a different config, data or seed"
            f"{differences}; pass --overwrite to replace it, or choose another output folder"
        )
    return False


def begin_stage(script_args, training_args, *other_args) -> str | None:
    """Set up logging and seeding, refuse to replace another config's finished checkpoint; return the fingerprint,
    or None when output_dir already holds this very stage (then the recipe has nothing to do, unless `overwrite`).

    Every random draw of the stage is seeded with `seed` first: the Trainer seeds itself only after the models are
    loaded, so a new score head or LoRA's A matrices would otherwise depend on whatever ran before in the process
    (the demo runs every stage in one), and a stage would not give the same result alone as in the chain.
    """
    level = training_args.get_process_log_level()
    transformers.utils.logging.set_verbosity(level)
    logging.getLogger("toyllm").setLevel(level)
    transformers.set_seed(training_args.seed)
    fingerprint = stage_fingerprint(script_args, training_args, *other_args)
    if training_args.process_index == 0:  # results depend on the global batch, not on how it is split
        print(f"{training_args.output_dir}: batch of {global_batch(training_args)} rows per optimizer step "
              f"({training_args.per_device_train_batch_size} per device x {training_args.gradient_accumulation_steps}"
              f" accumulation steps x {world_size()} processes)", file=sys.stderr, flush=True)  # fmt: skip
    check_resume_source(training_args.resume_from_checkpoint, fingerprint)
    if is_finished(training_args.output_dir, fingerprint, script_args.overwrite) and not script_args.overwrite:
        logger.warning(f"{training_args.output_dir}: this stage is already complete for this config and data: "
                       "skipped (pass --overwrite true to train it again)")  # fmt: skip
        return None
    return fingerprint


def write_marker(folder: str | Path, stage: str, fingerprint: str) -> None:
    marker = {"stage": stage, "fingerprint": fingerprint}
    if getattr(fingerprint, "inputs", None) is not None:
        marker["inputs"] = fingerprint.inputs
    atomic_write_text(Path(folder) / MARKER, json.dumps(marker) + "\n")


def move_into(scratch: Path, output_dir: Path) -> None:
    """Every file of a finished save moved from its scratch folder into `output_dir`, one rename each, replacing
    what was there; the scratch folder is removed."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for item in scratch.iterdir():
        target = output_dir / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    scratch.rmdir()


def save_stage(trainer: Trainer, stage: str, fingerprint: str, base_model: str | None, dataset: str | None) -> Path:
    """Save weights (safetensors), config, tokenizer with its chat template, generation config and model card.

    Everything is written to a scratch folder first and moved into output_dir file by file (write then rename); the
    stage marker goes last, so an interrupted save never looks like a finished checkpoint.
    """
    output_dir = Path(trainer.args.output_dir)
    scratch = output_dir / ".saving"
    # On every rank: under FSDP or ZeRO-3 saving gathers the shards. `_internal_call` keeps the Trainer from pushing
    # this scratch save to the Hub: `push_stage` pushes the finished folder.
    trainer.save_model(str(scratch), _internal_call=True)
    if trainer.accelerator.is_main_process:
        (output_dir / MARKER).unlink(missing_ok=True)
        trainer.state.save_to_json(str(scratch / "trainer_state.json"))  # log history, for plots and tests
        model = trainer.accelerator.unwrap_model(trainer.model)
        if STAGE[stage].saves == "causal-lm" and getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(scratch)  # a LoRA adapter's save leaves it out
        history = trainer.state.log_history
        final_loss = next((log["train_loss"] for log in reversed(history) if "train_loss" in log), None)
        source = carry_source(model_folder(base_model) if base_model else None, scratch)
        metrics = {"train_loss": final_loss} if final_loss is not None else None
        made = Made(stage, type(trainer).__name__, base_model, dataset, recipe_command(), metrics, source)
        write_model_card(scratch, made, output_dir.name)
        move_into(scratch, output_dir)
        write_marker(output_dir, stage, fingerprint)
    trainer.accelerator.wait_for_everyone()
    if trainer.args.push_to_hub or getattr(trainer.args, "push_when_finished", False):  # see toyllm.args
        push_stage(trainer, output_dir)
    return output_dir


def push_stage(trainer: Trainer, output_dir: Path) -> None:
    """Push the finished checkpoint (weights, tokenizer, chat template, generation config, our model card).

    Called on every rank, like `trainer.push_to_hub` (alignment-handbook#198); the weights were already gathered by
    `save_stage` on every rank, so only the main process uploads, and the others wait for it. `trainer.push_to_hub`
    itself is not used: it saves the model a second time and replaces our README.md with TRL's generic card.
    """
    args = trainer.args
    if trainer.accelerator.is_main_process:
        repo_id = getattr(trainer, "hub_model_id", None) or args.hub_model_id or output_dir.name
        push_folder(output_dir, repo_id, private=args.hub_private_repo, token=args.hub_token)
    trainer.accelerator.wait_for_everyone()
