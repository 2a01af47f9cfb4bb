"""The `toyllm` command line: `toyllm demo` runs the whole pipeline; generate, chat and compare try its checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

from toyllm.validate import exit_on_user_error


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

    def sampling_flags(command: argparse.ArgumentParser) -> None:
        command.add_argument("--model", required=True, help="checkpoint folder with a chat template (outputs/toy/dpo)")
        command.add_argument("--max-new-tokens", type=int, default=32, help="longest answer in tokens (default: 32)")
        command.add_argument("--do-sample", action="store_true", help="sample instead of answering greedily")
        command.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --do-sample)")
        command.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --do-sample)")
        command.add_argument("--seed", type=int, default=None, help="random seed, for repeatable sampling")

    generate = commands.add_parser("generate", help="answer one question with a checkpoint's chat template")
    sampling_flags(generate)
    generate.add_argument("question", help='what to ask, e.g. "who was alice"')

    chat = commands.add_parser("chat", help="talk to a checkpoint in the terminal (/exit or Ctrl-D ends)")
    sampling_flags(chat)
    chat.add_argument("--system", default=None, help="a system message to start the conversation with")

    compare = commands.add_parser("compare", help="evaluate checkpoints side by side: tables, metrics.json, report")
    compare.add_argument(
        "--model", action="append", required=True, metavar="NAME=DIR",
        help="a checkpoint to compare, named in the tables (repeat the flag; DIR alone is named after its folder)",
    )  # fmt: skip
    compare.add_argument("--eval", required=True, help="eval.jsonl: {prompt, reference, split} rows")
    compare.add_argument("--reward-model", default=None, help="a reward-model folder to score the answers with")
    compare.add_argument(
        "--output-dir", default="outputs/compare", help="report/ goes here (default: outputs/compare)"
    )

    args = parser.parse_args(argv)
    if args.command in {"generate", "chat", "compare"}:
        import transformers

        transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars would clutter the answers
    if args.command in {"generate", "chat"}:
        sampling = dict(max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, temperature=args.temperature,
                        top_p=args.top_p, seed=args.seed)  # fmt: skip
        if args.max_new_tokens < 1:
            parser.error("--max-new-tokens must be at least 1")
        if args.command == "generate":
            from toyllm.chat import generate as generate_answer

            with exit_on_user_error(None):
                print(generate_answer(args.model, args.question, **sampling))
        else:
            from toyllm.chat import chat_loop

            with exit_on_user_error(None):
                return chat_loop(args.model, system=args.system, **sampling)
    if args.command == "compare":
        from toyllm.report import run_compare

        with exit_on_user_error(None):
            run_compare(parse_named_models(parser, args.model), args.eval, args.reward_model, args.output_dir)
    if args.command == "demo":
        from toyllm.demo import run_demo

        with exit_on_user_error("run the same command again: finished stages are skipped"):
            run_demo(args.data_dir, args.output_dir, args.seed, overwrite=args.overwrite)
    if args.command == "merge":
        from toyllm.merge import merge_adapter

        with exit_on_user_error(None):
            merge_adapter(args.adapter, args.output)
    if args.command == "push":
        from toyllm.hub import push_folder

        with exit_on_user_error(None):
            print(push_folder(args.model, args.repo_id, private=args.private or None))
    return 0


def parse_named_models(parser: argparse.ArgumentParser, values: list[str]) -> dict[str, str]:
    """`NAME=DIR` (or `DIR`, named after its folder) for each --model, names unique and in the given order."""
    models: dict[str, str] = {}
    for value in values:
        name, _, path = value.partition("=") if "=" in value else ("", "", value)
        name = name or Path(path.rstrip("/")).name
        if not path:
            parser.error(f"--model {value}: expected NAME=DIR")
        if name in models:
            parser.error(f"--model {value}: the name {name!r} is given twice")
        models[name] = path
    return models


if __name__ == "__main__":
    raise SystemExit(main())
