"""Library messages that tell a toyllm user nothing, silenced narrowly: each filter names the message, the library
release that prints it and why it is harmless. Installed by `parse_recipe_args` (every recipe, and the demo's
stages) and by `toyllm`'s `main()` (merge, compare, chat, ...); installing it twice changes nothing. Whoever
upgrades transformers or TRL checks here whether each is still needed.
"""

from __future__ import annotations

import logging
import re
import warnings

import datasets
import transformers
from transformers import PreTrainedModel
from transformers.loss.loss_utils import LOSS_MAPPING


class _DropMessages(logging.Filter):
    def __init__(self, *starts: str):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        message = re.sub(r"^\[RANK \d+\] ", "", str(record.msg))  # accelerate's logger prefixes the process
        return not message.startswith(self.starts)


def silence_library_noise() -> None:
    # Progress bars for training (the Trainer's, with `disable_tqdm: false`), none for loading weights, writing
    # shards or mapping a dataset of toy size: transformers 5.x and datasets show those by default.
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    # TRL 1.12's PPOTrainer and its `disable_gradient_checkpointing` / `unwrap_model_for_generation` (PPO, DPO) read
    # `model.is_gradient_checkpointing`, which transformers 5.x deprecated for `is_activation_checkpointing`.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    # TRL 1.12's PPO logs `val/ratio_var`, the variance over its optimisation steps of one rollout; with one step
    # (num_ppo_epochs x num_mini_batches x accumulation = 1) torch warns that one value has no variance (NaN logged).
    warnings.filterwarnings("ignore", message=r"var\(\): degrees of freedom is <= 0", category=UserWarning)
    # TRL 1.12's PPO rollout passes a GenerationConfig together with `return_dict_in_generate`/`output_scores`;
    # transformers 5.x merges them as asked and only warns that the mix is deprecated.
    generation = logging.getLogger("transformers.generation.utils")
    if not any(isinstance(f, _DropMessages) for f in generation.filters):
        generation.addFilter(_DropMessages("Passing `generation_config` together with generation-related"))
    # TRL 1.12 warns that padding-free SFT (a batch's rows end to end) is known to work with FlashAttention only;
    # transformers 5.x's SDPA and eager attention build the mask from the position ids and keep each row apart
    # (tests/test_real_models.py checks the loss against padded batches).
    sft = logging.getLogger("trl.trainer.sft_trainer")
    if not any(isinstance(f, _DropMessages) for f in sft.filters):
        sft.addFilter(_DropMessages("Padding-free training is enabled, but the attention implementation is not set"))


def use_causal_lm_loss(model: PreTrainedModel) -> PreTrainedModel:
    """transformers 5.x picks a model's loss from its class name; GPT-2's `GPT2LMHeadModel` names none, so the first
    forward warns "`loss_type=None` was set in the config but it is unrecognized" and falls back to ForCausalLM's
    loss. Setting that same loss function keeps the loss bit-identical without the warning (setting `loss_type`
    instead moved the toy's pretraining loss)."""
    if getattr(model, "loss_type", None) is None and "_loss_function" not in model.__dict__:
        model.loss_function = LOSS_MAPPING["ForCausalLM"]
    return model
