"""Tests for radiology.images: decoding every supported format to grayscale uint8."""

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from radiology.errors import ImageDecodeError
from radiology.images import MAX_PIXELS, DicomHeader, decode_image, dicom_header, is_dicom, scale_to_uint8
from tests.factories import dicom_bytes, jpeg_bytes, png_bytes, xray


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF", "WEBP"])
def test_raster_formats_decode_to_gray(fmt):
    """Each raster format decodes to a uint8 (H, W) array close to the original."""
    src = xray(size=(40, 60))
    out = decode_image(_encode(Image.fromarray(src), fmt))
    assert out.dtype == np.uint8 and out.shape == (40, 60)
    assert np.abs(out.astype(int) - src).mean() < 8


def test_path_and_bytes_agree(tmp_path):
    """A path decodes the same as its bytes."""
    data = png_bytes(xray())
    (tmp_path / "a.png").write_bytes(data)
    assert np.array_equal(decode_image(tmp_path / "a.png"), decode_image(data))


def test_exif_orientation_is_applied():
    """A JPEG with EXIF orientation 6 (rotate 90) comes out upright."""
    src = np.zeros((20, 40), np.uint8)
    src[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(jpeg_bytes(Image.fromarray(src), exif=exif.tobytes(), quality=95))
    assert out.shape == (40, 20)
    assert out[:20].mean() > 200 and out[20:].mean() < 50  # white half now on top


def test_sixteen_bit_png_is_scaled_by_its_range_not_clipped():
    """A 16-bit PNG using values 1000..3000 spans 0..255 after decoding."""
    src = np.linspace(1000, 3000, 64 * 64).reshape(64, 64).astype(np.uint16)
    out = decode_image(png_bytes(src))
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out.astype(int).ravel()) >= 0)


def test_rgba_palette_and_cmyk_convert():
    """RGBA, palette and CMYK images all become grayscale of the right size."""
    rgb = Image.fromarray(np.stack([xray()] * 3, axis=-1))
    rgba = rgb.convert("RGBA")
    assert decode_image(_encode(rgba, "PNG")).shape == (96, 96)
    assert decode_image(_encode(rgb.convert("P"), "PNG")).shape == (96, 96)
    cmyk = decode_image(_encode(rgb.convert("CMYK"), "JPEG"))
    assert cmyk.shape == (96, 96) and abs(cmyk.mean() - xray().mean()) < 20


def test_animated_gif_decodes_first_frame():
    """An animated GIF decodes as its first frame."""
    frames = [Image.fromarray(np.full((10, 10), v, np.uint8)) for v in (30, 220)]
    out = decode_image(_encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    assert out.mean() < 60


def test_dicom_monochrome2_and_detection_without_extension(tmp_path):
    """A DICOM without extension is recognised by its DICM preamble and decoded."""
    data = dicom_bytes(xray())
    assert is_dicom(data)
    (tmp_path / "IM0001").write_bytes(data)
    out = decode_image(tmp_path / "IM0001")
    assert out.shape == (96, 96) and np.corrcoef(out.ravel(), xray().ravel())[0, 1] > 0.99


def test_dicom_monochrome1_is_inverted():
    """MONOCHROME1 (white is low) is inverted so that bone stays bright."""
    src = xray()
    m2 = decode_image(dicom_bytes(src))
    m1 = decode_image(dicom_bytes(src, photometric="MONOCHROME1"))
    assert np.corrcoef(m1.ravel(), 255 - m2.ravel())[0, 1] > 0.99


def test_dicom_rescale_and_window():
    """The modality rescale and the VOI window are applied: values outside the window saturate."""
    src = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (20, 1))
    out = decode_image(dicom_bytes(src, slope=1.0, intercept=-1000.0, window=(0.0, 1000.0)))
    # rescaled values span -1000..2960; the window 0 +- 500 maps <= -500 to black and >= 500 to white
    assert out[0, 0] == 0 and out[0, -1] == 255
    assert 0 < out[0, 37] < 255  # 1480 - 1000 = 480 lies inside the window


def test_dicom_sixteen_bit_without_window_uses_full_range():
    """A 16-bit DICOM with no window spans 0..255."""
    src = np.linspace(100, 900, 400).reshape(20, 20).astype(np.uint16)
    out = decode_image(dicom_bytes(src))
    assert out.min() == 0 and out.max() == 255


