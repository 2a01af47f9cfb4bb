"""Real models' chat templates as test fixtures: the originals that ship in the installed TRL
(`trl/chat_templates/*.jinja`, not the `_training` variants), plus plain ChatML, a Mistral/Llama-2 `[INST]` template
and a tokenizer with none.

Each becomes a tiny random checkpoint the way a real chat model ships: a byte-level BPE tokenizer whose special
tokens are the template's own markers, with EOS set to the marker that ends an assistant turn (as the model's
`tokenizer_config.json` does), and the matching architecture where transformers can build it from a config (Llama
otherwise).
"""

from __future__ import annotations

import re
from pathlib import Path

import trl
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast, set_seed

from toyllm.toy import iter_data_folder_texts

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
# Image, video and diffusion models' templates: not text chat models, so not ours to train.
NOT_TEXT_CHAT = ("vl", "idefics", "llava", "diffusion")

PLAIN_CHATML = (  # SmolLM2's and many community fine-tunes' template: no {% generation %} markers
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' "
    "+ '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
INST = (  # Mistral-7B-Instruct-v0.1 / Llama 2's
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content']"
    " + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% endif %}"
    "{% endfor %}"
)
SMOLLM2 = (  # SmolLM2-Instruct's own: ChatML with a default system prompt when the chat has none
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
EXTRA = {"chatml": PLAIN_CHATML, "smollm2": SMOLLM2, "inst": INST, "none": None}

# Architectures transformers builds from a config, by template family; Llama for the rest.
ARCHITECTURE = {"qwen2_5": "qwen2", "qwen3": "qwen3", "phi3": "phi3", "gemma3": "gemma3_text", "gemma": "gemma"}
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=64, max_position_embeddings=2048, head_dim=8)  # fmt: skip

MARKER = re.compile(r"<[^<>\s]{2,40}>|\[/?INST\]")
BOS, PAD = "<|bos|>", "<|pad|>"
SAMPLE = [
    {"role": "user", "content": "who was alice"},
    {"role": "assistant", "content": "alice was very curious"},
    {"role": "user", "content": "who did alice follow"},
    {"role": "assistant", "content": "alice followed the white rabbit"},
]


def template_names() -> list[str]:
    originals = sorted(p.stem for p in TRL_TEMPLATES.glob("*.jinja") if not p.stem.endswith("_training"))
    return [name for name in originals if not any(part in name for part in NOT_TEXT_CHAT)] + list(EXTRA)


def template_text(name: str) -> str | None:
    return EXTRA[name] if name in EXTRA else (TRL_TEMPLATES / f"{name}.jinja").read_text()


def architecture(name: str) -> str:
    family = next((key for key in ARCHITECTURE if name == key or name.startswith(key + "_")), None)
    return ARCHITECTURE[family] if family else "llama"


def _markers_and_eos(template: str) -> tuple[list[str], str]:
    """The template's special markers and its end-of-turn marker, read from a rendered conversation."""
    probe = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"x": 0}, unk_token="x")),
                                    bos_token=BOS, eos_token="</s>", chat_template=template)  # fmt: skip
    single = probe.apply_chat_template(SAMPLE[:2], tokenize=False)  # a finished answer ends with EOS
    multi = probe.apply_chat_template(SAMPLE, tokenize=False)  # or, where nothing follows it, the next turn does
    prompt = probe.apply_chat_template(SAMPLE[:1], tokenize=False, add_generation_prompt=True)
    markers = list(dict.fromkeys(MARKER.findall(single + multi + prompt)))
    answer = SAMPLE[1]["content"]
    ends = [single[single.rindex(answer) + len(answer) :], multi[multi.index(answer) + len(answer) :]]
    eos = next((m for end in ends for m in markers if end.lstrip().startswith(m)), "</s>")
    return [m for m in markers if m != BOS], eos


def build_template_checkpoint(name: str, output_dir: str | Path, data_dir: str | Path, seed: int = 0) -> Path:
    """A tiny random checkpoint that ships the chat template `name` (see template_names)."""
    template = template_text(name)
    markers, eos = _markers_and_eos(template) if template else ([], "</s>")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = list(dict.fromkeys([BOS, PAD, eos, *markers]))
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tokenizer.train_from_iterator(iter_data_folder_texts(data_dir), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=eos, pad_token=PAD, chat_template=template,
        additional_special_tokens=[m for m in markers if m != eos], model_max_length=SIZES["max_position_embeddings"],
        model_input_names=["input_ids", "attention_mask"],
    )  # fmt: skip
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    config = AutoConfig.for_model(architecture(name), vocab_size=len(tokenizer), **SIZES, **ids)
    set_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(**ids)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir
