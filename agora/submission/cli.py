"""``agora-finetune submit``: build a leaderboard zip from finished runs, or check one."""

from __future__ import annotations

import argparse
import sys
import warnings

from agora.errors import AgoraError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agora-finetune submit",
        description="Build a GLUE / SuperGLUE / RACE submission zip from finished runs, or check a zip.",
        epilog="Examples: agora-finetune submit glue runs/ -o glue.zip ; "
               "agora-finetune submit superglue runs/ --run RTE=runs/rte-7 -o superglue.zip ; "
               "agora-finetune submit --check glue.zip",
    )
    parser.add_argument("benchmark", nargs="?", help="glue, superglue or race (with --check: optional)")
    parser.add_argument("runs", nargs="*", help="run dirs, exported models, or folders holding them")
    parser.add_argument("-o", "--output", help="the zip to write (default: <benchmark>.zip)")
    parser.add_argument("--run", action="append", default=[], metavar="TASK=DIR",
                        help="this run predicts TASK (a task or file name: MNLI, AX, RTE); wins over found runs")
    parser.add_argument("--allow-missing", action="store_true",
                        help="write the files that exist and list the absent ones (for iterating)")
    parser.add_argument("--data-dir", help="benchmark files (default: each run's data.dir, else $AGORA_DATA_DIR)")
    parser.add_argument("--check", metavar="ZIP", help="check a submission zip (made by anyone) and exit")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from agora import submission

        if args.check:
            if args.runs:
                parser.error("--check takes a zip and, optionally, the benchmark; not run dirs")
            report = submission.check(args.check, args.benchmark, args.data_dir)
            for note in report.notes:
                print(f"note: {note}", file=sys.stderr)
            total = sum(report.files.values())
            print(f"{args.check}: a valid {report.benchmark} submission ({len(report.files)} files, {total} rows)")
            return 0
        if not args.benchmark:
            parser.error("name the benchmark: agora-finetune submit glue|superglue|race RUNS... -o OUT.zip")
        overrides = {}
        for item in args.run:
            task, sep, path = item.partition("=")
            if not sep or not task or not path:
                parser.error(f"--run expects TASK=DIR, got '{item}'")
            overrides[task] = path
        with warnings.catch_warnings():  # the banner below says it, louder
            warnings.simplefilter("ignore", submission.SubmissionIncomplete)
            report = submission.build(args.benchmark, args.runs, args.output, run_overrides=overrides,
                                      allow_missing=args.allow_missing, data_dir=args.data_dir)
    except AgoraError as err:
        print(f"agora-finetune submit: error: {err}", file=sys.stderr)
        return 2
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(report.summary())
    if report.missing:
        bar = "!" * 78
        lines = [bar, f"!! INCOMPLETE: {len(report.missing)} file(s) missing from {report.out}; "
                      "the leaderboard needs every file:"]
        lines += [f"!!   {name}: {why}" for name, why in report.missing.items()]
        lines.append(bar)
        print("\n".join(lines), file=sys.stderr)
    return 0
