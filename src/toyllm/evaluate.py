"""Measure each stage the same way, per split of eval.jsonl: perplexity, exact answers and the judge's score, and the
diagnostics of RLHF: how reachable the reference answer is, and whether an answer is a sentence of the data at all."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, pipeline, set_seed

from toyllm.data import DataFolder, load_data
from toyllm.data_checks import as_messages, last_content
from toyllm.defaults import EVAL_SAMPLES, MAX_NEW_TOKENS
from toyllm.generation import (
    chat_prompts,
    generate_answers,
    greedy_answers,
    normalise,
    one_line,
    pad,
    sampled_answers,
    text_prompts,
)
from toyllm.learned import Asked
from toyllm.model import load_weights
from toyllm.model_source import checkpoint_tokenizer


@torch.no_grad()
def token_logprobs(model, tokenizer, rows: list[list[int]]) -> list[torch.Tensor]:
    """log P(token | the tokens before it) for every token of each row but the first, the rows in one batch (right
    padding, so every row keeps the positions it has alone)."""
    input_ids, attention_mask = pad(tokenizer, rows, "right")
    input_ids, attention_mask = input_ids.to(model.device), attention_mask.to(model.device)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    logprobs = logits.log_softmax(-1).gather(-1, input_ids[:, 1:, None])[..., 0]
    return [logprobs[n, : len(row) - 1] for n, row in enumerate(rows)]


def reference_logprobs(model, tokenizer, questions: list[str], references: list[str]) -> list[float]:
    """log P(reference and its end of turn | chat prompt): how reachable the right answer is by sampling (0: it is
    certain; -11 is one sample in 60,000)."""
    prompts, rows = chat_prompts(tokenizer, questions), []
    for question, prompt, reference in zip(questions, prompts, references):
        chat = [{"role": "user", "content": question}, {"role": "assistant", "content": reference}]
        full = tokenizer.apply_chat_template(chat)["input_ids"]
        end = full.index(tokenizer.eos_token_id, len(prompt)) + 1 if tokenizer.eos_token_id in full else len(full)
        rows.append(full[:end])
    logprobs = token_logprobs(model, tokenizer, rows)
    return [values[len(prompt) - 1 :].sum().item() for values, prompt in zip(logprobs, prompts)]


def perplexity(model, tokenizer, texts: list[str]) -> float:
    """Perplexity of plain text as the model reads a document, averaged over every predicted token: the toy's
    `[BOS] text [EOS]`; a chat model's text with the marks it puts around a document, never a chat turn's."""
    start, end = (document_mark(tokenizer, token) for token in (tokenizer.bos_token, tokenizer.eos_token))
    rows = [tokenizer(start + text + end, add_special_tokens=False)["input_ids"] for text in texts]
    logprobs = torch.cat(token_logprobs(model, tokenizer, rows))
    return math.exp(-logprobs.mean().item())


def document_mark(tokenizer, token: str | None) -> str:
    """`token` (the BOS or EOS) where it marks a document's start or end, "" where it marks every chat turn or there
    is none. SmolLM2's BOS is `<|im_start|>` and its EOS `<|im_end|>`, which open and close each turn: put around
    plain text they make a chat turn of it (its perplexity then reads in the thousands). The toy's `[BOS]` and
    Llama 3's `<|begin_of_text|>` appear once in a chat, as a document's start."""
    if not token or not tokenizer.chat_template:
        return token or ""
    chat = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    try:
        rendered = tokenizer.apply_chat_template(chat, tokenize=False)
    except Exception:  # a template that refuses this chat: the token is read as a document mark, as before
        return token
    return "" if rendered.count(token) > 1 else token


def judge_scores(reward_model, tokenizer, questions: list[str], answers: list[str]) -> list[float]:
    """The judge's score of each answer, read at the answer's EOS as in reward training and PPO."""
    chats = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in zip(questions, answers)]
    return score_chats(reward_model, tokenizer, chats)


def judge_accuracy(reward_model, tokenizer, pairs: list[dict]) -> float:
    """The share of preference pairs whose chosen answer the judge scores above the rejected one."""
    chats = {key: [as_messages(p["prompt"], "user") + as_messages(p[key], "assistant") for p in pairs]
             for key in ("chosen", "rejected")}  # fmt: skip
    chosen, rejected = (score_chats(reward_model, tokenizer, chats[key]) for key in ("chosen", "rejected"))
    return sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)


@torch.no_grad()
def score_chats(reward_model, tokenizer, chats: list[list[dict]]) -> list[float]:
    rows = [tokenizer.apply_chat_template(chat, tokenize=True)["input_ids"] for chat in chats]
    # Right padding: absolute position embeddings (GPT-2) see each row as in training; the score is read at the
    # last non-pad token.
    input_ids, attention_mask = pad(tokenizer, rows, "right")
    device = reward_model.device
    logits = reward_model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
    return logits[:, 0].float().tolist()


CONTINUATION_WORDS = 3  # a plain-text prompt is the start of a reference answer: "alice followed the"


def text_openings(rows: list[dict]) -> list[str]:
    """One plain-text prompt per eval split: the first words of its first reference, as a base model is tried."""
    firsts = {}
    for row in rows:
        firsts.setdefault(row["split"], " ".join(row["reference"].split()[:CONTINUATION_WORDS]))
    return list(dict.fromkeys(firsts.values()))


def continue_texts(model, tokenizer, texts: list[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """Each text continued greedily by `pipeline("text-generation")`, the way a base model is tried on the Hub."""
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    room = model.config.max_position_embeddings - max(len(tokenizer(t)["input_ids"]) for t in texts)
    # One batch (the pipeline pads on the left), not one text at a time: a real model's continuations took 4-6 s.
    max_new_tokens = max(1, min(max_new_tokens, room))
    outputs = generator(texts, max_new_tokens=max_new_tokens, do_sample=False, batch_size=len(texts))
    return [one_line(output[0]["generated_text"]) for output in outputs]


def judge_accuracy_by_split(reward_model, tokenizer, pairs: list[dict], split_of: dict[str, str]) -> dict:
    """The judge's pairwise accuracy on the pairs of each eval split ("other": prompts the eval file lacks)."""
    groups = defaultdict(list)
    for pair in pairs:
        groups[split_of.get(last_content(pair["prompt"]), "other")].append(pair)
    return {split: judge_accuracy(reward_model, tokenizer, group) for split, group in groups.items()}


