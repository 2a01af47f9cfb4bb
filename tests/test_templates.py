"""Every chat template a real model ships, through SFT, reward, DPO and PPO on a tiny random checkpoint
(tests/templates.py builds them from the templates in the installed TRL, plus plain ChatML, `[INST]` and none).

SFT trains on the assistant's answers where the template marks them with `{% generation %}` or TRL 1.12 can patch it
to, and on the last assistant message (completion-only) otherwise; README lists which template gets which.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import ALICE, PINOCCHIO, REPO, read_jsonl
from templates import build_template_checkpoint, template_names
from test_real_models import run_stage
from toyllm.recipes import sft
from trl import ModelConfig, SFTConfig, SFTTrainer

from toyllm.args import parse_recipe_args
from toyllm.data import load_data
from toyllm.errors import UserError
from toyllm.model import load_causal_lm
from toyllm.tokenizer import fit_loss_to_template, load_tokenizer

TEMPLATES = template_names()
# Without generation markers, and no TRL patch: these train completion-only.
COMPLETION_ONLY = {"chatml", "smollm2", "inst", "llama3_1", "llama3_2", "gemma4"}
FILES = {"sft": "sft.jsonl", "reward": "preference.jsonl", "dpo": "preference.jsonl", "ppo": "prompts.jsonl"}
LONG = ["--max_length", "2048"]  # Cohere 2's template writes a ~1,200-token system preamble into every row


def stage(name: str, model: Path, tmp_path: Path, *extra: str) -> Path:
    data = ["--dataset_name", str(PINOCCHIO / FILES[name])]
    return run_stage(name, model, tmp_path / name, *data, *(LONG if name != "ppo" else []), *extra)


# The default run takes every template without markers, the no-template case and two patched families through the
# four stages; the other patched families are marked slow, and .ci/run runs them after `make test`.
DEFAULT_CHAIN = COMPLETION_ONLY | {"none", "llama3", "qwen2_5"}
CHAIN = [name if name in DEFAULT_CHAIN else pytest.param(name, marks=pytest.mark.slow) for name in TEMPLATES]


@pytest.mark.parametrize("template", CHAIN)
def test_template_trains_through_every_stage(template, tmp_path, caplog):
    base = build_template_checkpoint(template, tmp_path / "base", PINOCCHIO)
    with caplog.at_level(logging.WARNING, logger="toyllm.tokenizer"):
        sft_dir = stage("sft", base, tmp_path)
    assert ("TRL has no patch for it" in caplog.text) == (template in COMPLETION_ONLY)
    reward_dir = stage("reward", sft_dir, tmp_path)
    stage("dpo", sft_dir, tmp_path)
    ppo_dir = stage("ppo", sft_dir, tmp_path, "--reward_model_path", str(reward_dir))
    assert (ppo_dir / "model.safetensors").is_file()


def sft_rows(template: str, tmp_path: Path, as_prompt_completion: bool = False) -> tuple[list, object, SFTConfig]:
    """The SFT rows as the trainer tokenizes them (input_ids, labels), built the way the recipe builds them, from the
    flashcards' messages or (`as_prompt_completion`) the same flashcards as prompt/completion rows."""
    base = build_template_checkpoint(template, tmp_path / "base", PINOCCHIO)
    args = ["--config", str(REPO / "recipes/toy/sft.yaml"), "--model_name_or_path", str(base),
            "--output_dir", str(tmp_path / "sft"), *LONG]  # fmt: skip
    _, training_args, model_args = parse_recipe_args(sft.ARGUMENT_TYPES, args)
    tokenizer = load_tokenizer(model_args, eos_token=training_args.eos_token)
    flashcards = load_data(PINOCCHIO / FILES["sft"], "flashcards")
    if as_prompt_completion:
        flashcards = flashcards.map(
            lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]}, remove_columns="messages"
        )
    (dataset,) = fit_loss_to_template(tokenizer, training_args, template, flashcards)
    model = load_causal_lm(str(base), ModelConfig(model_name_or_path=str(base)), tokenizer)
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer)
    return trainer.train_dataset.to_list(), tokenizer, training_args


@pytest.mark.parametrize("template", TEMPLATES)
def test_sft_loss_covers_the_answer_and_its_end_of_turn(template, tmp_path):
    rows, tokenizer, training_args = sft_rows(template, tmp_path)
    assert training_args.assistant_only_loss == (template not in COMPLETION_ONLY)
    flashcards = read_jsonl(PINOCCHIO / FILES["sft"])
    assert len(rows) == len(flashcards)
    for row, card in zip(rows, flashcards):
        question, answer = card["messages"][-2]["content"], card["messages"][-1]["content"]
        trained = [i for i, label in zip(row["input_ids"], row["labels"]) if label != -100]
        first = next(n for n, label in enumerate(row["labels"]) if label != -100)
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        eos = tokenizer.eos_token_id
        # the answer, then its end of turn, all trained; nothing of the question is
        assert any(trained[k : k + len(answer_ids) + 1] == [*answer_ids, eos] for k in range(len(trained))), (
            template, tokenizer.decode(trained))  # fmt: skip
        assert question in tokenizer.decode(row["input_ids"][:first])
        assert question not in tokenizer.decode(trained)
        # masked tokens are one span: the answer turn, not scattered pieces of the prompt
        assert all(label != -100 for label in row["labels"][first : first + len(trained)])


@pytest.mark.parametrize("row_format", ["messages", "prompt-completion"])
def test_a_default_system_prompt_is_never_trained(row_format, tmp_path):
    """SmolLM2's template writes its own system prompt into every chat that has none: the loss covers the answer
    and its end of turn only, whichever format the flashcards come in."""
    rows, tokenizer, _ = sft_rows("smollm2", tmp_path, as_prompt_completion=row_format == "prompt-completion")
    for row, card in zip(rows, read_jsonl(PINOCCHIO / FILES["sft"])):
        trained = [i for i, label in zip(row["input_ids"], row["labels"]) if label != -100]
        assert "named SmolLM" in tokenizer.decode(row["input_ids"])
        assert tokenizer.decode(trained, skip_special_tokens=True).strip() == card["messages"][-1]["content"]
        assert trained[-2:] == [tokenizer.eos_token_id, *tokenizer("\n", add_special_tokens=False)["input_ids"]]


def test_a_template_that_refuses_a_row_is_one_line_naming_it(tmp_path):
    """Gemma's template raises "System role not supported"; Alice's flashcards have a system message."""
    base = build_template_checkpoint("gemma", tmp_path / "base", ALICE)
    with pytest.raises(UserError) as error:
        run_stage("sft", base, tmp_path / "sft", "--dataset_name", str(ALICE / "sft.jsonl"))
    assert "sft.jsonl:" in str(error.value) and "System role not supported" in str(error.value)
    assert not (tmp_path / "sft").exists()
