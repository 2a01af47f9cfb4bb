"""How this process was launched: how many processes share the run, and the global batch that follows."""

from __future__ import annotations

import os


def world_size() -> int:
    """The processes of this run (`accelerate launch --num_processes N` sets WORLD_SIZE; one when run directly).

    Read from the environment, not `training_args.world_size`: PPOConfig has a field of that name, None until
    training starts."""
    return int(os.environ.get("WORLD_SIZE", 1))


def global_batch(training_args) -> int:
    """Rows per optimizer step: per device x accumulation steps x processes. Results depend on it, not on its split."""
    return training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * world_size()
