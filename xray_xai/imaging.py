"""The one loader for uploaded images: any supported file in, one grayscale array out.

The app, the CLI and the evaluation all call :func:`load_image`, and it is the only place
where pixels are decoded. Decisions, so that every caller behaves the same:

- Formats: PNG, JPEG (incl. MPO), TIFF, BMP, WebP, GIF, and DICOM. DICOM is recognised by its
  content (``DICM`` at byte 128, or a bare dataset starting with a group 0002/0008 element),
  never by the file name.
- 8-bit data keeps its values (``value / 255`` after PIL's ``convert("L")``), exactly what
  training saw. Data with more than 8 bits (16-bit PNG/TIFF, 32-bit integer or float TIFF) has
  no standard display range, so it is windowed to its actual range (min-max): a 12-bit image in
  a 16-bit container is neither left dark nor clipped to white.
- DICOM: modality LUT (Rescale Slope/Intercept), then the VOI LUT or the first display window
  when present, else min-max; MONOCHROME1 is inverted so that 0 is always black. RGB, YBR and
  palette-colour DICOMs are converted like colour images. Compressed transfer syntaxes decode
  when pydicom has a pure-Python or Pillow handler (RLE, Deflate, JPEG baseline/extended,
  JPEG 2000); JPEG Lossless, JPEG-LS and HTJ2K would need pylibjpeg or GDCM and get a clear error.
- EXIF orientation is applied. Colour is converted to grayscale with ITU-R 601 luma (PIL's
  ``convert("L")``); transparency is ignored, with a warning when the image is not opaque.
- Multi-frame files (animated GIF/PNG/WebP, multi-page TIFF, multi-frame DICOM): the first frame
  is analysed and a warning says so.
- NaN/infinite pixels are set to the darkest (NaN, -inf) or brightest (+inf) valid value, with a
  warning; an image without any valid pixel is rejected.
- Guards: file size, pixel count from the header before any pixel is decoded (for DICOM
  Rows x Columns x frames), a minimum side, and every decoding failure becomes an
  :class:`InputError` whose message never quotes header values (no patient data).

Nothing is written to disk: files are read into memory and decoded from there.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pydicom.config
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing, get_decoder, pixel_array
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

# pydicom's validation warnings and log records can quote header values (names, dates,
# character sets); none may reach a log. See also _silence_pydicom_warnings.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)

MAX_FILE_BYTES = 256 * 1024 * 1024  # largest upload read into memory (uncompressed CR/DR DICOMs are < 60 MB)
MAX_PIXELS = 36_000_000  # 6000 x 6000; the largest radiography detectors are ~4300 x 4300
MIN_SIDE = 32  # below this a radiograph carries no usable detail (the model sees 224 px)
SUPPORTED = "PNG, JPEG, TIFF, BMP, WebP, GIF or DICOM"
# File suffixes taken when a folder is read (DICOM is recognised by content, so DICOM exports
# without a suffix are taken too).
IMAGE_SUFFIXES = frozenset(
    {"", ".png", ".jpg", ".jpeg", ".mpo", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".dcm", ".dicom"}
)
_RASTER_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF")  # JPEG includes MPO
_COLOUR_SAMPLE_SIDE = 256  # colourfulness is measured on a thumbnail of at most this side

_NON_IMAGE_SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x7fELF", "a program"),
    (b"MZ", "a Windows program"),
)
_HEIF_BRANDS = (b"ftypheic", b"ftypheix", b"ftyphevc", b"ftypmif1", b"ftypmsf1", b"ftypavif")


class InputError(ValueError):
    """An upload that cannot be analysed; the message is meant for the person who sent it."""


@dataclass(frozen=True)
class LoadedImage:
    """A decoded upload.

    ``pixels`` is float32 ``(H, W)`` grayscale in [0, 1], 0 = black, in display orientation.
    ``colourfulness`` is the Hasler-Suesstrunk colourfulness of the colour original on a
    [0, 1] scale (0 for grayscale data; ~0.06 is "slightly colourful").
    """

    pixels: np.ndarray
    format: str
    bit_depth: int
    warnings: tuple[str, ...] = ()
    colourfulness: float = 0.0


def load_image(source: str | os.PathLike | bytes) -> LoadedImage:
    """Decode a file path or the bytes of an upload into a :class:`LoadedImage`.

    Raises :class:`InputError` for anything a user can cause (unreadable, empty, damaged,
    unsupported, too large or too small files).
    """
    data = _read_bytes(source)
    if _looks_like_dicom(data):
        image = _load_dicom(data)
    else:
        image = _load_raster(data)
    height, width = image.pixels.shape
    if min(height, width) < MIN_SIDE:
        raise InputError(
            f"The image is only {width} x {height} pixels; at least {MIN_SIDE} pixels on each side are needed."
        )
    return image


# ---------------------------------------------------------------------------------------------
# Reading and recognising


def _read_bytes(source: str | os.PathLike | bytes) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise InputError(_too_large_file())
            with path.open("rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError:
            raise InputError("The file could not be opened: it does not exist or is not readable.") from None
    else:
        raise TypeError(f"load_image expects a path or bytes, not {type(source).__name__}")
    if not data:
        raise InputError("The file is empty (0 bytes).")
    if len(data) > MAX_FILE_BYTES:
        raise InputError(_too_large_file())
    return data


def _too_large_file() -> str:
    return f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB, the upload limit."


def _looks_like_dicom(data: bytes) -> bool:
    """Part-10 file (``DICM`` after the preamble) or a bare dataset starting with group 0002/0008."""
    if data[128:132] == b"DICM":
        return True
    return len(data) >= 8 and data[:2] in (b"\x02\x00", b"\x08\x00") and data[3] == 0


def _describe_non_image(data: bytes) -> str:
    """A message naming what an unrecognised file probably is."""
    head = data[:2048]
    if head[4:12] in _HEIF_BRANDS:
        return "This file is an HEIC/HEIF/AVIF photo, a format this tool cannot read. Please convert it to PNG or JPEG."
    kind = next((name for magic, name in _NON_IMAGE_SIGNATURES if head.startswith(magic)), None) or _text_kind(head)
    if kind is None:
        return f"This file is not an image in a supported format ({SUPPORTED}), or it is damaged."
    return f"This file is {kind}, not an image. Please upload a chest radiograph as {SUPPORTED}."


def _text_kind(head: bytes) -> str | None:
    """'a web page (HTML)', 'an SVG drawing', ... if ``head`` is UTF-8 text, else None."""
    decoded = head.decode("utf-8", "replace")
    text = decoded.replace("\ufffd", "").lower()
    if len(decoded) - len(text) > 2 or not text.strip():  # allow a character cut at the end
        return None
    if "<svg" in text:
        return "an SVG drawing"
    if "<html" in text or "<!doctype html" in text:
        return "a web page (HTML)"
    if text.lstrip().startswith("<?xml"):
        return "an XML document"
    if all(ch.isprintable() or ch.isspace() for ch in text):
        return "a text file"
    return None


def _check_pixel_count(width: int, height: int, frames: int = 1) -> None:
    """Reject decompression bombs from the header, before any pixel is allocated."""
    if width <= 0 or height <= 0 or frames <= 0:
        raise InputError("The image header declares no pixels (zero width, height or frame count).")
    if width * height * frames > MAX_PIXELS:
        described = f"{width} x {height} pixels" + (f" x {frames} frames" if frames > 1 else "")
        raise InputError(
            f"The image is too large to analyse ({described}; the limit is {MAX_PIXELS / 1e6:.0f} megapixels)."
        )


# ---------------------------------------------------------------------------------------------
# PNG, JPEG, TIFF, BMP, WebP, GIF


def _load_raster(data: bytes) -> LoadedImage:
    try:
        image = Image.open(io.BytesIO(data), formats=_RASTER_FORMATS)
    except Image.DecompressionBombError:
        raise InputError(
            f"The image is too large to analyse (the limit is {MAX_PIXELS / 1e6:.0f} megapixels)."
        ) from None
    except UnidentifiedImageError:
        raise InputError(_describe_non_image(data)) from None
    except Exception as exc:  # a damaged header can raise anything from a plugin
        raise InputError("The image file is damaged and could not be read.") from exc
    with image:
        _check_pixel_count(image.width, image.height)
        notes: list[str] = []
        if getattr(image, "is_animated", False) and image.format != "MPO":  # MPO extras are previews
            notes.append("The file holds several frames or pages; only the first one was analysed.")
        try:
            image.seek(0)
            image.load()
        except Exception as exc:
            raise InputError("The image file is damaged or incomplete (truncated) and could not be decoded.") from exc
        image_format = image.format or "image"
        try:
            upright = _apply_exif_orientation(image, notes)
            pixels, bit_depth, colourfulness = _raster_to_gray(upright, notes)
        except InputError:
            raise
        except Exception as exc:
            raise InputError("The image could not be decoded: its pixel format is damaged or not supported.") from exc
    return LoadedImage(pixels, image_format, bit_depth, tuple(notes), colourfulness)


def _apply_exif_orientation(image: Image.Image, notes: list[str]) -> Image.Image:
    """The image as displayed, upright by its EXIF Orientation tag (damaged EXIF: as stored)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        notes.append("The image's EXIF data is damaged; its orientation tag was ignored.")
        return image


