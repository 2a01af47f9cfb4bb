"""SFT of a Qwen2.5-0.5B-shaped model (24 layers x 896, GQA 14/2 heads, 151,936-token vocabulary; random weights,
built from a config, nothing downloaded) through recipes/sft.py with recipes/qwen2.5-0.5b/sft.yaml and its GPU
settings: real tokens/s, MFU and peak memory.

    python benchmarks/gpu_sft.py            # on a GPU; writes benchmarks/gpu_sft.json
    python benchmarks/gpu_sft.py --micro    # a 2-layer model for a few CPU steps: the test suite runs this

Conversations are generated from the Alice flashcards, with answers of 50 to 400 words, so batches mix lengths the
way chat data does. Padding-free batches need a FlashAttention kernel: with `flash_attn` installed they are used
(`--padding_free`), otherwise SDPA with batches grouped by length. Liger kernels are used where `liger_kernel` is
installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(REPO / "tests"))

from gpu_common import count_real_tokens, metered, report  # noqa: E402
from realmodels import train_bpe_tokenizer  # noqa: E402
from toyllm.recipes import sft  # noqa: E402
from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config, set_seed  # noqa: E402

from toyllm.args import parse_recipe_args  # noqa: E402

QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6)  # fmt: skip
MICRO = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=1024, max_position_embeddings=512)  # fmt: skip


def build_model(folder: Path, sizes: dict) -> Path:
    tokenizer = train_bpe_tokenizer(REPO / "data")
    tokenizer.model_max_length = sizes["max_position_embeddings"]
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    set_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen2Config(tie_word_embeddings=True, **sizes, **ids))
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_conversations(path: Path, rows: int, longest: int, seed: int = 0) -> None:
    read = lambda name: [json.loads(line) for line in (REPO / "data" / name).read_text().splitlines()]  # noqa: E731
    cards = [row["messages"] for row in read("sft.jsonl")]
    sentences = [row["text"] for row in read("pretrain.jsonl")]
    rng = random.Random(seed)
    lines = []
    for _ in range(rows):
        question = next(m["content"] for m in rng.choice(cards) if m["role"] == "user")
        words: list[str] = []
        target = rng.randint(longest // 8, longest)
        while len(words) < target:
            words += rng.choice(sentences).split()
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": " ".join(words)}]
        lines.append(json.dumps({"messages": messages}) + "\n")
    path.write_text("".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro", action="store_true", help="a 2-layer model for a few CPU steps")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: 60, 6 with --micro)")
    parser.add_argument("--warmup", type=int, default=None, help="steps left out of the measurement (10; 2 micro)")
    parser.add_argument("--output", default=None, help="JSON result (default: benchmarks/gpu_sft.json)")
    args = parser.parse_args()
    steps = args.steps or (6 if args.micro else 60)
    warmup = args.warmup if args.warmup is not None else (2 if args.micro else 10)
    batch, accumulation = (2, 1) if args.micro else (8, 4)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_model(tmp / "base", MICRO if args.micro else QWEN25_05B)
        data = tmp / "sft.jsonl"
        write_conversations(data, rows=steps * batch * accumulation, longest=40 if args.micro else 400)
        max_length = 128 if args.micro else 2048
        overrides = [
            "--config", str(REPO / "recipes" / "qwen2.5-0.5b" / "sft.yaml"),
            "--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", str(tmp / "sft"),
            "--eos_token", "<|im_end|>", "--max_steps", str(steps), "--max_length", str(max_length),
            "--per_device_train_batch_size", str(batch), "--gradient_accumulation_steps", str(accumulation),
            "--save_strategy", "no", "--logging_steps", "5", "--truncate_long_rows", "true",
        ]  # fmt: skip
        if importlib.util.find_spec("flash_attn") and not args.micro:
            overrides += ["--attn_implementation", "flash_attention_2", "--padding_free", "true"]
        else:
            overrides += ["--train_sampling_strategy", "group_by_length"]
        if importlib.util.find_spec("liger_kernel") and not args.micro:
            overrides += ["--use_liger_kernel", "true"]
        if args.micro:  # CPU: no gradient checkpointing needed, fp32
            overrides += ["--activation_checkpointing", "false"]
        parsed = parse_recipe_args(sft.ARGUMENT_TYPES, overrides)
        count_real_tokens(parsed[1])
        with metered(warmup) as meter:
            sft.main(*parsed)
        output = args.output or (tmp / "result.json" if args.micro else Path(__file__).with_name("gpu_sft.json"))
        settings = {k: v for k, v in zip(overrides[::2], overrides[1::2]) if k.startswith("--") and "dir" not in k}
        mean_length = meter.tokens / (meter.steps * batch * accumulation)  # attention FLOPs grow with the real length
        report("SFT, Qwen2.5-0.5B shape" + (" (micro)" if args.micro else ""), meter, round(mean_length), output,
               goal_mfu=0.35, settings=settings)  # fmt: skip


if __name__ == "__main__":
    main()
