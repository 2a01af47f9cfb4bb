"""The `toyllm` command line: `toyllm demo` runs the whole pipeline."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toyllm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="random → pretrain → SFT → reward → PPO → DPO, then compare the stages")
    demo.add_argument("--data-dir", default="data", help="folder holding the five JSONL files (default: data)")
    demo.add_argument("--output-dir", default="outputs/toy", help="where checkpoints and the report go")
    demo.add_argument("--seed", type=int, default=0)

    args = parser.parse_args(argv)
    if args.command == "demo":
        from toyllm.demo import run_demo

        run_demo(args.data_dir, args.output_dir, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
