"""Decode, check, resize and encode one downloaded image.

Resize modes, names and sizes follow img2dataset's Resizer (no, keep_ratio,
keep_ratio_largest, center_crop, border; resize_only_if_bigger; alpha matted on white;
border pads with white), done with PIL instead of OpenCV, and EXIF orientation is applied
first (img2dataset ignores it, so phone photos come out sideways there).
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import Optional, Union

import imagehash
from PIL import Image, ImageOps

from openwit.schemas.record import error_detail

RESIZE_MODES = ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")
_PIL_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}


@dataclass(frozen=True)
class ImageConfig:
    image_size: int = 256
    resize_mode: str = "border"
    resize_only_if_bigger: bool = False
    output_format: str = "jpg"
    quality: int = 95
    min_image_size: int = 32  # tracking pixels and icons are not training images
    max_aspect_ratio: float = 0.0  # 0: no limit
    max_pixels: int = 89_478_485  # PIL's own decompression-bomb limit, checked before decode

    def __post_init__(self):
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.output_format not in _PIL_FORMATS:
            raise ValueError(f"output_format must be one of {tuple(_PIL_FORMATS)}, got {self.output_format!r}")


@dataclass(frozen=True)
class ProcessedImage:
    data: bytes
    sha256: str  # of the original bytes, so duplicates are found whatever the resize
    width: int
    height: int
    original_width: int
    original_height: int
    phash: str


@dataclass(frozen=True)
class ImageRejected:
    reason: str  # a name from schemas/reasons.py
    detail: str


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode to RGB with EXIF orientation applied; alpha is matted on white."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > max_pixels:
            raise ValueError(f"{image.width}x{image.height} exceeds the pixel limit")
        image.load()
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit gray: convert() would clip to 255
        image = image.convert("I").point(lambda v: v / 256).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resized_size(width: int, height: int, cfg: ImageConfig) -> Optional[tuple[int, int]]:
    """The size before cropping or padding, or None when the image is not resized."""
    if cfg.resize_mode == "no":
        return None
    side = min(width, height) if cfg.resize_mode in ("keep_ratio", "center_crop") else max(width, height)
    if cfg.resize_only_if_bigger and side <= cfg.image_size:
        return None
    scale = cfg.image_size / side
    return max(1, round(width * scale)), max(1, round(height * scale))  # as albumentations: never 0


def resize_image(image: Image.Image, cfg: ImageConfig) -> Image.Image:
    size = resized_size(image.width, image.height, cfg)
    if size is None:
        return image
    if size != image.size:
        image = image.resize(size, Image.LANCZOS)
    s = cfg.image_size
    if cfg.resize_mode == "center_crop":
        left, top = (image.width - s) // 2, (image.height - s) // 2
        image = image.crop((left, top, left + s, top + s))
    elif cfg.resize_mode == "border" and image.size != (s, s):
        canvas = Image.new("RGB", (s, s), (255, 255, 255))
        canvas.paste(image, ((s - image.width) // 2, (s - image.height) // 2))
        image = canvas
    return image


def encode_image(image: Image.Image, cfg: ImageConfig) -> bytes:
    out = io.BytesIO()
    options = {"quality": cfg.quality} if cfg.output_format in ("jpg", "webp") else {}
    image.save(out, format=_PIL_FORMATS[cfg.output_format], **options)
    return out.getvalue()


def process_image(data: bytes, cfg: ImageConfig) -> Union[ProcessedImage, ImageRejected]:
    try:
        image = decode_image(data, cfg.max_pixels)
    except Exception as err:  # any decoder failure means the body is not a usable image
        return ImageRejected("not_image", error_detail(err))
    width, height = image.size
    if min(width, height) < cfg.min_image_size:
        return ImageRejected("image_too_small", f"{width}x{height}")
    if cfg.max_aspect_ratio and max(width, height) / min(width, height) > cfg.max_aspect_ratio:
        return ImageRejected("aspect_ratio", f"{width}x{height}")
    size = resized_size(width, height, cfg)
    # A thin strip scaled up by its short side could need gigabytes.
    if size and size[0] * size[1] > max(cfg.max_pixels, cfg.image_size**2):
        return ImageRejected("aspect_ratio", f"{width}x{height} would resize to {size[0]}x{size[1]}")
    try:
        phash = str(imagehash.phash(image))
        resized = resize_image(image, cfg)
        encoded = encode_image(resized, cfg)
    except Exception as err:  # e.g. a side over the encoder's limit (JPEG 65,535, WebP 16,383)
        return ImageRejected("image_error", error_detail(err))
    return ProcessedImage(
        data=encoded,
        sha256=hashlib.sha256(data).hexdigest(),
        width=resized.width,
        height=resized.height,
        original_width=width,
        original_height=height,
        phash=phash,
    )
