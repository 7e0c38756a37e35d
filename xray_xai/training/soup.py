"""Average the weights of fine-tunes of one network into one network (a uniform model soup).

    python -m xray_xai.training.soup --members runs/candidates/a/classifier.json \
        runs/candidates/b/classifier.json --out runs/candidates/soup/classifier.json

Fine-tunes that start from the same weights and differ only in their seed stay in one basin of
the loss, so the mean of their weights is itself a good network, often better than each of
them, at the cost of one (Wortsman et al., ICML 2022, "Model soups"). Every floating-point
tensor is averaged (BatchNorm's running statistics included); integer counters are taken from
the first member. The members must share the architecture, its arguments, the input and the
validation patients, and must each be a single network; the soup keeps the first member's
card (input, validation patients) and records its members. Nothing is fitted here: the
ensemble command (:mod:`xray_xai.training.ensemble`) calibrates and scores the soup on
validation like any other member.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import torch

from ..checkpoint import ModelCard, read_card, save_checkpoint
from ..cli import entry_point
from ..data import VAL_PATIENTS_FILE
from ..models.factory import load_checkpoint


class SoupError(ValueError):
    """Members that cannot be averaged into one network."""


def check_members(cards: list[ModelCard], patients: list[str]) -> None:
    """Raise :class:`SoupError` unless the members can share one set of weights."""
    if len(cards) < 2:
        raise SoupError("a soup needs at least two members")
    if any(card.members != 1 or card.framing for card in cards):
        raise SoupError("every member must be a single whole-film network, not an ensemble")
    shape = {(c.arch, c.input_size, c.mean, c.std, c.classes, repr(sorted(c.model_kwargs.items()))) for c in cards}
    if len(shape) > 1:
        raise SoupError("the members differ in architecture, its arguments or their input")
    if len(set(patients)) > 1:
        raise SoupError("the members were validated on different patients")


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of each floating-point tensor over ``states``; other tensors from the first."""
    keys = states[0].keys()
    if any(state.keys() != keys for state in states):
        raise SoupError("the members' weights hold different tensors")
    return {
        key: torch.stack([state[key].float() for state in states]).mean(0)
        if states[0][key].is_floating_point()
        else states[0][key].clone()
        for key in keys
    }


def run(argv: list[str] | None = None) -> ModelCard:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", nargs="+", required=True, help="the fine-tunes' model cards")
    parser.add_argument("--out", required=True, help="the soup's model card (JSON); its weights go next to it")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.members]
    cards = [read_card(p) for p in paths]
    check_members(cards, [(p.parent / VAL_PATIENTS_FILE).read_text() for p in paths])
    models = [load_checkpoint(p)[0] for p in paths]
    model = models[0]
    model.load_state_dict(average_states([m.state_dict() for m in models]))
    out = Path(args.out)
    training = {
        "soup": {
            "members": [
                {"card": str(p), "sha256": c.sha256, "command": c.training.get("command")}
                for p, c in zip(paths, cards, strict=True)
            ],
            "rule": "uniform average of every floating-point tensor (BatchNorm statistics included)",
        },
        "config": cards[0].training.get("config", {}),
        "command": "python -m xray_xai.training.soup " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    card = replace(cards[0], training=training, validation={}, ood={}, latency={})
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(paths[0].parent / VAL_PATIENTS_FILE, out.parent / VAL_PATIENTS_FILE)
    return save_checkpoint(model, card, out, dtype=torch.float32)


main = entry_point(run)

if __name__ == "__main__":
    main()
