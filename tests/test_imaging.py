"""The loader: every format variant of one radiograph gives the same model input, train and
serve decode identically, and DICOM header data never leaks into messages or logs."""

from __future__ import annotations

import functools
import io
import logging
import traceback
import warnings

import numpy as np
import pydicom
import pytest
from fuzz_corpus import PHI_ID, PHI_NAME, dicom_bytes, encode, png16, synthetic_radiograph, to_uint8
from PIL import Image

from xray_xai.checkpoint import DEFAULT_CHECKPOINT, PROJECT_ROOT
from xray_xai.imaging import MAX_PIXELS, MIN_SIDE, InputError, LoadedImage, load_image
from xray_xai.preprocess import preprocess, read_dataset_image, to_model_size

SIZE, MEAN, STD = 224, 0.5, 0.25
EXAMPLES = PROJECT_ROOT / "examples"
CHEST = synthetic_radiograph(240, 300)
U8 = to_uint8(CHEST)


def _tiff(array: np.ndarray, mode: str | None = None) -> bytes:
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "TIFF")
    return buffer.getvalue()


def _with_exif_orientation(u8: np.ndarray, orientation: int, fmt: str, **params) -> bytes:
    """``u8`` stored so that applying EXIF ``orientation`` displays it upright."""
    undo = {
        3: lambda a: np.rot90(a, 2),
        6: lambda a: np.rot90(a, 1),
        8: lambda a: np.rot90(a, -1),
        2: lambda a: a[:, ::-1],
    }
    image = Image.fromarray(np.ascontiguousarray(undo[orientation](u8)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, fmt, exif=exif.tobytes(), **params)
    return buffer.getvalue()


def lossless_variants(pixels: np.ndarray) -> dict[str, bytes]:
    """Lossless encodings of one 8-bit-exact radiograph whose values span 0..255."""
    u8 = to_uint8(pixels)
    assert u8.min() == 0 and u8.max() == 255  # min-max windowing of >8-bit data then reproduces it
    u16 = u8.astype(np.uint16)
    return {
        "png8": encode(pixels, "PNG"),
        "png16": png16(u16 * 257),
        "png16_12bit_range": png16(u16 * 16),
        "png_rgb": encode(pixels, "PNG", mode="RGB"),
        "png_rgba": encode(pixels, "PNG", mode="RGBA"),
        "png_palette": encode(pixels, "PNG", mode="P"),
        "png_exif_rot90": _with_exif_orientation(u8, 6, "PNG"),
        "png_exif_rot270": _with_exif_orientation(u8, 8, "PNG"),
        "png_exif_rot180": _with_exif_orientation(u8, 3, "PNG"),
        "png_exif_mirror": _with_exif_orientation(u8, 2, "PNG"),
        "bmp": encode(pixels, "BMP"),
        "webp_lossless": encode(pixels, "WEBP", lossless=True),
        "tiff8": _tiff(u8),
        "tiff16": _tiff(u16 * 257),
        "tiff_float": _tiff(u8.astype(np.float32) / 255),
        "tiff_cmyk": _tiff(u8, mode="CMYK"),
        "gif": encode(pixels, "GIF"),
        "dicom_mono2_rescaled": dicom_bytes(u16 * 10 + 100, slope=0.5, intercept=-50.0),
        "dicom_mono1": dicom_bytes((255 - u16) * 16, photometric="MONOCHROME1", bits_stored=12),
        "dicom_window_full_range": dicom_bytes(u16 * 16, window=(2040.5, 4081.0), bits_stored=12),
        "dicom_8bit": dicom_bytes(u8),
        "dicom_rle": dicom_bytes(u16 * 16, bits_stored=12, rle=True),
        "dicom_bare": dicom_bytes(u16 * 16, bits_stored=12, preamble=False),
    }


def lossy_variants(pixels: np.ndarray) -> dict[str, bytes]:
    return {
        "jpeg": encode(pixels, "JPEG", quality=95),
        "jpeg_rgb": encode(pixels, "JPEG", mode="RGB", quality=95),
        "jpeg_cmyk": encode(pixels, "JPEG", mode="CMYK", quality=95),
        "jpeg_exif_rot90": _with_exif_orientation(to_uint8(pixels), 6, "JPEG", quality=95),
        "webp_lossy": encode(pixels, "WEBP", quality=95),
        "dicom_jpeg_baseline": dicom_bytes(to_uint8(pixels), jpeg=True),
    }


LOSSLESS = lossless_variants(CHEST)
LOSSY = lossy_variants(CHEST)


def _model_input(pixels: np.ndarray) -> np.ndarray:
    return preprocess(pixels, SIZE, MEAN, STD)


@pytest.mark.parametrize("name", sorted(LOSSLESS))
def test_lossless_variants_give_the_same_model_input(name):
    image = load_image(LOSSLESS[name])
    assert image.pixels.dtype == np.float32 and image.pixels.shape == CHEST.shape
    assert image.warnings == ()
    np.testing.assert_allclose(_model_input(image.pixels), _model_input(CHEST), atol=1e-4)


@pytest.mark.parametrize("name", sorted(LOSSY))
def test_lossy_variants_give_nearly_the_same_model_input(name):
    pixels = load_image(LOSSY[name]).pixels
    assert pixels.shape == CHEST.shape
    difference = np.abs(to_model_size(pixels, SIZE) - to_model_size(CHEST, SIZE))
    assert difference.mean() < 0.004 and difference.max() < 0.06


def test_formats_and_bit_depths_are_reported():
    assert (load_image(LOSSLESS["png16"]).format, load_image(LOSSLESS["png16"]).bit_depth) == ("PNG", 16)
    assert (load_image(LOSSLESS["dicom_mono1"]).format, load_image(LOSSLESS["dicom_mono1"]).bit_depth) == ("DICOM", 12)
    assert (load_image(LOSSY["jpeg_rgb"]).format, load_image(LOSSY["jpeg_rgb"]).bit_depth) == ("JPEG", 8)


def _example_radiograph() -> np.ndarray | None:
    """One of the dataset's full-resolution examples, reduced to ~600 px wide and stretched to 0..255."""
    paths = sorted(EXAMPLES.glob("*/*.jpeg"))
    if not paths:
        return None
    with Image.open(paths[0]) as image:
        gray = image.convert("L").reduce(3)
    u8 = np.asarray(gray, dtype=np.float32)
    return np.round((u8 - u8.min()) / (u8.max() - u8.min()) * 255) / 255


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="no trained checkpoint at checkpoints/classifier.json yet")
@pytest.mark.parametrize("source", ["synthetic", "example"])
@pytest.mark.slow
def test_every_variant_gets_the_same_probability(source):
    from xray_xai.models.classifier import Classifier

    pixels = CHEST if source == "synthetic" else _example_radiograph()
    if pixels is None:
        pytest.skip("no example radiographs in examples/")
    classifier = Classifier.load(DEFAULT_CHECKPOINT)
    reference = classifier.predict(pixels).probability
    variants = {**lossless_variants(pixels), **lossy_variants(pixels)}
    for name, data in variants.items():
        probability = classifier.predict(load_image(data).pixels).probability
        assert abs(probability - reference) <= 0.02, (name, probability, reference)


