"""Stage 2, supervised fine-tuning: question/answer flashcards teach the completer to answer.

    accelerate launch --config_file accelerate_config.yaml recipes/sft.py --config recipes/toy/sft.yaml

Reads conversational `{"messages": [...]}` rows (a system message is fine) or `{"prompt", "completion"}` rows; the
loss covers the assistant's answer and its EOS only.
"""

from dataclasses import dataclass, field

from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from toyllm.data import load_data
from toyllm.model import context_length, load_causal_lm, load_tokenizer
from toyllm.stage import RecipeArguments, begin_stage, exit_on_user_error, parse_recipe_args, save_stage, setup_logging


@dataclass
class SFTScriptArguments(RecipeArguments):
    dataset_name: str = field(default="data/sft.jsonl", metadata={"help": "JSONL file or Hub dataset id."})


ARGUMENT_TYPES = (SFTScriptArguments, SFTConfig, ModelConfig)


def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> None:
    setup_logging(training_args)
    fingerprint = begin_stage(script_args, training_args, model_args)

    # Model & tokenizer
    tokenizer = load_tokenizer(model_args, eos_token=training_args.eos_token)
    model = load_causal_lm(model_args.model_name_or_path, model_args, tokenizer)
    training_args.max_length = context_length(model.config, training_args.max_length)

    # Dataset
    dataset = load_data(
        script_args.dataset_name, "sft", tokenizer, training_args.max_length, script_args.truncate_long_rows
    )
    # Conversational rows train on the assistant turns ({% generation %} in the chat template); prompt/completion
    # rows on the completion (SFTConfig.completion_only_loss).
    training_args.assistant_only_loss = "messages" in dataset.column_names

    # Training
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    save_stage(trainer, "sft", fingerprint, model_args.model_name_or_path, script_args.dataset_name)


if __name__ == "__main__":
    with exit_on_user_error():
        main(*parse_recipe_args(ARGUMENT_TYPES))
