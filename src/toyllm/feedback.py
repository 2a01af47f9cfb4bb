"""Feedback rounds (iterated online RLHF): the policy's sampled answers are labelled into new preference pairs, the
judge is retrained on the human pairs plus all feedback so far, and PPO runs again.

    toyllm label --policy outputs/toy/ppo --data-dir data --round 1 --output-dir outputs/toy

The demo's labeller is simulated: for a prompt with a known preferred answer (the chosen answer of preference.jsonl,
or the flashcard answer of sft.jsonl), that answer beats any different sample; it labels nothing else. Real labellers
can take its place: edit or replace `feedback/round-<n>.jsonl` (TRL's preference format) before the next round.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, set_seed

from toyllm.checkpoint import read_marker
from toyllm.data import DataFolder, answerable, as_data_folder, load_data
from toyllm.defaults import LABEL_SAMPLES, MAX_NEW_TOKENS
from toyllm.errors import UserError
from toyllm.evaluate import DEFAULT_ASKING, Asking, evaluate_checkpoints, judge_accuracy
from toyllm.files import atomic_write_text
from toyllm.generation import normalise, sampled_answers
from toyllm.model import load_weights
from toyllm.stages import TABLE, StageTable, round_name


def feedback_paths(output_dir: Path, round_number: int) -> tuple[Path, Path]:
    """Round n's new pairs, and the judge's training file of round n + 1 (the human pairs plus rounds 1..n)."""
    folder = Path(output_dir) / "feedback"
    return folder / f"round-{round_number}.jsonl", folder / f"preference-{round_number + 1}.jsonl"


@dataclass(frozen=True)
class Labelling:
    """How the simulated labeller reads a policy: answers sampled per prompt, the seed of round 1 (round n draws with
    seed + n), and the longest answer."""

    samples: int = LABEL_SAMPLES
    seed: int = 0
    max_new_tokens: int = MAX_NEW_TOKENS


def label_round(
    policy_dir: str | Path,
    data: DataFolder | str | Path,
    round_number: int,
    output_dir: str | Path,
    labelling: Labelling = Labelling(),
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Sample the policy's answers to the PPO prompts, label them, write round n's pairs and round n + 1's judge file.

    Round n's pairs are kept as they are when they were labelled from this very policy (real labellers may have
    edited them); labelled from another policy, they are replaced only with `overwrite`.
    """
    data, output_dir = as_data_folder(data), Path(output_dir)
    pairs_path, judge_path = feedback_paths(output_dir, round_number)
    missing = [str(p) for n in range(1, round_number) if not (p := feedback_paths(output_dir, n)[0]).is_file()]
    if missing:
        raise UserError(f"{missing[0]}: not found; the judge learns from every round so far, so label them in order")
    source = {"policy": (read_marker(policy_dir) or {}).get("fingerprint", str(policy_dir)),
              "samples": labelling.samples, "seed": labelling.seed}  # fmt: skip
    if labelling.max_new_tokens != MAX_NEW_TOKENS:
        source["max_new_tokens"] = labelling.max_new_tokens
    meta_path = pairs_path.with_suffix(".json")
    kept = json.loads(meta_path.read_text()) if pairs_path.is_file() and meta_path.is_file() else None
    if pairs_path.is_file() and kept != source and not overwrite:
        raise UserError(f"{pairs_path}: labelled from another policy; pass --overwrite to label this one anew")
    if kept != source:
        rows = labelled_pairs(policy_dir, data, labelling.samples, labelling.seed + round_number,
                              labelling.max_new_tokens)  # fmt: skip
        pairs_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(pairs_path, "".join(json.dumps(row) + "\n" for row in rows))
        atomic_write_text(meta_path, json.dumps(source) + "\n")
    human = data.file("preference").read_text()
    rounds = [feedback_paths(output_dir, n)[0].read_text() for n in range(1, round_number + 1)]
    atomic_write_text(
        judge_path, "".join(text if text.endswith("\n") or not text else text + "\n" for text in [human, *rounds])
    )
    return pairs_path, judge_path


def labelled_pairs(
    policy_dir: str | Path, data: DataFolder, samples: int, seed: int, max_new_tokens: int = MAX_NEW_TOKENS
) -> list[dict]:
    """The simulated labeller: for each PPO prompt with a known preferred answer, that answer is chosen over every
    distinct sampled answer that differs from it (after `normalise`)."""
    prompt_rows = load_data(data.file("prompts"), "prompts").to_list()
    known = answerable(prompt_rows, data.known_answers())
    if not known:
        raise UserError(f"{data.path}: no PPO prompt has a known preferred answer to label against")
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    model = load_weights(AutoModelForCausalLM, policy_dir).eval()
    set_seed(seed)
    with torch.no_grad():
        sampled = sampled_answers(model, tokenizer, [q for q, _ in known], samples, max_new_tokens)
    rows = []
    for i, (question, preferred) in enumerate(known):
        for answer in dict.fromkeys(sampled[i * samples : (i + 1) * samples]):
            if answer and normalise(answer) != normalise(preferred):  # an empty answer has no text to write a row of
                rows.append({"prompt": [{"role": "user", "content": question}],
                             "chosen": [{"role": "assistant", "content": preferred}],
                             "rejected": [{"role": "assistant", "content": answer}]})  # fmt: skip
    return rows


def round_metrics(
    output_dir: Path,
    data: DataFolder,
    rounds: int,
    evaluated: dict[Path, dict] | None = None,
    table: StageTable = TABLE,
    asking: Asking = DEFAULT_ASKING,
) -> list[dict]:
    """Per feedback round: how well that round's judge ranks the labeller's verdicts on its own policy's answers (the
    new feedback), and that policy's held-out exact match, score by the last round's judge and well-formed share.
    `evaluated` holds checkpoints already measured against the same judge (the last round's policy): not measured
    again. `asking`'s samples and answer length are the last round's; each policy is asked in chat, with no general
    questions.
    """
    evaluated = evaluated or {}
    policies = [Path(output_dir) / round_name(table.round_policy, n) for n in range(1, rounds + 1)]
    missing = {str(path): path for path in policies if path not in evaluated}
    # The judge's accuracy on the human pairs is the report's, measured once.
    asking = replace(asking, asked={}, judge_pairs=0, retention_file=None)
    judge_dir = Path(output_dir) / round_name(table.round_judge, rounds)
    measured = evaluate_checkpoints(missing, data.file("eval"), judge_dir, data, asking)[0] if missing else {}
    rows = []
    for n, policy in enumerate(policies, start=1):
        stage = evaluated.get(policy) or measured[str(policy)]
        pairs_path = feedback_paths(output_dir, n)[0]
        pairs = load_data(pairs_path, "preference").to_list() if pairs_path.stat().st_size else []
        judge = Path(output_dir) / round_name(table.round_judge, n)
        accuracy = None
        if pairs:
            model = load_weights(AutoModelForSequenceClassification, judge).eval()
            accuracy = judge_accuracy(model, AutoTokenizer.from_pretrained(judge), pairs)
        row = {"round": n, "new_pairs": len(pairs), "judge_accuracy_on_new_feedback": accuracy}
        for split in ("trained", "held_out"):
            row[split] = {key: stage[split].get(key) for key in ("exact_match", "mean_reward", "well_formed")}
        rows.append(row)
    return rows
