"""Stage 2, supervised fine-tuning: question/answer flashcards teach the completer to answer.

    accelerate launch --config_file accelerate_config.yaml recipes/sft.py --config recipes/toy/sft.yaml

Reads conversational `{"messages": [...]}` rows (a system message is fine) or `{"prompt", "completion"}` rows; the
loss covers the assistant's answer and its EOS only.
"""

from dataclasses import dataclass, field

from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from toyllm.data import load_data
from toyllm.model import load_causal_lm, load_tokenizer
from toyllm.stage import parse_recipe_args, save_stage, setup_logging


@dataclass
class SFTScriptArguments:
    dataset_name: str = field(default="data/sft.jsonl", metadata={"help": "JSONL file or Hub dataset id."})


ARGUMENT_TYPES = (SFTScriptArguments, SFTConfig, ModelConfig)


def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> None:
    setup_logging(training_args)

    # Model & tokenizer
    tokenizer = load_tokenizer(model_args)
    model = load_causal_lm(model_args.model_name_or_path, model_args)
    if training_args.max_length is None or training_args.max_length > model.config.max_position_embeddings:
        training_args.max_length = model.config.max_position_embeddings

    # Dataset
    dataset = load_data(script_args.dataset_name)
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
    save_stage(trainer, "sft", model_args.model_name_or_path, script_args.dataset_name)


if __name__ == "__main__":
    main(*parse_recipe_args(ARGUMENT_TYPES))