def test_training_jpeg_decodes_exactly_like_the_training_reader():
    rgb_jpeg = encode(synthetic_radiograph(224, 224, seed=3), "JPEG", mode="RGB", quality=75)
    np.testing.assert_array_equal(load_image(rgb_jpeg).pixels, read_dataset_image(io.BytesIO(rgb_jpeg)))


def test_sixteen_bit_data_is_windowed_not_truncated():
    ramp = np.tile(np.linspace(0, 65535, 512), (64, 1)).astype(np.uint16)
    pixels = load_image(png16(ramp)).pixels
    assert np.unique(pixels).size > 256  # more levels than 8 bits
    assert (pixels >= 1.0).mean() < 0.01  # never clipped to white
    np.testing.assert_allclose(pixels[0], np.linspace(0, 1, 512), atol=1e-4)
    twelve_bit = load_image(png16(np.tile(np.arange(4096, dtype=np.uint16), (40, 1)))).pixels
    assert twelve_bit.max() == pytest.approx(1.0) and twelve_bit.min() == 0.0  # not left dark


def test_dicom_window_and_voi_lut_are_applied():
    stored = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (64, 1))  # 0..4080
    windowed = load_image(dicom_bytes(stored, window=(1024.0, 1024.0), bits_stored=12)).pixels
    assert windowed[0, 0] == 0.0 and windowed[0, -1] == 1.0  # outside the window: black / white
    assert 0.4 < windowed[0, np.searchsorted(stored[0], 1024)] < 0.6  # window centre is mid-gray
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(stored, bits_stored=12)))
    lut = pydicom.Dataset()
    lut.add_new(0x00283002, "US", [4096, 0, 16])  # LUT Descriptor: 4096 entries from 0, 16 bits
    lut.add_new(0x00283006, "US", [int(v) for v in np.minimum(np.arange(4096) * 32, 65280)])  # saturates at 2040
    ds.VOILUTSequence = [lut]
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with_lut = load_image(buffer.getvalue()).pixels
    assert with_lut[0, stored[0] >= 2040].min() == 1.0 and with_lut[0, 0] == 0.0


