"""Stage 3c, DPO: the simpler alternative to reward model + PPO, learning from the preference pairs directly.

    accelerate launch --config_file accelerate_config.yaml recipes/dpo.py --config recipes/toy/dpo.yaml

The SFT model is both the starting point and the frozen reference (TRL loads the reference from the same path, or
disables the LoRA adapter when `use_peft` is on).
"""

from dataclasses import dataclass, field

from trl import DPOConfig, DPOTrainer, ModelConfig, get_peft_config

from toyllm.data import load_data
from toyllm.model import context_length, load_causal_lm, load_tokenizer
from toyllm.stage import RecipeArguments, begin_stage, exit_on_user_error, parse_recipe_args, save_stage, setup_logging


@dataclass
class DPOScriptArguments(RecipeArguments):
    dataset_name: str = field(default="data/preference.jsonl", metadata={"help": "JSONL file or Hub dataset id."})


ARGUMENT_TYPES = (DPOScriptArguments, DPOConfig, ModelConfig)


def main(script_args: DPOScriptArguments, training_args: DPOConfig, model_args: ModelConfig) -> None:
    setup_logging(training_args)
    fingerprint = begin_stage(script_args, training_args, model_args)

    # Model & tokenizer
    tokenizer = load_tokenizer(model_args)
    model = load_causal_lm(model_args.model_name_or_path, model_args, tokenizer)
    training_args.max_length = context_length(model.config, training_args.max_length)

    # Dataset
    dataset = load_data(
        script_args.dataset_name, "preference", tokenizer, training_args.max_length, script_args.truncate_long_rows
    )

    # Training
    trainer = DPOTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    save_stage(trainer, "dpo", fingerprint, model_args.model_name_or_path, script_args.dataset_name)


if __name__ == "__main__":
    with exit_on_user_error():
        main(*parse_recipe_args(ARGUMENT_TYPES))
