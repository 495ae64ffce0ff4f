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
from pathlib import Path

from agora.errors import AgoraError
from agora.files import disk_full


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
    """Run the command; every error ends in one line on stderr, never a raw traceback: ours (bad input)
    exit 2, a full disk or an interrupt exit 1 / 130 with what to do, anything else exit 1 with its
    traceback in a ``logs/error.log`` (:func:`unexpected`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    where: dict[str, Path] = {}
    try:
        return _run(argv, where)
    except AgoraError as err:
        print(f"agora-finetune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"agora-finetune: interrupted{resume_advice(where.get('run_dir'))}", file=sys.stderr)
        return 130
    except SystemExit as stop:  # Lightning ends a fit interrupted by Ctrl-C with SystemExit(1)
        if not isinstance(stop.__context__, KeyboardInterrupt):
            raise
        print(f"agora-finetune: interrupted{resume_advice(where.get('run_dir'))}", file=sys.stderr)
        return 130
    except Exception as err:
        full = disk_full(err)
        if full is not None:
            print(f"agora-finetune: error: no space left on the disk ({full.strerror or full}"
                  f"{': ' + str(full.filename) if full.filename else ''}); nothing partly written was kept under "
                  f"its name{resume_advice(where.get('run_dir'), 'free some space, then')}", file=sys.stderr)
            return 1
        print(unexpected(err, where.get("run_dir")), file=sys.stderr)
        return 1


def _run(argv: list[str], where: dict[str, Path]) -> int:
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
    from agora.config import load_recipe
    from agora.data.cards import load_task

    cfg = load_recipe(args.recipe, split_overrides(rest))
    card = load_task(cfg.task)  # a recipe whose task does not exist is not a valid recipe to print or run
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    from agora.fit.rundir import resolve_run_dir
    from agora.trainer import AgoraTrainer

    where["run_dir"] = resolve_run_dir(cfg.output.dir, card.name)  # the fit takes the same (AGORA_RUN_DIR)
    AgoraTrainer(cfg, source=args.recipe).fit()
    return 0


def resume_advice(run_dir: Path | None, then: str = "") -> str:
    """What a stopped run can do next: continue from what it saved, only where it saved something."""
    lead = f"; {then} " if then else "; "
    if run_dir is not None and (run_dir / "search" / "state.json").is_file():
        saved = "search/state.json"
    elif run_dir is not None and (run_dir / "checkpoints" / "last.ckpt").is_file():
        saved = "checkpoints/last.ckpt"
    elif not then:
        return ""
    elif run_dir is not None and run_dir.is_dir():
        return f"{lead}run it again with output.overwrite=true (nothing in {run_dir} to resume from)"
    else:
        return f"{lead}run it again (nothing was saved to resume from)"
    return (f"{lead}continue it from {run_dir / saved} with the same command and "
            f"output.dir={run_dir} output.resume_from=last")


def unexpected(err: Exception, run_dir: Path | None) -> str:
    """One line for an exception nobody anticipated: its type and message, the run dir, and the file holding
    the full traceback (``<run dir>/logs/error.log`` when the run left a dir, else a temporary file)."""
    import tempfile
    import traceback

    from agora.fit.rundir import earlier_run

    text = "".join(traceback.format_exception(err))
    log = None
    try:
        if run_dir is not None and earlier_run(run_dir) is not None:
            log = run_dir / "logs" / "error.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(text, encoding="utf-8")
        else:
            fd, name = tempfile.mkstemp(prefix="agora-finetune-error-", suffix=".log")
            with open(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            log = Path(name)
    except OSError:
        log = None
    message = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
    where = f"run dir {run_dir}" if run_dir is not None and run_dir.is_dir() else "no run dir was left"
    saved = f"full traceback in {log}" if log is not None else "the traceback could not be written"
    return (f"agora-finetune: unexpected error: {type(err).__name__}: {message} ({where}; {saved}). "
            "Please report it, with that file")


if __name__ == "__main__":
    sys.exit(main())
