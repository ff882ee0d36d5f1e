"""Decoding bytes or paths into grayscale uint8 images.

Raster formats go through Pillow, DICOM through pydicom. Every failure a user can cause
raises :class:`~radiology.errors.ImageDecodeError` with a message that says what was wrong.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from radiology.errors import ImageDecodeError

MAX_PIXELS = 50_000_000
MAX_FILE_BYTES = 200 * 1024 * 1024
RASTER_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".dcm", ".dicom")

# Our size check runs on the header, right after Image.open and before any pixel is decoded. It is
# stricter than Pillow's bomb guard, which stays on (it is process-wide; other Pillow users need it)
# and refuses first only for headers beyond twice its own limit.


def is_dicom(data: bytes) -> bool:
    """Tells whether ``data`` is DICOM by its content: ``DICM`` after the 128-byte preamble."""
    return len(data) >= 132 and data[128:132] == b"DICM"


@dataclass(frozen=True)
class DicomHeader:
    """What a DICOM file says about the image it holds.

    Attributes:
        modality: the ``Modality`` element, upper case (``CR``, ``DX``, ``CT``…), or None when absent.
        view_position: the ``ViewPosition`` element, upper case (``PA``, ``AP``, ``LL``…), or None when absent.
    """

    modality: str | None
    view_position: str | None


def dicom_header(source: bytes | str | os.PathLike) -> DicomHeader | None:
    """Reads the modality and view of a DICOM file, without its pixels.

    Args:
        source: the file's bytes, or a path to it.

    Returns:
        the header's modality and view, or None when ``source`` is not DICOM.

    Raises:
        ImageDecodeError: the file cannot be read, or is DICOM with a corrupt header.
    """
    data = read_bytes(source)
    if not is_dicom(data):
        return None
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["Modality", "ViewPosition"])
    except (InvalidDicomError, OSError, ValueError, KeyError, TypeError, AttributeError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt DICOM: {exc}") from exc

    def tag(name: str) -> str | None:
        value = str(ds.get(name, "") or "").strip().upper()
        return value or None

    return DicomHeader(tag("Modality"), tag("ViewPosition"))


def read_bytes(source: bytes | str | os.PathLike) -> bytes:
    """Returns the bytes of ``source``, reading at most ``MAX_FILE_BYTES`` from a path.

    Raises:
        ImageDecodeError: the file is missing, unreadable, empty or too large.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ImageDecodeError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    if not data:
        raise ImageDecodeError("empty file: 0 bytes")
    if len(data) > MAX_FILE_BYTES:
        raise ImageDecodeError(f"file too large: exceeds the {MAX_FILE_BYTES // 2**20} MiB limit")
    return data


def decode_image(source: bytes | str | os.PathLike) -> np.ndarray:
    """Decodes an image file into grayscale.

    Args:
        source: the file's bytes, or a path to it. DICOM is recognised by content.

    Returns:
        uint8 array of shape (H, W).

    Raises:
        ImageDecodeError: anything that is not a decodable image, with the reason.
    """
    return decode_with_colour(source)[0]


