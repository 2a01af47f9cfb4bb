"""The `toyllm` command line: `toyllm demo` runs the whole pipeline; generate, chat and compare try its checkpoints.

Each command imports what it runs when it runs (the `run_*` functions): the training stack (torch, transformers,
TRL) takes seconds to import, which `toyllm --help`, `push` or a mistyped flag should not wait for.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from toyllm.defaults import CHAT_MAX_NEW_TOKENS, FEEDBACK_ROUNDS, LABEL_SAMPLES
from toyllm.errors import RESUME_HINT, UserError, exit_on_user_error
from toyllm.stages import ALL_RECIPES


def run_demo(args: argparse.Namespace) -> None:
    from toyllm.demo import TOY, real_model_chain, run_demo

    if args.recipes is not None and args.model is None:
        raise UserError("--recipes: a real model's recipe folder; give --model too (the toy reads recipes/toy)")
    chain = TOY if args.model is None else real_model_chain(args.model, args.recipes)
    output_dir = args.output_dir or ("outputs/toy" if args.model is None else f"outputs/{model_name(args.model)}")
    run_demo(args.data_dir, output_dir, args.seed, args.overwrite, args.feedback_rounds, chain)


def model_name(model: str) -> str:
    """A run folder's name for a model: `SmolLM2-135M-Instruct.Q4_1` for a GGUF file, the last part of a path or id."""
    name = model.rstrip("/").rsplit("/", 1)[-1]
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def run_story(args: argparse.Namespace) -> None:
    import sys

    from toyllm.resources import shipped_path, story_template
    from toyllm.story import answers_outside_story, write_data_folder

    if args.template:
        print(story_template(), end="")
        return
    if args.story is None:
        raise UserError("give a story file (toyllm story --template prints one to start from)")
    output_dir = Path(args.output_dir) if args.output_dir else Path(args.story).with_suffix("")
    story_file = shipped_path(args.story)  # data/alice.md names the shipped copy outside a checkout
    story, counts = write_data_folder(story_file, output_dir, overwrite=args.overwrite)
    for card in answers_outside_story(story):
        print(f"note: {story_file}:{card.line}: the answer {card.answer!r} is no sentence of the story; the toy model "
              "says only what it read, so PPO can reach it only through the judge", file=sys.stderr)  # fmt: skip
    print(f"{output_dir}: {counts['pretrain']} story sentences, {counts['trained']} flashcards, {counts['held_out']} "
          f"held-out and {counts['unseen']} unseen questions, {counts['preference']} preference pairs\n"
          f"next: toyllm demo --data-dir {output_dir}")  # fmt: skip


def run_app(args: argparse.Namespace) -> None:
    from toyllm.app import build_app, stage_space

    hide_loading_bars()
    if args.space_dir:
        space = stage_space(args.output_dir, args.space_dir, args.data_dir)
        print(f"{space}: a Gradio Space serving {args.output_dir}\nnext: hf upload YOUR-NAME/SPACE-NAME {space} "
              "--repo-type space")  # fmt: skip
        return
    page = build_app(args.output_dir, args.data_dir)
    page.launch(server_name=args.host, server_port=args.port, share=args.share)


def run_label(args: argparse.Namespace) -> None:
    from toyllm.feedback import Labelling, label_round
    from toyllm.resources import default_data_dir

    pairs, judge_data = label_round(args.policy, args.data_dir or default_data_dir(), args.round, args.output_dir,
                                    Labelling(args.samples, args.seed), args.overwrite)  # fmt: skip
    print(f"{pairs}\n{judge_data}")


def run_recipe(args: argparse.Namespace) -> int:
    """`toyllm sft --config toy/sft.yaml ...`, as `trl sft` runs TRL's scripts: in this process, or through
    `accelerate launch` when processes or an accelerate config are asked for. A user's mistake is one line and exit
    code 2 either way: the launcher's own traceback about the failed child is not printed."""
    module = f"toyllm.recipes.{args.command}"
    if args.num_processes is None and args.accelerate_config is None:
        import importlib

        from toyllm.args import parse_recipe_args

        recipe = importlib.import_module(module)
        recipe.main(*parse_recipe_args(recipe.ARGUMENT_TYPES, args.recipe_args))
        return 0
    from accelerate.commands.launch import launch_command, launch_command_parser

    options = ["--config_file", args.accelerate_config] if args.accelerate_config else []
    if not args.accelerate_config:  # accelerate's defaults, said out loud so its launcher does not warn about them
        options += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # bf16: the recipe's
    options += ["--num_processes", str(args.num_processes)] if args.num_processes else []
    try:
        launch_command(launch_command_parser().parse_args([*options, "-m", module, *args.recipe_args]))
    except subprocess.CalledProcessError as error:  # one process: the child already printed its own line
        return error.returncode
    except Exception as error:  # torchrun's ChildFailedError: each child printed its own line
        codes = [failure.exitcode for failure in getattr(error, "failures", {}).values()]
        if not codes:
            raise
        return max(codes)
    return 0


def run_generate(args: argparse.Namespace) -> None:
    from toyllm.chat import generate

    print(generate(args.model, args.question, sampling_options(args), args.as_text))


