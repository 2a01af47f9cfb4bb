"""Stage 3b', RLHF with RLOO: the online RL that TRL keeps. The SFT model writes several answers to each prompt, the
judge scores them, and each answer's advantage is its score minus the mean of the other answers to the same prompt
(REINFORCE Leave-One-Out); a KL penalty (`beta`) keeps the policy near the SFT reference.

    accelerate launch --config_file accelerate_config.yaml recipes/rloo.py --config recipes/toy/rloo.yaml

Where PPO learns a value model to judge each answer against, RLOO compares an answer with its siblings: no value
model, one model trained, one judge call per answer. The judge (`reward_model_path`, the reward stage's scorer) is
TRL's `reward_funcs`; the reference is the SFT model (with LoRA, the policy with its adapter switched off).
"""

from dataclasses import dataclass, field

from trl import ModelConfig, RLOOConfig, RLOOTrainer, get_peft_config

from toyllm.args import RecipeArguments, parse_recipe_args
from toyllm.checkpoint import begin_stage, save_stage
from toyllm.data import rl_prompts
from toyllm.errors import exit_on_user_error
from toyllm.model import context_length, load_causal_lm, load_scorer, model_config, rollout_threads_for
from toyllm.model_source import checkpoint_tokenizer
from toyllm.resume import checkpoint_marker
from toyllm.stages import STAGE
from toyllm.tokenizer import load_tokenizer


@dataclass
class RLOOScriptArguments(RecipeArguments):
    dataset_name: str = field(default="data/prompts.jsonl", metadata={"help": "Prompt-only JSONL or Hub dataset id."})
    reward_model_path: str = field(
        default="outputs/toy/reward", metadata={"help": "The judge: a one-label scorer checkpoint (the reward stage)."}
    )
    flashcards_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Flashcards (sft.jsonl rows) whose questions the prompts lack are added to them."},
    )


ARGUMENT_TYPES = (RLOOScriptArguments, RLOOConfig, ModelConfig)


def main(script_args: RLOOScriptArguments, training_args: RLOOConfig, model_args: ModelConfig) -> None:
    stage = STAGE["rloo"]
    fingerprint = begin_stage(script_args, training_args, model_args)
    if fingerprint is None:
        return

    # Tokenizer & prompts, checked before any model is loaded: generation reads left-padded prompts, and prompt +
    # answer must fit the context
    tokenizer = load_tokenizer(model_args, padding_side="left")
    max_length = context_length(model_config(model_args.model_name_or_path))
    train_dataset, eval_dataset = rl_prompts(
        script_args, tokenizer, max_length, training_args.eval_strategy != "no", training_args.max_completion_length
    )

    # Models: the policy from the SFT checkpoint (TRL builds the frozen reference, or disables the adapter), the judge
    # from the reward checkpoint. The judge reads the answers as text through its own tokenizer and chat template.
    policy = load_causal_lm(model_args.model_name_or_path, model_args, tokenizer)
    judge_tokenizer = checkpoint_tokenizer(script_args.reward_model_path)
    judge = load_scorer(script_args.reward_model_path, model_args, judge_tokenizer)

    # Training
    trainer = RLOOTrainer(
        model=policy,
        reward_funcs=judge,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        reward_processing_classes=judge_tokenizer,
        callbacks=[checkpoint_marker(fingerprint)],
        peft_config=get_peft_config(model_args),
    )
    with rollout_threads_for(policy):
        trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    save_stage(trainer, stage.name, fingerprint, model_args.model_name_or_path, script_args.dataset_name)


if __name__ == "__main__":
    with exit_on_user_error():
        main(*parse_recipe_args(ARGUMENT_TYPES))