def _raster_to_gray(image: Image.Image, notes: list[str]) -> tuple[np.ndarray, int, float]:
    """(pixels in [0, 1], bit depth, colourfulness) of a loaded PIL image of any mode."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image)
        bit_depth = 16 if mode.startswith("I;16") else 32
        return _window_to_range(values, notes), bit_depth, 0.0
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    alpha = next((band for band in ("A", "a") if band in mode), None)
    if alpha and image.getchannel(alpha).getextrema()[0] < 255:
        notes.append("The image has transparent areas; transparency was ignored.")
    if mode in ("1", "L", "LA", "La"):
        gray, colourfulness = image.convert("L"), 0.0
    else:
        try:
            rgb = image.convert("RGB")
        except ValueError:
            raise InputError(f"The image's colour mode ({mode}) is not supported.") from None
        gray, colourfulness = rgb.convert("L"), _colourfulness_of(rgb)
    pixels = np.asarray(gray, dtype=np.float32) / 255.0  # == xray_xai.preprocess.read_dataset_image
    return pixels, 1 if mode == "1" else 8, colourfulness


def _colourfulness_of(rgb: Image.Image) -> float:
    scale = min(1.0, _COLOUR_SAMPLE_SIDE / max(rgb.size))
    if scale < 1.0:
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BOX)
    return colourfulness(np.asarray(rgb, dtype=np.float32) / 255.0)


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness of an ``(H, W, 3)`` RGB array in [0, 1].

    0 for gray images; on this [0, 1] scale ~0.06 is "slightly" and ~0.13 "moderately colourful".
    """
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    spread = np.sqrt(rg.var() + yb.var())
    offset = np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(spread + 0.3 * offset)


