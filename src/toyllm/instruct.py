"""The first stage of a real model's chain (`toyllm demo --model`): the instruct model as it comes, saved as a
checkpoint folder of the run, with the tokenizer every later stage shares.

The model is a folder, a Hub id or a GGUF file (toyllm.model_source). It is saved once into the run, so each later
stage, the evaluation and the report read one local folder, and its marker's fingerprint says which model it was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from transformers import AutoModelForCausalLM
from trl import ModelConfig

from toyllm.card import Made, write_model_card
from toyllm.checkpoint import is_finished, move_into, write_marker
from toyllm.model import fit_to_tokenizer, load_weights
from toyllm.model_source import carry_source, file_digest, is_gguf, model_folder
from toyllm.stages import REAL_MODEL_TABLE
from toyllm.tokenizer import load_tokenizer


def model_fingerprint(model: str, revision: str = "main") -> str:
    """Which model this is: a GGUF file's content, a local folder's files (names, sizes, modification times), or a
    Hub id and revision."""
    folder = Path(model).expanduser()
    if is_gguf(model):
        identity = ["gguf", file_digest(folder)]
    elif folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.is_file())
        identity = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    else:
        identity = [model, revision]
    return hashlib.sha256(json.dumps({"instruct": identity}).encode()).hexdigest()


def build_instruct_stage(model: str, output_dir: str | Path, stage: str, overwrite: bool = False) -> Path:
    """Save the model as it comes, its tokenizer completed for chat training (a pad token that is not EOS), into
    `output_dir`; skipped when the folder already holds this very model."""
    output_dir = Path(output_dir)
    fingerprint = model_fingerprint(model)
    if is_finished(output_dir, fingerprint, overwrite):
        return output_dir
    model_args = ModelConfig(model_name_or_path=model, dtype="auto")
    tokenizer = load_tokenizer(model_args)
    weights = fit_to_tokenizer(load_weights(AutoModelForCausalLM, model, dtype="auto"), tokenizer)
    scratch = output_dir / ".saving"
    shutil.rmtree(scratch, ignore_errors=True)
    weights.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    source = carry_source(model_folder(model), scratch)
    made = Made(stage, "none (as it comes)", base_model=model, source=source)
    write_model_card(scratch, made, output_dir.name, REAL_MODEL_TABLE)
    move_into(scratch, output_dir)
    write_marker(output_dir, stage, fingerprint)
    return output_dir
