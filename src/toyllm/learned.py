"""SFT that watches what it teaches: every so many steps the flashcards' own questions are asked greedily, and a sample
of the replay's general prompts too, and training stops once every flashcard is answered word for word.

Only the training rows are asked (no evaluation question leaks into training). Both shares are written into the
log history (`flashcards/answered`, `replay/kept`), so the log, `trainer_state.json` and the report's training plot
show whether the facts were learned and whether the general answers were kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import TrainerCallback

from toyllm.data import flashcard_turns
from toyllm.data_checks import as_messages, last_content
from toyllm.generation import generate_answers, normalise

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Asked:
    """Questions as chat-prompt token ids, the answer each should get, and room for the longest of them."""

    prompts: list[list[int]]
    answers: list[str]
    max_new_tokens: int

    @classmethod
    def of(cls, rows, tokenizer) -> Asked:
        """SFT rows (messages, or prompt/completion) as questions and their taught answers."""
        prompts, answers = [], []
        for row in rows:
            question, answer = flashcard_turns(row)
            prompts.append(
                tokenizer.apply_chat_template(as_messages(question, "user"), add_generation_prompt=True)["input_ids"]
            )
            answers.append(last_content(answer))
        longest = max((len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers), default=0)
        return cls(prompts, answers, longest + 4)  # the end of turn, and a word tokenized otherwise in context

    def answered(self, model, tokenizer) -> int:
        """How many of the questions the model answers word for word (greedy)."""
        said = generate_answers(model, tokenizer, self.prompts, self.max_new_tokens) if self.prompts else []
        return sum(normalise(a) == normalise(b) for a, b in zip(said, self.answers))

    def share_answered(self, model, tokenizer) -> float | None:
        return self.answered(model, tokenizer) / len(self.prompts) if self.prompts else None


class StopWhenLearned(TrainerCallback):
    """Every `every` optimizer steps: the share of flashcards answered and of replayed answers kept, logged; training
    stops at the first check where every flashcard is answered (`max_steps` stays the budget)."""

    def __init__(self, flashcards: Asked, replay: Asked, every: int):
        self.flashcards, self.replay, self.every = flashcards, replay, every

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step % self.every and state.global_step < state.max_steps:
            return
        was_training = model.training
        model.eval()
        with torch.no_grad():
            answered = self.flashcards.share_answered(model, processing_class)
            kept = self.replay.share_answered(model, processing_class)
        model.train(was_training)
        entry = {"step": state.global_step, "flashcards/answered": answered}
        if kept is not None:
            entry["replay/kept"] = kept
        state.log_history.append(entry)
        kept_text = f", replay answers kept {kept:.2f}" if kept is not None else ""
        logger.info(f"step {state.global_step}: flashcards answered {answered:.2f}{kept_text}")
        if answered == 1.0 and state.global_step < state.max_steps:
            logger.info(f"step {state.global_step}: every flashcard answered; training stops")
            control.should_training_stop = True


REPLAY_ASKED = 8  # replayed answers asked at each check: a sample (a real model's 32 answers cost ~20 s on a CPU)


def stop_when_learned(every: int, flashcard_rows, replay_rows, tokenizer) -> list[TrainerCallback]:
    """SFT's callback that asks its own flashcards (and a sample of the replay's prompts) every `every` steps; none
    for 0."""
    if not every:
        return []
    replay_sample = list(replay_rows)[:REPLAY_ASKED]
    return [StopWhenLearned(Asked.of(flashcard_rows, tokenizer), Asked.of(replay_sample, tokenizer), every)]
