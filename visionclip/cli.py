"""`visionclip` command line: synth, train, evaluate, predict, book.

Each subcommand is a thin shell over one library module, imported only when used,
so that `visionclip synth` does not pay for importing torch and transformers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import load_profile, parse_override
from .errors import VisionCLIPError


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="cpu", help="profile name in profiles/ or a YAML path (default: cpu)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one profile value, e.g. --set train.lr=3e-4 (repeatable)")


def _load(args: argparse.Namespace):
    return load_profile(args.profile, dict(parse_override(o) for o in args.overrides))


def _cmd_synth(args: argparse.Namespace) -> int:
    from .synth import render_benchmarks, render_corpus

    profile = _load(args)
    out = Path(args.out or Path("runs") / profile.name / "data")
    if not args.benchmarks_only:
        render_corpus(profile, out / "corpus")
    for variant in args.variants:
        render_benchmarks(profile, out / "benchmarks" / variant, variant)
    print(f"rendered into {out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from . import train

    summary = train.run_from_args(args)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 reports
        print({k: v for k, v in summary.items() if k != "final_train"})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visionclip", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="render the synthetic corpus and the stand-in benchmark sets")
    _profile_args(p)
    p.add_argument("--out", help="output data directory (default: runs/<profile>/data)")
    p.add_argument("--variants", nargs="*", default=["test", "dev", "seen"], choices=["test", "dev", "seen"],
                   help="benchmark renderings to write (default: all three)")
    p.add_argument("--benchmarks-only", action="store_true", help="skip the corpus")
    p.set_defaults(func=_cmd_synth)

    from . import train  # light: torch is imported inside its functions

    p = sub.add_parser("train", help="pre-train VisionCLIP (or the supervised ceiling) on the corpus")
    train.add_arguments(p)
    p.set_defaults(func=_cmd_train)

    from . import predict  # light: heavy imports happen inside its functions

    p = sub.add_parser("evaluate", help="zero-shot evaluation of a saved model on one dataset")
    predict.add_evaluate_arguments(p)
    p.set_defaults(func=predict.evaluate_main)

    p = sub.add_parser("predict", help="per-class probabilities for any photographs, as CSV")
    predict.add_predict_arguments(p)
    p.set_defaults(func=predict.predict_main)

    p = sub.add_parser("book", help="execute the notebooks with papermill and build the book")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of python -m visionclip.pipeline")
    p.set_defaults(func=lambda a: __import__("visionclip.pipeline", fromlist=["main"]).main(a.rest))
    return parser


def error_line(e: BaseException) -> str:
    """The one-line message of a library error. An error raised inside a DataLoader worker reaches
    the trainer re-raised by torch with the worker's traceback in its text; keep its last line."""
    text = str(e).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        prefix = f"{type(e).__module__}.{type(e).__qualname__}: "
        text = last[len(prefix):] if last.startswith(prefix) else last
    return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VisionCLIPError as e:
        print(f"visionclip {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
