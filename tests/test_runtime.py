"""OpenVINO runtime: compiled networks match torch, dynamic batch, the cache, the bf16 fallback and serving.

Tiny random networks built here (resnet10t and a small U-Net at 32 px); nothing from checkpoints/
or ../shared. Every network is converted once per module into one temporary cache folder; the
other tests read it back from there.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.tiny import make_tiny_checkpoint
from xray_xai.checkpoint import ModelCard
from xray_xai.models import runtime
from xray_xai.models.ensemble import Ensemble
from xray_xai.models.factory import create_model
from xray_xai.models.framing import LungBoxFramed, LungBoxFramer
from xray_xai.models.lungs import LungCard, LungSegmenter, build_model

pytest.importorskip("openvino", reason="OpenVINO (the serving runtime in requirements.txt) is not installed")

SIZE = 32
SHAPE = (1, SIZE, SIZE)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ov-cache")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return create_model("resnet10t").eval()


@pytest.fixture(scope="module")
def compiled(net, cache):
    torch.set_num_threads(1)
    return runtime.CompiledNet(net, SHAPE, "f32", cache=cache)


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(1)
    card = LungCard(decoder_channels=(16, 8, 8, 8), input_size=SIZE, output_size=SIZE)
    return LungSegmenter(build_model(card), card)


def batch(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def reference(net: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    pooled = net.forward_head(net.forward_features(x), pre_logits=True)
    return net.get_classifier()(pooled).numpy(), pooled.numpy()


@pytest.mark.slow
def test_compiled_f32_matches_torch_at_batch_1_and_5(net, compiled):
    assert compiled.precision == "f32" and compiled.pooled
    for n in (1, 5):  # one compiled graph, any batch size
        x = batch(n, seed=n)
        logits, pooled = reference(net, x)
        run_logits, run_pooled = compiled.run(x)
        assert run_logits.dtype == torch.float32 and run_logits.shape == (n, 1) and run_pooled.shape == pooled.shape
        np.testing.assert_allclose(run_logits.numpy(), logits, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(run_pooled.numpy(), pooled, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(compiled(x).numpy(), logits, atol=1e-4, rtol=1e-4)
        # the timm calls the classifier makes: pooled features, then the torch head
        with torch.inference_mode():
            features = compiled.forward_head(compiled.forward_features(x), pre_logits=True)
            np.testing.assert_allclose(compiled.forward_head(features).numpy(), logits, atol=1e-4, rtol=1e-4)
    assert compiled.get_classifier() is net.get_classifier()
    with pytest.raises(ValueError, match="batch"):
        compiled(torch.zeros(1, 1, SIZE + 1, SIZE))
    with pytest.raises(RuntimeError, match="inference only"):
        compiled.train()


def test_channels_last_input_gives_the_same_answer(compiled):
    x = batch(3, seed=7)
    assert torch.equal(compiled(x.contiguous(memory_format=torch.channels_last)), compiled(x))


def test_the_cache_folder_holds_the_converted_and_compiled_network(net, compiled, cache, monkeypatch):
    assert compiled.cache == cache
    assert list((cache / "ir").glob("*.xml")) and list((cache / "ir").glob("*.bin"))
    assert any(p.is_file() for p in cache.iterdir())  # OpenVINO's compiled blob (CACHE_DIR)
    monkeypatch.setattr(runtime, "_convert", lambda *a: pytest.fail("the cached network was converted again"))
    again = runtime.CompiledNet(net, SHAPE, "f32", cache=cache)
    x = batch(2)
    assert torch.equal(again(x), compiled(x))


def test_the_cache_folder_defaults_to_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert runtime.cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv(runtime.CACHE_ENV)
    assert runtime.cache_dir() == runtime.DEFAULT_CACHE


@pytest.mark.skipif(
    not runtime.available() or not runtime.supports_bf16(), reason="this CPU has no bf16 support in OpenVINO"
)
def test_bf16_stays_close_to_torch(net, cache):
    bf16 = runtime.CompiledNet(net, SHAPE, "bf16", cache=cache)
    assert bf16.precision == "bf16"
    assert bf16._compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"
    x = batch(5, seed=3)
    logits, pooled = reference(net, x)
    run_logits, run_pooled = bf16.run(x)
    scale = np.abs(pooled).max()
    assert np.abs(run_pooled.numpy() - pooled).max() <= 0.05 * scale
    assert np.abs(run_logits.numpy() - logits).max() <= 0.05 * max(1.0, np.abs(logits).max())


def test_bf16_falls_back_to_f32_without_cpu_support(net, cache, monkeypatch):
    real = runtime.core()

    class NoBf16:
        def get_property(self, device, name):
            return ["FP32", "INT8"] if name == "OPTIMIZATION_CAPABILITIES" else real.get_property(device, name)

        def compile_model(self, *args, **kwargs):
            return real.compile_model(*args, **kwargs)

    monkeypatch.setattr(runtime, "core", lambda: NoBf16())
    assert not runtime.supports_bf16()
    with pytest.warns(RuntimeWarning, match="bf16"):
        fallback = runtime.CompiledNet(net, SHAPE, "bf16", cache=cache)
    assert fallback.precision == "f32"
    assert fallback._compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    with pytest.raises(ValueError, match="precision"):
        runtime.resolve_precision("fp8")


@pytest.mark.slow
def test_compiled_segmenter_matches_torch(segmenter, cache):
    fast = runtime.accelerate_segmenter(segmenter, "f32", cache=cache)
    assert fast.card is segmenter.card and isinstance(fast.model, runtime.CompiledNet) and not fast.model.pooled
    x = batch(2, seed=5)
    np.testing.assert_allclose(fast.probabilities(x).numpy(), segmenter.probabilities(x).numpy(), atol=1e-4)


@pytest.mark.slow
def test_accelerated_ensemble_keeps_its_structure_and_answers(net, segmenter, cache):
    framer = LungBoxFramer(segmenter, mean=0.5, std=0.25)
    model = Ensemble([net, LungBoxFramed(net, framer), LungBoxFramed(net, framer)]).eval()
    fast = runtime.accelerate(model, SIZE, "f32", cache=cache)
    assert isinstance(fast, Ensemble) and isinstance(fast.members[0], runtime.CompiledNet)
    assert all(isinstance(m, LungBoxFramed) and isinstance(m.net, runtime.CompiledNet) for m in fast.members[1:])
    assert fast.members[1].framer is fast.members[2].framer  # one segmentation per batch, as in torch
    assert isinstance(fast.members[1].segmenter.model, runtime.CompiledNet)
    shared = fast.members[1].segmenter  # an accelerated segmenter (the app's own) frames instead of a second copy
    assert runtime.accelerate(model, SIZE, "f32", cache=cache, segmenter=shared).members[2].segmenter is shared
    x = batch(4, seed=11)
    with torch.inference_mode():
        np.testing.assert_allclose(fast.member_logits(x).numpy(), model.member_logits(x).numpy(), atol=1e-4)
        np.testing.assert_allclose(fast(x).numpy(), model(x).numpy(), atol=1e-4)
        features = fast.forward_head(fast.forward_features(x), pre_logits=True)
        reference_features = model.forward_head(model.forward_features(x), pre_logits=True)
        np.testing.assert_allclose(features.numpy(), reference_features.numpy(), atol=1e-4)
        np.testing.assert_allclose(
            fast.member_logits_from_features(features).numpy(), model.member_logits(x).numpy(), atol=1e-4
        )


def test_serve_compiles_only_when_the_card_or_the_environment_asks(net, cache, monkeypatch):
    monkeypatch.setenv(runtime.CACHE_ENV, str(cache))
    monkeypatch.delenv(runtime.RUNTIME_ENV, raising=False)
    card = ModelCard(arch="resnet10t", input_size=SIZE, mean=0.5, std=0.25)
    assert runtime.serve(net, card) is net and runtime.serve(None, card) is None
    card.runtime = {"engine": "openvino", "precision": "f32"}
    served = runtime.serve(net, card)
    assert isinstance(served, runtime.CompiledNet) and served.precision == "f32"
    card.runtime = {"engine": "openvino", "precision": "f32", "passing": ["f32"]}
    monkeypatch.setenv(runtime.RUNTIME_ENV, "openvino:bf16")  # failed the card's accuracy check: f32 instead
    with pytest.warns(RuntimeWarning, match="accuracy check"):
        assert runtime.serve(net, card).precision == "f32"
    card.runtime = {"engine": "openvino", "precision": "f32", "passing": []}
    with pytest.warns(RuntimeWarning, match="serving with torch"):
        assert runtime.serve(net, card) is net
    monkeypatch.setenv(runtime.RUNTIME_ENV, "torch")
    assert runtime.serve(net, card) is net
    monkeypatch.setenv(runtime.RUNTIME_ENV, "openvino:f32")
    assert isinstance(
        runtime.serve(net, ModelCard(arch="resnet10t", input_size=SIZE, mean=0.5, std=0.25)), runtime.CompiledNet
    )
    monkeypatch.setattr(runtime, "accelerate", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no CPU plugin")))
    card.runtime = {"engine": "openvino", "precision": "f32"}
    with pytest.warns(RuntimeWarning, match="could not compile"):
        assert runtime.serve(net, card) is net


def test_a_serving_precision_names_the_networks_and_the_lung_unet_precisions():
    assert runtime.serving_precisions("f32") == ("f32", "f32")
    assert runtime.serving_precisions("bf16") == ("bf16", "bf16")
    assert runtime.serving_precisions("bf16_lungs_f32") == ("bf16", "f32")
    for unknown in ("fp16", "f32_lungs_bf16", "ov_f32"):
        with pytest.raises(ValueError, match="f32, bf16, bf16_lungs_f32"):
            runtime.serving_precisions(unknown)


@pytest.fixture(scope="module")
def framed(net, segmenter):
    """A plain and a lung-box member: the classifier networks and the framing U-Net to compile."""
    return Ensemble([net, LungBoxFramed(net, LungBoxFramer(segmenter, mean=0.5, std=0.25))]).eval()


def hints(served: Ensemble) -> tuple[list[str], str]:
    """The precisions the compiled graphs run at: ``([member networks], lung U-Net)``."""
    plain, boxed = served.members

    def hint(net: runtime.CompiledNet) -> str:
        return net._compiled.get_property("INFERENCE_PRECISION_HINT").to_string()

    return [hint(plain), hint(boxed.net)], hint(boxed.segmenter.model)


@pytest.mark.slow
def test_serve_compiles_a_combination_networks_bf16_and_the_lung_unet_f32(framed, cache, monkeypatch):
    monkeypatch.setenv(runtime.CACHE_ENV, str(cache))
    monkeypatch.delenv(runtime.RUNTIME_ENV, raising=False)
    bf16 = runtime.resolve_precision("bf16")  # "f32" on a CPU without bf16
    version = runtime.version()
    card = ModelCard(arch="resnet10t", input_size=SIZE, mean=0.5, std=0.25)
    card.runtime = {"engine": "openvino", "precision": "bf16_lungs_f32", "passing": ["f32", "bf16_lungs_f32"]}
    served = runtime.serve(framed, card)
    assert hints(served) == ([bf16, bf16], "f32")
    assert runtime.describe(served) == f"OpenVINO {version} {bf16}" + (" (lung U-Net f32)" if bf16 == "bf16" else "")
    # the environment asks for the combination over a card that asks for f32 but lets it pass
    card.runtime = {"engine": "openvino", "precision": "f32", "passing": ["f32", "bf16_lungs_f32"]}
    monkeypatch.setenv(runtime.RUNTIME_ENV, "openvino:bf16_lungs_f32")
    assert hints(runtime.serve(framed, card)) == ([bf16, bf16], "f32")
    # a combination the card's accuracy check did not pass: every network f32
    card.runtime = {"engine": "openvino", "precision": "f32", "passing": ["f32"]}
    with pytest.warns(RuntimeWarning, match="bf16_lungs_f32 failed the model card's accuracy check"):
        served = runtime.serve(framed, card)
    assert hints(served) == (["f32", "f32"], "f32")
    assert runtime.describe(served) == f"OpenVINO {version} f32"
    assert runtime.describe(framed).startswith("PyTorch")


def test_warm_cache_compiles_the_precision_the_card_is_served_at(tmp_path, monkeypatch):
    monkeypatch.delenv(runtime.RUNTIME_ENV, raising=False)
    path = make_tiny_checkpoint(tmp_path)
    raw = json.loads(path.read_text())
    raw["runtime"] = {"engine": "openvino", "precision": "bf16_lungs_f32", "passing": ["f32", "bf16_lungs_f32"]}
    path.write_text(json.dumps(raw))
    calls = []
    monkeypatch.setattr(runtime, "accelerate", lambda model, size, *precisions: calls.append(precisions))
    assert runtime.warm_cache(path)[0] == "bf16_lungs_f32" and calls == [("bf16", "f32")]
    monkeypatch.setenv(runtime.RUNTIME_ENV, "torch")  # nothing served by OpenVINO: nothing to warm
    assert runtime.warm_cache(path) is None and len(calls) == 1


def test_compare_applies_the_three_serving_criteria():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 500)
    reference = np.clip(labels * 0.6 + rng.uniform(0, 0.4, 1000), 0, 1)
    assert runtime.compare(reference, reference + 0.005, labels, 0.5)["passes"]
    drifted = runtime.compare(reference, reference + 0.02, labels, 0.5)
    assert not drifted["passes"] and not drifted["checks"]["max_dp"]
    flipped = reference.copy()
    flipped[:10] = 1 - flipped[:10]  # ten decisions (1%) change
    result = runtime.compare(reference, flipped, labels, 0.5)
    assert not result["checks"]["decisions"] and result["different_decisions"] == 10
