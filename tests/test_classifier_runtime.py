"""The classifier scores through the runtime its card names and keeps the torch model for the maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.tiny import make_tiny_checkpoint
from xray_xai.models import runtime
from xray_xai.models.classifier import Classifier

pytest.importorskip("openvino", reason="OpenVINO (the serving runtime in requirements.txt) is not installed")


@pytest.fixture
def cards(tmp_path, monkeypatch):
    """(a card served by torch, the same card served by OpenVINO f32)."""
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "ov"))
    monkeypatch.delenv(runtime.RUNTIME_ENV, raising=False)
    plain = make_tiny_checkpoint(tmp_path)
    raw = json.loads(plain.read_text())
    raw["runtime"] = {"engine": "openvino", "precision": "f32", "passing": ["f32"]}
    served = plain.with_name("served.json")
    served.write_text(json.dumps(raw))
    return plain, served


@pytest.mark.slow
def test_scores_through_the_compiled_networks(cards):
    plain, served = Classifier.load(cards[0]), Classifier.load(cards[1])
    assert plain.serving is plain.model and plain.served_runtime.startswith("PyTorch")
    assert isinstance(served.serving, runtime.CompiledNet) and served.served_runtime.endswith("f32")
    assert not isinstance(served.model, runtime.CompiledNet) and served.explainer is served.model  # maps need torch
    x = torch.randn(3, 1, plain.input_size, plain.input_size, generator=torch.Generator().manual_seed(0))
    a, b = plain.score(x), served.score(x)
    np.testing.assert_allclose(b.probabilities, a.probabilities, atol=1e-5)
    np.testing.assert_allclose(b.features, a.features, atol=1e-4)
    np.testing.assert_allclose(served.probabilities(x), plain.probabilities(x), atol=1e-5)


def test_the_environment_overrides_the_card(cards, monkeypatch):
    monkeypatch.setenv(runtime.RUNTIME_ENV, "torch")
    classifier = Classifier.load(cards[1])
    assert classifier.serving is classifier.model


@pytest.mark.slow
def test_lung_segmenter_is_unchanged_without_a_served_one(cards):
    classifier = Classifier.load(cards[1])
    assert classifier.lung_segmenter(None) is None
    marker = object()
    assert classifier.lung_segmenter(marker) is marker  # no lung-box member: nothing compiled to share


# --- the cache of converted networks: used when sound, never required --------------------------

SHAPE = (1, 32, 32)


def small_net(seed: int) -> torch.nn.Module:
    """A small random network: the cache does not depend on the architecture, and it converts fast."""
    torch.manual_seed(seed)
    layers = [torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3), torch.nn.ReLU()]
    head = [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 2)]
    return torch.nn.Sequential(*layers, *head).eval()


@pytest.fixture(scope="module")
def tiny_net():
    return small_net(0)


@pytest.fixture(scope="module")
def fresh(tiny_net):
    """``tiny_net`` converted without any cache."""
    return runtime.CompiledNet(tiny_net, SHAPE, cache=False)


@pytest.fixture(scope="module")
def filled(tiny_net, tmp_path_factory):
    """A cache folder holding ``tiny_net``, converted once for the module."""
    folder = tmp_path_factory.mktemp("ov-filled")
    runtime.CompiledNet(tiny_net, SHAPE, cache=folder)
    return folder


@pytest.fixture
def cache(filled, tmp_path):
    """A copy of ``filled`` that a test may break."""
    import shutil

    return Path(shutil.copytree(filled, tmp_path / "ov"))


def _probe(seed: int = 3) -> torch.Tensor:
    return torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _entries(folder: Path) -> list[Path]:
    return sorted((folder / "ir").glob("*.xml"))


def _never_convert(*args):
    pytest.fail("a network with a sound cache entry was converted again")


def test_a_cache_hit_answers_exactly_like_a_fresh_conversion(tiny_net, fresh, cache, monkeypatch):
    assert len(_entries(cache)) == 1
    monkeypatch.setattr(runtime, "_convert", _never_convert)
    hit = runtime.CompiledNet(tiny_net, SHAPE, cache=cache)
    x = _probe()
    for a, b in zip(hit.run(x), fresh.run(x), strict=True):
        assert torch.equal(a, b)


def test_a_cache_entry_of_other_weights_is_never_used(fresh, cache):
    other = small_net(1)
    served = runtime.CompiledNet(other, SHAPE, cache=cache)
    assert len(_entries(cache)) == 2  # its own entry, converted from its own weights
    x = _probe()
    with torch.inference_mode():
        np.testing.assert_allclose(served(x).numpy(), other(x).numpy(), atol=1e-4)
    assert not torch.allclose(served(x), fresh(x), atol=1e-3)


def _garbage_xml(xml: Path) -> None:
    xml.write_text("<net>not a network")


def _truncated_bin(xml: Path) -> None:
    weights = xml.with_suffix(".bin")
    weights.write_bytes(weights.read_bytes()[:1000])


def _flipped_bin(xml: Path) -> None:
    """Same size, other bytes: only the digest can tell."""
    weights = xml.with_suffix(".bin")
    data = bytearray(weights.read_bytes())
    rng, width = np.random.default_rng(0), len(data) // 20
    for at in range(0, len(data) - width, len(data) // 10):
        data[at : at + width] = rng.integers(0, 256, width, dtype=np.uint8).tobytes()
    weights.write_bytes(bytes(data))


@pytest.mark.parametrize("corrupt", [_garbage_xml, _truncated_bin, _flipped_bin])
def test_a_corrupt_cache_entry_is_ignored_and_removed(tiny_net, fresh, cache, corrupt):
    (xml,) = _entries(cache)
    corrupt(xml)
    for blob in cache.glob("*.blob"):  # OpenVINO's compiled copy would hide the broken IR
        blob.unlink()
    with pytest.warns(RuntimeWarning, match="cannot be used"):
        served = runtime.CompiledNet(tiny_net, SHAPE, cache=cache)
    x = _probe()
    assert torch.equal(served(x), fresh(x))
    assert not _entries(cache)  # removed: the next start converts and caches it again


def test_an_entry_without_its_digest_is_converted_again(tiny_net, fresh, cache):
    (xml,) = _entries(cache)
    xml.with_suffix(".sha256").unlink()  # an interrupted write, or a version that wrote none
    served = runtime.CompiledNet(tiny_net, SHAPE, cache=cache)
    x = _probe()
    assert torch.equal(served(x), fresh(x))
    assert xml.with_suffix(".sha256").read_text() == runtime.ir_digest(xml)


def test_an_unusable_cache_folder_only_disables_the_cache(tiny_net, fresh, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="not writable"):
        served = runtime.CompiledNet(tiny_net, SHAPE, cache=blocked / "ov")
    assert served.cache is None
    x = _probe()
    assert torch.equal(served(x), fresh(x))


@pytest.mark.slow
def test_the_default_cache_follows_xdg_cache_home(tmp_path):
    import subprocess
    import sys

    script = "from xray_xai.models import runtime; print(runtime.cache_dir())"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(tmp_path / "xdg" / "xray_xai" / "openvino")
