"""Every recipe, unchanged, on tiny random checkpoints of real architectures (Llama, Qwen2, GPT-2), full and LoRA.

The toy YAMLs are used as they ship; only the paths and the length of training are overridden. The checkpoints are
built locally (tests/realmodels.py): byte-level BPE tokenizers with a ChatML template, no Hub.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
import trl
from conftest import ALICE, PPO_INSTALLED, REPO, logged, prompt_prefix_mismatches
from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification, PeftConfig
from realmodels import build_tiny_checkpoint, digest
from safetensors.torch import load_file
from stage_chain import LORA, RECIPES
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    MistralConfig,
    PreTrainedTokenizerFast,
    set_seed,
)

from toyllm.args import parse_recipe_args
from toyllm.cli import main as toyllm_cli
from toyllm.data import load_data
from toyllm.demo import real_model_chain, recipe_modules
from toyllm.errors import UserError
from toyllm.evaluate import RETENTION, Answered, contains, document_mark, is_word_mixture, right_answers, split_metrics
from toyllm.feedback import feedback_paths
from toyllm.generation import (
    FULL_DISTRIBUTION,
    chat_prompts,
    generate_answers,
    pad,
    prompt_cache,
    sampled_answers,
)
from toyllm.model import load_weights
from toyllm.recipe_folder import SETTINGS_FILE, read_recipe_folder
from toyllm.stages import REAL_MODEL_TABLE

RETENTION_FILE = REPO / "recipes" / "smollm2-135m" / "retention.jsonl"
TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
SHORT = {  # seconds, not minutes: a couple of optimizer steps, one PPO rollout
    "pretrain": ["--from_scratch", "false", "--max_steps", "2"],
    "sft": ["--max_steps", "2"],
    "reward": ["--max_steps", "2"],
    "ppo": ["--total_episodes", "8", "--num_ppo_epochs", "1"],
    "dpo": ["--max_steps", "2"],
}


def run_stage(stage: str, model: Path, output_dir: Path, *extra: str) -> Path:
    args = [
        "--config", str(REPO / "recipes" / "toy" / f"{stage}.yaml"),
        "--model_name_or_path", str(model), "--output_dir", str(output_dir), *SHORT[stage], *extra,
    ]  # fmt: skip
    RECIPES[stage].main(*parse_recipe_args(RECIPES[stage].ARGUMENT_TYPES, args))
    return output_dir


class Checkpoints:
    """Stages chained through their folders, each trained once per session and shared by the tests."""

    def __init__(self, root: Path):
        self.root, self.done = root, {}

    def get(self, arch: str, stage: str) -> Path:
        key = (arch, stage)
        if key not in self.done:
            self.done[key] = self._make(arch, stage, self.root / arch / stage)
        return self.done[key]

    def _make(self, arch: str, stage: str, out: Path) -> Path:
        if stage in ("base", "bare"):
            return build_tiny_checkpoint(arch, out, ALICE, bare=stage == "bare")
        if stage == "sft":
            return run_stage("sft", self.get(arch, "base"), out)
        if stage == "reward":
            return run_stage("reward", self.get(arch, "sft"), out)
        if stage == "sft-lora":
            return run_stage("sft", self.get(arch, "base"), out, *LORA)
        if stage == "sft-merged":
            toyllm_cli(["merge", "--adapter", str(self.get(arch, "sft-lora")), "--output", str(out)])
            return out
        if stage == "reward-lora":
            return run_stage("reward", self.get(arch, "sft-merged"), out, *LORA)
        if stage == "reward-merged":
            toyllm_cli(["merge", "--adapter", str(self.get(arch, "reward-lora")), "--output", str(out)])
            return out
        raise KeyError(stage)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> Checkpoints:
    return Checkpoints(tmp_path_factory.mktemp("real"))


def assert_chat_tokenizer(folder: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template and "generation" in tokenizer.chat_template
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id


# Full fine-tuning


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_pretrain_continues_a_real_checkpoint(checkpoints, arch, tmp_path):
    out = run_stage("pretrain", checkpoints.get(arch, "base"), tmp_path / "pretrain")
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == arch
    assert_chat_tokenizer(out)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_sft_and_dpo_full(checkpoints, arch, tmp_path):
    sft_dir = checkpoints.get(arch, "sft")
    assert AutoModelForCausalLM.from_pretrained(sft_dir).config.model_type == arch
    assert_chat_tokenizer(sft_dir)
    assert prompt_prefix_mismatches(AutoTokenizer.from_pretrained(sft_dir), ALICE) == []  # BPE keeps the prefix
    out = run_stage("dpo", sft_dir, tmp_path / "dpo")
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == arch
    assert_chat_tokenizer(out)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_reward_and_ppo_full(checkpoints, arch, tmp_path):
    judge = checkpoints.get(arch, "reward")
    assert AutoModelForSequenceClassification.from_pretrained(judge).config.num_labels == 1
    out = run_stage("ppo", checkpoints.get(arch, "sft"), tmp_path / "ppo", "--reward_model_path", str(judge))
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == arch
    assert_chat_tokenizer(out)


def test_base_model_without_chat_template_or_pad_gets_them(checkpoints, tmp_path, caplog):
    """A base GPT-2 tokenizer (no template, no pad): ChatML and <|pad|> are added, the embeddings resized."""
    bare = checkpoints.get("gpt2", "bare")
    rows = AutoModelForCausalLM.from_pretrained(bare).get_input_embeddings().weight.shape[0]
    with caplog.at_level(logging.WARNING):
        out = run_stage("sft", bare, tmp_path / "sft")
    assert "no chat template" in caplog.text and "added <|pad|>" in caplog.text
    assert_chat_tokenizer(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|pad|>"
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == rows + 3
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id


# LoRA: every TRL stage on one architecture


def test_lora_sft_trains_the_adapter_only(checkpoints):
    base = checkpoints.get("qwen2", "base")
    before = digest(base)
    adapter = checkpoints.get("qwen2", "sft-lora")
    assert digest(base) == before  # the base checkpoint on disk is untouched
    assert (adapter / "adapter_model.safetensors").is_file() and not (adapter / "model.safetensors").exists()
    assert_chat_tokenizer(adapter)

    model = AutoPeftModelForCausalLM.from_pretrained(adapter)
    original = load_file(base / "model.safetensors")
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b.values())  # LoRA B starts at zero: it moved
    for name, param in model.get_base_model().named_parameters():
        if "lora_" in name:
            continue
        key = name.replace(".base_layer", "")
        assert torch.equal(param, original[key]), name  # every base weight is what it was


def test_merge_folds_the_adapter_into_a_full_checkpoint(checkpoints):
    adapter, merged = checkpoints.get("qwen2", "sft-lora"), checkpoints.get("qwen2", "sft-merged")
    base = AutoModelForCausalLM.from_pretrained(checkpoints.get("qwen2", "base"))
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert_chat_tokenizer(merged)
    assert not (merged / "adapter_config.json").exists()
    ids = AutoTokenizer.from_pretrained(merged).apply_chat_template(
        [{"role": "user", "content": "who did alice follow"}], add_generation_prompt=True, return_tensors="pt"
    )["input_ids"]
    with torch.no_grad():
        expected = AutoPeftModelForCausalLM.from_pretrained(adapter)(ids).logits
        assert torch.allclose(model(ids).logits, expected, atol=1e-5)
        assert not torch.allclose(base(ids).logits, expected, atol=1e-5)


def test_lora_reward_keeps_its_score_head(checkpoints):
    adapter = checkpoints.get("qwen2", "reward-lora")
    model = AutoPeftModelForSequenceClassification.from_pretrained(adapter, num_labels=1)
    assert any("score" in n and "modules_to_save" in n for n, _ in model.named_parameters())
    merged = AutoModelForSequenceClassification.from_pretrained(checkpoints.get("qwen2", "reward-merged"))
    assert merged.config.num_labels == 1


@pytest.mark.parametrize("stage", ["ppo", "dpo"])
def test_lora_ppo_and_dpo(checkpoints, stage, tmp_path):
    extra = ["--reward_model_path", str(checkpoints.get("qwen2", "reward-merged"))] if stage == "ppo" else []
    sft_dir = checkpoints.get("qwen2", "sft-merged")
    assert prompt_prefix_mismatches(AutoTokenizer.from_pretrained(sft_dir), ALICE) == []
    out = run_stage(stage, sft_dir, tmp_path / stage, *LORA, *extra)
    assert (out / "adapter_model.safetensors").is_file()
    assert AutoPeftModelForCausalLM.from_pretrained(out).peft_config["default"].r == 8
    assert_chat_tokenizer(out)


def test_an_adapter_folder_is_a_checkpoint_like_any_other(checkpoints, tmp_path, capsys):
    """A LoRA adapter loads as the model it stands for, as `pipeline()` does: generate answers with it, the next
    stage starts from it, and that stage's own adapter names it as its base, so it loads in turn."""
    adapter, merged = checkpoints.get("qwen2", "sft-lora"), checkpoints.get("qwen2", "sft-merged")
    ids = AutoTokenizer.from_pretrained(adapter).apply_chat_template(
        [{"role": "user", "content": "who did alice follow"}], add_generation_prompt=True, return_tensors="pt"
    )["input_ids"]
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(merged)(ids).logits
        assert torch.allclose(load_weights(AutoModelForCausalLM, adapter)(ids).logits, expected, atol=1e-5)
    out = run_stage("dpo", adapter, tmp_path / "dpo", *LORA)
    assert PeftConfig.from_pretrained(out).base_model_name_or_path == str(adapter.resolve())
    assert (out / "adapter_model.safetensors").stat().st_size < (merged / "model.safetensors").stat().st_size
    with torch.no_grad():
        dpo = load_weights(AutoModelForCausalLM, out)(ids).logits
    assert dpo.shape == expected.shape and not torch.allclose(dpo, expected, atol=1e-5)
    assert toyllm_cli(["generate", "--model", str(out), "who did alice follow", "--max-new-tokens", "3"]) in (0, None)
    assert capsys.readouterr().out.strip()


