"""GPT-2 small's shape (12 layers x 768, 1024 positions) pre-trained from scratch through recipes/pretrain.py, with
recipes/gpt2-124m/pretrain.yaml (bf16, fused AdamW, SDPA, torch.compile, vocabulary padded to a multiple of 64):
real tokens/s, MFU (nanoGPT's count over the GPU's dense bf16 peak) and peak memory.

    python benchmarks/gpu_pretrain.py            # on a GPU; writes benchmarks/gpu_pretrain.json
    python benchmarks/gpu_pretrain.py --micro    # a 2-layer model for a few CPU steps: the test suite runs this

The corpus is generated: rows of the Alice sentences, shuffled and joined until longer than the context, so every
training sequence is a full 1024 tokens with no padding.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from gpu_common import count_real_tokens, metered, report  # noqa: E402
from toyllm.recipes import pretrain  # noqa: E402

from toyllm.args import parse_recipe_args  # noqa: E402
from toyllm.data import DATA_FILES  # noqa: E402

MICRO = {"n_layer": 2, "n_head": 4, "n_embd": 64, "n_inner": 256, "n_positions": 64}


def write_corpus(folder: Path, rows: int, words_per_row: int, seed: int = 0) -> None:
    sentences = [json.loads(line)["text"] for line in (REPO / "data" / "pretrain.jsonl").read_text().splitlines()]
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    lines = []
    for _ in range(rows):
        words: list[str] = []
        while len(words) <= words_per_row:
            words += rng.choice(sentences).split()
        lines.append(json.dumps({"text": " ".join(words)}) + "\n")
    (folder / DATA_FILES["pretrain"]).write_text("".join(lines))
    for kind, name in DATA_FILES.items():  # the vocabulary is trained on the folder; only the corpus has text here
        if kind != "pretrain":
            (folder / name).write_text("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro", action="store_true", help="a 2-layer model for a few CPU steps")
    parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps (default: the YAML's, 6 with --micro)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="steps left out of the measurement (20; 2 micro)")
    parser.add_argument("--output", default=None, help="JSON result (default: benchmarks/gpu_pretrain.json)")
    args = parser.parse_args()
    steps = args.steps or (6 if args.micro else 300)
    warmup = args.warmup if args.warmup is not None else (2 if args.micro else 20)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = REPO / "recipes" / "gpt2-124m"
        if args.micro:
            shutil.copytree(model_dir, tmp / "model")
            config = json.loads((tmp / "model" / "config.json").read_text()) | MICRO
            (tmp / "model" / "config.json").write_text(json.dumps(config))
            model_dir = tmp / "model"
        context = json.loads((model_dir / "config.json").read_text())["n_positions"]
        batch = 4 if args.micro else 16
        write_corpus(tmp / "corpus", rows=steps * batch, words_per_row=context + 16)
        overrides = [
            "--config", str(REPO / "recipes" / "gpt2-124m" / "pretrain.yaml"),
            "--toy_config_dir", str(model_dir), "--data_dir", str(tmp / "corpus"),
            "--dataset_name", str(tmp / "corpus" / DATA_FILES["pretrain"]),
            "--model_name_or_path", str(tmp / "random"), "--output_dir", str(tmp / "pretrain"),
            "--max_steps", str(steps), "--per_device_train_batch_size", str(batch),
        ]  # fmt: skip
        if args.micro:  # CPU: no compilation, no fused optimizer, no worker processes
            overrides += ["--torch_compile", "false", "--optim", "adamw_torch", "--dataloader_num_workers", "0"]
        parsed = parse_recipe_args(pretrain.ARGUMENT_TYPES, overrides)
        count_real_tokens(parsed[1])
        with metered(warmup) as meter:
            pretrain.main(*parsed)
        output = args.output or (tmp / "result.json" if args.micro else Path(__file__).with_name("gpu_pretrain.json"))
        report("pretrain, GPT-2 small shape" + (" (micro)" if args.micro else ""), meter, context, output,
               goal_mfu=0.40)  # fmt: skip


if __name__ == "__main__":
    main()
