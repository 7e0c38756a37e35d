"""The foundation: patient-level split, preprocessing, checkpoints, calibration and training augmentation.

The training command end to end is in test_train_classifier_cli.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import TINY_ARCH
from torchvision.transforms.v2.functional import gaussian_blur

from xray_xai.calibration import fit_temperature, nll, operating_points, sigmoid
from xray_xai.checkpoint import CheckpointError, ModelCard, save_checkpoint
from xray_xai.data import Sample, patient_id, split_by_patient, split_with_patients
from xray_xai.models.classifier import Classifier
from xray_xai.models.factory import create_model, load_checkpoint
from xray_xai.preprocess import preprocess, to_model_size
from xray_xai.training.augment import SHARPNESS_KERNEL, SHARPNESS_SIGMA, Augmentation, augment, mix, warp
from xray_xai.training.classifier import TrainConfig

# --- data -------------------------------------------------------------------------------------


def dataset_names(seed: int = 0) -> list[Sample]:
    """Kermany-style names: several images per patient, three naming schemes."""
    rng = np.random.default_rng(seed)
    samples = []
    for n in range(1, 81):
        for m in range(rng.integers(1, 4)):
            kind = "bacteria" if m % 2 == 0 else "virus"
            samples.append(Sample(Path(f"PNEUMONIA/person{n}_{kind}_{n * 10 + m}.jpeg"), 1))
    for n in range(40):
        for m in range(rng.integers(1, 3)):
            samples.append(Sample(Path(f"NORMAL/IM-{n:04d}-{m + 1:04d}.jpeg"), 0))
            samples.append(Sample(Path(f"NORMAL/NORMAL2-IM-{n:04d}-{m + 1:04d}.jpeg"), 0))
    return samples


def test_patient_ids_from_file_names():
    assert patient_id("person12_bacteria_45.jpeg") == "person12"
    assert patient_id("person12_virus_46.jpeg") == "person12"
    assert patient_id("person1_virus_1.jpeg") != patient_id("person10_virus_1.jpeg")
    assert patient_id("IM-0115-0001.jpeg") == "IM-0115"
    assert patient_id("NORMAL2-IM-0115-0001.jpeg") == "NORMAL2-IM-0115"


def test_split_keeps_patients_on_one_side_and_is_stratified():
    samples = dataset_names()
    train, val = split_by_patient(samples, 0.15, seed=0)
    assert len(train) + len(val) == len(samples)
    assert not {s.patient for s in train} & {s.patient for s in val}
    for label, n_patients in ((1, 80), (0, 80)):
        val_patients = {s.patient for s in val if s.label == label}
        assert len(val_patients) == round(0.15 * n_patients)


def test_split_is_deterministic_by_seed_and_reproducible_from_ids():
    samples = dataset_names()
    first = split_by_patient(samples, 0.15, seed=3)
    assert first == split_by_patient(samples, 0.15, seed=3)
    assert {s.patient for s in first[1]} != {s.patient for s in split_by_patient(samples, 0.15, seed=4)[1]}
    assert split_with_patients(samples, {s.patient for s in first[1]}) == first


# --- preprocessing -----------------------------------------------------------------------------


def smooth_image(height: int, width: int) -> np.ndarray:
    """A smooth function of the relative position, sampled at pixel centres."""
    v = (np.arange(height) + 0.5) / height
    u = (np.arange(width) + 0.5) / width
    uu, vv = np.meshgrid(u, v)
    return (
        0.5 + 0.3 * np.sin(3 * uu) * np.cos(2 * vv) + 0.15 * np.exp(-((uu - 0.3) ** 2 + (vv - 0.6) ** 2) / 0.05)
    ).astype(np.float32)


def test_preprocess_shape_dtype_and_range():
    rng = np.random.default_rng(0)
    pixels = rng.random((300, 210), dtype=np.float32)
    squashed = to_model_size(pixels, 64)
    assert squashed.shape == (64, 64) and squashed.dtype == np.float32
    assert squashed.min() >= 0 and squashed.max() <= 1  # bicubic overshoot is clipped
    x = preprocess(pixels, 64, 0.5, 0.25)
    assert x.shape == (64, 64) and x.dtype == np.float32
    np.testing.assert_allclose(x, (squashed - 0.5) / 0.25, atol=1e-6)
    with pytest.raises(ValueError):
        to_model_size(np.zeros((4, 4, 3), np.float32), 8)


def test_full_resolution_upload_matches_an_image_made_at_224():
    full = to_model_size(smooth_image(1500, 1200), 224)
    direct = smooth_image(224, 224)
    assert np.abs(full - direct).max() < 0.002


def test_classifier_prepare_is_the_one_preprocess(tmp_path):
    card = ModelCard(arch=TINY_ARCH, input_size=32, mean=0.4, std=0.2)
    pixels = smooth_image(90, 70)
    x = Classifier(model=None, card=card).prepare(pixels)
    assert tuple(x.shape) == (1, 1, 32, 32) and x.dtype == torch.float32
    np.testing.assert_array_equal(x[0, 0].numpy(), preprocess(pixels, 32, 0.4, 0.2))


# --- checkpoints -------------------------------------------------------------------------------


def save_tiny(tmp_path: Path, dtype=torch.float16):
    torch.manual_seed(0)
    model = create_model(TINY_ARCH).eval().to(memory_format=torch.channels_last)
    card = ModelCard(arch=TINY_ARCH, input_size=32, mean=0.5, std=0.25, temperature=1.7)
    path = tmp_path / "classifier.json"
    save_checkpoint(model, card, path, {"ood_mean": torch.arange(4.0)}, dtype=dtype)
    return model, path


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model, path = save_tiny(tmp_path, dtype=torch.float32)
    loaded, card, extras = load_checkpoint(path)
    x = torch.randn(3, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    assert card.temperature == 1.7 and card.arch == TINY_ARCH
    assert torch.equal(extras["ood_mean"], torch.arange(4.0))


def test_float16_checkpoint_keeps_probabilities(tmp_path):
    model, path = save_tiny(tmp_path)
    loaded, _, _ = load_checkpoint(path)
    x = torch.randn(3, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert (torch.sigmoid(model(x)) - torch.sigmoid(loaded(x))).abs().max() < 1e-3


def test_tampered_weight_file_is_refused(tmp_path):
    _, path = save_tiny(tmp_path)
    weights = path.with_suffix(".safetensors")
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="integrity"):
        load_checkpoint(path)


def test_missing_files_are_refused(tmp_path):
    _, path = save_tiny(tmp_path)
    path.with_suffix(".safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing.json")


# --- calibration -------------------------------------------------------------------------------


def test_temperature_scaling_recovers_a_known_temperature_and_lowers_nll():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2.5, 20000)
    labels = (rng.random(20000) < sigmoid(true_logits)).astype(int)
    overconfident = 3.0 * true_logits
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.08)
    assert nll(sigmoid(overconfident / temperature), labels) < nll(sigmoid(overconfident), labels) - 0.05


def rates(probs, labels, threshold):
    predicted = probs >= threshold
    return predicted[labels == 1].mean(), (~predicted[labels == 0]).mean()


def test_balanced_point_maximises_youden_for_calibrated_probabilities():
    """The prevalence threshold reaches the maximum J of calibrated probabilities (here 0.71
    prevalence, where a 0.5 threshold loses 0.12 of J), without searching a noisy sample."""
    rng = np.random.default_rng(0)
    probs = rng.beta(3.0, 1.2, 20000)
    labels = (rng.random(20000) < probs).astype(int)
    youden = lambda t: sum(rates(probs, labels, t)) - 1  # noqa: E731
    best = max(youden(t) for t in np.linspace(0.05, 0.95, 91))
    threshold = operating_points(probs, labels)["balanced"]["threshold"]
    assert youden(threshold) == pytest.approx(best, abs=0.002)
    assert youden(0.5) < best - 0.1


# --- training ----------------------------------------------------------------------------------


def test_augment_keeps_shape_and_range_and_is_seeded():
    batch = torch.rand(6, 1, 32, 32)
    aug = TrainConfig().augmentation
    out = augment(batch, aug, torch.Generator().manual_seed(1))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, batch)
    assert torch.equal(out, augment(batch, aug, torch.Generator().manual_seed(1)))
    unchanged = augment(batch, Augmentation(), torch.Generator().manual_seed(1))
    assert torch.allclose(unchanged, batch, atol=1e-6)  # the default Augmentation changes nothing


def test_train_config_describes_its_augmentation_with_its_flat_fields():
    cfg = TrainConfig(max_rotation_deg=7.0, max_translation=0.05, scale_range=(0.8, 1.2), aspect=0.2, brightness=0.3,
                      contrast=0.4, gamma=0.2, sharpness=0.5, blur=1.5, noise=0.01)  # fmt: skip
    assert cfg.augmentation == Augmentation(rotation_deg=7.0, translation=0.05, scale_range=(0.8, 1.2), aspect=0.2,
                                            brightness=0.3, contrast=0.4, gamma=0.2, sharpness=0.5, blur=1.5,
                                            noise=0.01)  # fmt: skip
    assert "augmentation" not in asdict(cfg)  # the saved configuration stays flat


def _extent(mask: torch.Tensor) -> tuple[int, int]:
    """Rows and columns a binary image covers."""
    rows, cols = torch.nonzero(mask > 0.5, as_tuple=True)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_aspect_augmentation_stretches_height_against_width():
    square = torch.zeros(64, 1, 64, 64)
    square[:, :, 22:42, 22:42] = 1.0
    out = warp(square, Augmentation(aspect=0.3), torch.Generator().manual_seed(0))
    heights, widths = zip(*(_extent(image[0]) for image in out), strict=True)
    assert set(widths) == {20}  # the width is kept
    assert min(heights) <= 16 and max(heights) >= 24  # exp(-0.3) * 20 = 14.8 ... exp(0.3) * 20 = 27
    assert all(20 * math.exp(-0.3) - 2 <= h <= 20 * math.exp(0.3) + 2 for h in heights)


def test_recipes_without_aspect_draw_the_same_random_numbers_as_before_it_existed():
    batch = torch.rand(4, 1, 16, 16)
    generator = torch.Generator().manual_seed(3)
    warp(batch, Augmentation(rotation_deg=5.0, translation=0.05, scale_range=(0.9, 1.1)), generator)
    reference = torch.Generator().manual_seed(3)
    torch.rand(4 * 4, generator=reference)  # rotation, scale and two shifts: one number per image each
    assert torch.equal(torch.rand(3, generator=generator), torch.rand(3, generator=reference))


def test_gamma_augmentation_is_one_exposure_curve_per_image():
    batch = torch.rand(4, 1, 16, 16) * 0.9 + 0.05
    out = augment(batch, Augmentation(gamma=0.4), torch.Generator().manual_seed(0))
    exponents = torch.log(out) / torch.log(batch)  # out = batch ** g, one g per image
    per_image = exponents.view(4, -1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-3)
    assert ((per_image[:, 0] > math.exp(-0.4) - 1e-4) & (per_image[:, 0] < math.exp(0.4) + 1e-4)).all()
    assert per_image[:, 0].std() > 0.01


def test_sharpness_augmentation_blurs_or_sharpens_each_image_and_keeps_smooth_images():
    flat = torch.full((3, 1, 24, 24), 0.4)
    assert torch.allclose(augment(flat, Augmentation(sharpness=0.5), torch.Generator().manual_seed(0)), flat, atol=1e-6)
    detail = torch.rand(64, 1, 24, 24) * 0.6 + 0.2
    out = augment(detail, Augmentation(sharpness=0.5), torch.Generator().manual_seed(0))
    blurred = gaussian_blur(detail, [SHARPNESS_KERNEL] * 2, [SHARPNESS_SIGMA] * 2)
    gain = ((out - blurred) * (detail - blurred)).sum(dim=(1, 2, 3)) / ((detail - blurred) ** 2).sum(dim=(1, 2, 3))
    assert (gain > 0.5 - 1e-3).all() and (gain < 1.5 + 1e-3).all()
    assert (gain < 0.9).any() and (gain > 1.1).any()  # both blurred and sharpened images
    assert torch.allclose(out.mean(dim=(1, 2, 3)), detail.mean(dim=(1, 2, 3)), atol=0.02)


def test_mixup_blends_each_film_and_its_target_with_the_same_weight():
    pixels = torch.stack([torch.full((1, 8, 8), float(i)) for i in range(16)])  # film i is all i
    targets = torch.arange(16).float() / 15  # a target that is its film's value / 15
    mixed, y = mix(pixels, targets, 0.4, torch.Generator().manual_seed(0))
    assert mixed.shape == pixels.shape and y.shape == targets.shape
    assert torch.allclose(mixed, mixed[:, :, :1, :1].expand_as(mixed))  # one blend weight per film
    assert torch.allclose(y, mixed[:, 0, 0, 0] / 15, atol=1e-5)  # the target blends the same pair, same weight
    assert (~torch.isclose(mixed[:, 0, 0, 0], torch.arange(16).float(), atol=0.1)).sum() >= 4  # real blends
    again, y_again = mix(pixels, targets, 0.4, torch.Generator().manual_seed(0))
    assert torch.equal(again, mixed) and torch.equal(y_again, y)
