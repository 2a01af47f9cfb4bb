"""The word-level vocabulary and the chat template every stage shares."""

from __future__ import annotations

import pytest
from conftest import DATASETS, REPO, prompt_prefix_mismatches, read_jsonl
from transformers import AutoTokenizer

from toyllm.data import DataFolder, iter_texts
from toyllm.generation import normalise
from toyllm.toy import train_word_level_tokenizer

TOY_CONFIG = REPO / "toy_config"


@pytest.fixture(scope="module", params=sorted(DATASETS))
def dataset(request):
    data_dir = DATASETS[request.param]
    return data_dir, train_word_level_tokenizer(data_dir, TOY_CONFIG)


def test_every_word_of_the_training_files_has_an_id(dataset):
    data_dir, tokenizer = dataset
    for path in DataFolder(data_dir).training_files:
        for text in iter_texts(path):
            assert tokenizer.unk_token_id not in tokenizer(text)["input_ids"], (path.name, text)


def test_unknown_words_map_to_unk(dataset):
    data_dir, tokenizer = dataset
    known = read_jsonl(data_dir / "pretrain.jsonl")[0]["text"].split()[0]  # a word of the story
    ids = tokenizer(f"{known} met a spaceship")["input_ids"]
    assert ids[-1] == tokenizer.unk_token_id
    assert ids[0] != tokenizer.unk_token_id


def test_special_tokens_are_distinct_and_no_eos_is_appended(dataset):
    _, tokenizer = dataset
    ids = {tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}
    assert len(ids) == 4
    assert tokenizer("the queen")["input_ids"][-1] != tokenizer.eos_token_id


def test_a_continuation_decodes_with_its_leading_space(dataset):
    """pipeline("text-generation") decodes only the new tokens and appends them to the prompt."""
    data_dir, tokenizer = dataset
    text = normalise(read_jsonl(data_dir / "pretrain.jsonl")[0]["text"])  # as the vocabulary reads it
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids[2:]) == " " + " ".join(text.split()[2:])
    assert tokenizer.decode(ids[:2]) + tokenizer.decode(ids[2:]) == " " + text


def test_chat_template_round_trip(dataset):
    _, tokenizer = dataset
    row = read_jsonl(dataset[0] / "sft.jsonl")[0]["messages"]
    ids = tokenizer.apply_chat_template(row)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert text.strip() == " ".join(normalise(m["content"]) for m in row)


def test_prompt_is_a_token_prefix_of_prompt_plus_answer_for_every_row(dataset):
    """TRL's 'Mismatch between tokenized prompt...' check, over every shipped SFT and preference row."""
    data_dir, tokenizer = dataset
    assert prompt_prefix_mismatches(tokenizer, data_dir) == []


def test_assistant_mask_covers_exactly_the_answer_and_its_eos(dataset):
    _, tokenizer = dataset
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "the queen"},
        {"role": "assistant", "content": "the queen"},
    ]
    out = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True)
    answer = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert answer == tokenizer("the queen")["input_ids"] + [tokenizer.eos_token_id]


def test_save_and_reload_keeps_vocabulary_specials_and_template(dataset, tmp_path):
    _, tokenizer = dataset
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert reloaded.chat_template == tokenizer.chat_template
    assert reloaded.pad_token == "[PAD]" and reloaded.eos_token == "[EOS]"