def test_dicom_compressed_transfer_syntaxes():
    """JPEG, JPEG-LS, JPEG 2000 and RLE compressed DICOMs from pydicom's test data decode."""
    from pydicom.data import get_testdata_file

    for name in (
        "JPGExtended.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_RLE.dcm",
    ):
        out = decode_image(get_testdata_file(name))
        assert out.dtype == np.uint8 and out.ndim == 2 and out.std() > 0, name


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_dcmtk_+eb+cy+n1.dcm",
        "SC_rgb_dcmtk_+eb+cy+np.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "SC_rgb_jpeg_lossy_gdcm.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "SC_rgb_dcmtk_+eb+cr.dcm",
    ],
)
def test_dicom_ybr_colour_is_converted_once(name):
    """YBR DICOMs (JPEG baseline and native) decode to the luma of pydicom's own RGB within 2 grey levels."""
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    rgb = pydicom.dcmread(path).pixel_array.astype(np.float64)
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    expected = np.round((luma - luma.min()) * 255.0 / (luma.max() - luma.min()))
    out = decode_image(path)
    assert out.shape == luma.shape
    assert np.abs(out.astype(int) - expected).max() <= 2


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty file"),
        (b"hello, this is text", "not an image"),
        (b"<html><body>hi</body></html>", "not an image"),
        (b"%PDF-1.4\n%...", "not an image"),
        (b"PK\x03\x04" + b"\0" * 40, "not an image"),
    ],
)
def test_non_images_raise_clear_errors(data, match):
    """Empty files, text, HTML, PDF and ZIP bytes raise ImageDecodeError with the reason."""
    with pytest.raises(ImageDecodeError, match=match):
        decode_image(data)


def test_truncated_files_raise():
    """Truncated PNG and JPEG raise ImageDecodeError."""
    png = png_bytes(xray(size=(200, 200)))
    jpg = jpeg_bytes(Image.fromarray(xray(size=(200, 200))))
    for data in (png[: len(png) // 2], jpg[: len(jpg) // 3]):
        with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
            decode_image(data)


def _png_header_only(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("side", "match"),
    [
        # above our limit, below Pillow's refusal: our header check names the size
        (10000, "image too large: 10000x10000 exceeds the 50-megapixel limit"),
        # beyond twice Pillow's limit: Pillow's own guard refuses first, reported as ours
        (50000, r"image too large: exceeds the 50-megapixel limit \(.*2500000000 pixels"),
    ],
)
def test_decompression_bomb_is_refused_without_allocating(side, match):
    """A tiny PNG that declares a huge size is refused by size before decoding."""
    bomb = _png_header_only(side, side)
    assert len(bomb) < 200
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ImageDecodeError, match=match):
            decode_image(bomb)
    assert MAX_PIXELS == 50_000_000


def test_pillow_bomb_guard_stays_on():
    """Importing and using the decoder leaves Pillow's process-wide bomb guard at its default."""
    decode_image(png_bytes(xray()))
    assert Image.MAX_IMAGE_PIXELS == int(1024 * 1024 * 1024 // 4 // 3)


def test_dicom_without_pixel_data():
    """A DICOM with no pixel data says so."""
    with pytest.raises(ImageDecodeError, match="DICOM without pixel data"):
        decode_image(dicom_bytes(xray(), with_pixels=False))


def test_missing_file(tmp_path):
    """A missing path raises ImageDecodeError naming the file."""
    with pytest.raises(ImageDecodeError, match="cannot read nope.png"):
        decode_image(tmp_path / "nope.png")


def test_large_legitimate_image_decodes():
    """A 4000x4000 image, below the limit, decodes."""
    big = np.tile(xray(size=(400, 400)), (10, 10))
    assert decode_image(png_bytes(big)).shape == (4000, 4000)


def test_scale_to_uint8_constant_image():
    """A constant image scales to zeros instead of dividing by zero."""
    assert scale_to_uint8(np.full((3, 3), 7.0)).max() == 0


def test_dicom_header_gives_modality_and_view(tmp_path):
    """dicom_header reads Modality and ViewPosition (upper case, None when absent) and is None for a PNG."""
    from pydicom.data import get_testdata_file

    assert dicom_header(get_testdata_file("CT_small.dcm")) == DicomHeader("CT", None)
    assert dicom_header(dicom_bytes(xray(), view_position="ll")) == DicomHeader("CR", "LL")
    assert dicom_header(dicom_bytes(xray(), modality=None)) == DicomHeader(None, None)
    assert dicom_header(png_bytes(xray())) is None
    with pytest.raises(ImageDecodeError, match="empty file"):
        dicom_header(b"")