# DICOM PS3.3 C.11.2.1.2.1 and C.11.2.1.3: the VOI LUT functions, here with output range [0, 1].
VOI_FUNCTIONS = {
    "LINEAR": lambda x, c, w: np.select(
        [x <= c - 0.5 - (w - 1) / 2, x > c - 0.5 + (w - 1) / 2], [0.0, 1.0], (x - (c - 0.5)) / (w - 1) + 0.5
    ),
    "LINEAR_EXACT": lambda x, c, w: np.select([x <= c - w / 2, x > c + w / 2], [0.0, 1.0], (x - c) / w + 0.5),
    "SIGMOID": lambda x, c, w: 1 / (1 + np.exp(-4 * (x - c) / w)),
}


@pytest.mark.parametrize("function", sorted(VOI_FUNCTIONS))
def test_dicom_window_functions_follow_the_standard(function):
    stored = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (32, 1))  # 0..4080
    slope, intercept, center, width = 2.0, -1000.0, 2500.0, 2001.0
    ds = pydicom.dcmread(
        io.BytesIO(dicom_bytes(stored, slope=slope, intercept=intercept, window=(center, width), bits_stored=12))
    )
    ds.VOILUTFunction = function
    buffer = io.BytesIO()
    ds.save_as(buffer)
    pixels = load_image(buffer.getvalue()).pixels
    expected = VOI_FUNCTIONS[function](stored * slope + intercept, center, width)  # window on the modality values
    assert expected.min() < 0.01 and expected.max() > 0.99  # the ramp reaches both ends of the window
    np.testing.assert_allclose(pixels, expected, atol=1e-6, rtol=0)


def test_monochrome1_is_inverted_so_that_zero_is_black():
    stored = np.zeros((64, 64), np.uint16)
    stored[:, 32:] = 4000
    pixels = load_image(dicom_bytes(stored, photometric="MONOCHROME1", bits_stored=12)).pixels
    assert pixels[0, 0] == 1.0 and pixels[0, -1] == 0.0


def test_multi_frame_files_use_the_first_frame_with_a_warning():
    stored = np.stack([U8.astype(np.uint16), 255 - U8.astype(np.uint16)])
    image = load_image(dicom_bytes(stored))
    np.testing.assert_allclose(image.pixels, CHEST, atol=1e-6)
    assert any("first" in warning for warning in image.warnings)
    frames = [Image.fromarray(U8), Image.fromarray(255 - U8)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    gif = load_image(buffer.getvalue())
    np.testing.assert_allclose(gif.pixels, CHEST, atol=1e-6)
    assert any("first" in warning for warning in gif.warnings)


def test_colour_dicoms_are_converted_to_gray():
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(U8)))
    rgb = np.stack([U8, U8, U8], axis=-1)
    rgb[..., 0] = 255 - U8  # a strongly coloured version
    ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "RGB", 3, 0
    ds.PixelData = rgb.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer)
    image = load_image(buffer.getvalue())
    expected = (0.299 * (255 - U8.astype(np.float64)) + 0.701 * U8) / 255
    np.testing.assert_allclose(image.pixels, expected, atol=1e-5)
    assert image.colourfulness > 0.1


