"""Resuming a stage: the last complete `checkpoint-N` of its output folder, and never one another config made."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import TrainerCallback

from toyllm.errors import UserError
from toyllm.files import atomic_write_text

logger = logging.getLogger(__name__)

RUN_MARKER = "toyllm_run.json"  # in each checkpoint-N: the fingerprint of the config that made it


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


def resolve_resume(training_args) -> None:
    """`resume_from_checkpoint: true` means the last complete checkpoint in output_dir, if there is one."""
    if str(training_args.resume_from_checkpoint).lower() not in {"true", "1", "yes"}:
        return
    last = last_complete_checkpoint(training_args.output_dir)
    if last is None:
        logger.warning(f"No checkpoint in {training_args.output_dir} to resume from: starting the stage afresh.")
    training_args.resume_from_checkpoint = last


def check_resume_source(checkpoint: str | None, fingerprint: str) -> None:
    """A `checkpoint-N` made by another config or data is never resumed (with --overwrite it used to be, silently):
    each checkpoint names the config it was made with (MarkCheckpoints). Checkpoints from before that pass."""
    if not checkpoint:
        return
    try:
        made_by = json.loads((Path(checkpoint) / RUN_MARKER).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        return
    if made_by != fingerprint:
        raise UserError(
            f"{checkpoint}: made by a different config, data or seed; resume with that config, or leave out --resume "
            "to start this one afresh"
        )


def checkpoint_marker(fingerprint: str):
    """A Trainer callback that writes the stage's fingerprint into each checkpoint-N it saves (see
    check_resume_source)."""

    class MarkCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                atomic_write_text(folder / RUN_MARKER, json.dumps({"fingerprint": fingerprint}) + "\n")

    return MarkCheckpoints()
