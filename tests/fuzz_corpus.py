"""Test fixtures made in memory: a synthetic chest radiograph, DICOM files, and a corpus of
hostile or odd uploads.

Nothing here reads ../shared or writes files: every fixture is bytes. :func:`build_corpus` is
shared by the loader fuzz test and the end-to-end analysis tests.
"""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
import zlib

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

PHI_NAME = "Doe^Jane"
PHI_ID = "SECRET123"


def synthetic_radiograph(height: int = 240, width: int = 300, seed: int = 0) -> np.ndarray:
    """A plausible frontal chest film as 8-bit-exact float32 in [0, 1] (0 and 1 both present).

    Dark air at the sides, soft tissue, two dark lung fields crossed by ribs, a bright
    mediastinum and spine, a heart shadow to the image right (patient's left) and a bright
    abdomen below the diaphragm.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / width, y / height  # 0..1 across, 0..1 down
    image = np.full((height, width), 0.05)
    body = np.abs(u - 0.5) < 0.36 + 0.06 * v
    image[body] = 0.55
    for centre in (0.31, 0.69):  # lung fields, widening towards the diaphragm
        half_width = 0.08 + 0.1 * np.clip((v - 0.12) / 0.6, 0, 1)
        lung = (np.abs(u - centre) < half_width) & (v > 0.12) & (v < 0.72 + 0.05 * np.abs(u - centre) / 0.18)
        ribs = 0.08 * (np.sin(v * 2 * np.pi * 9 + 3 * np.abs(u - 0.5)) > 0.6)
        image[lung] = (0.18 + ribs)[lung]
    image[np.abs(u - 0.5) < 0.07] = 0.8  # mediastinum
    image[np.abs(u - 0.5) < 0.025] = 0.92  # spine
    heart = ((u - 0.57) / 0.13) ** 2 + ((v - 0.6) / 0.14) ** 2 < 1
    image[heart] = 0.78
    image[(v > 0.74 + 0.04 * np.cos((u - 0.5) * 8)) & body] = 0.8  # abdomen below the diaphragm
    rng = np.random.default_rng(seed)
    image += rng.normal(0, 0.015, image.shape)
    image = _smooth(image)
    image = (image - image.min()) / (image.max() - image.min())
    return (np.round(image * 255) / 255).astype(np.float32)


def _smooth(image: np.ndarray, passes: int = 3) -> np.ndarray:
    """Repeated 3 x 3 box blur (edges replicated) so the phantom has film-like soft edges."""
    for _ in range(passes):
        padded = np.pad(image, 1, mode="edge")
        height, width = image.shape
        image = (
            sum(padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
        )
    return image


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str, mode: str = "L", **params) -> bytes:
    """Encode an 8-bit-exact [0, 1] grayscale array with PIL in ``mode`` (L, RGB, RGBA, P, CMYK)."""
    image = Image.fromarray(to_uint8(pixels))
    if mode == "P":
        image = image.convert("RGB").quantize(256)  # a gray image has <= 256 colours: lossless
    elif mode != "L":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png16(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buffer, "PNG")
    return buffer.getvalue()


def dicom_bytes(
    stored: np.ndarray,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    bits_stored: int = 16,
    frames: int = 1,
    rle: bool = False,
    jpeg: bool = False,
    preamble: bool = True,
    pixel_data: bool = True,
) -> bytes:
    """A DICOM file (bytes) holding ``stored`` (uint16 or uint8, (H, W) or (F, H, W)) with PHI in the header.

    ``rle`` / ``jpeg`` compress the pixel data (RLE Lossless / JPEG baseline, the latter for uint8).
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PHI_NAME
    ds.PatientID = PHI_ID
    ds.PatientBirthDate = "20190317"
    ds.StudyDate = "20230102"
    ds.InstitutionName = "SECRET123 Hospital"
    ds.Modality = "CR"
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 1
    ds.Rows, ds.Columns = stored.shape[-2:]
    if stored.ndim == 3:
        ds.NumberOfFrames = stored.shape[0]
    ds.BitsAllocated = stored.dtype.itemsize * 8
    ds.BitsStored = min(bits_stored, ds.BitsAllocated)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0.0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if pixel_data:
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        if rle:
            ds.compress(RLELossless)
        if jpeg:  # JPEG baseline, 8-bit frames, decoded through pydicom's Pillow handler
            frames = stored if stored.ndim == 3 else stored[None]
            ds.PixelData = encapsulate([encode(frame / 255.0, "JPEG", quality=95) for frame in frames])
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    return data if preamble else data[132:]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_with_header(width: int, height: int, bit_depth: int = 8, colour_type: int = 0, data: bytes = b"") -> bytes:
    """A PNG with an arbitrary IHDR (e.g. huge declared dimensions) and optional IDAT payload."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    chunks = _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(data)) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def _flip_bytes(data: bytes, seed: int, count: int = 20, start: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = bytearray(data)
    for position in rng.integers(start, len(buffer), count):
        buffer[position] ^= int(rng.integers(1, 256))
    return bytes(buffer)


def _zip(name: str, payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, payload)
    return buffer.getvalue()


def _animated_gif(frames: list[np.ndarray]) -> bytes:
    images = [Image.fromarray(to_uint8(f)) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return buffer.getvalue()


def _multipage_tiff(frames: list[np.ndarray]) -> bytes:
    images = [Image.fromarray(to_uint8(f)) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, "TIFF", save_all=True, append_images=images[1:])
    return buffer.getvalue()


def _float_tiff(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.float32)).save(buffer, "TIFF")
    return buffer.getvalue()


def build_corpus(seed: int = 0) -> list[tuple[str, bytes]]:
    """>= 60 hostile or odd uploads as (file name, bytes); each must load or raise InputError."""
    rng = np.random.default_rng(seed)
    chest = synthetic_radiograph(96, 120, seed)
    png, jpeg = encode(chest, "PNG"), encode(chest, "JPEG", quality=90)
    stored = np.round(chest * 4095).astype(np.uint16)
    dicom = dicom_bytes(stored, bits_stored=12)
    corpus: list[tuple[str, bytes]] = [
        ("empty.png", b""),
        ("one_byte.jpg", b"\xff"),
        ("zeros.png", bytes(4096)),
        ("random.png", rng.bytes(2048)),
        ("random.jpg", rng.bytes(50_000)),
        ("random.dcm", rng.bytes(4096)),
        ("random_with_dicm.dcm", bytes(128) + b"DICM" + rng.bytes(1000)),
        ("random_bare_dicom.dcm", b"\x08\x00\x05\x00" + rng.bytes(1000)),
        ("jpeg_magic_only.jpg", b"\xff\xd8\xff\xe0" + rng.bytes(100)),
        ("png_signature_only.png", b"\x89PNG\r\n\x1a\n"),
        ("gif_header_only.gif", b"GIF89a\x10\x00\x10\x00"),
        ("bmp_header_only.bmp", b"BM" + bytes(12)),
        ("tiff_header_only.tif", b"II*\x00\x08\x00\x00\x00"),
        ("riff_only.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 "),
        ("text.png", b"This is not an image, just some words.\n" * 20),
        ("html.jpg", b"<!DOCTYPE html><html><body><img src='x.png'></body></html>"),
        (
            "svg.png",
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10000" height="10000"><rect/></svg>',
        ),
        ("svg_no_xml.png", b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="5"/></svg>'),
        ("pdf.png", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF"),
        ("zip.png", _zip("chest.png", png)),
        ("gzip.jpg", gzip.compress(png)),
        ("utf16_text.png", "not an image".encode("utf-16")),
        ("heic.jpg", b"\x00\x00\x00\x18ftypheic" + bytes(100)),
        ("elf.png", b"\x7fELF" + bytes(200)),
    ]
    for fraction in (0.1, 0.5, 0.9, 0.99):
        corpus.append((f"truncated_{fraction}.png", png[: int(len(png) * fraction)]))
        corpus.append((f"truncated_{fraction}.jpg", jpeg[: int(len(jpeg) * fraction)]))
        corpus.append((f"truncated_{fraction}.dcm", dicom[: int(len(dicom) * fraction)]))
    for i in range(4):
        corpus.append((f"corrupt_{i}.png", _flip_bytes(png, i, start=8)))
        corpus.append((f"corrupt_{i}.jpg", _flip_bytes(jpeg, i, start=2)))
        corpus.append((f"corrupt_{i}.dcm", _flip_bytes(dicom, i, start=132)))
    corpus += [
        ("huge_declared.png", png_with_header(100_000, 100_000)),
        ("huge_declared_16bit.png", png_with_header(60_000, 60_000, bit_depth=16)),
        ("huge_declared_small_data.png", png_with_header(5000, 5000, data=bytes(1000))),
        ("zero_width.png", png_with_header(0, 100)),
        ("huge_dicom.dcm", _huge_dicom()),
        ("dicom_no_pixels.dcm", dicom_bytes(stored, pixel_data=False)),
        ("dicom_multiframe.dcm", dicom_bytes(np.stack([stored, stored[::-1]]), bits_stored=12)),
        ("dicom_bare.dcm", dicom_bytes(stored, bits_stored=12, preamble=False)),
        ("dicom_rle.dcm", dicom_bytes(stored, bits_stored=12, rle=True)),
        ("dicom_jpeg.dcm", dicom_bytes(to_uint8(chest), jpeg=True)),
        ("truncated_dicom_jpeg.dcm", dicom_bytes(to_uint8(chest), jpeg=True)[:-800]),
        ("dicom_1x1.dcm", dicom_bytes(np.zeros((1, 1), np.uint16))),
        ("dicom_bad_window.dcm", dicom_bytes(stored, window=(100.0, -5.0))),
        ("one_pixel.png", encode(np.zeros((1, 1)), "PNG")),
        ("tiny_31.png", encode(np.zeros((31, 40)), "PNG")),
        ("all_black.png", encode(np.zeros((64, 64)), "PNG")),
        ("all_white.jpg", encode(np.ones((64, 64)), "JPEG")),
        ("all_zero_16bit.png", png16(np.zeros((64, 64)))),
        ("all_max_16bit.png", png16(np.full((64, 64), 65535))),
        ("extremes_16bit.png", png16(np.indices((64, 64)).sum(0) % 2 * 65535)),
        ("float_nan.tif", _float_tiff(np.where(rng.random((64, 64)) < 0.1, np.nan, chest[:64, :64]))),
        ("float_all_nan.tif", _float_tiff(np.full((64, 64), np.nan))),
        ("float_inf.tif", _float_tiff(np.where(rng.random((64, 64)) < 0.1, np.inf, -chest[:64, :64] * 1e30))),
        ("float_huge_range.tif", _float_tiff(rng.choice([-3e38, 3e38], (64, 64)) * rng.random((64, 64)))),
        ("animated.gif", _animated_gif([chest, 1 - chest, chest[::-1]])),
        ("multipage.tif", _multipage_tiff([chest, 1 - chest])),
        ("extreme_aspect.png", encode(rng.random((32, 4000)), "PNG")),
        ("extreme_aspect_tall.png", encode(rng.random((3000, 32)), "PNG")),
        ("noise.png", encode(rng.random((128, 128)), "PNG")),
        ("bilevel.png", _mode_image(chest, "1", "PNG")),
        ("la.png", _mode_image(chest, "LA", "PNG")),
        ("rgba_transparent.png", _transparent_png(chest)),
        ("cmyk.jpg", encode(chest, "JPEG", mode="CMYK")),
        ("exif_garbage.jpg", _jpeg_with_exif(chest, b"Exif\x00\x00" + rng.bytes(200))),
        ("bmp.png", encode(chest, "BMP")),
    ]
    return corpus


def _huge_dicom() -> bytes:
    """A DICOM header declaring 60,000 x 60,000 pixels with a few bytes of pixel data."""
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(np.zeros((2, 2), np.uint16))))
    ds.Rows = ds.Columns = 60_000
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def _mode_image(pixels: np.ndarray, mode: str, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(pixels)).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


def _transparent_png(pixels: np.ndarray) -> bytes:
    image = Image.fromarray(to_uint8(pixels)).convert("RGBA")
    alpha = np.full(pixels.shape, 255, np.uint8)
    alpha[: pixels.shape[0] // 2] = 0
    image.putalpha(Image.fromarray(alpha))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg_with_exif(pixels: np.ndarray, exif: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(pixels)).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()