def test_colour_images_report_colourfulness():
    rgb = np.stack([U8, U8 // 2, 255 - U8], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    assert load_image(buffer.getvalue()).colourfulness > 0.1
    assert load_image(LOSSLESS["png_rgb"]).colourfulness == 0.0


def test_paths_are_accepted_and_missing_files_are_input_errors(tmp_path):
    path = tmp_path / "upload.dcm.png"  # the extension lies: content decides
    path.write_bytes(LOSSLESS["dicom_mono1"])
    assert load_image(path).format == "DICOM"
    assert load_image(str(path)).format == "DICOM"
    with pytest.raises(InputError, match="could not be opened"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError):
        load_image(tmp_path)


def test_size_guards():
    with pytest.raises(InputError, match=f"at least {MIN_SIDE}"):
        load_image(encode(np.zeros((MIN_SIDE - 1, 100)), "PNG"))
    assert load_image(encode(np.zeros((MIN_SIDE, MIN_SIDE)), "PNG")).pixels.shape == (MIN_SIDE, MIN_SIDE)
    side = int(np.sqrt(MAX_PIXELS)) + 1
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(np.zeros((4, 4), np.uint16))))
    ds.Rows = ds.Columns = side
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(InputError, match="too large"):
        load_image(buffer.getvalue())


def test_loaded_image_is_immutable():
    image = load_image(LOSSLESS["png8"])
    assert isinstance(image, LoadedImage)
    with pytest.raises(AttributeError):
        image.format = "JPEG"


# ---------------------------------------------------------------------------------------------
# Privacy: DICOM header values never appear in messages, warnings or logs.

PHI = (PHI_NAME, "Doe", "Jane", PHI_ID, "20190317", "20230102")


def _as_jpeg_lossless(ds: pydicom.Dataset) -> None:
    """Declare a transfer syntax no installed handler decodes (JPEG Lossless SV1)."""
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGLosslessSV1
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8\xff\xc3" + bytes(64)])
    ds["PixelData"].VR = "OB"


@functools.cache
def _phi_variants() -> dict[str, bytes]:
    stored = U8.astype(np.uint16) * 16
    valid = dicom_bytes(stored, bits_stored=12)
    ds = pydicom.dcmread(io.BytesIO(valid))
    variants = {"valid": valid, "multiframe": dicom_bytes(np.stack([stored, stored]), bits_stored=12)}
    variants["truncated_pixels"] = valid[: len(valid) - 5000]
    variants["truncated_header"] = valid[: valid.find(PHI_NAME.encode()) + 20]
    variants["no_pixels"] = dicom_bytes(stored, pixel_data=False)
    variants["bad_window"] = dicom_bytes(stored, window=(100.0, -3.0), bits_stored=12)
    for name, change in {
        "unsupported_syntax": _as_jpeg_lossless,
        "phi_charset": lambda d: setattr(d, "SpecificCharacterSet", PHI_ID),
        "phi_in_rows": lambda d: d.__setitem__(0x00280010, pydicom.DataElement(0x00280010, "US", 0)),
        "huge": lambda d: setattr(d, "Rows", 60_000),
        "phi_in_photometric": lambda d: setattr(d, "PhotometricInterpretation", PHI_ID),
        "phi_window": lambda d: (setattr(d, "WindowCenter", "20190317"), setattr(d, "WindowWidth", "-1")),
    }.items():
        copy = pydicom.dcmread(io.BytesIO(valid))
        change(copy)
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # writing the bad character set warns here, in the fixture
            warnings.simplefilter("ignore")
            copy.save_as(buffer)
        variants[name] = buffer.getvalue()
    raw = bytearray(valid)
    position = raw.find(PHI_NAME.encode())
    raw[position - 2 : position] = b"\xff\xff"  # the PatientName element length becomes absurd
    variants["broken_name_length"] = bytes(raw)
    assert ds.PatientName == PHI_NAME  # the fixture really carries the data we look for
    return variants


@pytest.mark.parametrize("name", sorted(_phi_variants()))
def test_dicom_header_values_never_leak(name, recwarn, caplog):
    data = _phi_variants()[name]
    assert PHI_NAME.encode() in data
    caplog.set_level(logging.DEBUG, logger="xray_xai")
    texts = []
    try:
        image = load_image(data)
        texts += list(image.warnings) + [repr(image), image.format]
    except InputError as error:
        texts.append(str(error))
        texts.append("".join(traceback.format_exception(error)))
    texts += [str(w.message) for w in recwarn.list]
    texts.append(caplog.text)
    for text in texts:
        for secret in PHI:
            assert secret not in text, (name, text)


def test_valid_phi_dicom_decodes():
    image = load_image(_phi_variants()["valid"])
    np.testing.assert_allclose(image.pixels, CHEST, atol=1e-6)
