"""Every stage of one demo run: losses fall, checkpoints are Hub-ready and load through the Auto classes."""

from __future__ import annotations

import json
import re

import pytest
from conftest import ALICE, REPO, logged, read_jsonl
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

from toyllm.generation import greedy_answers
from toyllm.stages import POLICIES, STAGE, TRAINED
from toyllm.tables import format_comparison

LOSS_KEY = {"pretrain": "loss", "sft": "loss", "reward": "loss", "dpo": "loss"}
SCORE_KEY = {"ppo": "objective/scores", "rloo": "reward"}  # the judge's mean score of an RL step's answers


@pytest.mark.parametrize("stage", [s for s in TRAINED if not STAGE[s].judge])
def test_training_loss_falls(demo_run, stage):
    output_dir, _ = demo_run
    losses = list(logged(output_dir / stage, LOSS_KEY[stage]).values())
    assert len(losses) >= 3
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("stage", [s for s in TRAINED if STAGE[s].judge])
def test_rl_raises_the_judges_score_during_training(demo_run, stage):
    output_dir, _ = demo_run
    scores = list(logged(output_dir / stage, SCORE_KEY[stage]).values())
    quarter = len(scores) // 4
    assert sum(scores[-quarter:]) / quarter > sum(scores[:quarter]) / quarter


@pytest.mark.parametrize("stage", POLICIES)
def test_policy_checkpoints_are_hub_ready(demo_run, stage):
    output_dir, _ = demo_run
    path = output_dir / stage
    files = ("model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "generation_config.json")
    for name in files:
        assert (path / name).is_file(), name
    assert not list(path.glob("pytorch_model*.bin"))
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    generator = pipeline("text-generation", model=str(path))
    out = generator([{"role": "user", "content": "who did alice follow"}], max_new_tokens=8)
    assert out[0]["generated_text"][-1]["role"] == "assistant"


@pytest.mark.parametrize("stage", TRAINED)
def test_trained_stages_have_a_model_card(demo_run, stage):
    output_dir, _ = demo_run
    card = ModelCard.load(output_dir / stage / "README.md")
    assert stage in card.data.tags and "toyllm" in card.data.tags
    assert card.data.license == "apache-2.0"


def test_reward_checkpoint_loads_as_a_one_label_classifier(demo_run):
    output_dir, _ = demo_run
    model = AutoModelForSequenceClassification.from_pretrained(output_dir / "reward")
    assert model.config.num_labels == 1
    assert model.config.pad_token_id == AutoTokenizer.from_pretrained(output_dir / "reward").pad_token_id


def test_sft_model_ends_its_answers_with_eos(demo_run):
    """PPO cuts responses at EOS; an SFT model that never emits it would be penalised on every answer."""
    output_dir, _ = demo_run
    model = AutoModelForCausalLM.from_pretrained(output_dir / "sft")
    tokenizer = AutoTokenizer.from_pretrained(output_dir / "sft")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "who did alice follow"}], add_generation_prompt=True, return_tensors="pt"
    )
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert out[0, -1].item() == tokenizer.eos_token_id


def test_metrics_json_follows_the_contract(demo_run):
    output_dir, metrics = demo_run
    on_disk = json.loads((output_dir / "report" / "metrics.json").read_text())
    assert on_disk == metrics
    splits = {row["split"] for row in read_jsonl(ALICE / "eval.jsonl")}
    assert set(metrics["stages"]) == set(POLICIES)
    for name, stage in metrics["stages"].items():
        assert isinstance(stage["perplexity"], float)
        assert stage["asked"] == STAGE[name].asked
        for split in splits:
            assert set(stage[split]) == {
                "exact_match",
                "mean_reward",
                "reference_logprob",
                "sampled_exact",
                "well_formed",
                "word_mixtures",
            }
            assert stage[split]["reference_logprob"] <= 0 and 0 <= stage[split]["well_formed"] <= 1
            assert 0 <= stage[split]["word_mixtures"] <= 1
    assert set(metrics["judge"]["pairwise_accuracy"]) == splits - {"unseen"}  # unseen questions have no pairs
    assert len(metrics["responses"]) == len(read_jsonl(ALICE / "eval.jsonl"))
    assert all(set(POLICIES) <= set(row) for row in metrics["responses"])
    assert set(metrics["seconds"]) >= set(POLICIES) | {"reward"}


