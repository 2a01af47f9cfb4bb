"""Stage 3b, RLHF with PPO: the SFT model answers prompts, the judge scores the answers, PPO moves the model toward
what the judge prefers while a KL penalty keeps it near the SFT reference.

    accelerate launch --config_file accelerate_config.yaml recipes/ppo.py --config recipes/toy/ppo.yaml

Four models share one vocabulary: the policy and its frozen reference (both from `model_name_or_path`, the SFT
checkpoint), the judge and the value model (both from `reward_model_path`). TRL's PPOTrainer cannot resume: an
interrupted PPO run starts again from the SFT checkpoint.
"""

import logging
from dataclasses import dataclass, field

from trl import ModelConfig, get_peft_config

from toyllm.args import RecipeArguments, parse_recipe_args
from toyllm.checkpoint import begin_stage, save_stage
from toyllm.data import DataFolder, answerable, rl_prompts
from toyllm.errors import exit_on_user_error
from toyllm.generation import chat_prompts
from toyllm.launch import world_size
from toyllm.model import context_length, load_causal_lm, load_scorer, model_config
from toyllm.stages import STAGE
from toyllm.tokenizer import load_tokenizer

with exit_on_user_error():  # TRL 1.13 and later have no PPO: one line saying which TRL has it
    from toyllm.ppo import PPOConfig, PPOTrainer, check_ppo_setup, fill_rollout_batch  # TRL's PPO, its workarounds


@dataclass
class PPOScriptArguments(RecipeArguments):
    dataset_name: str = field(default="data/prompts.jsonl", metadata={"help": "Prompt-only JSONL or Hub dataset id."})
    flashcards_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Flashcards (sft.jsonl rows) whose questions the prompts lack are added to them."},
    )
    gold_data_dir: str | None = field(
        default=None,
        metadata={"help": "A data folder whose known preferred answers are checked on the prompts during training."},
    )


logger = logging.getLogger(__name__)

ARGUMENT_TYPES = (PPOScriptArguments, PPOConfig, ModelConfig)


def main(script_args: PPOScriptArguments, training_args: PPOConfig, model_args: ModelConfig) -> None:
    stage = STAGE["ppo"]
    fingerprint = begin_stage(script_args, training_args, model_args)
    if fingerprint is None:
        return

    # Tokenizer & prompts, checked before any model is loaded. Prompts are left-padded so every response starts at
    # the same index; prompt + answer must fit the context.
    tokenizer = load_tokenizer(model_args, padding_side="left")
    max_length = context_length(model_config(model_args.model_name_or_path))
    train_dataset, eval_dataset = rl_prompts(
        script_args, tokenizer, max_length, training_args.eval_strategy != "no", training_args.response_length
    )
    train_dataset = fill_rollout_batch(train_dataset, training_args)
    check_ppo_setup(training_args, model_args.model_name_or_path, world_size())

    prompt_rows = train_dataset.to_list()
    train_dataset, eval_dataset = (
        prompt_ids(d, tokenizer) if d is not None else None for d in (train_dataset, eval_dataset)
    )

    # Models: policy and frozen reference from the SFT checkpoint, judge and value model from the reward checkpoint
    policy = load_causal_lm(model_args.model_name_or_path, model_args, tokenizer)
    ref_policy = None if model_args.use_peft else load_causal_lm(model_args.model_name_or_path, model_args, tokenizer)
    reward_model = load_scorer(training_args.reward_model_path, model_args, tokenizer)
    value_model = load_scorer(training_args.reward_model_path, model_args, tokenizer)

    # Training
    trainer = PPOTrainer(
        args=training_args,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
    )
    if script_args.gold_data_dir:  # the labeller's verdict, logged beside the judge's score (gold/agreement)
        trainer.gold = gold_answers(script_args.gold_data_dir, prompt_rows, tokenizer)
    trainer.train()
    save_stage(trainer, stage.name, fingerprint, model_args.model_name_or_path, script_args.dataset_name)


def prompt_ids(dataset, tokenizer):
    """PPO wants input_ids and nothing else: each prompt in the chat template, ready for the answer."""

    def tokenize(row: dict) -> dict:
        prompt = row["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        return {"input_ids": tokenizer.apply_chat_template(prompt, add_generation_prompt=True)["input_ids"]}

    return dataset.map(tokenize, remove_columns=dataset.column_names)


def gold_answers(gold_data_dir: str, prompt_rows: list[dict], tokenizer) -> tuple | None:
    """The labeller's known answers to these prompts, as chat prompts and answers; None (and a warning) if none."""
    known = answerable(prompt_rows, DataFolder(gold_data_dir).known_answers())
    if not known:
        logger.warning(
            f"gold_data_dir: {gold_data_dir} knows no answer to these prompts; gold/agreement is not logged"
        )
        return None
    return chat_prompts(tokenizer, [q for q, _ in known]), [a for _, a in known]


if __name__ == "__main__":
    with exit_on_user_error():
        main(*parse_recipe_args(ARGUMENT_TYPES))
