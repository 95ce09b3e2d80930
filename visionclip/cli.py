"""`visionclip` command line: synth, prepare, train, evaluate, predict, book.

Every argparse shell of the package is here; each subcommand calls one library function, imported
only when used, so that `visionclip synth` does not pay for importing torch and transformers.
`python -m visionclip ...` and `torchrun ... -m visionclip train ...` come through `main`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from pathlib import Path
from typing import Iterator, Sequence

from .config import load_profile, parse_override
from .errors import ConfigError, VisionCLIPError
from .io import os_error_line
from .paths import RunLayout, default_run_dir
from .preempt import PREEMPTED_EXIT, Preempted, StopRequest
from .runlock import run_lock

DATASET_HELP = "messidor2, messidor, fives or refuge"
EXIT_CODES = f"""exit status:
  0   done
  2   bad input, or the run directory is in use by another job: a one-line message names the file,
      row, field or the job holding the run directory
  {PREEMPTED_EXIT}  stopped by SIGTERM or SIGUSR1 (a scheduler's preemption) with every finished file kept:
      the message gives the command that resumes (synth, prepare, train, book)"""


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="cpu", help="profile name in profiles/ or a YAML path (default: cpu)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one profile value, e.g. --set train.lr=3e-4 (repeatable)")


def _load(args: argparse.Namespace):
    return load_profile(args.profile, dict(parse_override(o) for o in args.overrides))


def _resume_command(args: argparse.Namespace, drop: Sequence[str] = (), add: Sequence[str] = ()) -> str:
    argv = [a for a in getattr(args, "argv", sys.argv[1:]) if a not in drop]
    return shlex.join(["visionclip", *argv, *(a for a in add if a not in argv)])


@contextlib.contextmanager
def _job(args: argparse.Namespace, run_dir: Path, drop: Sequence[str] = (),
         add: Sequence[str] = ()) -> Iterator[StopRequest]:
    """One job on run_dir: its lock, held until the command ends (however it ends), and a stop request
    (SIGTERM, SIGUSR1) whose Preempted message gains the command that resumes the work."""
    with run_lock(run_dir), StopRequest() as stop:
        try:
            yield stop
        except Preempted as e:
            raise Preempted(f"{e}; resume with: {_resume_command(args, drop, add)}") from None


# ---------------------------------------------------------------- synth

def _synth_args(p: argparse.ArgumentParser) -> None:
    _profile_args(p)
    p.add_argument("--run-dir", help="run directory whose data/ is written (default: runs/<profile>)")
    p.add_argument("--variants", nargs="*", default=["test", "dev", "seen"], choices=["test", "dev", "seen"],
                   help="benchmark renderings to write (default: all three)")
    p.add_argument("--benchmarks-only", action="store_true", help="skip the corpus")


def _cmd_synth(args: argparse.Namespace) -> int:
    from .synth.writers import render_benchmarks, render_corpus

    profile = _load(args)
    layout = RunLayout(args.run_dir or default_run_dir(profile.name))
    with _job(args, layout.root) as stop:
        if not args.benchmarks_only:
            render_corpus(profile, layout.corpus, stop=stop)
        for variant in args.variants:
            render_benchmarks(profile, layout.benchmarks(variant), variant, stop=stop)
    print(f"rendered into {layout.data}")
    return 0


# ---------------------------------------------------------------- prepare

def _prepare_args(p: argparse.ArgumentParser) -> None:
    _profile_args(p)
    p.add_argument("--run-dir", help="run directory whose data/prepared/ is written (default: runs/<profile>)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="processes (default: this machine's cores over torchrun's LOCAL_WORLD_SIZE)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .data.prepare import prepare_run

    profile = _load(args)
    workers = None if args.workers is None else max(1, _workers(args.workers))
    run_dir = Path(args.run_dir or default_run_dir(profile.name))
    with _job(args, run_dir) as stop:
        summary = prepare_run(profile, run_dir, workers=workers, progress=not args.no_progress, stop=stop)
    where = f"{summary['folder']}"
    if not summary["complete"]:  # under torchrun: other ranks still have shards to do
        print(f"prepared {summary['prepared_here']} shard(s) here into {where}; others are not complete yet")
        return 0
    print(f"prepared {summary['images']} images at {summary['size']} px into {where} "
          f"({summary['bytes'] / 2**30:.2f} GiB in {summary['shards']} shards); {summary['bad']} unreadable, "
          f"listed in {summary['bad_list']}")
    return 0


# ---------------------------------------------------------------- train

def _train_args(p: argparse.ArgumentParser) -> None:
    _profile_args(p)
    p.add_argument("--run-dir", help="run directory (default: runs/<profile>)")
    p.add_argument("--resume", action="store_true", default=True,
                   help="resume from the newest valid checkpoint when one exists (the default)")
    p.add_argument("--restart", action="store_true", help="ignore and delete existing checkpoints")
    p.add_argument("--supervised", action="store_true", help="train the label-supervised ceiling instead")
    p.add_argument("--device", help="torch device (default: this rank's GPU, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _cmd_train(args: argparse.Namespace) -> int:
    from .training import distributed

    try:
        return _train(args)
    except Exception as e:
        # Under torchrun, a rank refused before it met the others (its profile, lock or --restart) says
        # so in the rendezvous: they stop at once instead of waiting train.dist_timeout_min for it.
        # Nothing once this rank has started (then its peers learn of its exit from their collectives).
        reason = os_error_line(e) if isinstance(e, OSError) and e.errno else error_line(e)
        distributed.refuse(reason if isinstance(e, (VisionCLIPError, OSError)) else f"{type(e).__name__}: {reason}")
        raise


def _train(args: argparse.Namespace) -> int:
    from .training.loop import train_clip, train_supervised

    profile = _load(args)
    run_dir = Path(args.run_dir or default_run_dir(profile.name))
    restarts = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if args.restart and restarts.isdigit() and int(restarts) > 0:  # torchrun replays the command line
        checkpoints = RunLayout(run_dir).training("supervised" if args.supervised else "clip").checkpoints
        raise ConfigError(f"--restart: refused under torchrun's elastic restart {restarts} "
                          "(TORCHELASTIC_RESTART_COUNT): "
                          f"it would delete the checkpoints in {checkpoints} this job saved before the restart; "
                          "start over with a single `visionclip train --restart`, then launch torchrun without it")
    train = train_supervised if args.supervised else train_clip
    # every rank of the job passes the lock (runlock.job_id: torchrun's run id); a resume never restarts
    with _job(args, run_dir, drop=["--restart"]) as stop:
        summary = train(profile, run_dir, resume=not args.restart, progress=not args.no_progress,
                        device=args.device, stop=stop)
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 reports
            print({k: v for k, v in summary.items() if k != "final_train"})
            if not args.supervised:  # predict's readability checks, calibrated on the val split
                from .eval.checks import calibrate_run
                calibrate_run(profile, run_dir)
    return 0


# ---------------------------------------------------------------- evaluate

def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a saved model (run_dir/model)")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--data-root", required=True, metavar="PATH", help="the dataset in its release layout")
    p.add_argument("--language", default="zh", choices=("zh", "en"), help="prompt language (default: zh)")
    p.add_argument("--prompts", default="ek", choices=("plain", "ek"), help="prompt mode (default: ek)")
    p.add_argument("--flair-exact", action="store_true", help="FLAIR's unrenormalised prototypes and padding")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--image-size", type=int, help="input side in px (default: the model's)")
    p.add_argument("--batch-size", type=int, default=64)
    _device_args(p)
    p.add_argument("--out-dir", help="write <dataset>.json and predictions_<dataset>.csv here")


def _device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="auto (default: the GPU when there is one, as training chooses), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="image-decoding worker processes (default: 0, in this process)")


def _workers(n: int) -> int:
    if n < 0:
        raise ConfigError(f"--workers: expected 0 or more worker processes, got {n}")
    return n


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .data.benchmarks import check_dataset
    from .eval.benchmark import evaluate_zero_shot, public_result, write_predictions
    from .eval.metrics import format_interval
    from .io import write_json
    from .precision import choose_device

    check_dataset(args.dataset)
    res = evaluate_zero_shot(args.checkpoint, args.dataset, args.data_root, args.language, args.prompts,
                             args.flair_exact, image_size=args.image_size, batch_size=args.batch_size,
                             n_boot=args.bootstrap, seed=args.seed, device=choose_device(args.device, "--device"),
                             num_workers=_workers(args.workers))
    rep = res["report"]
    print(f"{args.dataset} ({args.data_root}), {args.language} {args.prompts} prompts, n = {rep['n']}")
    for key in ("aca", "kappa", "quadratic_kappa", "macro_f1", "auc"):
        if key in rep:
            print(f"  {key:16s} {format_interval(rep[key])}")
    if args.out_dir:
        out = Path(args.out_dir)
        write_json(out / f"{args.dataset}.json", public_result(res))
        write_predictions(out / f"predictions_{args.dataset}.csv", res["paths"], res["y_true"], res["y_prob"],
                          rep["classes"])
        print(f"wrote {out / (args.dataset + '.json')}")
    return 0


# ---------------------------------------------------------------- predict

def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a saved model (run_dir/model)")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="class names to score (plain prompts)")
    p.add_argument("--dataset", help=f"use this benchmark's classes and prompts ({DATASET_HELP})")
    p.add_argument("--language", default="zh", choices=("zh", "en"), help="prompt language (default: zh)")
    p.add_argument("--prompts", default="ek", choices=("plain", "ek"), help="with --dataset: prompt mode")
    p.add_argument("--out", default="predictions.csv", help="output CSV (default: predictions.csv)")
    p.add_argument("--image-size", type=int, help="input side in px (default: the model's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--flair-exact", action="store_true", help="FLAIR's unrenormalised prototypes and padding")
    _device_args(p)
    p.add_argument("images", nargs="+", help="image files and/or folders")


def _cmd_predict(args: argparse.Namespace) -> int:
    from .eval.predict import predict
    from .precision import choose_device

    df = predict(args.checkpoint, args.images, args.classes, args.dataset, args.language, args.out,
                 mode=args.prompts, image_size=args.image_size, batch_size=args.batch_size,
                 flair_exact=args.flair_exact, device=choose_device(args.device, "--device"),
                 num_workers=_workers(args.workers))
    bad = int((df["status"] != "ok").sum())
    print(f"wrote {args.out}: {len(df) - bad} images scored, {bad} skipped")
    return 0


# ---------------------------------------------------------------- book

def _book_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="cpu", help="profile name in profiles/ or a YAML path (default: cpu)")
    p.add_argument("--run-dir", help="run directory (default: runs/<profile> under the current directory)")
    p.add_argument("--skip-ablations", action="store_true", help="do not execute the ablations notebook")
    p.add_argument("--only", action="append", default=[], metavar="NN",
                   help="execute only this notebook (number or name; repeatable)")
    p.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE",
                   help="notebook parameter (e.g. existing_run), or profile override when KEY is section.key or seed "
                        "(repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="skip notebooks whose executed copy is newer than the notebook and the profile")
    p.add_argument("--no-book", action="store_true", help="execute the notebooks only")
    p.add_argument("--book-only", action="store_true", help="build the book from what is already executed")


def _cmd_book(args: argparse.Namespace) -> int:
    from .report import pipeline

    params = dict(parse_override(x) for x in args.parameter)
    if args.book_only:
        pipeline.build_only(args.profile, args.run_dir, params, args.skip_ablations)
        return 0
    _, run_dir = pipeline.resolve_run_dir(args.profile, params, args.run_dir)
    # the notebooks' kernels inherit the job id (runlock.JOB_ENV): what they start passes the lock
    with _job(args, run_dir, add=["--resume"]) as stop:
        pipeline.run(args.profile, args.run_dir, params, args.only, args.skip_ablations, args.resume,
                     book=not args.no_book, stop=stop)
    return 0


COMMANDS = {
    "synth": ("render the synthetic corpus and the stand-in benchmark sets", _synth_args, _cmd_synth),
    "prepare": ("decode and crop the corpus once into memory-mapped shards for training", _prepare_args,
                _cmd_prepare),
    "train": ("pre-train VisionCLIP (or the supervised ceiling) on the corpus", _train_args, _cmd_train),
    "evaluate": ("zero-shot evaluation of a saved model on one dataset", _evaluate_args, _cmd_evaluate),
    "predict": ("per-class probabilities for any photographs, as CSV", _predict_args, _cmd_predict),
    "book": ("execute the notebooks with papermill and build the book", _book_args, _cmd_book),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visionclip", description=__doc__.splitlines()[0], epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        p.set_defaults(func=run)
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
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a stop message says to run again
    try:
        return int(args.func(args) or 0)
    except Preempted as e:
        print(f"visionclip {args.command}: stopped: {e}", file=sys.stderr)
        return e.exit_code
    except VisionCLIPError as e:
        print(f"visionclip {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a full or read-only disk, a permission: the path and what the errno means
        print(f"visionclip {args.command}: error: {os_error_line(e) if e.errno else error_line(e)}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
