"""The image stage: decode (EXIF, odd modes, alpha), checks, resize, encode.

Sizes are checked against img2dataset's own Resizer, which is the reference semantics.
Every image is made here with PIL; nothing on disk, nothing random.
"""
import hashlib
import io
import os
import re

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports albumentations: no update check

import pytest
from PIL import Image

from openwit.pipeline.stages.image import (
    RESIZE_MODES, ImageConfig, ImageRejected, ProcessedImage, process_image,
)
from openwit.schemas.reasons import REASONS


def gradient(width, height, mode="RGB"):
    """A deterministic, non-flat RGB image."""
    image = Image.new("RGB", (width, height))
    image.putdata([((x * 7) % 256, (y * 11) % 256, ((x + y) * 3) % 256) for y in range(height) for x in range(width)])
    return image.convert(mode) if mode != "RGB" else image


def encode(image, fmt="PNG", **options):
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


# img2dataset's semantics (no size or aspect rule) unless a test asks for one; openwit's
# defaults are DataComp's (shorter side >= 200, aspect <= 3).
NO_SIZE_RULES = {"min_image_size": 0, "max_aspect_ratio": 0.0}


def processed(data, **cfg):
    result = process_image(data, ImageConfig(**{**NO_SIZE_RULES, **cfg}))
    assert isinstance(result, ProcessedImage), result
    return result


def rejected(data, **cfg):
    result = process_image(data, ImageConfig(**{**NO_SIZE_RULES, **cfg}))
    assert isinstance(result, ImageRejected), result
    assert result.reason in REASONS
    return result


def decoded(data, **cfg):
    """Process with no resize and lossless output; return the output as a PIL image."""
    result = processed(data, resize_mode="no", output_format="png", **cfg)
    image = Image.open(io.BytesIO(result.data))
    assert image.mode == "RGB"
    return image


# -- resize sizes match img2dataset ------------------------------------------------------------

IMAGE_SIZE = 64
INPUT_SIZES = [
    (160, 120),  # landscape, larger
    (120, 160),  # portrait, larger
    (100, 100),  # square, larger
    (64, 64),  # square, exactly image_size
    (40, 30),  # landscape, smaller
    (30, 40),  # portrait, smaller
    (20, 20),  # square, smaller
    (64, 40),  # longest side == image_size, shortest smaller
    (97, 53),  # odd sizes: rounding
    (128, 5),  # 5 * 0.5 = 2.5: rounding ties
    (128, 3),  # 3 * 0.5 = 1.5
    (50, 70),  # min side smaller, max side larger
    (300, 2),  # extreme: the short side would round to 0
    (2, 300),
]


@pytest.fixture(scope="module")
def reference():
    from img2dataset.resizer import Resizer

    return Resizer


@pytest.mark.parametrize("only_if_bigger", [False, True])
@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_output_sizes_match_img2dataset(reference, mode, only_if_bigger):
    resizer = reference(image_size=IMAGE_SIZE, resize_mode=mode, resize_only_if_bigger=only_if_bigger,
                        encode_format="png", encode_quality=1)
    cfg = ImageConfig(image_size=IMAGE_SIZE, resize_mode=mode, resize_only_if_bigger=only_if_bigger,
                      output_format="png", **NO_SIZE_RULES)
    for width, height in INPUT_SIZES:
        data = encode(gradient(width, height))
        _, ref_w, ref_h, ref_ow, ref_oh, err = resizer(io.BytesIO(data))
        assert err is None, (width, height, err)
        ours = process_image(data, cfg)
        assert isinstance(ours, ProcessedImage), (width, height, ours)
        got = (ours.width, ours.height, ours.original_width, ours.original_height)
        assert got == (ref_w, ref_h, ref_ow, ref_oh), (mode, only_if_bigger, (width, height))
        # the encoded bytes really have the size reported
        assert Image.open(io.BytesIO(ours.data)).size == (ours.width, ours.height)


def test_border_pads_with_white_and_keeps_the_image_centred():
    data = encode(Image.new("RGB", (100, 50), (255, 0, 0)))
    image = Image.open(io.BytesIO(processed(data, image_size=64, resize_mode="border", output_format="png").data))
    assert image.size == (64, 64)
    assert image.getpixel((32, 2)) == (255, 255, 255)  # pad above
    assert image.getpixel((32, 61)) == (255, 255, 255)  # pad below
    assert image.getpixel((32, 32)) == (255, 0, 0)


# -- EXIF orientation --------------------------------------------------------------------------

def exif_jpeg(orientation):
    """40x20 blue JPEG, red block at the stored top-left, with an EXIF orientation tag."""
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif)


