"""Flags shared by the project's commands, as argparse parents, the validation split they select,
and the entry point that runs a command.

Each function returns a small ``ArgumentParser(add_help=False)`` holding one flag; a command lists
the ones it takes in ``parents=[...]``. Defaults differ between commands (``--data`` is required
by the evaluations and defaults to the dataset elsewhere), so they are parameters, and each
command keeps the defaults its documented commands rely on.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from .checkpoint import DEFAULT_CHECKPOINT
from .data import Sample, validation_samples

DATASET = "../shared/data/chest_xray"
TRAINING_SET = f"{DATASET}/train"


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def data_parser(
    default: str | None = None, help: str = "folder with NORMAL/ and PNEUMONIA/ subfolders"
) -> argparse.ArgumentParser:
    """``--data``: a labelled folder; required when ``default`` is None."""
    parser = _parent()
    parser.add_argument("--data", required=default is None, default=default, help=help)
    return parser


def checkpoint_parser(
    default: str | Path = DEFAULT_CHECKPOINT, help: str = "classifier model card (JSON)"
) -> argparse.ArgumentParser:
    """``--checkpoint``: a model card, the shipped classifier's by default."""
    parser = _parent()
    parser.add_argument("--checkpoint", default=str(default), help=help)
    return parser


def threads_parser(default: int = 2) -> argparse.ArgumentParser:
    """``--threads``: torch CPU threads."""
    parser = _parent()
    parser.add_argument("--threads", type=int, default=default, help="torch CPU threads")
    return parser


def limit_parser(help: str = "seeded random subset of this many images (0 = all)") -> argparse.ArgumentParser:
    """``--limit``: use only a seeded subset (:func:`xray_xai.data.seeded_subset`); 0 = all."""
    parser = _parent()
    parser.add_argument("--limit", type=int, default=0, help=help)
    return parser


def seed_parser(help: str, default: int = 0) -> argparse.ArgumentParser:
    """``--seed``: ``help`` says what it seeds."""
    parser = _parent()
    parser.add_argument("--seed", type=int, default=default, help=help)
    return parser


def training_parsers(seed: int, limit_help: str) -> list[argparse.ArgumentParser]:
    """The flags the training commands open with: ``--data`` (the dataset root: they read its
    train/), ``--seed`` (``seed`` by default), ``--threads`` and ``--limit``."""
    return [
        data_parser(DATASET, "folder with train/{NORMAL,PNEUMONIA}"),
        seed_parser("initialisation and augmentation", seed),
        threads_parser(),
        limit_parser(limit_help),
    ]


def add_schedule_arguments(
    parser: argparse.ArgumentParser, input_size: int, epochs: int, batch_size: int, lr: float
) -> None:
    """Adds a training command's ``--input-size``, ``--epochs``, ``--batch-size`` and ``--lr``
    (the defaults are its config's), in that order: at the place the command calls it."""
    parser.add_argument("--input-size", type=int, default=input_size)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)


def split_parser() -> argparse.ArgumentParser:
    """``--split all|val``: every film of ``--data``, or only the checkpoint's validation patients."""
    parser = _parent()
    parser.add_argument(
        "--split", choices=("all", "val"), default="all",
        help="val: only the checkpoint's validation patients (run it on the training folder)",
    )  # fmt: skip
    return parser


def validation_split(samples: list[Sample], checkpoint: str | Path) -> list[Sample]:
    """The samples of ``checkpoint``'s validation patients; exits with the reason when the
    patient ids saved next to its card are missing."""
    try:
        return validation_samples(samples, checkpoint)
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None


def select(samples: list[Sample], split: str, checkpoint: str | Path) -> list[Sample]:
    """``samples`` for ``--split all``, their validation patients for ``--split val``."""
    return validation_split(samples, checkpoint) if split == "val" else samples


def entry_point(run: Callable[[list[str] | None], object]) -> Callable[[list[str] | None], None]:
    """A command's ``main``: runs ``run(argv)`` and returns None.

    ``run`` returns what the command wrote, for tests and Python callers; ``main`` drops it, since
    a console script hands ``main``'s return value to ``sys.exit``, which would print a returned
    report to stderr and exit with status 1.
    """

    def main(argv: list[str] | None = None) -> None:
        run(argv)

    main.__doc__ = f"The command line of :func:`{run.__module__}.run` (returns None)."
    return main