# The shipped real-model recipes


QWEN_RECIPES = sorted(p for p in (REPO / "recipes" / "qwen2.5-0.5b").glob("*.yaml") if p.name != SETTINGS_FILE)


@pytest.mark.parametrize("path", QWEN_RECIPES, ids=lambda p: p.name)
def test_real_model_yaml_parses(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the local folders a YAML chains from exist here, empty
    stage = path.stem.removesuffix("_lora")
    text = path.read_text()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("model_name_or_path", "reward_model_path") and value.split("#")[0].strip().startswith("outputs/"):
            (tmp_path / value.split("#")[0].strip()).mkdir(parents=True)
    script_args, training_args, model_args = parse_recipe_args(RECIPES[stage].ARGUMENT_TYPES, ["--config", str(path)])
    assert model_args.use_peft == path.stem.endswith("_lora")
    assert training_args.bf16 == (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert "Qwen" in model_args.model_name_or_path or model_args.model_name_or_path.startswith("outputs/qwen2.5-0.5b")


def test_retention_counts_an_answer_holding_the_reference_or_one_of_its_alternatives():
    rows = {row["prompt"]: row for row in load_data(RETENTION_FILE, "eval").to_list()}
    asked = [  # (question, answer, right)
        ("What is 2 + 2?", "Two and two make four.", True),  # the reference's alternative
        ("What is 2 + 2?", "The answer is 4.", True),
        ("What is 2 + 2?", "It is fourteen.", False),  # "four" inside another word
        ("How many days are in a week?", "A week is approximately 31 days.", False),
        ("What is the capital of France?", "The capital of France is Paris.", True),  # a row without alternatives
        ("What is the opposite of hot?", "The opposite of hot is cool.", False),
    ]
    picked = [rows[question] for question, _, _ in asked]
    answered = Answered([answer for _, answer, _ in asked], None, [0.0] * len(asked), [[] for _ in asked])
    metrics = split_metrics(picked, answered, None)
    assert metrics == {RETENTION: {"contains": 3 / 6}}
    for row, (_, answer, right) in zip(picked, asked):
        assert contains(answer, right_answers(row)) == right


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_padding_free_sft_trains_the_loss_of_padded_batches(checkpoints, arch, tmp_path):
    """The SmolLM2 SFT YAML lays a batch's rows end to end (padding_free) under SDPA: each row must attend to itself
    only, so every step's loss is the one the same batch gives padded."""
    losses = {}
    for padding_free in ("true", "false"):
        args = [
            "--config", str(REPO / "recipes" / "smollm2-135m" / "sft.yaml"),
            "--model_name_or_path", str(checkpoints.get(arch, "base")), "--dataset_name", str(ALICE / "sft.jsonl"),
            "--output_dir", str(tmp_path / padding_free), "--padding_free", padding_free,
            "--max_steps", "3", "--logging_steps", "1",
        ]  # fmt: skip
        RECIPES["sft"].main(*parse_recipe_args(RECIPES["sft"].ARGUMENT_TYPES, args))
        losses[padding_free] = logged(tmp_path / padding_free)
    assert len(losses["true"]) == 3
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-4)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_samples_of_a_prompt_share_its_cache_and_draw_what_repeated_prompts_draw(checkpoints, arch):
    """sampled_answers reads each prompt once and repeats its key/value cache for its samples. The cache is the one
    `generate` builds for the prompts repeated, position ids included (prompts of different lengths are padded on
    the left; GPT-2's positions are absolute), and the seeded answers are those of the prompts repeated."""
    folder = checkpoints.get(arch, "base")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    questions = ["who did alice follow", "what did the queen of hearts shout at the gardeners"]
    prompts = chat_prompts(tokenizer, questions)
    repeated_prompts = [p for p in prompts for _ in range(3)]
    input_ids, attention_mask = pad(tokenizer, prompts, "left")
    assert not attention_mask.all()  # one prompt is padded
    shared_cache = prompt_cache(model, tokenizer, input_ids, attention_mask, 3)
    assert shared_cache is not None
    input_ids, attention_mask = pad(tokenizer, repeated_prompts, "left")
    repeated_cache = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=1,
        return_dict_in_generate=True,
        pad_token_id=tokenizer.pad_token_id,
    ).cache
    repeated_cache.crop(-1)
    for shared, repeated in zip(shared_cache.layers, repeated_cache.layers, strict=True):
        torch.testing.assert_close(shared.keys, repeated.keys)
        torch.testing.assert_close(shared.values, repeated.values)
    set_seed(0)
    repeated = generate_answers(model, tokenizer, repeated_prompts, 12, **FULL_DISTRIBUTION)
    set_seed(0)
    shared = sampled_answers(model, tokenizer, questions, 3, 12)
    assert shared == repeated
    assert len(set(shared)) > 2  # drawn, not one greedy answer