def is_red(pixel):
    r, g, b = pixel
    return r > 200 and g < 60 and b < 60


def is_blue(pixel):
    r, g, b = pixel
    return b > 200 and r < 60 and g < 60


@pytest.mark.parametrize("orientation, red_corner", [
    (1, (5, 5)),  # as stored: top-left
    (6, (14, 5)),  # rotate 90 clockwise to display: top-left goes top-right
    (8, (5, 34)),  # rotate 90 counter-clockwise: top-left goes bottom-left
])
def test_exif_orientation_is_applied(orientation, red_corner):
    result = processed(exif_jpeg(orientation), resize_mode="no", output_format="png")
    swapped = orientation in (6, 8)
    assert (result.original_width, result.original_height) == ((20, 40) if swapped else (40, 20))
    image = Image.open(io.BytesIO(result.data))
    assert image.size == (result.width, result.height)
    assert is_red(image.getpixel(red_corner))
    # the opposite corner stays blue
    assert is_blue(image.getpixel((image.width - 1 - red_corner[0], image.height - 1 - red_corner[1])))


# -- odd modes decode to RGB --------------------------------------------------------------------

def test_rgba_is_matted_on_white():
    image = Image.new("RGBA", (8, 4), (255, 0, 0, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black
    image.putpixel((1, 0), (0, 0, 255, 128))  # half transparent blue
    out = decoded(encode(image))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((3, 2)) == (255, 0, 0)
    r, g, b = out.getpixel((1, 0))
    assert b == 255 and 120 <= r <= 135 and 120 <= g <= 135  # blue half over white


def test_la_is_matted_on_white():
    image = Image.new("LA", (8, 4), (40, 255))
    image.putpixel((0, 0), (0, 0))
    out = decoded(encode(image))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((3, 2)) == (40, 40, 40)


def test_palette_with_transparency_is_matted_on_white():
    image = Image.new("P", (8, 4), 1)
    image.putpalette([0, 0, 0, 0, 128, 0] + [0] * (254 * 3))
    image.putpixel((0, 0), 0)
    data = encode(image, transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    out = decoded(data)
    assert out.getpixel((0, 0)) == (255, 255, 255)  # index 0 is transparent, not black
    assert out.getpixel((3, 2)) == (0, 128, 0)


def test_grayscale_and_one_bit():
    assert decoded(encode(Image.new("L", (8, 4), 77))).getpixel((2, 2)) == (77, 77, 77)
    bits = Image.new("1", (8, 4), 1)
    bits.putpixel((0, 0), 0)
    out = decoded(encode(bits))
    assert out.getpixel((0, 0)) == (0, 0, 0)
    assert out.getpixel((3, 2)) == (255, 255, 255)


def test_sixteen_bit_png_is_scaled_not_clipped():
    image = Image.new("I;16", (8, 4))
    image.putdata([0x8000] * 32)
    image.putpixel((0, 0), 0xFFFF)
    image.putpixel((1, 0), 0x0100)
    data = encode(image)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = decoded(data)
    assert out.getpixel((3, 2)) == (128, 128, 128)  # mid grey, not clipped to white
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (1, 1, 1)


def test_cmyk_jpeg():
    image = Image.new("CMYK", (16, 8), (0, 0, 0, 0))
    image.paste((0, 255, 255, 0), (8, 0, 16, 8))
    out = decoded(encode(image, "JPEG", quality=95))
    assert min(out.getpixel((2, 4))) > 240  # no ink: white
    assert is_red(out.getpixel((12, 4)))  # magenta + yellow: red


def test_webp():
    out = decoded(encode(Image.new("RGB", (16, 8), (0, 0, 255)), "WEBP", lossless=True))
    assert out.size == (16, 8) and out.getpixel((4, 4)) == (0, 0, 255)


def test_gif_first_frame():
    frames = [Image.new("RGB", (16, 8), (255, 0, 0)), Image.new("RGB", (16, 8), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    out = decoded(data)
    assert out.getpixel((4, 4)) == (255, 0, 0)


# -- rejections ---------------------------------------------------------------------------------

@pytest.mark.parametrize("data, reason", [
    (b"<!DOCTYPE html><html><head><title>Not found</title></head><body>nope</body></html>", "not_image"),
    (b"", "not_image"),
    # an allowed format's signature over a cut header: a broken image, not something else
    (encode(gradient(64, 64), "JPEG")[:600], "decode_error"),
    (encode(gradient(64, 64), "PNG")[:40], "decode_error"),
], ids=["html", "empty", "truncated-jpeg", "truncated-png"])
def test_not_an_image(data, reason):
    result = rejected(data)
    assert result.reason == reason
    assert rejected(bytes(data)).detail == result.detail  # no object addresses: the ledger is reproducible
    assert " at 0x" not in result.detail


def test_min_image_size():
    small = rejected(encode(gradient(50, 30)), min_image_size=32)
    assert small.reason == "image_too_small" and "50x30" in small.detail
    assert processed(encode(gradient(50, 32)), min_image_size=32).original_height == 32


def test_max_aspect_ratio():
    assert rejected(encode(gradient(100, 30)), max_aspect_ratio=3.0).reason == "aspect_ratio"
    assert rejected(encode(gradient(30, 100)), max_aspect_ratio=3.0).reason == "aspect_ratio"
    processed(encode(gradient(90, 30)), max_aspect_ratio=3.0)  # exactly 3: kept
    processed(encode(gradient(100, 30)))  # 0: no limit


def test_pixel_limit_is_checked_before_decoding():
    data = encode(gradient(20, 20), "JPEG")
    result = rejected(data, max_pixels=399)
    assert result.reason == "bomb" and "pixel limit" in result.detail
    processed(data, max_pixels=400)  # exactly at the limit: kept
    # Only the header is read: scan data cut short just after its start (which fails to
    # decode) still reports the limit, not a decoder error, so nothing was decoded.
    truncated = data[: data.index(b"\xff\xda") + 20]
    assert "pixel limit" in rejected(truncated, max_pixels=399).detail
    assert "pixel limit" not in rejected(truncated, max_pixels=400).detail


# -- hashes, determinism, formats ---------------------------------------------------------------

def test_sha256_is_of_the_original_bytes_and_phash_is_hex():
    data = encode(gradient(90, 70), "JPEG")
    result = processed(data, image_size=32)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.sha256 != hashlib.sha256(result.data).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{16}", result.phash)
    # the phash does not depend on the output settings
    assert processed(data, image_size=48, resize_mode="center_crop", output_format="png").phash == result.phash


@pytest.mark.parametrize("output_format, pil_format", [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")])
@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_output_is_deterministic_and_in_the_requested_format(mode, output_format, pil_format):
    data = encode(gradient(90, 70), "JPEG")
    first = processed(data, image_size=32, resize_mode=mode, output_format=output_format)
    second = processed(bytes(data), image_size=32, resize_mode=mode, output_format=output_format)
    assert first == second
    image = Image.open(io.BytesIO(first.data))
    assert image.format == pil_format and image.mode == "RGB"
    assert image.size == (first.width, first.height)


def test_bad_config_is_an_error():
    with pytest.raises(ValueError, match="resize_mode"):
        ImageConfig(resize_mode="stretch")
    with pytest.raises(ValueError, match="output_format"):
        ImageConfig(output_format="gif")


def test_a_thin_strip_is_not_scaled_up_past_the_pixel_limit():
    strip = io.BytesIO()
    Image.new("RGB", (20000, 1), (255, 0, 0)).save(strip, format="PNG")
    out = process_image(strip.getvalue(), ImageConfig(image_size=256, resize_mode="center_crop", max_pixels=10_000_000,
                                                         **NO_SIZE_RULES))
    assert isinstance(out, ImageRejected) and out.reason == "aspect_ratio" and "would resize" in out.detail


def test_defaults_are_datacomp_basic_size_and_aspect_rules():
    pixel = io.BytesIO()
    Image.new("RGB", (1, 1)).save(pixel, format="GIF")
    out = process_image(pixel.getvalue(), ImageConfig())
    assert isinstance(out, ImageRejected) and out.reason == "image_too_small"
    assert process_image(encode(gradient(300, 199)), ImageConfig()).reason == "image_too_small"
    assert process_image(encode(gradient(601, 200)), ImageConfig()).reason == "aspect_ratio"
    assert isinstance(process_image(encode(gradient(600, 200)), ImageConfig()), ProcessedImage)


def test_an_output_over_the_encoders_limit_is_rejected_not_raised():
    wide = io.BytesIO()
    Image.new("RGB", (70_000, 40), (0, 0, 255)).save(wide, format="PNG")
    out = process_image(wide.getvalue(), ImageConfig(resize_mode="no", output_format="jpg", **NO_SIZE_RULES))
    assert isinstance(out, ImageRejected) and out.reason == "image_error"


def test_a_truncated_scan_is_a_decode_error():
    data = encode(gradient(200, 200), "JPEG")
    out = process_image(data[: len(data) // 2], ImageConfig(min_image_size=0))
    assert isinstance(out, ImageRejected) and out.reason == "decode_error" and "truncated" in out.detail
