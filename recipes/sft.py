"""Stage 2, supervised fine-tuning: question/answer flashcards teach the completer to answer.

    accelerate launch --config_file accelerate_config.yaml recipes/sft.py --config recipes/toy/sft.yaml

Reads conversational `{"messages": [...]}` rows (a system message is fine) or `{"prompt", "completion"}` rows. With
`assistant_only_loss` the loss covers the assistant's answers and their EOS only ({% generation %} in the chat
template, or TRL's patch for it); a template with neither trains on each row's last assistant message, as
prompt/completion rows do (SFTConfig.completion_only_loss).
"""

from dataclasses import dataclass, field

from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config
from trl.data_utils import is_conversational

from toyllm.args import ReplayArguments, fit_schedule, parse_recipe_args, steps_for_passes
from toyllm.checkpoint import begin_stage, save_stage
from toyllm.data import load_data, load_splits, mix_pretraining_text
from toyllm.data_checks import Fit
from toyllm.errors import UserError, exit_on_user_error
from toyllm.learned import stop_when_learned
from toyllm.model import context_length, load_causal_lm
from toyllm.replay import mix_replay, replay_answers, replayed
from toyllm.resume import checkpoint_marker
from toyllm.stages import STAGE
from toyllm.tokenizer import fit_loss_to_template, load_tokenizer
from toyllm.versions import allow_padding_free


@dataclass
class SFTScriptArguments(ReplayArguments):
    dataset_name: str = field(default="data/sft.jsonl", metadata={"help": "JSONL file or Hub dataset id."})
    ptx_dataset_name: str | None = field(
        default=None, metadata={"help": "Pretraining text ({'text'} rows) to mix into SFT as answers to cue words."}
    )
    ptx_fraction: float = field(
        default=0.5, metadata={"help": "The share of the mixed rows that are pretraining text."}
    )
    ptx_cues: int = field(
        default=4,
        metadata={
            "help": "Rows per pretraining sentence, each its answer to one of its own words drawn at random; "
            "0: one row, the answer to an empty user turn."
        },  # fmt: skip
    )

    replay_fraction: float = field(default=0.25, metadata={"help": "The share of the mixed rows that are replay."})
    flashcard_passes: float = field(
        default=0,
        metadata={
            "help": "Train for as many optimizer steps as show each flashcard about this many times (the replay and "
            "pretraining rows mixed in counted), and no fewer than min_steps; 0: num_train_epochs or max_steps "
            "decide. A max_steps given wins."
        },  # fmt: skip
    )

    stop_when_learned_every: int = field(
        default=0,
        metadata={
            "help": "Every this many optimizer steps, ask the flashcards' questions (and the replay prompts) "
            "greedily, log the shares answered and kept, and stop once every flashcard is answered; max_steps is the "
            "budget. 0: train the whole schedule."
        },  # fmt: skip
    )

    def __post_init__(self):  # refused while parsing, before any model is loaded
        super().__post_init__()
        if self.stop_when_learned_every < 0:
            raise ValueError(f"stop_when_learned_every: {self.stop_when_learned_every}; a number of steps, 0 or more")
        if not 0 < self.replay_fraction < 1:
            raise ValueError(f"replay_fraction: {self.replay_fraction}; the share of replay rows lies between 0 and 1")
        if not 0 < self.ptx_fraction < 1:
            raise ValueError(f"ptx_fraction: {self.ptx_fraction}; the share of pretraining rows lies between 0 and 1")
        if self.ptx_cues < 0:
            raise ValueError(f"ptx_cues: {self.ptx_cues}; a number of rows per sentence, 0 or more")
        if self.flashcard_passes < 0:
            raise ValueError(f"flashcard_passes: {self.flashcard_passes}; a number of times, 0 or more")


ARGUMENT_TYPES = (SFTScriptArguments, SFTConfig, ModelConfig)


def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> None:
    stage = STAGE["sft"]
    fingerprint = begin_stage(script_args, training_args, model_args)
    if fingerprint is None:
        return

    # Model & tokenizer
    tokenizer = load_tokenizer(model_args, eos_token=training_args.eos_token)
    model = load_causal_lm(model_args.model_name_or_path, model_args, tokenizer)
    training_args.max_length = context_length(model.config, training_args.max_length)

    # Dataset
    train_dataset, eval_dataset = load_splits(
        script_args, stage.data, tokenizer, training_args.max_length, training_args.eval_strategy != "no"
    )
    check_loss_fits_rows(script_args, training_args, train_dataset[0])
    flashcard_rows = train_dataset
    train_dataset, replay_rows, flashcard_share = mix_rows(script_args, training_args, train_dataset, model, tokenizer)
    train_dataset, eval_dataset = fit_loss_to_template(
        tokenizer, training_args, model_args.model_name_or_path, train_dataset, eval_dataset
    )
    steps_for_passes(
        script_args.flashcard_passes, script_args.min_steps, training_args, len(flashcard_rows), flashcard_share
    )
    fit_schedule(script_args, training_args, len(train_dataset))
    allow_padding_free(training_args)

    # Training
    learned = stop_when_learned(script_args.stop_when_learned_every, flashcard_rows, replay_rows, tokenizer)
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=[checkpoint_marker(fingerprint), *learned],
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    save_stage(trainer, stage.name, fingerprint, model_args.model_name_or_path, script_args.dataset_name)


def check_loss_fits_rows(script_args: SFTScriptArguments, training_args: SFTConfig, row: dict) -> None:
    if training_args.assistant_only_loss and not is_conversational(row):
        raise UserError(
            f"assistant_only_loss: true needs conversational rows, and {script_args.dataset_name} holds plain text; "
            "set assistant_only_loss: false (the loss then covers the completion)"
        )


def mix_rows(script_args: SFTScriptArguments, training_args: SFTConfig, flashcards, model, tokenizer) -> tuple:
    """The flashcards with the story's sentences (ptx) and the model's own replayed answers mixed in: the rows, the
    replayed rows, and the flashcards' share of the rows."""
    rows, replay_rows, flashcard_share = flashcards, [], 1.0
    if script_args.ptx_dataset_name:
        texts = load_data(script_args.ptx_dataset_name, "pretrain", Fit(tokenizer, training_args.max_length))
        rows = mix_pretraining_text(rows, texts, script_args.ptx_fraction, training_args.seed, script_args.ptx_cues)
        flashcard_share *= 1 - script_args.ptx_fraction
    if script_args.replay_prompts_dataset_name:
        answers = replay_answers(script_args, model, tokenizer, training_args.max_length)
        mixed = mix_replay(rows, answers, script_args.replay_fraction, training_args.seed)
        if len(mixed) > len(rows):  # else nothing was replayed
            flashcard_share *= 1 - script_args.replay_fraction
        rows, replay_rows = mixed, replayed(rows, mixed)
    return rows, replay_rows, flashcard_share


if __name__ == "__main__":
    with exit_on_user_error():
        main(*parse_recipe_args(ARGUMENT_TYPES))
