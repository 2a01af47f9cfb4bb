"""Self-distillation replay against forgetting: the starting model's own greedy answers to general prompts, written
before SFT, mixed into its rows. Fine-tuned on a story alone, a chat model answers every question the story's way
("what is 2 + 2" → a story sentence); trained also on what it already said elsewhere, it keeps saying it."""

from __future__ import annotations

import json
import logging
import random

from datasets import Dataset, concatenate_datasets, interleave_datasets

from toyllm.data import load_data
from toyllm.data_checks import Fit, as_messages
from toyllm.generation import finished_answers

logger = logging.getLogger(__name__)


def replay_answers(script_args, model, tokenizer, max_length: int) -> list[tuple[list[dict], str]]:
    """The model's greedy answer to each prompt of `script_args.replay_prompts_dataset_name` (each checked to leave
    room for its answer within `max_length`), with the prompt as messages. An answer that runs past
    `replay_max_new_tokens` is cut after its last whole sentence (left out if it has none): cut mid-sentence, it would
    teach the model to stop there, and left out, the replay would keep only the model's shortest answers."""
    max_new_tokens = script_args.replay_max_new_tokens
    fit = Fit(tokenizer, max_length, reserve=max_new_tokens)
    prompts = load_data(script_args.replay_prompts_dataset_name, "prompts", fit)
    questions = [as_messages(row["prompt"], "user") for row in prompts]
    prompt_ids = [tokenizer.apply_chat_template(q, add_generation_prompt=True)["input_ids"] for q in questions]
    answers = finished_answers(model, tokenizer, prompt_ids, max_new_tokens)
    kept = [(q, a) for q, a in zip(questions, answers) if a]
    if not kept:  # a model that writes no whole sentence (an untrained one) has nothing to replay
        logger.warning(f"replay: the model wrote no whole sentence in {max_new_tokens} tokens to any of its "
                       f"{len(questions)} prompts; training without replay")  # fmt: skip
    else:
        logger.info(f"replay: {len(kept)} of {len(questions)} answers of the starting model kept")
    return kept


def mix_replay(chats: Dataset, answers: list[tuple[list[dict], str]], fraction: float, seed: int) -> Dataset:
    """The answers (`replay_answers`) mixed into SFT's rows as `fraction` of them, in the rows' format (the smaller
    side repeated until both are used up); the rows as they are when there is no answer."""
    if not answers:
        return chats
    conversational = "messages" in chats.column_names
    rows = [{"messages": q + [{"role": "assistant", "content": a}]} if conversational
            else {"prompt": q, "completion": [{"role": "assistant", "content": a}]} for q, a in answers]  # fmt: skip
    replay = Dataset.from_list(rows)
    for column in set(chats.column_names) - set(replay.column_names):
        replay = replay.add_column(column, [None] * len(replay))
    replay = replay.cast(chats.features)
    return interleave_datasets(
        [chats, replay], probabilities=[1 - fraction, fraction], seed=seed, stopping_strategy="all_exhausted"
    )


def replayed(chats: Dataset, mixed: Dataset) -> list[dict]:
    """The rows `mix_replay` added to `chats`: the starting model's own answers, each once."""
    before = {json.dumps(row, sort_keys=True) for row in chats}
    added = {key: row for row in mixed if (key := json.dumps(row, sort_keys=True)) not in before}
    return list(added.values())


def replay_pairs(pairs: Dataset, answers: list[tuple[list[dict], str]], per_prompt: int, seed: int) -> Dataset:
    """Preference pairs that keep what a model knows beyond the story: for each general prompt, the model's own answer
    (`replay_answers`, written before training) over up to `per_prompt` of the story's answers (the pairs' chosen
    answers, drawn, seeded): preference tuning on a story alone teaches the model to answer everything with it."""
    if not answers or per_prompt <= 0 or "prompt" not in pairs.column_names:
        return pairs
    story = list(dict.fromkeys(row["chosen"][-1]["content"] if isinstance(row["chosen"], list) else row["chosen"]
                               for row in pairs))  # fmt: skip
    draw = random.Random(seed)
    added = [{"prompt": question, "chosen": [{"role": "assistant", "content": answer}],
              "rejected": [{"role": "assistant", "content": other}]}
             for question, answer in answers for other in draw.sample(story, min(per_prompt, len(story)))]  # fmt: skip
    logger.info(f"{len(added)} replay pairs added: the model's own answers to general prompts over story answers")
    added = [{column: row.get(column) for column in pairs.column_names} for row in added]  # e.g. a score column
    return concatenate_datasets([pairs, Dataset.from_list(added).cast(pairs.features)])
