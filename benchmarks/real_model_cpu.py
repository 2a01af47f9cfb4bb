"""A real model on the CPU: LoRA SFT and DPO of SmolLM2-135M-Instruct through the shipped recipes, at 1 and 2 threads.

    make real-model && python benchmarks/real_model_cpu.py [--steps 8] [--threads 1 2]

For each thread count, each measurement in a fresh process (so its peak resident memory is its own):
- `matmul`: this machine's fp32 matmul FLOP/s (2048 x 2048, best of 5), the ceiling the others are compared with;
- `sft`: the SFT recipe with `recipes/smollm2-135m/sft.yaml` on Alice's flashcards, `--steps` optimizer steps:
  seconds per step and tokens/s from the Trainer's own `train_runtime` and `num_tokens` (loading left out);
- `loop`: a plain PyTorch + peft loop over the very batches SFT trained on (the same LoRA, AdamW, learning rate):
  tokens/s, and the recipe's tokens/s as a share of it;
- `dpo`: the DPO recipe with `recipes/smollm2-135m/dpo.yaml` from the SFT adapter: seconds per step and tokens/s.

Training FLOPs per token are counted as 4 x the parameters a token passes through (forward 2, backward to the
activations 2; LoRA's own weights and the frozen weights' gradients, never computed, are left out), so `flops_share`
is the fraction of the measured matmul rate that training reaches. Results go to real_model_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GGUF = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
YAMLS = REPO / "recipes" / "smollm2-135m"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul(size: int = 2048, repeats: int = 5) -> dict:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    best = min(_timed(lambda: torch.matmul(a, b)) for _ in range(repeats))
    return {"flops_per_s": 2 * size**3 / best}


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def recipe(stage: str, output_dir: Path, steps: int, *extra: str) -> dict:
    from toyllm.recipes import dpo, sft

    from toyllm.args import parse_recipe_args

    module = {"sft": sft, "dpo": dpo}[stage]
    args = ["--config", str(YAMLS / f"{stage}.yaml"), "--output_dir", str(output_dir), "--max_steps", str(steps),
            "--save_strategy", "no", "--logging_steps", "1", "--report_to", "none", *extra]  # fmt: skip
    module.main(*parse_recipe_args(module.ARGUMENT_TYPES, args))
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    runtime = next(log["train_runtime"] for log in history if "train_runtime" in log)
    tokens = max((log.get("num_tokens", 0) for log in history), default=0)
    result = {"seconds_per_step": runtime / steps, "train_runtime": runtime}
    if tokens:
        result["tokens_per_s"] = tokens / runtime
    return result


def sft_batches(steps: int):
    """The batches the SFT recipe trains on, rebuilt the way the recipe builds them (its collator, its order)."""
    from toyllm.recipes import sft
    from trl import SFTTrainer

    from toyllm.args import parse_recipe_args
    from toyllm.data import load_splits
    from toyllm.model import load_causal_lm
    from toyllm.replay import mix_replay, replay_answers
    from toyllm.tokenizer import fit_loss_to_template, load_tokenizer
    from toyllm.versions import allow_padding_free

    args = ["--config", str(YAMLS / "sft.yaml"), "--output_dir", tempfile.mkdtemp(), "--max_steps", str(steps),
            "--model_name_or_path", str(GGUF)]  # fmt: skip
    script_args, training_args, model_args = parse_recipe_args(sft.ARGUMENT_TYPES, args)
    tokenizer = load_tokenizer(model_args)
    model = load_causal_lm(model_args.model_name_or_path, model_args, tokenizer)
    train, _ = load_splits(script_args, "flashcards", tokenizer, training_args.max_length, False)
    answers = replay_answers(script_args, model, tokenizer, training_args.max_length)
    train = mix_replay(train, answers, script_args.replay_fraction, training_args.seed)
    (train,) = fit_loss_to_template(tokenizer, training_args, "smollm2", train)
    allow_padding_free(training_args)
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=train, processing_class=tokenizer)
    loader = trainer.get_train_dataloader()
    batches = []
    while len(batches) < steps:
        batches += list(loader)
    return model, batches[:steps], training_args.learning_rate


def loop(steps: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    model, batches, learning_rate = sft_batches(steps)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))  # fmt: skip
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    model.train()
    tokens, start = 0, time.perf_counter()
    for batch in batches:
        inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids") if key in batch}
        out = model(**inputs, labels=batch["labels"])  # padding-free: position ids keep the rows apart
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
    seconds = time.perf_counter() - start
    return {"seconds_per_step": seconds / steps, "tokens_per_s": tokens / seconds}


def measure(what: str, steps: int, scratch: Path) -> dict:
    """One measurement in this process (run by `main` in a fresh one per measurement)."""
    if what == "matmul":
        result = matmul()
    elif what == "sft":
        result = recipe("sft", scratch / "sft", steps, "--model_name_or_path", str(GGUF))
    elif what == "loop":
        result = loop(steps)
    else:
        sft_dir = scratch / "sft-for-dpo"
        recipe("sft", sft_dir, 2, "--model_name_or_path", str(GGUF))
        result = recipe("dpo", scratch / "dpo", steps, "--model_name_or_path", str(sft_dir),
                        "--dataset_name", str(REPO / "data" / "preference.jsonl"),
                        "--flashcards_dataset_name", str(REPO / "data" / "sft.jsonl"))  # fmt: skip
    return result | {"peak_rss_mb": round(peak_mb())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # one measurement, in a child process
    parser.add_argument("--output", default=str(Path(__file__).with_name("real_model_cpu.json")))
    args = parser.parse_args()
    if args.measure:
        with tempfile.TemporaryDirectory() as scratch:
            print(json.dumps(measure(args.measure, args.steps, Path(scratch))))
        return
    if not GGUF.is_file():
        sys.exit(f"{GGUF}: not found; run make real-model first")
    results = {"machine": f"{os.cpu_count()} CPU cores, {sys.platform}", "steps": args.steps, "threads": {}}
    for threads in args.threads:
        env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        row = {}
        for what in ("matmul", "sft", "loop", "dpo"):
            command = [sys.executable, __file__, "--measure", what, "--steps", str(args.steps)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            row[what] = json.loads(done.stdout.strip().splitlines()[-1])
            print(threads, what, row[what], flush=True)
        flops_per_token = 4 * PARAMETERS_PER_TOKEN
        for what in ("sft", "loop", "dpo"):
            if "tokens_per_s" in row[what]:
                row[what]["flops_share"] = row[what]["tokens_per_s"] * flops_per_token / row["matmul"]["flops_per_s"]
        row["recipe_over_loop"] = row["sft"]["tokens_per_s"] / row["loop"]["tokens_per_s"]
        results["threads"][str(threads)] = row
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


# SmolLM2-135M: 134.5M parameters; the input embedding (49,152 x 576) is a lookup, but the same matrix is the output
# layer (tied), so every parameter takes part in a token's matmuls once.
PARAMETERS_PER_TOKEN = 134_515_008


if __name__ == "__main__":
    main()
