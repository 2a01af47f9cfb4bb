"""Merge a LoRA adapter into its base model: a full checkpoint that the next stage (or plain transformers) loads.

    toyllm merge --adapter outputs/qwen/sft-lora --output outputs/qwen/sft

TRL's trainers refuse a model that already holds an adapter together with a new `peft_config`, so a LoRA stage's
output is merged before the next stage starts from it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from peft import PeftConfig
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from toyllm.errors import UserError
from toyllm.model import load_weights

logger = logging.getLogger(__name__)


def merge_adapter(adapter_dir: str | Path, output_dir: str | Path) -> Path:
    """Base weights + adapter → one full checkpoint in `output_dir`, with the adapter's tokenizer and chat template.

    A causal-LM adapter (SFT, PPO, DPO) gives an `AutoModelForCausalLM` checkpoint; a `SEQ_CLS` adapter (the reward
    model, whose score head was saved whole) gives a one-label `AutoModelForSequenceClassification`. The base is
    loaded as every stage loads an adapter (toyllm.model.load_adapter): itself an adapter or a GGUF file if need be,
    with the rows of the adapter's tokenizer before the adapter is applied.
    """
    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise UserError(f"{adapter_dir}: no adapter_config.json (not a LoRA adapter folder)")
    if output_dir.resolve() == adapter_dir.resolve():
        raise UserError(f"{output_dir}: choose an output folder other than the adapter's")
    config = PeftConfig.from_pretrained(adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    if config.task_type == "SEQ_CLS":
        merged = load_weights(AutoModelForSequenceClassification, adapter_dir, num_labels=1, dtype="auto")
    else:
        merged = load_weights(AutoModelForCausalLM, adapter_dir, dtype="auto")
    merged.config.pad_token_id = tokenizer.pad_token_id
    merged.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)  # with its chat template
    for name in ("generation_config.json", "README.md"):
        if (adapter_dir / name).is_file():
            shutil.copyfile(adapter_dir / name, output_dir / name)
    logger.info(f"Merged {adapter_dir} into {config.base_model_name_or_path}: saved to {output_dir}.")
    return output_dir
