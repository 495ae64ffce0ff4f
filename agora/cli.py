"""``agora-finetune``: run a recipe, or build a leaderboard submission.

    agora-finetune recipes/rte.yaml                          # a recipe file
    agora-finetune rte --trainer.max_epochs 1 optim.lr=2e-5  # a shipped recipe, dotted overrides
    agora-finetune submit glue runs/ -o glue.zip             # leaderboard zip (agora.submission)
    agora-finetune submit --check glue.zip                   # check any submission zip
    agora-finetune push runs/rte-1 me/bort-rte               # upload best/ and its card (private)
"""

from __future__ import annotations

import argparse
import sys

from agora.errors import AgoraError


def split_overrides(args: list[str]) -> dict[str, object]:
    """``--a.b 3``, ``--a.b=3`` and ``a.b=3`` all set a.b to 3 (values parsed as YAML)."""
    from agora.config import parse_override
    from agora.errors import RecipeError

    out: dict[str, object] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and "=" not in arg:
            if i + 1 >= len(args):
                raise RecipeError(f"override '{arg}' has no value")
            key, value = parse_override(f"{arg[2:]}={args[i + 1]}")
            i += 2
        else:
            key, value = parse_override(arg)
            i += 1
        out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agora-finetune",
        description="Fine-tune BORT (or any Hugging Face encoder) from a recipe; Agora on or off.",
        epilog="Overrides: --section.key VALUE or section.key=VALUE, e.g. --trainer.max_epochs 1. "
               "Leaderboard zips: agora-finetune submit --help. Upload a run: agora-finetune push --help.",
    )
    parser.add_argument("recipe", help="recipe YAML path, or a shipped recipe name (rte, mnli, ...)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["submit"]:
        from agora.submission.cli import main as submit_main

        return submit_main(argv[1:])
    if argv[:1] == ["push"]:
        from agora.fit.hub import main as push_main

        try:
            return push_main(argv[1:])
        except AgoraError as err:
            print(f"agora-finetune push: error: {err}", file=sys.stderr)
            return 2
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        from agora.config import load_recipe

        cfg = load_recipe(args.recipe, split_overrides(rest))
        if args.print_config:
            from agora.data.cards import load_task

            load_task(cfg.task)  # a recipe whose task does not exist is not a valid recipe to print
            import yaml

            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            return 0
        from agora.trainer import AgoraTrainer

        AgoraTrainer(cfg, source=args.recipe).fit()
    except AgoraError as err:
        print(f"agora-finetune: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
