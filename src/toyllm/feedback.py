"""Feedback rounds (iterated online RLHF): the policy's sampled answers are labelled into new preference pairs, the
judge is retrained on the human pairs plus all feedback so far, and PPO runs again.

    toyllm label --policy outputs/toy/ppo --data-dir data --round 1 --output-dir outputs/toy

The demo's labeller is simulated: for a prompt with a known preferred answer (the chosen answer of preference.jsonl,
or the flashcard answer of sft.jsonl), that answer beats any different sample; it labels nothing else. Real labellers
can take its place: edit or replace `feedback/round-<n>.jsonl` (TRL's preference format) before the next round.
"""

from __future__ import annotations

import json
from pathlib import Path

from toyllm.checkpoint import atomic_write_text, read_marker
from toyllm.data import DATA_FILES, load_data
from toyllm.data_checks import last_content
from toyllm.errors import UserError

SAMPLES_PER_PROMPT = 64  # answers sampled (temperature 1) from the policy for each PPO prompt


def known_answers(data_dir: Path) -> dict[str, str]:
    """The preferred answer of every question the data folder knows one for: chosen answers, then flashcards."""
    answers: dict[str, str] = {}
    for row in load_data(data_dir / DATA_FILES["preference"], "preference").to_list():
        answers.setdefault(last_content(row["prompt"]), last_content(row["chosen"]))
    for row in load_data(data_dir / DATA_FILES["sft"], "sft").to_list():
        if "messages" in row:
            answers.setdefault(row["messages"][-2]["content"], row["messages"][-1]["content"])
        else:
            answers.setdefault(last_content(row["prompt"]), last_content(row["completion"]))
    return answers


def answerable_questions(prompt_rows: list[dict], answers: dict[str, str]) -> list[str]:
    """The distinct questions of these prompt rows that have a known preferred answer, in order."""
    return [q for q in dict.fromkeys(last_content(row["prompt"]) for row in prompt_rows) if q in answers]


def feedback_paths(output_dir: Path, round_number: int) -> tuple[Path, Path]:
    """Round n's new pairs, and the judge's training file of round n + 1 (the human pairs plus rounds 1..n)."""
    folder = Path(output_dir) / "feedback"
    return folder / f"round-{round_number}.jsonl", folder / f"preference-{round_number + 1}.jsonl"


def label_round(
    policy_dir: str | Path,
    data_dir: str | Path,
    round_number: int,
    output_dir: str | Path,
    samples: int = SAMPLES_PER_PROMPT,
    seed: int = 0,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Sample the policy's answers to the PPO prompts, label them, write round n's pairs and round n + 1's judge file.

    Round n's pairs are kept as they are when they were labelled from this very policy (real labellers may have
    edited them); labelled from another policy, they are replaced only with `overwrite`.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from toyllm.evaluate import chat_prompts, generate_answers, normalise
    from toyllm.model import load_weights

    data_dir, output_dir = Path(data_dir), Path(output_dir)
    pairs_path, judge_path = feedback_paths(output_dir, round_number)
    missing = [str(p) for n in range(1, round_number) if not (p := feedback_paths(output_dir, n)[0]).is_file()]
    if missing:
        raise UserError(f"{missing[0]}: not found; the judge learns from every round so far, so label them in order")
    source = {"policy": (read_marker(policy_dir) or {}).get("fingerprint", str(policy_dir)), "samples": samples,
              "seed": seed}  # fmt: skip
    meta_path = pairs_path.with_suffix(".json")
    kept = json.loads(meta_path.read_text()) if pairs_path.is_file() and meta_path.is_file() else None
    if pairs_path.is_file() and kept != source and not overwrite:
        raise UserError(f"{pairs_path}: labelled from another policy; pass --overwrite to label this one anew")
    if kept != source:
        answers = known_answers(data_dir)
        prompt_rows = load_data(data_dir / DATA_FILES["prompts"], "prompts").to_list()
        questions = answerable_questions(prompt_rows, answers)
        if not questions:
            raise UserError(f"{data_dir}: no PPO prompt has a known preferred answer to label against")
        tokenizer = AutoTokenizer.from_pretrained(policy_dir)
        model = load_weights(AutoModelForCausalLM, policy_dir).eval()
        set_seed(seed + round_number)
        with torch.no_grad():
            sampled = generate_answers(model, tokenizer, chat_prompts(tokenizer, questions), samples=samples,
                                       do_sample=True, temperature=1.0, top_k=0, top_p=1.0)  # fmt: skip
        lines = []
        for i, text in enumerate(questions):
            for answer in dict.fromkeys(sampled[i * samples : (i + 1) * samples]):
                if answer and answer != normalise(answers[text]):  # an empty answer has no text to write a row of
                    row = {"prompt": [{"role": "user", "content": text}],
                           "chosen": [{"role": "assistant", "content": answers[text]}],
                           "rejected": [{"role": "assistant", "content": answer}]}  # fmt: skip
                    lines.append(json.dumps(row) + "\n")
        pairs_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(pairs_path, "".join(lines))
        atomic_write_text(meta_path, json.dumps(source) + "\n")
    human = (data_dir / DATA_FILES["preference"]).read_text()
    rounds = [feedback_paths(output_dir, n)[0].read_text() for n in range(1, round_number + 1)]
    atomic_write_text(
        judge_path, "".join(text if text.endswith("\n") or not text else text + "\n" for text in [human, *rounds])
    )
    return pairs_path, judge_path


def round_metrics(
    output_dir: Path, eval_file: Path, rounds: int, judge_dir: Path, evaluated: dict[Path, dict] | None = None
) -> list[dict]:
    """Per feedback round: how well that round's judge ranks the labeller's verdicts on its own policy's answers (the
    new feedback), and that policy's held-out exact match, judge score (by `judge_dir`) and well-formed share.
    `evaluated` holds checkpoints already measured against the same judge (the last round's PPO): not measured again.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from toyllm.evaluate import evaluate_checkpoints, judge_accuracy
    from toyllm.model import load_weights
    from toyllm.stages import round_name

    evaluated = evaluated or {}
    policies = [Path(output_dir) / round_name("ppo", n) for n in range(1, rounds + 1)]
    missing = {str(path): path for path in policies if path not in evaluated}
    measured = evaluate_checkpoints(missing, eval_file, judge_dir)[0] if missing else {}
    table = []
    for n, policy in enumerate(policies, start=1):
        stage = evaluated.get(policy) or measured[str(policy)]
        pairs_path = feedback_paths(output_dir, n)[0]
        pairs = load_data(pairs_path, "preference").to_list() if pairs_path.stat().st_size else []
        judge = Path(output_dir) / round_name("reward", n)
        accuracy = None
        if pairs:
            model = load_weights(AutoModelForSequenceClassification, judge).eval()
            accuracy = judge_accuracy(model, AutoTokenizer.from_pretrained(judge), pairs)
        row = {"round": n, "new_pairs": len(pairs), "judge_accuracy_on_new_feedback": accuracy}
        for split in ("trained", "held_out"):
            row[split] = {key: stage[split].get(key) for key in ("exact_match", "mean_reward", "well_formed")}
        table.append(row)
    return table
