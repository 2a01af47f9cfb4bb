"""Measure each stage the same way, per split of eval.jsonl: perplexity, exact answers and the judge's score, and the
diagnostics of RLHF: how reachable the reference answer is, and whether an answer is a sentence of the data at all."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline, set_seed

from toyllm.data import DATA_FILES, load_data
from toyllm.data_checks import as_messages, last_content
from toyllm.model import MAX_NEW_TOKENS, load_weights

SAMPLES_PER_PROMPT = 32  # sampled answers per eval prompt (temperature 1, seeded) for the sampling hit rate


def normalise(text: str) -> str:
    return " ".join(text.split())


def chat_prompts(tokenizer, questions: list[str]) -> list[list[int]]:
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)["input_ids"]
        for q in questions
    ]


def _pad(tokenizer, rows: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    batch = tokenizer.pad({"input_ids": rows}, padding_side=side, return_attention_mask=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def text_prompts(tokenizer, texts: list[str]) -> list[list[int]]:
    """Plain text as a base model reads it (after BOS, as in pre-training), with no chat template."""
    return [tokenizer((tokenizer.bos_token or "") + text, add_special_tokens=False)["input_ids"] for text in texts]


@torch.no_grad()
def generate_answers(
    model, tokenizer, prompts: list[list[int]], max_new_tokens: int = MAX_NEW_TOKENS, samples: int = 1, **sampling
) -> list[str]:
    """What the model writes after each prompt (greedy unless `do_sample=True`), special tokens stripped; with
    `samples` > 1, that many answers per prompt, prompt after prompt."""
    # Left padding, so every answer starts at the same index; generate() derives position ids from the mask.
    input_ids, attention_mask = _pad(tokenizer, [p for p in prompts for _ in range(samples)], "left")
    room = model.config.max_position_embeddings - input_ids.shape[1]
    output = model.generate(
        input_ids=input_ids.to(model.device),
        attention_mask=attention_mask.to(model.device),
        max_new_tokens=max(1, min(max_new_tokens, room)),
        do_sample=sampling.pop("do_sample", False),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **sampling,
    )
    answers = output[:, input_ids.shape[1] :]
    return [normalise(text) for text in tokenizer.batch_decode(answers, skip_special_tokens=True)]


def greedy_answers(model, tokenizer, questions: list[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """The model's greedy chat answer to each question, special tokens stripped."""
    return generate_answers(model, tokenizer, chat_prompts(tokenizer, questions), max_new_tokens)


@torch.no_grad()
def reference_logprobs(model, tokenizer, questions: list[str], references: list[str]) -> list[float]:
    """log P(reference and its end of turn | chat prompt): how reachable the right answer is by sampling (0: it is
    certain; -11 is one sample in 60,000)."""
    values = []
    for question, prompt, reference in zip(questions, chat_prompts(tokenizer, questions), references):
        chat = [{"role": "user", "content": question}, {"role": "assistant", "content": reference}]
        full = tokenizer.apply_chat_template(chat)["input_ids"]
        end = full.index(tokenizer.eos_token_id, len(prompt)) + 1 if tokenizer.eos_token_id in full else len(full)
        ids = torch.tensor([full[:end]], device=model.device)
        logprobs = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
        token_logprobs = logprobs.gather(-1, ids[0, 1:, None])[:, 0]
        values.append(token_logprobs[len(prompt) - 1 :].sum().item())
    return values


def data_sentences(data_dir: Path) -> set[str] | None:
    """Every sentence the data folder holds as text or as an answer (pre-training text, SFT answers, preference
    answers): a greedy answer outside this set is a mixture of words the model made up. None without those files."""
    files = [data_dir / DATA_FILES[kind] for kind in ("pretrain", "sft", "preference")]
    if not all(path.is_file() for path in files):
        return None
    sentences = set()
    for kind, path in zip(("pretrain", "sft", "preference"), files):
        for row in load_data(path, kind).to_list():
            values = [row.get("text"), row.get("completion"), row.get("chosen"), row.get("rejected")]
            values += [m for m in row.get("messages") or [] if m["role"] == "assistant"]
            for value in values:
                for text in value if isinstance(value, list) else [value]:
                    text = text["content"] if isinstance(text, dict) else text
                    if isinstance(text, str):
                        sentences.add(normalise(text.lower()))
    return sentences


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


