"""Command line: ``itlin prepare`` makes a dataset file, ``itlin train`` runs a training job.

    python -m itlin prepare --dataset digits --out resources/data/digits.npz
    python -m itlin train --config RUN.yaml --out results/runs/RUN [--scratch results/scratch/JOB] [--block-mode scan]

``itlin train`` takes ``--config`` and ``--out`` once per seed (in the same order): the seeds train as
lanes of one program, each into its own folder.

``--log FILE`` and ``--debug`` go before or after the command. A user error (an unknown dataset,
a missing or invalid file) ends the command with one line on stderr and exit status 1; ``--debug``
shows its traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from importlib.metadata import version
from pathlib import Path

import yaml

log = logging.getLogger("itlin")


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--option takes key=value, got {text!r}")
    return key, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status (0, 1 for a user error, 143 for a run stopped by SIGTERM)."""
    # Options every parser knows, so they may stand before or after the command; SUPPRESS keeps a
    # value given before the command from being reset by the command's parser.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log", type=Path, default=argparse.SUPPRESS, help="also write log lines to this file")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error instead of a one-line message")
    parser = argparse.ArgumentParser(prog="itlin", description=__doc__, parents=[common],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('itlin')}")
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", parents=[common],
                                  help="download/verify or generate a dataset and write its .npz + .json")
    prepare.add_argument("--dataset", required=True, help="digits, cifar10, synthetic or mnist1d")
    prepare.add_argument("--out", type=Path, required=True, help="output .npz (metadata goes beside it as .json)")
    prepare.add_argument("--seed", type=int, default=0, help="split / generation seed")
    prepare.add_argument("--cache-dir", type=Path, help="where downloaded archives are kept (default $ITLIN_CACHE or ~/.cache/itlin)")
    prepare.add_argument("--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                         help="dataset option, e.g. test_fraction=0.25 (repeatable)")

    train = commands.add_parser("train", parents=[common],
                                help="train runs that differ only in their seed (and K), as lanes of one program")
    train.add_argument("--config", type=Path, action="append", required=True,
                       help="run config YAML (see config/README.md); once per lane (a seed, or a seed at a K)")
    train.add_argument("--out", type=Path, action="append", required=True,
                       help="output folder of the --config at the same position: metrics.parquet, run.json, snapshots/")
    train.add_argument("--scratch", type=Path,
                       help="checkpoint folder of the job, kept outside the outputs (default: the first OUT/scratch)")
    train.add_argument("--block-mode", choices=("scan", "dispatch"),
                       help="run each block of steps as one jax.lax.scan or step by step (default: scan, except "
                            "on the CPU for a model with an XLA convolution); results agree to float rounding")

    args = parser.parse_args(argv)
    from itlin.data import DataError

    configure_logging(getattr(args, "log", None))
    try:
        return _run(args)
    except (DataError, ValueError, OSError, yaml.YAMLError) as error:
        if getattr(args, "debug", False):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        log.error("%s (itlin %s --debug shows the traceback)", message, args.command)
        return 1


def _run(args: argparse.Namespace) -> int:
    """The command's work; user errors propagate to ``main``."""
    if args.command == "prepare":
        from itlin import data

        meta = data.prepare(args.dataset, args.out, seed=args.seed, cache_dir=args.cache_dir, **dict(args.option))
        log.info("wrote %s (%s)", args.out, {k: meta[k] for k in ("dataset", "shapes") if k in meta})
        return 0
    from itlin import record, train_job
    from itlin.checkpoints import Preempted

    configs = [record.load_config(path) for path in args.config]  # a bad run config is a ValueError naming the key
    try:
        statuses = train_job.run(configs, args.out, args.scratch, block_mode=args.block_mode)
    except Preempted as stop:
        log.warning("%s", stop)
        return 128 + signal.SIGTERM  # the shell's code for "ended by SIGTERM": a scheduler retries it
    log.info("status: %s", ", ".join(statuses))
    return 0  # a diverged run is a result, not a failure: the pipeline goes on


def configure_logging(log_file: Path | None = None) -> None:
    """Plain timestamped log lines on stderr (and to ``log_file``), for pipeline logs."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax reports every checkpoint operation at INFO


if __name__ == "__main__":
    raise SystemExit(main())