def test_pretrained_model_is_a_completer(demo_run):
    """Given the start of a corpus sentence it finishes a corpus sentence; asked a question, it does not answer."""
    output_dir, metrics = demo_run
    model = AutoModelForCausalLM.from_pretrained(output_dir / "pretrain")
    tokenizer = AutoTokenizer.from_pretrained(output_dir / "pretrain")
    corpus = {row["text"] for row in read_jsonl(ALICE / "pretrain.jsonl")}
    completed = 0
    for sentence in sorted(corpus):
        words = sentence.split()
        prefix = tokenizer(tokenizer.bos_token + " ".join(words[:2]), add_special_tokens=False, return_tensors="pt")
        out = model.generate(**prefix, max_new_tokens=10, do_sample=False)
        completed += tokenizer.decode(out[0], skip_special_tokens=True).strip() in corpus
    assert completed / len(corpus) >= 0.8
    assert metrics["stages"]["pretrain"]["trained"]["exact_match"] < 0.5


def test_base_vs_instruct_through_the_text_generation_pipeline(demo_run):
    """As users meet checkpoints on the Hub: the pretrained model continues plain text with its words spaced, the
    SFT model answers a chat question; the report's base-vs-instruct table holds the same continuation."""
    output_dir, metrics = demo_run
    base = pipeline("text-generation", model=str(output_dir / "pretrain"))
    continued = base("alice followed the", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert continued == "alice followed the white rabbit"  # the corpus sentence, not "alice followed thewhite ..."
    row = next(r for r in metrics["continuations"] if r["text"] == "alice followed the")
    assert row["pretrain"] == continued
    chat = pipeline("text-generation", model=str(output_dir / "sft"))
    turns = chat([{"role": "user", "content": "who did alice follow"}], max_new_tokens=12, do_sample=False)
    assert turns[0]["generated_text"][-1]["content"].strip() == "alice followed the white rabbit"
    asked = base([{"role": "user", "content": "who did alice follow"}], max_new_tokens=12, do_sample=False)
    assert asked[0]["generated_text"][-1]["content"].strip() != "alice followed the white rabbit"


def test_batched_greedy_answers_equal_one_at_a_time(demo_run):
    output_dir, _ = demo_run
    model = AutoModelForCausalLM.from_pretrained(output_dir / "sft")
    tokenizer = AutoTokenizer.from_pretrained(output_dir / "sft")
    questions = [row["prompt"] for row in read_jsonl(ALICE / "eval.jsonl")]
    assert greedy_answers(model, tokenizer, questions) == [greedy_answers(model, tokenizer, [q])[0] for q in questions]


def test_diagnostics_tell_memorised_answers_from_unreachable_ones(demo_run):
    """SFT's trained answers are near-certain and sampled back; its held-out references are far less likely; random
    writes no sentence of the data."""
    _, metrics = demo_run
    sft, random = metrics["stages"]["sft"], metrics["stages"]["random"]
    assert sft["trained"]["reference_logprob"] > -1 and sft["trained"]["sampled_exact"] >= 0.5
    assert sft["held_out"]["reference_logprob"] < sft["trained"]["reference_logprob"] - 3
    assert sft["trained"]["well_formed"] == 1.0 and random["trained"]["well_formed"] == 0.0


def test_readmes_tables_are_what_the_seed_0_demo_prints(demo_run):
    """README's evolution table (a selection of its rows) and its metrics table are what `make demo` prints: the
    demo on Alice at seed 0, run here once for every test. The headline cannot drift from the code."""
    _, metrics = demo_run
    printed = format_comparison(metrics["stages"], metrics["responses"]).splitlines()
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## What the demo shows") : readme.index("The random model babbles")]
    evolution, measured = (block.splitlines() for block in re.findall(r"(?:^\|.*\n)+", section, flags=re.M))
    assert evolution[:2] == printed[:2]  # the header: a column per stage
    assert len(evolution) > 4 and [row for row in evolution[2:] if row not in printed] == []
    first = printed.index(measured[0])
    assert measured == printed[first : first + len(measured)]
