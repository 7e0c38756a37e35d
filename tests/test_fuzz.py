"""Hostile, odd and random inputs: the loader answers each with a valid image or an InputError."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fuzz_corpus import build_corpus, dicom_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from xray_xai.imaging import MIN_SIDE, InputError, LoadedImage, load_image
from xray_xai.preprocess import preprocess

CORPUS = build_corpus()
CHEST = (96, 120)  # the corpus's chest film, (height, width)
WELL_FORMED = {  # corpus files whose pixels are intact and large enough: each must load, at this shape
    **dict.fromkeys(
        [
            "dicom_multiframe.dcm",
            "dicom_bare.dcm",
            "dicom_rle.dcm",
            "dicom_jpeg.dcm",
            "dicom_bad_window.dcm",
            "animated.gif",
            "multipage.tif",
            "bilevel.png",
            "la.png",
            "rgba_transparent.png",
            "cmyk.jpg",
            "exif_garbage.jpg",
            "bmp.png",
        ],
        CHEST,
    ),
    **dict.fromkeys(
        [
            "all_black.png",
            "all_white.jpg",
            "all_zero_16bit.png",
            "all_max_16bit.png",
            "extremes_16bit.png",
            "float_nan.tif",
            "float_inf.tif",
            "float_huge_range.tif",
        ],
        (64, 64),
    ),
    "noise.png": (128, 128),
    "extreme_aspect.png": (32, 4000),
    "extreme_aspect_tall.png": (3000, 32),
}


def _check_loaded(image: LoadedImage) -> None:
    pixels = image.pixels
    assert isinstance(image, LoadedImage)
    assert pixels.dtype == np.float32 and pixels.ndim == 2
    assert np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert all(isinstance(w, str) and w for w in image.warnings)
    model_input = preprocess(image.pixels, 64, 0.5, 0.25)
    assert model_input.shape == (64, 64) and np.isfinite(model_input).all()


def _load_or_input_error(data: bytes) -> LoadedImage | None:
    try:
        image = load_image(data)
    except InputError as error:
        message = str(error)
        assert message and "Traceback" not in message and len(message) < 300
        return None
    _check_loaded(image)
    return image


def test_corpus_is_large_and_varied():
    assert len(CORPUS) >= 60
    assert len({name for name, _ in CORPUS}) == len(CORPUS)
    assert set(WELL_FORMED) <= {name for name, _ in CORPUS}  # a renamed file is not silently left unchecked


@pytest.mark.parametrize("name,data", CORPUS, ids=[name for name, _ in CORPUS])
def test_every_corpus_file_loads_or_raises_input_error(name, data):
    image = _load_or_input_error(data)
    if name in WELL_FORMED:
        assert image is not None and image.pixels.shape == WELL_FORMED[name]


@pytest.mark.parametrize(
    "name",
    [
        "empty.png",
        "text.png",
        "html.jpg",
        "svg.png",
        "pdf.png",
        "zip.png",
        "huge_declared.png",
        "huge_dicom.dcm",
        "dicom_no_pixels.dcm",
        "one_pixel.png",
        "float_all_nan.tif",
        "truncated_0.5.jpg",
        "truncated_0.5.dcm",
    ],
)
def test_known_bad_files_are_rejected_with_a_specific_message(name):
    data = dict(CORPUS)[name]
    with pytest.raises(InputError) as raised:
        load_image(data)
    expected = {
        "empty.png": "empty",
        "text.png": "text file",
        "html.jpg": "web page",
        "svg.png": "SVG",
        "pdf.png": "PDF",
        "zip.png": "ZIP",
        "huge_declared.png": "too large",
        "huge_dicom.dcm": "too large",
        "dicom_no_pixels.dcm": "no pixel data",
        "one_pixel.png": "at least",
        "float_all_nan.tif": "NaN",
        "truncated_0.5.jpg": "truncated",
        "truncated_0.5.dcm": "damaged",
    }[name]
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    "name", ["animated.gif", "multipage.tif", "dicom_multiframe.dcm", "float_nan.tif", "rgba_transparent.png"]
)
def test_odd_but_valid_files_load_with_a_warning(name):
    image = _load_or_input_error(dict(CORPUS)[name])
    assert image is not None and image.warnings


@pytest.mark.parametrize(
    "name",
    [
        "all_black.png",
        "all_white.jpg",
        "all_zero_16bit.png",
        "all_max_16bit.png",
        "extreme_aspect.png",
        "noise.png",
        "dicom_rle.dcm",
        "dicom_bare.dcm",
        "cmyk.jpg",
    ],
)
def test_odd_but_valid_files_load(name):
    assert _load_or_input_error(dict(CORPUS)[name]) is not None


# ---------------------------------------------------------------------------------------------
# Property-based: random shapes, dtypes and values.

_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.bool_])


def _encode_array(array: np.ndarray, fmt: str) -> bytes:
    if array.dtype == np.bool_:
        image = Image.fromarray(array.astype(np.uint8) * 255).convert("1")
    else:
        image = Image.fromarray(array)  # uint8 -> L, uint16 -> I;16, int32 -> I, float32 -> F
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@st.composite
def _raster_files(draw) -> tuple[np.ndarray, bytes]:
    dtype = draw(_DTYPES)
    shape = (draw(st.integers(1, 70)), draw(st.integers(1, 70)))
    elements = st.floats(width=32, allow_nan=True, allow_infinity=True) if dtype == np.float32 else None
    array = draw(arrays(dtype, shape, elements=elements))
    fmt = "TIFF" if dtype in (np.int32, np.float32) else draw(st.sampled_from(["PNG", "TIFF"]))
    return array, _encode_array(array, fmt)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_raster_files())
def test_random_arrays_round_trip_or_fail_cleanly(case):
    array, data = case
    image = _load_or_input_error(data)
    if image is None:
        return
    assert image.pixels.shape == array.shape
    finite = np.isfinite(array.astype(np.float64))
    if finite.any() and array.dtype in (np.uint16, np.int32, np.float32):  # windowed to the real range
        values = array.astype(np.float64)[finite]
        if values.max() > values.min():
            assert image.pixels.max() == pytest.approx(1.0) and image.pixels.min() == 0.0


@settings(max_examples=60, deadline=None)
@given(
    stored=arrays(np.uint16, st.tuples(st.integers(1, 48), st.integers(1, 48))),
    photometric=st.sampled_from(["MONOCHROME1", "MONOCHROME2"]),
    slope=st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
    window=st.one_of(st.none(), st.tuples(st.floats(-1e5, 1e5), st.floats(-10, 1e5))),
    bits=st.integers(1, 16),
)
def test_random_dicoms_load_or_fail_cleanly(stored, photometric, slope, window, bits):
    data = dicom_bytes(stored, photometric=photometric, slope=slope, intercept=3.0, window=window, bits_stored=bits)
    image = _load_or_input_error(data)
    if (
        min(stored.shape) >= MIN_SIDE
    ):  # intact pixels, large enough: odd header values are noted or ignored, never refused
        assert image is not None and image.pixels.shape == stored.shape


@settings(max_examples=100, deadline=None)
@given(
    st.binary(min_size=0, max_size=600),
    st.sampled_from(
        [
            b"",
            b"\x89PNG\r\n\x1a\n",
            b"\xff\xd8\xff",
            b"II*\x00",
            b"GIF89a",
            b"BM",
            bytes(128) + b"DICM",
            b"\x08\x00\x05\x00",
        ]
    ),
)
def test_random_bytes_behind_real_signatures_fail_cleanly(body, signature):
    _load_or_input_error(signature + body)
