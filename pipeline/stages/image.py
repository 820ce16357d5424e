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
from PIL import Image, ImageOps, JpegImagePlugin

from openwit.pipeline.common.flags import opt
from openwit.schemas.record import error_detail

RESIZE_MODES = ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")
# imagehash's 64-bit (8x8) hashes; the near-duplicate search works on any of them.
HASH_METHODS = {"phash": imagehash.phash, "dhash": imagehash.dhash, "ahash": imagehash.average_hash,
                "whash": imagehash.whash}
_PIL_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
OUTPUT_FORMATS = tuple(_PIL_FORMATS)  # what a shard's KEY.<ext> image can be


@dataclass(frozen=True)
class ImageConfig:
    image_size: int = opt(256)
    resize_mode: str = opt("border", choices=RESIZE_MODES)
    resize_only_if_bigger: bool = opt(False)
    output_format: str = opt("jpg", choices=OUTPUT_FORMATS)
    quality: int = opt(95, "jpg/webp quality (1-100)", flag="--encode-quality")
    # DataComp "basic": the original's shorter side >= 200 and aspect ratio <= 3; this also
    # drops tracking pixels, icons and banners.
    min_image_size: int = opt(200, "minimum shorter side of the original image (DataComp basic: 200)")
    max_aspect_ratio: float = opt(3.0, "longer side / shorter side of the original (DataComp basic: 3); 0: no limit")
    # PIL's own decompression-bomb limit, checked before decode (listed with curate's dedup flags)
    max_pixels: int = opt(89_478_485, "decompression-bomb guard, checked from the header before decoding",
                          group="dedup")
    # the perceptual hash kept in the record's `phash` field
    hash_method: str = opt("phash", "64-bit perceptual hash for near-duplicates and decontamination (imagehash)",
                           choices=tuple(HASH_METHODS))

    def __post_init__(self):
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.hash_method not in HASH_METHODS:
            raise ValueError(f"hash_method must be one of {tuple(HASH_METHODS)}, got {self.hash_method!r}")
        if self.output_format not in _PIL_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {self.output_format!r}")


@dataclass(frozen=True)
class ProcessedImage:
    data: bytes
    sha256: str  # of the original bytes, so duplicates are found whatever the resize
    stored_sha256: str  # of `data`, the bytes that go into the shard
    width: int
    height: int
    original_width: int
    original_height: int
    phash: str


@dataclass(frozen=True)
class ImageRejected:
    reason: str  # a name from schemas/reasons.py
    detail: str


class ImageProblem(Exception):
    """A decoding failure with its drop reason (not_image, bomb or decode_error)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the image by 90 degrees


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only) and apply the pixel limit before any pixel is decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageProblem("bomb", error_detail(err)) from None
        except Exception as err:  # Pillow raises many types for bytes it cannot identify
            raise ImageProblem("not_image", error_detail(err)) from None
    if image.width * image.height > max_pixels:
        raise ImageProblem("bomb", f"{image.width}x{image.height} exceeds the pixel limit of {max_pixels}")
    return image


def upright_size(image: Image.Image) -> tuple[int, int]:
    """The image's size once its EXIF orientation is applied, read without decoding."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block: exif_transpose will fail or ignore it later
        orientation = 1
    return image.size[::-1] if orientation in _SWAPS_AXES else image.size


def decode_image(image: Image.Image, draft_to: Optional[tuple[int, int]] = None) -> Image.Image:
    """Decode to RGB with EXIF orientation applied; alpha is matted on white.

    `draft_to` (upright width, height): a JPEG may then decode at 1/2, 1/4 or 1/8 scale in
    the DCT, never below that size, which is far cheaper than decoding at full size."""
    try:
        if draft_to and isinstance(image, JpegImagePlugin.JpegImageFile):  # MPO (phone JPEGs) too
            upright = upright_size(image)
            image.draft(None, draft_to if upright == image.size else draft_to[::-1])
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except Exception as err:  # truncated data, corrupt scans, broken EXIF
        raise ImageProblem("decode_error", error_detail(err)) from None


def to_rgb(image: Image.Image) -> Image.Image:
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


