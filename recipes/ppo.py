"""Stage 3b, RLHF with PPO: the SFT model answers prompts, the judge scores the answers, PPO moves the model toward
what the judge prefers while a KL penalty keeps it near the SFT reference.

    accelerate launch --config_file accelerate_config.yaml recipes/ppo.py --config recipes/toy/ppo.yaml

Four models share one vocabulary: the policy and its frozen reference (both from `model_name_or_path`, the SFT
checkpoint), the judge and the value model (both from `reward_model_path`). TRL's PPOTrainer cannot resume: an
interrupted PPO run starts again from the SFT checkpoint.
"""

import gc
import os
from dataclasses import dataclass, field

from transformers import AutoConfig
from trl import ModelConfig, get_peft_config
from trl.experimental.ppo import PPOConfig

from toyllm.config import check_ppo_setup
from toyllm.data import load_data
from toyllm.model import check_same_vocabulary, context_length, load_causal_lm, load_scorer, load_tokenizer
from toyllm.ppo import PPOTrainer  # TRL's PPOTrainer, fixed for LoRA under several processes
from toyllm.stage import RecipeArguments, begin_stage, exit_on_user_error, parse_recipe_args, save_stage, setup_logging


@dataclass
class PPOScriptArguments(RecipeArguments):
    dataset_name: str = field(default="data/prompts.jsonl", metadata={"help": "Prompt-only JSONL or Hub dataset id."})


ARGUMENT_TYPES = (PPOScriptArguments, PPOConfig, ModelConfig)


def main(script_args: PPOScriptArguments, training_args: PPOConfig, model_args: ModelConfig) -> None:
    setup_logging(training_args)
    fingerprint = begin_stage(script_args, training_args, model_args)

    # Tokenizer & prompts, checked before any model is loaded. Prompts are left-padded so every response starts at
    # the same index.
    tokenizer = load_tokenizer(model_args, padding_side="left")
    dataset = load_data(
        script_args.dataset_name,
        "prompts",
        tokenizer,
        context_length(AutoConfig.from_pretrained(model_args.model_name_or_path)),
        script_args.truncate_long_rows,
        reserve=training_args.response_length,  # prompt + answer must fit the context
    )
    check_ppo_setup(training_args, model_args.model_name_or_path, len(dataset), int(os.environ.get("WORLD_SIZE", 1)))

    def tokenize(row: dict) -> dict:
        prompt = row["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        return {"input_ids": tokenizer.apply_chat_template(prompt, add_generation_prompt=True)["input_ids"]}

    dataset = dataset.map(tokenize, remove_columns=dataset.column_names)  # PPO wants input_ids and nothing else

    # Models: policy and frozen reference from the SFT checkpoint, judge and value model from the reward checkpoint
    policy = load_causal_lm(model_args.model_name_or_path, model_args, tokenizer)
    ref_policy = None if model_args.use_peft else load_causal_lm(model_args.model_name_or_path, model_args, tokenizer)
    reward_model = load_scorer(training_args.reward_model_path, model_args, tokenizer)
    value_model = load_scorer(training_args.reward_model_path, model_args, tokenizer)
    check_same_vocabulary(tokenizer, policy, reward_model, value_model)

    # Training
    trainer = PPOTrainer(
        args=training_args,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=dataset,
        eval_dataset=dataset,
        peft_config=get_peft_config(model_args),
    )
    # TRL's PPO calls gc.collect() twice per rollout; with transformers and TRL imported that scan costs ~0.2 s, far
    # more than a toy rollout. Freezing the objects that exist now makes each collect scan only what training adds.
    gc.freeze()
    trainer.train()
    save_stage(trainer, "ppo", fingerprint, model_args.model_name_or_path, script_args.dataset_name)


if __name__ == "__main__":
    with exit_on_user_error():
        main(*parse_recipe_args(ARGUMENT_TYPES))
