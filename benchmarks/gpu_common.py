"""What the GPU benchmarks share: the GPU's dense bf16 peak, nanoGPT's FLOPs count, and a steady-state meter read
from the Trainer's own token count (`include_num_input_tokens_seen: non_padding`).

Each benchmark runs a recipe's main() unchanged; the meter is attached by wrapping `Trainer.train`, which every
trainer of ours (transformers' and TRL's) inherits.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, in FLOP/s; first match on the name wins.
PEAK_BF16_FLOPS = {
    "H100 PCIe": 756e12,
    "H100": 989e12,  # SXM
    "H200": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
}


def device() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def peak_flops(name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def flops_per_token(model, seq_len: int) -> float:
    """nanoGPT's count: 6N + 12·L·H·Q·T, N the parameters without position embeddings, L layers, H heads, Q the
    head size, T the sequence length."""
    config = model.config
    n = sum(p.numel() for p in model.parameters())
    positions = getattr(getattr(model, "transformer", None), "wpe", None)  # GPT-2's learned position embeddings
    n -= positions.weight.numel() if positions is not None else 0
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    head_size = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 6 * n + 12 * layers * heads * head_size * seq_len


class Meter(TrainerCallback):
    """Tokens and seconds between the end of step `warmup` (compilation and allocator warm-up done) and the end."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.model = warmup, None, None
        self.tokens = self.seconds = self.steps = 0

    def _now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = model
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = (self._now(), state.num_input_tokens_seen, state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.start is None:
            raise SystemExit(f"the run ended before step {self.warmup}: give it more steps than the warm-up")
        now = self._now()
        self.seconds = now - self.start[0]
        self.tokens = state.num_input_tokens_seen - self.start[1]
        self.steps = state.global_step - self.start[2]


@contextlib.contextmanager
def metered(warmup: int):
    meter, train = Meter(warmup), Trainer.train

    def train_with_meter(self, *args, **kwargs):
        self.add_callback(meter)
        return train(self, *args, **kwargs)

    Trainer.train = train_with_meter
    try:
        yield meter
    finally:
        Trainer.train = train


def count_real_tokens(training_args) -> None:
    """The Trainer's own count of non-padding tokens. Set here, not in a YAML: transformers 5 types the field
    `str | bool` and its argument parser reads a bool, so "non_padding" cannot come from the command line."""
    training_args.include_num_input_tokens_seen = "non_padding"


def report(name: str, meter: Meter, seq_len: int, output: str | Path, **extra) -> dict:
    gpu = device()
    tokens_per_s = meter.tokens / meter.seconds
    flops = flops_per_token(meter.model, seq_len)
    peak = peak_flops(gpu)
    result = {
        "benchmark": name, "device": gpu, "steps_measured": meter.steps, "tokens_per_s": tokens_per_s,
        "flops_per_token": flops, "mfu": tokens_per_s * flops / peak if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "parameters": sum(p.numel() for p in meter.model.parameters()), **extra,
    }  # fmt: skip
    mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "n/a (no bf16 peak known for this device)"
    memory = f"{result['peak_memory_gib']:.1f} GiB" if result["peak_memory_gib"] is not None else "n/a"
    print(f"{name} on {gpu}: {tokens_per_s:,.0f} tokens/s (real tokens), MFU {mfu}, peak memory {memory}")
    Path(output).write_text(json.dumps(result, indent=2) + "\n")
    return result
