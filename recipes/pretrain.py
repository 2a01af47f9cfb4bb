"""Stage 1, pre-training: next-word prediction turns the random baby model into a completer.

    accelerate launch --config_file accelerate_config.yaml recipes/pretrain.py --config recipes/toy/pretrain.yaml

With `from_scratch: true` the recipe first trains the word-level vocabulary on `data_dir` and saves a random GPT-2
built from `toy_config/` to `model_name_or_path` (the `random` stage); otherwise it continues pre-training any causal
LM checkpoint.
"""

from dataclasses import dataclass, field

from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments
from trl import ModelConfig

from toyllm.args import RecipeArguments, parse_recipe_args
from toyllm.checkpoint import begin_stage, save_stage
from toyllm.data import load_splits, pack_text
from toyllm.errors import exit_on_user_error
from toyllm.model import context_length, load_causal_lm
from toyllm.resume import checkpoint_marker
from toyllm.stages import STAGE
from toyllm.tokenizer import load_tokenizer
from toyllm.toy import build_random_stage


@dataclass
class PretrainScriptArguments(RecipeArguments):
    dataset_name: str = field(default="data/pretrain.jsonl", metadata={"help": "JSONL file or Hub dataset id."})
    dataset_text_field: str = field(default="text", metadata={"help": "Column holding the raw text."})
    from_scratch: bool = field(default=False, metadata={"help": "Build tokenizer + random model first."})
    toy_config_dir: str = field(default="toy_config", metadata={"help": "Architecture and tokenizer spec."})
    data_dir: str = field(default="data", metadata={"help": "Folder whose text the vocabulary is trained on."})
    block_size: int | None = field(
        default=None, metadata={"help": "Pack the sentences into rows of this many tokens (None: one per row)."}
    )
    packed_copies: int = field(default=1, metadata={"help": "Shuffled copies of the text packed (with block_size)."})


ARGUMENT_TYPES = (PretrainScriptArguments, TrainingArguments, ModelConfig)


def main(script_args: PretrainScriptArguments, training_args: TrainingArguments, model_args: ModelConfig) -> None:
    stage = STAGE["pretrain"]
    if script_args.from_scratch:  # the random stage first: its fingerprint is part of this stage's
        build_random_stage(script_args.data_dir, script_args.toy_config_dir, model_args.model_name_or_path,
                           training_args.seed, script_args.overwrite)  # fmt: skip
    fingerprint = begin_stage(script_args, training_args, model_args)
    if fingerprint is None:
        return

    # Model & tokenizer
    tokenizer = load_tokenizer(model_args)
    model = load_causal_lm(model_args.model_name_or_path, model_args, tokenizer)

    # Dataset: every sentence becomes [BOS] words [EOS], so the completer also learns where a sentence ends (a
    # tokenizer without a BOS token, like Qwen's, starts with the words).
    max_length = context_length(model.config)
    train_dataset, eval_dataset = load_splits(
        script_args, stage.data, tokenizer, max_length, training_args.eval_strategy != "no"
    )

    def tokenize(row: dict) -> dict:
        text = (tokenizer.bos_token or "") + row[script_args.dataset_text_field] + tokenizer.eos_token
        return tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)

    train_dataset = train_dataset.map(tokenize, remove_columns=train_dataset.column_names)
    if script_args.block_size:
        block_size = min(script_args.block_size, max_length)
        train_dataset = pack_text(train_dataset, block_size, script_args.packed_copies, training_args.seed)
    if eval_dataset is not None:
        eval_dataset = eval_dataset.map(tokenize, remove_columns=eval_dataset.column_names)

    # Training
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
        callbacks=[checkpoint_marker(fingerprint)],
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    save_stage(trainer, stage.name, fingerprint, model_args.model_name_or_path, script_args.dataset_name)


if __name__ == "__main__":
    with exit_on_user_error():
        main(*parse_recipe_args(ARGUMENT_TYPES))