def test_samples_of_a_sliding_window_model_read_their_prompts_as_repeated_prompts(checkpoints):
    """A sliding window full after the prompt cannot give back its last token: no shared cache, and the samples are
    still those of the prompts repeated (a Mistral with a 4-token window)."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoints.get("llama", "base"))
    config = MistralConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=64, vocab_size=len(tokenizer), sliding_window=4,
                           pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    set_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    questions = ["who did alice follow", "what did the queen of hearts shout at the gardeners"]
    input_ids, attention_mask = pad(tokenizer, chat_prompts(tokenizer, questions), "left")
    assert prompt_cache(model, tokenizer, input_ids, attention_mask, 3) is None
    set_seed(0)
    repeated = generate_answers(model, tokenizer, [p for p in chat_prompts(tokenizer, questions) for _ in range(3)],
                                12, **FULL_DISTRIBUTION)  # fmt: skip
    set_seed(0)
    assert sampled_answers(model, tokenizer, questions, 3, 12) == repeated


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")  # fmt: skip


@pytest.mark.parametrize(
    ("template", "bos", "eos", "marks"),
    [
        (CHATML, "<|im_start|>", "<|im_end|>", ("", "")),  # SmolLM2: both open or close every turn
        ((TRL_TEMPLATES / "llama3.jinja").read_text(), "<|begin_of_text|>", "<|eot_id|>", ("<|begin_of_text|>", "")),
        ((REPO / "toy_config" / "chat_template.jinja").read_text(), "[BOS]", "[EOS]", ("[BOS]", "[EOS]")),
        (None, "[BOS]", "[EOS]", ("[BOS]", "[EOS]")),  # no template: the tokens are a document's
    ],
    ids=["chatml", "llama3", "toy", "none"],
)
def test_perplexity_reads_plain_text_as_a_document_never_as_a_chat_turn(template, bos, eos, marks):
    """A chat model's BOS/EOS that open and close each turn are not put around plain text (SmolLM2's perplexity of
    story sentences otherwise reads in the thousands); a document's start, such as Llama 3's, is."""
    words = Tokenizer(WordLevel({"[UNK]": 0, "a": 1, "b": 2, bos: 3, eos: 4}, unk_token="[UNK]"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", bos_token=bos, eos_token=eos)
    tokenizer.chat_template = template
    assert (document_mark(tokenizer, bos), document_mark(tokenizer, eos)) == marks


def test_a_word_mixture_repeats_a_long_word_more_often_than_the_reference():
    """The hacked judge's answers on a real model, told from a long answer that merely differs from the reference."""
    reference = "Wendy was a girl who told stories."
    assert is_word_mixture("wendy was a wendy", reference)
    assert is_word_mixture("Wendy was captured by wendy wendy.", reference)
    assert not is_word_mixture("Wendy was a brave girl who loved her brothers.", reference)
    assert not is_word_mixture("a a a was was", reference)  # short words repeat in any sentence
    assert not is_word_mixture("the rabbit saw the rabbit", "the rabbit saw the other rabbit")  # as the reference


