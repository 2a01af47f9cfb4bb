"""Stage 3c, DPO: the simpler alternative to reward model + PPO, learning from the preference pairs directly.

    accelerate launch --config_file accelerate_config.yaml recipes/dpo.py --config recipes/toy/dpo.yaml

The SFT model is both the starting point and the frozen reference (TRL loads the reference from the same path, or
disables the LoRA adapter when `use_peft` is on).
"""

from dataclasses import dataclass, field

from trl import DPOConfig, DPOTrainer, ModelConfig, get_peft_config

from toyllm.args import PreferenceArguments, ReplayArguments, fit_schedule, parse_recipe_args
from toyllm.checkpoint import begin_stage, save_stage
from toyllm.data import load_splits, preference_pairs
from toyllm.errors import exit_on_user_error
from toyllm.model import context_length, load_causal_lm
from toyllm.replay import replay_answers, replay_pairs
from toyllm.resume import checkpoint_marker
from toyllm.stages import STAGE
from toyllm.tokenizer import load_tokenizer


@dataclass
class DPOScriptArguments(PreferenceArguments, ReplayArguments):
    dataset_name: str = field(default="data/preference.jsonl", metadata={"help": "JSONL file or Hub dataset id."})
    replay_pairs_rejected: int = field(default=1, metadata={"help": "Story answers rejected per general prompt."})

    def __post_init__(self):
        super().__post_init__()
        if self.replay_pairs_rejected < 0:
            raise ValueError(f"replay_pairs_rejected: {self.replay_pairs_rejected}; a number of pairs, 0 or more")


ARGUMENT_TYPES = (DPOScriptArguments, DPOConfig, ModelConfig)


def main(script_args: DPOScriptArguments, training_args: DPOConfig, model_args: ModelConfig) -> None:
    stage = STAGE["dpo"]
    fingerprint = begin_stage(script_args, training_args, model_args)
    if fingerprint is None:
        return

    # Model & tokenizer
    tokenizer = load_tokenizer(model_args)
    model = load_causal_lm(model_args.model_name_or_path, model_args, tokenizer)
    training_args.max_length = context_length(model.config, training_args.max_length)

    # Dataset
    train_dataset, eval_dataset = load_splits(
        script_args, stage.data, tokenizer, training_args.max_length, training_args.eval_strategy != "no"
    )
    train_dataset = preference_pairs(script_args, train_dataset, training_args.seed)
    if script_args.replay_prompts_dataset_name:
        answers = replay_answers(script_args, model, tokenizer, training_args.max_length)
        train_dataset = replay_pairs(train_dataset, answers, script_args.replay_pairs_rejected, training_args.seed)
    fit_schedule(script_args, training_args, len(train_dataset))

    # Training
    trainer = DPOTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=[checkpoint_marker(fingerprint)],
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    save_stage(trainer, stage.name, fingerprint, model_args.model_name_or_path, script_args.dataset_name)


if __name__ == "__main__":
    with exit_on_user_error():
        main(*parse_recipe_args(ARGUMENT_TYPES))