def run_chat(args: argparse.Namespace) -> int:
    from toyllm.chat import chat_loop

    return chat_loop(args.model, sampling_options(args), args.system, args.history)


def run_compare(args: argparse.Namespace) -> None:
    from toyllm.compare import run_compare

    hide_loading_bars()
    run_compare(args.model, args.eval, args.reward_model, args.output_dir, args.data_dir)


def run_merge(args: argparse.Namespace) -> None:
    from toyllm.merge import merge_adapter

    merge_adapter(args.adapter, args.output)


def run_push(args: argparse.Namespace) -> None:
    from toyllm.hub import push_folder

    print(push_folder(args.model, args.repo_id, private=args.private or None))


def hide_loading_bars() -> None:
    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars would clutter the answers


def sampling_options(args: argparse.Namespace):
    from toyllm.chat import Sampling

    hide_loading_bars()
    return Sampling(args.max_new_tokens, args.do_sample, args.temperature, args.top_p, args.seed)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toyllm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for add_command in (_add_demo, _add_story, _add_app, _add_label, _add_recipes, _add_merge, _add_push,
                        _add_generate, _add_chat, _add_compare):  # fmt: skip
        add_command(commands)
    return parser


def _add_demo(commands) -> None:
    demo = commands.add_parser("demo", help="random → pretrain → SFT → reward → PPO → DPO, then compare the stages")
    demo.add_argument(
        "--data-dir",
        default=None,
        help="folder holding the five JSONL files (default: the Alice story shipped with toyllm, data/ in a checkout)",
    )
    demo.add_argument(
        "--model",
        default=None,
        help="a real instruct model, a folder, Hub id or .gguf file (make real-model fetches one): instruct → SFT → "
        "reward → PPO → RLOO → DPO with the YAMLs of --recipes",
    )
    demo.add_argument(
        "--recipes",
        default=None,
        help="with --model: a folder of recipe YAMLs and its demo.yaml, sized for that model and machine (default: "
        "recipes/smollm2-135m, LoRA for a ~100M-parameter model on a CPU; recipes/qwen2.5-0.5b for one GPU)",
    )
    demo.add_argument(
        "--output-dir",
        default=None,
        help="where checkpoints and the report go (default: outputs/toy, or outputs/<model's name> with --model)",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--overwrite", action="store_true", help="replace checkpoints made from another config or data")
    demo.add_argument(
        "--feedback-rounds",
        type=positive_int,
        default=None,
        help=f"rounds of PPO; after each but the last, its answers are labelled and the judge retrained (default: "
        f"{FEEDBACK_ROUNDS}; with --model, the recipe folder's demo.yaml says)",
    )
    demo.set_defaults(func=run_demo, resume_hint="run the same command again: finished stages are skipped")


def _add_story(commands) -> None:
    story = commands.add_parser("story", help="make a data folder from a story in one Markdown file (data/alice.md)")
    story.add_argument("story", nargs="?", default=None, help="the story file: its sentences, flashcards, held-out "
                       "and unseen questions (toyllm story --template prints the form)")  # fmt: skip
    story.add_argument("--output-dir", default=None, help="the data folder to write (default: the story file's path "
                       "without .md, data/alice.md -> data/alice)")  # fmt: skip
    story.add_argument("--overwrite", action="store_true", help="replace the data files the folder already holds")
    story.add_argument("--template", action="store_true", help="print a story file to copy and fill in")
    story.set_defaults(func=run_story)


def _add_app(commands) -> None:
    app = commands.add_parser("app", help="a web page over a finished run: ask every stage at once (Gradio)")
    app.add_argument("--output-dir", default="outputs/toy", help="the run folder (default: outputs/toy)")
    app.add_argument("--data-dir", default=None, help="the story's data folder, for the 'sentence of the story' mark "
                     "(default: the one the run recorded)")  # fmt: skip
    app.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1, this machine only)")
    app.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    app.add_argument("--share", action="store_true", help="also open a temporary public link through Gradio")
    app.add_argument("--space-dir", default=None, help="write a Hugging Face Space serving the run into this new "
                     "folder instead of serving it (docs/app.md says what goes up)")  # fmt: skip
    app.set_defaults(func=run_app)


def _add_label(commands) -> None:
    label = commands.add_parser("label", help="label a policy's sampled answers: a feedback round's preference pairs")
    label.add_argument("--policy", required=True, help="the PPO checkpoint whose answers are labelled")
    label.add_argument(
        "--data-dir", default=None, help="the data folder: its prompts and known answers (default: the Alice story)"
    )
    label.add_argument("--round", type=positive_int, required=True, help="the round number n: feedback/round-n.jsonl")
    label.add_argument("--output-dir", default="outputs/toy", help="feedback/ goes here (default: outputs/toy)")
    label.add_argument("--samples", type=positive_int, default=LABEL_SAMPLES,
                       help=f"answers sampled per prompt (default: {LABEL_SAMPLES})")  # fmt: skip
    label.add_argument("--seed", type=int, default=0)
    label.add_argument("--overwrite", action="store_true", help="replace pairs labelled from another policy")
    label.set_defaults(func=run_label)