def _window_to_range(values: np.ndarray, notes: list[str]) -> np.ndarray:
    """Min-max window high-bit-depth data to [0, 1]; non-finite pixels are replaced."""
    values = np.asarray(values)
    small_ints = values.dtype.kind in "biu" and values.dtype.itemsize <= 2  # exact in float32, half the memory
    values = values.astype(np.float32 if small_ints else np.float64, copy=False)
    finite = np.isfinite(values)
    if not finite.all():
        if not finite.any():
            raise InputError("The image holds no valid pixel values (all are NaN or infinite).")
        low, high = values[finite].min(), values[finite].max()
        values = np.where(np.isposinf(values), high, np.where(finite, values, low))
        notes.append(
            f"{int((~finite).sum())} pixels were not valid numbers (NaN or infinite) and were set to black or white."
        )
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# DICOM

_DICOM_DAMAGED = "The DICOM file is damaged or incomplete and could not be read."
_FILTER_LOCK = threading.Lock()


def _silence_pydicom_warnings() -> None:
    """Ignore warnings raised by pydicom (or attributed to this module by its stack level).

    Re-applied (moved to the front) before every read because test runners and other code may
    reset or prepend to the filter list; re-adding an identical filter does not grow the list.
    ``catch_warnings`` is avoided: it is not thread-safe and the app decodes uploads concurrently.
    """
    with _FILTER_LOCK:
        warnings.filterwarnings("ignore", module=r"(pydicom|xray_xai\.imaging)(\.|$)")