def resize_image(image: Image.Image, cfg: ImageConfig, size: Optional[tuple[int, int]]) -> Image.Image:
    """Resize to `size` (from the original dimensions, as img2dataset computes it), then crop
    or pad as the mode says."""
    if size is None:
        return image
    if size != image.size:
        image = image.resize(size, Image.LANCZOS, reducing_gap=3.0)
    s = cfg.image_size
    if cfg.resize_mode == "center_crop":
        left, top = (image.width - s) // 2, (image.height - s) // 2
        image = image.crop((left, top, left + s, top + s))
    elif cfg.resize_mode == "border" and image.size != (s, s):
        canvas = Image.new("RGB", (s, s), (255, 255, 255))
        canvas.paste(image, ((s - image.width) // 2, (s - image.height) // 2))
        image = canvas
    return image


def perceptual_hash(data: bytes, image_format: Optional[str], decoded: Image.Image, method: str = "phash") -> str:
    """A 64-bit perceptual hash (16 hex digits) from the bytes alone, whatever the resize
    settings: a JPEG is decoded again at 1/8 scale (cheap, and the same for every
    configuration); other formats use the full decode. The hashes work on at most a 32x32
    thumbnail, so nothing is lost."""
    if image_format in ("JPEG", "MPO"):
        small = Image.open(io.BytesIO(data))
        small.draft(None, (64, 64))
        decoded = to_rgb(ImageOps.exif_transpose(small))
    return str(HASH_METHODS[method](decoded))


def image_phash(data: bytes, max_pixels: int = ImageConfig.max_pixels, method: str = "phash") -> tuple[str, int, int]:
    """(perceptual hash, upright width, height) of image bytes, exactly as curation computes
    them, so an eval set's hashes compare with the pool's. Raises ImageProblem for bad bytes."""
    opened = open_image(data, max_pixels)
    width, height = upright_size(opened)
    # A JPEG is hashed from its own 1/8-scale decode: no full decode needed for it.
    decoded = None if opened.format in ("JPEG", "MPO") else decode_image(opened)
    try:
        return perceptual_hash(data, opened.format, decoded, method), width, height
    except Exception as err:  # a JPEG whose small decode fails
        raise ImageProblem("decode_error", error_detail(err)) from None


def check_size(width: int, height: int, cfg: ImageConfig) -> Optional[ImageRejected]:
    if min(width, height) < cfg.min_image_size:
        return ImageRejected("image_too_small", f"{width}x{height}")
    if cfg.max_aspect_ratio and max(width, height) / min(width, height) > cfg.max_aspect_ratio:
        return ImageRejected("aspect_ratio", f"{width}x{height}")
    size = resized_size(width, height, cfg)
    # A thin strip scaled up by its short side could need gigabytes.
    if size and size[0] * size[1] > max(cfg.max_pixels, cfg.image_size**2):
        return ImageRejected("aspect_ratio", f"{width}x{height} would resize to {size[0]}x{size[1]}")
    return None


def encode_image(image: Image.Image, cfg: ImageConfig) -> bytes:
    out = io.BytesIO()
    options = {"quality": cfg.quality} if cfg.output_format in ("jpg", "webp") else {}
    image.save(out, format=_PIL_FORMATS[cfg.output_format], **options)
    return out.getvalue()


def process_image(data: bytes, cfg: ImageConfig) -> Union[ProcessedImage, ImageRejected]:
    """Rules run on the header's (upright) size before decoding; then decode, hash, resize."""
    try:
        opened = open_image(data, cfg.max_pixels)
        width, height = upright_size(opened)
        rejected = check_size(width, height, cfg)
        if rejected:
            return rejected
        size = resized_size(width, height, cfg)
        image = decode_image(opened, size)
    except ImageProblem as problem:
        return ImageRejected(problem.reason, str(problem))
    try:
        phash = perceptual_hash(data, opened.format, image, cfg.hash_method)
        resized = resize_image(image, cfg, size)
        encoded = encode_image(resized, cfg)
    except Exception as err:  # e.g. a side over the encoder's limit (JPEG 65,535, WebP 16,383)
        return ImageRejected("image_error", error_detail(err))
    return ProcessedImage(
        data=encoded,
        sha256=hashlib.sha256(data).hexdigest(),
        stored_sha256=hashlib.sha256(encoded).hexdigest(),
        width=resized.width,
        height=resized.height,
        original_width=width,
        original_height=height,
        phash=phash,
    )