def decode_with_colour(source: bytes | str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decodes an image file into grayscale and says how colourful it was before the conversion.

    Args:
        source: the file's bytes, or a path to it. DICOM is recognised by content.

    Returns:
        uint8 array of shape (H, W), and the colourfulness of the decoded colour image (see
        :func:`colourfulness`; 0 for a grayscale file).

    Raises:
        ImageDecodeError: anything that is not a decodable image, with the reason.
    """
    data = read_bytes(source)
    if is_dicom(data):
        pydicom_log = logging.getLogger("pydicom")
        level = pydicom_log.level
        # pydicom warns on every non-conformant element it repairs and logs each failed decoder
        # before raising; our error carries the reason, so keep the log quiet.
        pydicom_log.setLevel(logging.CRITICAL)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return _decode_dicom(data)
        finally:
            pydicom_log.setLevel(level)
    return _decode_raster(data)


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has no pixels: {width}x{height}")
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(
            f"image too large: {width}x{height} exceeds the {MAX_PIXELS // 1_000_000}-megapixel limit"
        )


def _decode_raster(data: bytes) -> tuple[np.ndarray, float]:
    try:
        image = Image.open(io.BytesIO(data), formats=RASTER_FORMATS)
        _check_size(*image.size)
        image.seek(0)  # animated images: the first frame
        image = ImageOps.exif_transpose(image)
        return _to_gray(image), _raster_colourfulness(image)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(
            f"image too large: exceeds the {MAX_PIXELS // 1_000_000}-megapixel limit ({exc})"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not an image: the content is no PNG, JPEG, BMP, TIFF, WebP, GIF or DICOM") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from exc


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Süsstrunk's colourfulness: 0 for gray, about 15 "slightly colourful", 45+ a colour photograph.

    Args:
        rgb: array of shape (H, W, 3) with values in 0..255.

    Returns:
        the colourfulness, >= 0.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


COLOUR_SIDE = 128  # colourfulness is measured on a thumbnail: it is a global statistic


def _raster_colourfulness(image: Image.Image) -> float:
    if image.mode in ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return 0.0
    small = image.convert("RGB")
    small.thumbnail((COLOUR_SIDE, COLOUR_SIDE), Image.BILINEAR)
    return colourfulness(np.asarray(small))


def _to_gray(image: Image.Image) -> np.ndarray:
    """Converts any Pillow mode to uint8 grayscale, scaling high bit depths by their real range."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return scale_to_uint8(np.asarray(image, dtype=np.float64))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels are shown on black, the background of a radiograph.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "L":
        image = image.convert("RGB").convert("L")
    return np.asarray(image, dtype=np.uint8).copy()


def scale_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Scales an array linearly from its own min..max to 0..255.

    Args:
        pixels: numeric array of shape (H, W).

    Returns:
        uint8 array of shape (H, W); a constant image maps to zeros.
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    finite = np.isfinite(pixels)
    if not finite.any():
        raise ImageDecodeError("image has no finite pixel values")
    lo, hi = pixels[finite].min(), pixels[finite].max()
    pixels = np.where(finite, pixels, lo)
    if hi <= lo:
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.round((pixels - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _decode_dicom(data: bytes) -> tuple[np.ndarray, float]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, OSError, ValueError, KeyError, TypeError, AttributeError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt DICOM: {exc}") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageDecodeError("DICOM without pixel data")
    try:
        _check_size(int(ds.Columns), int(ds.Rows))
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        if frames * int(ds.Rows) * int(ds.Columns) * int(getattr(ds, "SamplesPerPixel", 1)) > 4 * MAX_PIXELS:
            raise ImageDecodeError(f"image too large: {frames} frames of {ds.Columns}x{ds.Rows}")
        pixels = ds.pixel_array
    except ImageDecodeError:
        raise
    except Exception as exc:  # pydicom's handlers raise many types for one cause: undecodable pixels
        raise ImageDecodeError(f"DICOM pixel data cannot be decoded: {exc}") from exc
    return _dicom_to_gray(ds, pixels)


def _dicom_to_gray(ds, pixels: np.ndarray) -> tuple[np.ndarray, float]:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    if samples > 1:
        # pydicom 3 already returns RGB for YBR_FULL and YBR_FULL_422 (``pixel_array`` converts unless
        # ``raw=True``) and its JPEG 2000 decoders undo YBR_ICT/RCT: a second conversion shifts the colours.
        return _rgb_to_gray(np.asarray(pixels, dtype=np.float64))
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        return _rgb_to_gray(np.asarray(apply_color_lut(pixels, ds), dtype=np.float64))
    try:
        values = apply_modality_lut(pixels, ds)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            values = apply_voi_lut(values, ds, index=0)
    except Exception as exc:  # malformed LUT or window elements
        raise ImageDecodeError(f"DICOM LUT or window cannot be applied: {exc}") from exc
    gray = scale_to_uint8(values)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return gray, 0.0


def _rgb_to_gray(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """Grayscale and colourfulness of a DICOM colour image of any bit depth, shape (H, W, 3)."""
    step = max(1, max(rgb.shape[:2]) // COLOUR_SIDE)
    return (
        scale_to_uint8(rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114),
        colourfulness(scale_to_uint8(rgb[::step, ::step])),
    )