def _add_recipes(commands) -> None:
    for name in ALL_RECIPES:
        recipe = commands.add_parser(name, add_help=False, help=f"run recipes/{name}.py: --config toy/{name}.yaml "
                                     "or your own YAML, then any TRL flag (--help lists them)")  # fmt: skip
        recipe.add_argument("--num_processes", type=positive_int, default=None, help="launch through accelerate")
        recipe.add_argument("--accelerate_config", default=None, help="an accelerate config file to launch with")
        recipe.set_defaults(func=run_recipe)


def _add_merge(commands) -> None:
    merge = commands.add_parser("merge", help="merge a LoRA adapter into its base model: a full checkpoint")
    merge.add_argument("--adapter", required=True, help="folder a LoRA stage saved (adapter_config.json)")
    merge.add_argument("--output", required=True, help="where the merged checkpoint goes")
    merge.set_defaults(func=run_merge)


def _add_push(commands) -> None:
    push = commands.add_parser("push", help="upload a checkpoint folder to the Hugging Face Hub")
    push.add_argument("--model", required=True, help="checkpoint folder, e.g. outputs/toy/sft")
    push.add_argument("--repo-id", required=True, help="Hub repository, e.g. your-name/toyllm-sft")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.set_defaults(func=run_push)


def _sampling_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--model", required=True, help="checkpoint folder with a chat template (outputs/toy/dpo), "
                         "a LoRA adapter folder, or a .gguf file")  # fmt: skip
    command.add_argument("--max-new-tokens", type=positive_int, default=CHAT_MAX_NEW_TOKENS,
                         help=f"longest answer in tokens (default: {CHAT_MAX_NEW_TOKENS})")  # fmt: skip
    command.add_argument("--do-sample", action="store_true", help="sample instead of answering greedily")
    command.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --do-sample)")
    command.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --do-sample)")
    command.add_argument("--seed", type=int, default=None, help="random seed, for repeatable sampling")


def _add_generate(commands) -> None:
    generate = commands.add_parser("generate", help="answer one question with a checkpoint's chat template")
    _sampling_flags(generate)
    generate.add_argument("question", help='what to ask, e.g. "who was alice"')
    generate.add_argument("--as-text", action="store_true", help="ask in plain text, without the chat template, "
                          "as a base model (random, pretrain) is tried: it continues the text")  # fmt: skip
    generate.set_defaults(func=run_generate)


def _add_chat(commands) -> None:
    chat = commands.add_parser("chat", help="talk to a checkpoint in the terminal (/exit or Ctrl-D ends)")
    _sampling_flags(chat)
    chat.add_argument("--system", default=None, help="a system message to start the conversation with")
    chat.add_argument(
        "--history",
        action="store_true",
        help="keep the conversation as context (the toy is trained "
        "on single questions, so by default each line is asked on its own)",
    )
    chat.set_defaults(func=run_chat)


def _add_compare(commands) -> None:
    compare = commands.add_parser("compare", help="evaluate checkpoints side by side: tables, metrics.json, report")
    compare.add_argument(
        "--model", action="append", required=True, metavar="NAME=DIR", type=named_model,
        help="a checkpoint to compare, named in the tables (repeat the flag; DIR alone is named after its folder)",
    )  # fmt: skip
    compare.add_argument("--eval", required=True, help="eval.jsonl: {prompt, reference, split} rows")
    compare.add_argument("--reward-model", default=None, help="a reward-model folder to score the answers with")
    compare.add_argument(
        "--data-dir",
        default=None,
        help="the story's data folder: its sentences for the well-formed gauge, its pairs for the judge's accuracy "
        "(default: the eval file's folder, when it holds all five files)",
    )
    compare.add_argument(
        "--output-dir", default="outputs/compare", help="report/ goes here (default: outputs/compare)"
    )
    compare.set_defaults(func=run_compare)


def named_model(value: str) -> tuple[str, str]:
    """`NAME=DIR`, or `DIR` named after its folder."""
    name, _, path = value.partition("=") if "=" in value else ("", "", value)
    if not path:
        raise argparse.ArgumentTypeError(f"{value}: expected NAME=DIR")
    return name or Path(path.rstrip("/")).name, path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, recipe_args = parser.parse_known_args(argv)  # a recipe's own flags go to its TrlParser
    from toyllm.quiet import silence_library_noise

    silence_library_noise()  # recipes install it when they parse; merge, compare, chat, ... here
    if args.command in ALL_RECIPES:
        args.recipe_args = recipe_args
    elif recipe_args:
        parser.error(f"unrecognized arguments: {' '.join(recipe_args)}")
    if args.command == "compare":
        names = [name for name, _ in args.model]
        twice = next((name for name in names if names.count(name) > 1), None)
        if twice:
            parser.error(f"--model: the name {twice!r} is given twice")
        args.model = dict(args.model)
    with exit_on_user_error(getattr(args, "resume_hint", RESUME_HINT if args.command in ALL_RECIPES else None)):
        return args.func(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