# `toyllm demo --model M --recipes DIR`: any model's recipe folder


def shrunk_recipe_folder(folder: Path) -> Path:
    """A copy of recipes/smollm2-135m/ whose numbers were changed: a few steps per stage, and other demo settings."""
    shutil.copytree(REPO / "recipes" / "smollm2-135m", folder)
    for name, lines in {
        "sft": ["max_steps: 3", "stop_when_learned_every: 0", "replay_max_new_tokens: 8"],
        "reward": ["max_steps: 2"],
        "ppo": ["total_episodes: 8", "num_ppo_epochs: 1"],
        "rloo": ["max_steps: 1"],
        "dpo": ["max_steps: 2"],
    }.items():
        path = folder / f"{name}.yaml"
        keys = {line.split(":")[0] for line in lines}
        kept = [line for line in path.read_text().splitlines() if line.split(":")[0] not in keys]
        path.write_text("\n".join(kept + lines) + "\n")
    settings = folder / "demo.yaml"
    text = (
        settings.read_text()
        .replace("max_new_tokens: 32", "max_new_tokens: 6")
        .replace("label_samples: 8", "label_samples: 3")
    )
    settings.write_text(
        text.replace("judge_pairs: 96", "judge_pairs: 7").replace("eval_samples: 4", "eval_samples: 3")
    )
    return folder