def _load_dicom(data: bytes) -> LoadedImage:
    _silence_pydicom_warnings()
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception:
        raise InputError(_DICOM_DAMAGED) from None  # the cause may quote header values
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputError(
            "The DICOM file contains no image (no pixel data): it may be a report or structured document, "
            "or it is incomplete."
        )
    try:
        width, height = int(ds.Columns), int(ds.Rows)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        bit_depth = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)))
    except Exception:
        raise InputError("The DICOM file's image description (rows, columns, frames) is missing or invalid.") from None
    _check_pixel_count(width, height, frames)
    syntax = _transfer_syntax(ds)
    try:
        decodable = get_decoder(syntax).is_available
    except NotImplementedError:
        decodable = False
    if not decodable:
        raise InputError(
            f"This DICOM file is stored with the transfer syntax '{syntax.name}', which this tool cannot decode. "
            "Please export it uncompressed (or as PNG) and try again."
        )
    notes: list[str] = []
    if frames > 1:
        notes.append("The DICOM file holds several frames; only the first one was analysed.")
    try:
        frame = pixel_array(ds, index=0)
    except Exception:
        raise InputError("The DICOM pixel data is damaged or incomplete and could not be decoded.") from None
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        pixels = _dicom_grayscale(frame, ds, notes)
        if photometric == "MONOCHROME1":  # 0 means white in MONOCHROME1
            pixels = 1.0 - pixels
        colour = 0.0
    else:
        pixels, colour = _dicom_colour(frame, ds, photometric, notes)
    return LoadedImage(pixels.astype(np.float32, copy=False), "DICOM", bit_depth, tuple(notes), colour)


def _transfer_syntax(ds: pydicom.Dataset) -> pydicom.uid.UID:
    """The dataset's transfer syntax; bare datasets get the encoding they were read with."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not syntax:
        implicit, little = ds.original_encoding
        syntax = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
    return pydicom.uid.UID(str(syntax))


def _dicom_grayscale(frame: np.ndarray, ds: pydicom.Dataset, notes: list[str]) -> np.ndarray:
    """Modality LUT, then VOI LUT or window when present, else min-max, to [0, 1]."""
    try:
        values = np.asarray(apply_modality_lut(frame, ds))
    except Exception:
        notes.append("The DICOM rescale (modality LUT) information is invalid and was ignored.")
        values = frame
    try:
        if "VOILUTSequence" in ds:  # a LUT is indexed by integer values
            indices = values if values.dtype.kind in "iu" else np.rint(values).astype(np.int64)
            return _window_to_range(apply_voi(indices, ds, index=0), notes)
        if "WindowCenter" in ds and "WindowWidth" in ds:
            return _apply_window(values, _first_value(ds.WindowCenter), _first_value(ds.WindowWidth), ds)
    except InputError:
        raise
    except Exception:
        notes.append("The DICOM display window is invalid and was ignored; the full intensity range is shown.")
    return _window_to_range(values, notes)


def _first_value(value) -> float:
    return float(value[0] if isinstance(value, (list, tuple, MultiValue)) else value)


def _apply_window(values: np.ndarray, center: float, width: float, ds: pydicom.Dataset) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1 window (LINEAR, LINEAR_EXACT or SIGMOID) onto [0, 1], by pydicom.

    pydicom windows onto the range of the stored values; the window is therefore handed over in
    a dataset of one-bit unsigned values, whose range is [0, 1]. Raises ValueError for an
    unsupported function or an invalid width.
    """
    if not (np.isfinite(center) and np.isfinite(width)):
        raise ValueError("non-finite window")
    window = pydicom.Dataset()
    window.PhotometricInterpretation = "MONOCHROME2"
    window.BitsStored, window.PixelRepresentation = 1, 0
    window.WindowCenter, window.WindowWidth = center, width
    window.VOILUTFunction = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    return apply_windowing(values, window)


def _dicom_colour(
    frame: np.ndarray, ds: pydicom.Dataset, photometric: str, notes: list[str]
) -> tuple[np.ndarray, float]:
    """Colour DICOM (RGB, YBR converted by pydicom, or palette) -> gray pixels and colourfulness."""
    if photometric == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise InputError("The DICOM file's colour layout is not supported.")
    rgb = frame / 255.0 if frame.dtype == np.uint8 else _window_to_range(frame, notes)
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    step = max(1, max(rgb.shape[:2]) // _COLOUR_SAMPLE_SIDE)
    return gray.astype(np.float32), colourfulness(rgb[::step, ::step])
