"""Measure each stage the same way: perplexity, exact answers and the judge's score, per split of eval.jsonl."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

from toyllm.data import load_data
from toyllm.model import MAX_NEW_TOKENS, load_weights


def normalise(text: str) -> str:
    return " ".join(text.split())


def chat_prompts(tokenizer, questions: list[str]) -> list[list[int]]:
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)["input_ids"]
        for q in questions
    ]


def _pad(tokenizer, rows: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    batch = tokenizer.pad({"input_ids": rows}, padding_side=side, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


@torch.no_grad()
def greedy_answers(model, tokenizer, questions: list[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """The model's greedy chat answer to each question, special tokens stripped."""
    # Left padding, so every answer starts at the same index; generate() derives position ids from the mask.
    input_ids, attention_mask = _pad(tokenizer, chat_prompts(tokenizer, questions), "left")
    room = model.config.max_position_embeddings - input_ids.shape[1]
    output = model.generate(
        input_ids=input_ids.to(model.device),
        attention_mask=attention_mask.to(model.device),
        max_new_tokens=max(1, min(max_new_tokens, room)),
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    answers = output[:, input_ids.shape[1] :]
    return [normalise(text) for text in tokenizer.batch_decode(answers, skip_special_tokens=True)]


@torch.no_grad()
def perplexity(model, tokenizer, texts: list[str]) -> float:
    """Perplexity of plain text ([BOS] text [EOS]), averaged over every predicted token."""
    total_nll, total_tokens = 0.0, 0
    for text in texts:
        ids = tokenizer(tokenizer.bos_token + text + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        input_ids = torch.tensor([ids], device=model.device)
        loss = model(input_ids=input_ids, labels=input_ids).loss
        total_nll += loss.item() * (len(ids) - 1)
        total_tokens += len(ids) - 1
    return math.exp(total_nll / total_tokens)


@torch.no_grad()
def judge_scores(reward_model, tokenizer, questions: list[str], answers: list[str]) -> list[float]:
    """The judge's score of each answer, read at the answer's EOS as in reward training and PPO."""
    rows = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=True
        )["input_ids"]
        for q, a in zip(questions, answers)
    ]
    # Right padding: absolute position embeddings (GPT-2) see each row as in training; the score is read at the
    # last non-pad token.
    input_ids, attention_mask = _pad(tokenizer, rows, "right")
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
    outputs = generator(texts, max_new_tokens=max(1, min(max_new_tokens, room)), do_sample=False)
    return [normalise(output[0]["generated_text"]) for output in outputs]


def evaluate_checkpoints(
    checkpoints: dict[str, str | Path], eval_file: str | Path, reward_model_dir: str | Path | None
) -> tuple[dict, list[dict], list[dict]]:
    """metrics.json's `stages`, `responses` (greedy chat answers) and `continuations` (plain text continued) for
    any set of causal-LM checkpoints."""
    rows = load_data(eval_file, "eval").to_list()
    questions = [r["prompt"] for r in rows]
    splits = sorted({r["split"] for r in rows}, key=[r["split"] for r in rows].index)
    responses = [{"prompt": r["prompt"], "split": r["split"], "reference": r["reference"]} for r in rows]
    continuations = [{"text": text} for text in text_openings(rows)]
    judge = judge_tokenizer = None
    if reward_model_dir is not None:
        judge = load_weights(AutoModelForSequenceClassification, reward_model_dir).eval()
        judge_tokenizer = AutoTokenizer.from_pretrained(reward_model_dir)

    stages: dict[str, dict] = {}
    for name, path in checkpoints.items():
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = load_weights(AutoModelForCausalLM, path).eval()
        answers = greedy_answers(model, tokenizer, questions)
        scores = judge_scores(judge, judge_tokenizer, questions, answers) if judge is not None else None
        stage: dict = {"perplexity": perplexity(model, tokenizer, [r["reference"] for r in rows])}
        by_split = defaultdict(list)
        for i, row in enumerate(rows):
            responses[i][name] = answers[i]
            by_split[row["split"]].append(i)
        for split in splits:
            idx = by_split[split]
            stage[split] = {
                "exact_match": sum(answers[i] == normalise(rows[i]["reference"]) for i in idx) / len(idx),
            }
            if scores is not None:
                stage[split]["mean_reward"] = sum(scores[i] for i in idx) / len(idx)
        stages[name] = stage
        for row, text in zip(continuations, continue_texts(model, tokenizer, [c["text"] for c in continuations])):
            row[name] = text
    return stages, responses, continuations
