"""The uniform weight soup of fine-tunes (xray_xai.training.soup)."""

import json

import pytest
import torch
from tiny import make_tiny_checkpoint

from xray_xai.checkpoint import read_card
from xray_xai.data import VAL_PATIENTS_FILE
from xray_xai.models.factory import load_checkpoint
from xray_xai.training import soup


def member(folder, seed, patients=("p1", "p2")):
    path = make_tiny_checkpoint(folder, seed=seed)
    (folder / VAL_PATIENTS_FILE).write_text(json.dumps({"patients": list(patients)}))
    return path


def test_the_soup_holds_the_mean_of_the_members_weights(tmp_path):
    paths = [member(tmp_path / f"m{seed}", seed) for seed in (1, 2, 3)]
    out = tmp_path / "soup" / "classifier.json"
    card = soup.run(["--members", *map(str, paths), "--out", str(out)])
    states = [load_checkpoint(p)[0].state_dict() for p in paths]
    mixed = load_checkpoint(out)[0].state_dict()
    for key, value in mixed.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, sum(s[key].float() for s in states) / 3)  # not any one member
        else:
            assert torch.equal(value, states[0][key])
    assert not torch.equal(mixed["conv1.0.weight"], states[0]["conv1.0.weight"])
    assert read_card(out).sha256 == card.sha256
    assert [m["sha256"] for m in card.training["soup"]["members"]] == [read_card(p).sha256 for p in paths]
    assert (out.parent / VAL_PATIENTS_FILE).read_text() == (paths[0].parent / VAL_PATIENTS_FILE).read_text()


def test_members_that_cannot_share_weights_are_refused(tmp_path):
    a = member(tmp_path / "a", 1)
    other_patients = member(tmp_path / "b", 2, patients=("p3",))
    with pytest.raises(soup.SoupError, match="different patients"):
        soup.run(["--members", str(a), str(other_patients), "--out", str(tmp_path / "s" / "c.json")])
    with pytest.raises(soup.SoupError, match="at least two"):
        soup.run(["--members", str(a), "--out", str(tmp_path / "s" / "c.json")])
    with pytest.raises(soup.SoupError, match="different tensors"):
        soup.average_states([{"w": torch.zeros(1)}, {"v": torch.zeros(1)}])
