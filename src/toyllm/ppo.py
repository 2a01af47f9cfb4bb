"""TRL's PPOTrainer (trl 1.12.0, `trl.experimental.ppo`, frozen upstream) with every workaround toyllm needs, in one
place, and the checks PPO gets wrong silently or too late. Whoever upgrades TRL looks here first.
"""

from __future__ import annotations

import gc
import logging

import torch  # noqa: E402
from datasets import concatenate_datasets  # noqa: E402

from toyllm.errors import UserError  # noqa: E402
from toyllm.versions import PPO_MODULE, require_module  # noqa: E402

require_module(PPO_MODULE)  # one line naming the TRL that has PPO, where the installed one has none

from trl.experimental.ppo import PPOConfig  # noqa: E402, F401  (the recipe's config class, imported from here)
from trl.experimental.ppo import PPOTrainer as TRLPPOTrainer  # noqa: E402

from toyllm.generation import generate_answers, normalise  # noqa: E402
from toyllm.launch import global_batch  # noqa: E402
from toyllm.model import rollout_threads_for  # noqa: E402
from toyllm.model_source import checkpoint_tokenizer  # noqa: E402

logger = logging.getLogger(__name__)


class PPOTrainer(TRLPPOTrainer):
    # (chat prompt ids, preferred answers): when set, every `gold_every` steps the share of prompts whose greedy answer
    # is the preferred one is logged as `gold/agreement`, the labeller's verdict beside the judge's `objective/scores`.
    gold: tuple[list[list[int]], list[str]] | None = None
    gold_every = 8

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if self.gold is not None and self.state.global_step % self.gold_every == 1:
            policy = self.accelerator.unwrap_model(self.model).policy
            was_training = policy.training
            policy.eval()
            with torch.no_grad():
                answers = generate_answers(policy, self.processing_class, self.gold[0])
            policy.train(was_training)
            logs["gold/agreement"] = sum(normalise(a) == normalise(b) for a, b in zip(answers, self.gold[1])) / len(
                answers
            )
        super().log(logs, start_time)

    def train(self):
        """TRL 1.12's PPO, with two workarounds around its training loop and a thread count.

        - LoRA under several processes: PPO's frozen reference is then the policy with its adapter disabled, and the
          loop reaches it as `model.policy` (in `train` and `null_ref_context`). Under DDP the model it holds is the
          DistributedDataParallel wrapper, which has no `.policy`: the first rollout fails ("'DistributedDataParallel'
          object has no attribute 'policy'"). While training, the wrapper gets a plain alias to the policy: not a
          registered submodule, so DDP's parameters, gradients and state dict are untouched. (Full fine-tuning has a
          separate reference model; DeepSpeed's engine forwards the attribute.)
        - Speed: the loop calls `gc.collect()` twice per rollout; with transformers and TRL imported each scan costs
          far more than a toy rollout (benchmarks/RESULTS.md). Freezing the objects that exist before training makes
          each collect scan only what training adds; they are unfrozen when training ends. A toy policy on a CPU
          trains on one intra-op thread (`rollout_threads_for`), restored afterwards.
        """
        wrapper = self.model
        policy = self.accelerator.unwrap_model(wrapper).policy
        aliased = not hasattr(wrapper, "policy")
        if aliased:
            object.__setattr__(wrapper, "policy", policy)
        gc.freeze()
        try:
            with rollout_threads_for(policy):
                return super().train()
        finally:
            gc.unfreeze()
            if aliased:
                del wrapper.__dict__["policy"]

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """Save the policy, also under DDP.

        TRL 1.12's `save_model` looks for `.policy` on the model it holds, which under DDP is the
        DistributedDataParallel wrapper: it misses it and saves policy and value model together (safetensors refuses
        their shared tensors). It also never sets `is_distributed_loading_by_transformers`, which `Trainer._save`
        reads on the other ranks. Handing it the unwrapped model for the save fixes both. The policy's generation
        config is saved with it: TRL's wrapper of policy and value model has none of its own.
        """
        wrapped = self.model
        unwrapped = self.accelerator.unwrap_model(wrapped)
        if not hasattr(wrapped, "policy"):
            self.model = unwrapped
            if not hasattr(self, "is_distributed_loading_by_transformers"):
                self.is_distributed_loading_by_transformers = False
        try:
            super().save_model(output_dir, _internal_call)
        finally:
            self.model = wrapped
        if self.accelerator.is_main_process and output_dir is not None:
            unwrapped.policy.generation_config.save_pretrained(output_dir)


def fill_rollout_batch(prompts, training_args):
    """Prompts repeated until every process has a whole rollout batch: TRL's PPO draws full batches only, and would
    wait forever on a story with fewer prompts than one rollout (4 held-out questions, a batch of 8). A prompt then
    appears several times in a rollout, as it would over several rollouts."""
    needed = global_batch(training_args)
    if len(prompts) >= needed:
        return prompts
    copies = -(-needed // len(prompts))
    logger.warning(f"{len(prompts)} prompts, fewer than a rollout batch of {needed}: each is repeated {copies} times")
    return concatenate_datasets([prompts] * copies)


def check_ppo_setup(training_args, policy_path: str, world_size: int) -> None:
    """What TRL's PPO gets wrong silently or too late: the judge's vocabulary and the rollout batch arithmetic."""
    policy_vocab = checkpoint_tokenizer(policy_path).get_vocab()
    if checkpoint_tokenizer(training_args.reward_model_path).get_vocab() != policy_vocab:
        raise UserError(
            f"reward_model_path: {training_args.reward_model_path} has a different tokenizer from "
            f"model_name_or_path {policy_path}; PPO feeds the policy's token ids to the judge, so both must share one"
        )
    per_process = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    if (per_process * world_size) % training_args.num_mini_batches or per_process % training_args.num_mini_batches:
        raise UserError(
            f"num_mini_batches: {training_args.num_mini_batches} does not divide the rollout batch of {per_process} "
            f"per process x {world_size} processes (per_device_train_batch_size x gradient_accumulation_steps)"
        )