def judge_accuracy_by_split(reward_model, tokenizer, pairs: list[dict], split_of: dict[str, str]) -> dict:
    """The judge's pairwise accuracy on the pairs of each eval split ("other": prompts the eval file lacks)."""
    groups = defaultdict(list)
    for pair in pairs:
        groups[split_of.get(last_content(pair["prompt"]), "other")].append(pair)
    return {split: judge_accuracy(reward_model, tokenizer, group) for split, group in groups.items()}


def evaluate_checkpoints(
    checkpoints: dict[str, str | Path],
    eval_file: str | Path,
    reward_model_dir: str | Path | None,
    asked: dict[str, str] | None = None,
) -> tuple[dict, list[dict], list[dict], dict]:
    """metrics.json's `stages`, `responses` (each stage's answers), `continuations` (plain text continued) and
    `judge` (its pairwise accuracy on the preference pairs beside the eval file) for any causal-LM checkpoints.

    `asked` says how each checkpoint is asked: "chat" (the default: greedy, in its chat template), "text" (the
    question as plain text, continued greedily for at least one word, as a base model is tried) or "text, sampled"
    (plain text, seeded sampling at temperature 1: a random model's greedy output is one word repeated).
    """
    asked = asked or {}
    rows = load_data(eval_file, "eval").to_list()
    questions = [r["prompt"] for r in rows]
    references = [normalise(r["reference"]) for r in rows]
    splits = sorted({r["split"] for r in rows}, key=[r["split"] for r in rows].index)
    responses = [{"prompt": r["prompt"], "split": r["split"], "reference": r["reference"]} for r in rows]
    continuations = [{"text": text} for text in text_openings(rows)]
    sentences = data_sentences(Path(eval_file).parent)
    judge = judge_tokenizer = None
    judge_metrics: dict = {}
    if reward_model_dir is not None:
        judge = load_weights(AutoModelForSequenceClassification, reward_model_dir).eval()
        judge_tokenizer = AutoTokenizer.from_pretrained(reward_model_dir)
        preference_file = Path(eval_file).parent / DATA_FILES["preference"]
        if preference_file.is_file():
            pairs = load_data(preference_file, "preference").to_list()
            split_of = {r["prompt"]: r["split"] for r in rows}
            judge_metrics["pairwise_accuracy"] = judge_accuracy_by_split(judge, judge_tokenizer, pairs, split_of)

    stages: dict[str, dict] = {}
    for name, path in checkpoints.items():
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = load_weights(AutoModelForCausalLM, path).eval()
        how = asked.get(name, "chat")
        if how == "chat":
            answers = greedy_answers(model, tokenizer, questions)
        else:
            set_seed(0)
            # A base model continues text; asked to, it writes at least one word (the completer would often end at
            # once the "sentence" a question looks like).
            prompts = text_prompts(tokenizer, questions)
            answers = generate_answers(model, tokenizer, prompts, do_sample="sampled" in how, min_new_tokens=1)
        scores = judge_scores(judge, judge_tokenizer, questions, answers) if judge is not None else None
        logprobs = reference_logprobs(model, tokenizer, questions, references)
        set_seed(0)
        samples = generate_answers(model, tokenizer, chat_prompts(tokenizer, questions), samples=SAMPLES_PER_PROMPT,
                                   do_sample=True, temperature=1.0, top_k=0, top_p=1.0)  # fmt: skip
        stage: dict = {"perplexity": perplexity(model, tokenizer, [r["reference"] for r in rows]), "asked": how}
        by_split = defaultdict(list)
        for i, row in enumerate(rows):
            responses[i][name] = answers[i]
            by_split[row["split"]].append(i)
        for split in splits:
            idx = by_split[split]
            stage[split] = {"exact_match": sum(answers[i] == references[i] for i in idx) / len(idx)}
            if scores is not None:
                stage[split]["mean_reward"] = sum(scores[i] for i in idx) / len(idx)
            stage[split]["reference_logprob"] = sum(logprobs[i] for i in idx) / len(idx)
            hits = [
                samples[i * SAMPLES_PER_PROMPT + k] == references[i] for i in idx for k in range(SAMPLES_PER_PROMPT)
            ]
            stage[split]["sampled_exact"] = sum(hits) / len(hits)
            if sentences is not None:
                stage[split]["well_formed"] = sum(answers[i].lower() in sentences for i in idx) / len(idx)
        stages[name] = stage
        for row, text in zip(continuations, continue_texts(model, tokenizer, [c["text"] for c in continuations])):
            row[name] = text
    return stages, responses, continuations, judge_metrics