def test_a_demo_of_a_real_model_reads_its_recipe_folders_yamls_and_settings(checkpoints, tmp_path, capfd):
    recipes = shrunk_recipe_folder(tmp_path / "recipes")
    model, output = checkpoints.get("llama", "base"), tmp_path / "run"
    toyllm_cli(["demo", "--model", str(model), "--recipes", str(recipes), "--output-dir", str(output)])
    printed = capfd.readouterr().out
    assert f"recipes: {recipes} (--recipes)" in printed
    assert re.search(r"sft learned \d+ of 13 flashcards and kept \d+ of the \d+ general answers", printed)
    metrics = json.loads((output / "report" / "metrics.json").read_text())
    assert metrics["recipes"] == str(recipes)
    assert json.loads((output / "sft" / "trainer_state.json").read_text())["global_step"] == 3
    assert json.loads((output / "dpo" / "trainer_state.json").read_text())["global_step"] == 2
    labelled = json.loads(feedback_paths(output, 1)[0].with_suffix(".json").read_text())
    assert (labelled["samples"], labelled["max_new_tokens"]) == (3, 6)  # the labeller's samples, the answers' length
    assert any(row["split"] == "retention" for row in metrics["responses"])
    assert list(metrics["stages"]) == ["instruct", "sft", *(["ppo"] if PPO_INSTALLED else []), "rloo", "dpo"]


def test_a_recipe_folder_is_checked_before_anything_is_trained(tmp_path):
    """Every YAML of the folder against its recipe's arguments, and its demo.yaml, each a one-line error."""
    real_model_chain("m", REPO / "recipes" / "qwen2.5-0.5b")  # a GPU-sized folder: its settings parse
    read_recipe_folder(REPO / "recipes" / "qwen2.5-0.5b").check(recipe_modules(REAL_MODEL_TABLE))
    recipes = shrunk_recipe_folder(tmp_path / "recipes")
    (recipes / "dpo.yaml").write_text((recipes / "dpo.yaml").read_text() + "betta: 0.2\n")
    with pytest.raises(UserError, match=r"dpo.yaml:\d+: unknown key 'betta' \(did you mean 'beta'\?\)"):
        read_recipe_folder(recipes).check(recipe_modules(REAL_MODEL_TABLE))
    (recipes / "demo.yaml").write_text(
        (recipes / "demo.yaml").read_text().replace("eval_samples: 3", "eval_samples: lots")
    )
    with pytest.raises(UserError, match="demo.yaml:.*eval_samples: 'lots' is not a valid"):
        real_model_chain("m", recipes)
    (recipes / "demo.yaml").write_text("eval_samples: 3\n")
    with pytest.raises(UserError, match="demo.yaml: missing label_samples, feedback_rounds"):
        real_model_chain("m", recipes)
