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
    demo.add_argument("--overwrite", action="store_true", help="replace checkpoints made from another config or data")

    merge = commands.add_parser("merge", help="merge a LoRA adapter into its base model: a full checkpoint")
    merge.add_argument("--adapter", required=True, help="folder a LoRA stage saved (adapter_config.json)")
    merge.add_argument("--output", required=True, help="where the merged checkpoint goes")

    push = commands.add_parser("push", help="upload a checkpoint folder to the Hugging Face Hub")
    push.add_argument("--model", required=True, help="checkpoint folder, e.g. outputs/toy/sft")
    push.add_argument("--repo-id", required=True, help="Hub repository, e.g. your-name/toyllm-sft")
    push.add_argument("--private", action="store_true", help="create the repository private")

    args = parser.parse_args(argv)
    if args.command == "demo":
        from toyllm.demo import run_demo
        from toyllm.stage import exit_on_user_error

        with exit_on_user_error("run the same command again: finished stages are skipped"):
            run_demo(args.data_dir, args.output_dir, args.seed, overwrite=args.overwrite)
    if args.command == "merge":
        from toyllm.merge import merge_adapter
        from toyllm.stage import exit_on_user_error

        with exit_on_user_error():
            merge_adapter(args.adapter, args.output)
    if args.command == "push":
        from toyllm.hub import push_folder
        from toyllm.stage import exit_on_user_error

        with exit_on_user_error():
            print(push_folder(args.model, args.repo_id, private=args.private or None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
