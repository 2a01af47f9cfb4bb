"""Stage 3a, the reward model: a judge trained on chosen/rejected pairs to score how well an answer fits.

    accelerate launch --config_file accelerate_config.yaml recipes/reward.py --config recipes/toy/reward.yaml

The judge is a one-label `AutoModelForSequenceClassification` started from the SFT checkpoint: it already knows the
questions and answers, so it only has to learn which answer fits which question. With `other_answers_rejected: N`,
each prompt's chosen answer also beats the chosen answers of up to N other prompts, pairs a sparse preference file
lacks; with `flashcards_dataset_name`, the flashcard questions it does not ask get pairs too (toyllm.data).
"""

from dataclasses import dataclass, field

from trl import ModelConfig, RewardConfig, RewardTrainer, get_peft_config

from toyllm.args import PreferenceArguments, fit_schedule, parse_recipe_args
from toyllm.checkpoint import begin_stage, save_stage
from toyllm.data import load_splits, preference_pairs
from toyllm.errors import exit_on_user_error
from toyllm.model import context_length, load_scorer
from toyllm.resume import checkpoint_marker
from toyllm.stages import STAGE
from toyllm.tokenizer import load_tokenizer


@dataclass
class RewardScriptArguments(PreferenceArguments):
    dataset_name: str = field(default="data/preference.jsonl", metadata={"help": "JSONL file or Hub dataset id."})


@dataclass
class RewardModelConfig(ModelConfig):
    """With LoRA, the adapters go on the backbone and the new one-label score head is trained and saved in full."""

    lora_task_type: str = field(default="SEQ_CLS", metadata={"help": "A reward model is SEQ_CLS."})
    lora_modules_to_save: list[str] | None = field(
        default_factory=lambda: ["score"], metadata={"help": "Trained in full: the score head, at least."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.use_peft and self.lora_task_type != "SEQ_CLS":
            raise ValueError(f"lora_task_type: a reward model needs SEQ_CLS, not {self.lora_task_type}")
        if self.use_peft and "score" not in (self.lora_modules_to_save or []):
            raise ValueError(
                "lora_modules_to_save: must include score, the new head, or it is neither trained nor saved"
            )


ARGUMENT_TYPES = (RewardScriptArguments, RewardConfig, RewardModelConfig)


def main(script_args: RewardScriptArguments, training_args: RewardConfig, model_args: RewardModelConfig) -> None:
    stage = STAGE["reward"]
    fingerprint = begin_stage(script_args, training_args, model_args)
    if fingerprint is None:
        return

    # Model & tokenizer
    tokenizer = load_tokenizer(model_args)
    model = load_scorer(model_args.model_name_or_path, model_args, tokenizer)
    training_args.max_length = context_length(model.config, training_args.max_length)

    # Dataset
    train_dataset, eval_dataset = load_splits(
        script_args, stage.data, tokenizer, training_args.max_length, training_args.eval_strategy != "no"
    )
    train_dataset = preference_pairs(script_args, train_dataset, training_args.seed)
    fit_schedule(script_args, training_args, len(train_dataset))

    # Training
    trainer = RewardTrainer(
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
