"""TRL's PPOTrainer with one fix: LoRA under several processes.

With LoRA, PPO's frozen reference is the policy with its adapter disabled. TRL 1.12's training loop reaches the
policy as `model.policy` for that reference pass (in `train` and `null_ref_context`), but under DDP the model it
holds is the DistributedDataParallel wrapper, which has no `.policy`: the first rollout fails with
"'DistributedDataParallel' object has no attribute 'policy'". Full fine-tuning never takes that path (it has a
separate reference model), and DeepSpeed's engine forwards the attribute. `trl.experimental.ppo` is frozen
upstream, so while training we give the wrapper a plain alias to the policy: not a registered submodule, so DDP's
parameters, gradients and state dict are untouched.
"""

from __future__ import annotations

from trl.experimental.ppo import PPOTrainer as TRLPPOTrainer


class PPOTrainer(TRLPPOTrainer):
    def train(self):
        wrapper = self.model
        aliased = not hasattr(wrapper, "policy")
        if aliased:
            object.__setattr__(wrapper, "policy", self.accelerator.unwrap_model(wrapper).policy)
        try:
            return super().train()
        finally:
            if aliased:
                del wrapper.__dict__["policy"]
