"""Stage 3a, the reward model: a judge trained on chosen/rejected pairs to score how well an answer fits.

    accelerate launch --config_file accelerate_config.yaml recipes/reward.py --config recipes/toy/reward.yaml

The judge is a one-label `AutoModelForSequenceClassification` started from the SFT checkpoint: it already knows the
questions and answers, so it only has to learn which answer fits which question.
"""

from dataclasses import dataclass, field

from trl import ModelConfig, RewardConfig, RewardTrainer, get_peft_config

from toyllm.data import load_data
from toyllm.model import context_length, load_scorer, load_tokenizer
from toyllm.stage import RecipeArguments, begin_stage, exit_on_user_error, parse_recipe_args, save_stage, setup_logging


@dataclass
class RewardScriptArguments(RecipeArguments):
    dataset_name: str = field(default="data/preference.jsonl", metadata={"help": "JSONL file or Hub dataset id."})


ARGUMENT_TYPES = (RewardScriptArguments, RewardConfig, ModelConfig)


def main(script_args: RewardScriptArguments, training_args: RewardConfig, model_args: ModelConfig) -> None:
    setup_logging(training_args)
    fingerprint = begin_stage(script_args, training_args, model_args)

    # Model & tokenizer
    tokenizer = load_tokenizer(model_args)
    model = load_scorer(model_args.model_name_or_path, model_args, tokenizer)
    if model_args.use_peft:  # LoRA on the backbone; the new one-label score head is trained and saved in full
        model_args.lora_task_type, model_args.lora_modules_to_save = "SEQ_CLS", ["score"]
    training_args.max_length = context_length(model.config, training_args.max_length)

    # Dataset
    dataset = load_data(
        script_args.dataset_name, "preference", tokenizer, training_args.max_length, script_args.truncate_long_rows
    )

    # Training
    trainer = RewardTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    save_stage(trainer, "reward", fingerprint, model_args.model_name_or_path, script_args.dataset_name)


if __name__ == "__main__":
    with exit_on_user_error():
        main(*parse_recipe_args(ARGUMENT_TYPES))