class Judge:
    """The reward model that scores every stage's answers, and its pairwise accuracy on the data folder's pairs."""

    def __init__(self, path: str | Path):
        self.model = load_weights(AutoModelForSequenceClassification, path).eval()
        self.tokenizer = checkpoint_tokenizer(path)

    def scores(self, questions: list[str], answers: list[str]) -> list[float]:
        return judge_scores(self.model, self.tokenizer, questions, answers)

    def accuracy_by_split(self, data: DataFolder, rows: list[dict], max_pairs: int | None = None) -> dict:
        """Measured on every pair, or on `max_pairs` spread evenly over the file (a real model scores ~8 pairs a
        second on a CPU)."""
        pairs = load_data(data.file("preference"), "preference").to_list()
        if max_pairs is not None and len(pairs) > max_pairs:
            pairs = [pairs[i * len(pairs) // max_pairs] for i in range(max_pairs)]
        split_of = {r["prompt"]: r["split"] for r in rows}
        return {"pairwise_accuracy": judge_accuracy_by_split(self.model, self.tokenizer, pairs, split_of)}


def ask(model, tokenizer, questions: list[str], how: str, max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """Each stage asked as it is meant to be: "chat" (greedy, in its chat template), "text" (the question as plain
    text, continued greedily for at least one word, as a base model is tried) or "text, sampled" (plain text, seeded
    sampling at temperature 1: a random model's greedy output is one word repeated)."""
    if how == "chat":
        return greedy_answers(model, tokenizer, questions, max_new_tokens)
    set_seed(0)
    # A base model continues text; asked to, it writes at least one word (the completer would often end at once the
    # "sentence" a question looks like).
    prompts = text_prompts(tokenizer, questions)
    return generate_answers(model, tokenizer, prompts, max_new_tokens, do_sample="sampled" in how, min_new_tokens=1)


RETENTION = "retention"  # general questions a real instruct model answers before fine-tuning: what it kept


def contains(answer: str, references: list[str]) -> bool:
    """Whether one reference's words appear together in the answer ("paris" in "The capital is Paris."; "4" or
    "four" in "Two and two make four.")."""
    words = f" {normalise(answer)} "
    return any(f" {normalise(reference)} " in words for reference in references)


def right_answers(row: dict) -> list[str]:
    """A retention row's reference and its alternatives, any of which a right answer contains."""
    return [row["reference"], *(row.get("alternatives") or [])]


@dataclass(frozen=True)
class Answered:
    """One model's answers to the eval rows: its greedy answer to each, the judge's score of it (None: no judge), the
    reference's log-probability (0.0 for a retention row) and the answers sampled for the row."""

    answers: list[str]
    scores: list[float] | None
    logprobs: list[float]
    samples: list[list[str]]


def split_metrics(rows: list[dict], answered: Answered, sentences: set[str] | None) -> dict:
    """Per eval split: exact match, the judge's mean score, the reference's log-probability, the sampling hit rate
    and the well-formed share (answers compared after `normalise`; `sentences`, the story's, None: not measured). The
    `retention` split, general questions a long answer may answer well, is scored by whether the answer contains the
    reference (`contains`)."""
    answers, references = answered.answers, [normalise(r["reference"]) for r in rows]
    by_split: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_split.setdefault(row["split"], []).append(i)
    metrics = {}
    for split, idx in by_split.items():
        if split == RETENTION:
            metric = {"contains": sum(contains(answers[i], right_answers(rows[i])) for i in idx) / len(idx)}
        else:
            metric = {"exact_match": sum(normalise(answers[i]) == references[i] for i in idx) / len(idx)}
        if answered.scores is not None:
            metric["mean_reward"] = sum(answered.scores[i] for i in idx) / len(idx)
        if split == RETENTION:
            metrics[split] = metric
            continue
        metric["reference_logprob"] = sum(answered.logprobs[i] for i in idx) / len(idx)
        hits = [normalise(sample) == references[i] for i in idx for sample in answered.samples[i]]
        metric["sampled_exact"] = sum(hits) / len(hits) if hits else 0.0
        if sentences is not None:
            metric["well_formed"] = sum(normalise(answers[i]) in sentences for i in idx) / len(idx)
        metric["word_mixtures"] = sum(is_word_mixture(answers[i], references[i]) for i in idx) / len(idx)
        metrics[split] = metric
    return metrics


def is_word_mixture(answer: str, reference: str) -> bool:
    """An answer that repeats a word of four letters or more more often than its reference does ("wendy was a
    wendy"): the gauge of a hacked judge on any model, where `well_formed` needs the story's own sentences."""
    said, expected = Counter(normalise(answer).split()), Counter(normalise(reference).split())
    return any(count > max(1, expected[word]) for word, count in said.items() if len(word) >= 4)


@dataclass(frozen=True)
class Asking:
    """How the evaluation asks the models: each stage's way (see `ask`; "chat" for a stage not named), the answers
    sampled per question for the sampling hit rate, the longest answer, the preference pairs the judge's accuracy is
    measured on (None: all; 0: not measured), and a file of general questions added as the `retention` split."""

    asked: Mapping[str, str] = field(default_factory=dict)
    samples: int = EVAL_SAMPLES
    max_new_tokens: int = MAX_NEW_TOKENS
    judge_pairs: int | None = None
    retention_file: Path | None = None


DEFAULT_ASKING = Asking()  # the toy's: 32 samples, 16 tokens, every pair


def evaluate_checkpoints(
    checkpoints: dict[str, str | Path],
    eval_file: str | Path,
    reward_model_dir: str | Path | None,
    data: DataFolder | None = None,
    asking: Asking = DEFAULT_ASKING,
) -> tuple[dict, list[dict], list[dict], dict]:
    """metrics.json's `stages`, `responses` (each stage's answers), `continuations` (plain text continued) and
    `judge` (its pairwise accuracy on the data folder's preference pairs) for any causal-LM checkpoints, asked as
    `asking` says. `data`, the story's folder, gives the sentences of the well-formed gauge and the pairs of the
    judge's accuracy; without it they are left out.
    """
    rows = load_data(eval_file, "eval").to_list()
    if asking.retention_file is not None:
        rows += load_data(asking.retention_file, "eval").to_list()
    story = [i for i, r in enumerate(rows) if r["split"] != RETENTION]  # sampled and scored against the story
    responses = [{"prompt": r["prompt"], "split": r["split"], "reference": r["reference"]} for r in rows]
    continuations = [{"text": text} for text in text_openings([rows[i] for i in story])]
    sentences = data.sentences() if data is not None else None
    judge = Judge(reward_model_dir) if reward_model_dir is not None else None
    measure_judge = judge is not None and data is not None and asking.judge_pairs != 0
    judge_metrics = judge.accuracy_by_split(data, rows, asking.judge_pairs) if measure_judge else {}
    stages: dict[str, dict] = {}
    for name, path in checkpoints.items():
        tokenizer = checkpoint_tokenizer(path)
        model = load_weights(AutoModelForCausalLM, path).eval()
        how = asking.asked.get(name, "chat")
        answered = answer_rows(model, tokenizer, rows, how, judge, asking)
        stage: dict = {"perplexity": perplexity(model, tokenizer, [rows[i]["reference"] for i in story]),
                       "asked": how, "checkpoint": Path(path).name}  # fmt: skip
        stages[name] = stage | split_metrics(rows, answered, sentences)
        for response, answer in zip(responses, answered.answers):
            response[name] = answer
        for row, text in zip(continuations, continue_texts(model, tokenizer, [c["text"] for c in continuations])):
            row[name] = text
    return stages, responses, continuations, judge_metrics


def answer_rows(model, tokenizer, rows: list[dict], how: str, judge, asking: Asking) -> Answered:
    """A model's answers to every eval row (asked `how`), the judge's scores, and for the story's rows (all but the
    retention split) the reference's log-probability and `asking.samples` sampled answers, seeded."""
    questions = [r["prompt"] for r in rows]
    story = [i for i, r in enumerate(rows) if r["split"] != RETENTION]
    answers = ask(model, tokenizer, questions, how, asking.max_new_tokens)
    scores = judge.scores(questions, answers) if judge is not None else None
    story_questions = [questions[i] for i in story]
    story_logprobs = reference_logprobs(
        model, tokenizer, story_questions, [one_line(rows[i]["reference"]) for i in story]
    )
    logprobs = [0.0] * len(rows)  # the retention split reports no log-probability
    samples: list[list[str]] = [[] for _ in rows]
    set_seed(0)
    drawn = sampled_answers(model, tokenizer, story_questions, asking.samples, asking.max_new_tokens)
    for n, i in enumerate(story):
        logprobs[i] = story_logprobs[n]
        samples[i] = drawn[n * asking.samples : (n + 1) * asking.samples]
    return Answered(answers, scores, logprobs, samples)


@torch.no_grad()
def learned_and_kept(sft_dir: Path, instruct_dir: Path, data: DataFolder, asking: Asking) -> str:
    """One line on what SFT did to a real instruct model: the flashcards it answers word for word, asked as SFT's
    checks ask them (toyllm.learned), and the general questions it still answers, of those the instruct model did."""
    retention_file = asking.retention_file
    rows = load_data(retention_file, "eval").to_list()
    kept = {}
    for name, path in (("instruct", instruct_dir), ("sft", sft_dir)):
        tokenizer, model = checkpoint_tokenizer(path), load_weights(AutoModelForCausalLM, path).eval()
        answers = greedy_answers(model, tokenizer, [row["prompt"] for row in rows], asking.max_new_tokens)
        kept[name] = [contains(answer, right_answers(row)) for answer, row in zip(answers, rows)]
    flashcards = Asked.of(load_data(data.file("flashcards"), "flashcards"), tokenizer)  # SFT's, loaded last
    learned = flashcards.answered(model, tokenizer)
    still = sum(before and after for before, after in zip(kept["instruct"], kept["sft"]))
    instruct_right = sum(kept["instruct"])
    return (f"sft learned {learned} of {len(flashcards.prompts)} flashcards and kept {still} of the {instruct_right} "
            f"general answers the instruct model got right ({retention_file.name})")  # fmt: skip
