"""Decode, check, resize and encode one downloaded image.

Resize modes, names and sizes follow img2dataset's Resizer (no, keep_ratio,
keep_ratio_largest, center_crop, border; resize_only_if_bigger; alpha matted on white;
border pads with white), done with PIL instead of OpenCV, and EXIF orientation is applied
first (img2dataset ignores it, so phone photos come out sideways there).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import io
import math
import re
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional, Union

import imagehash
from PIL import (  # noqa: F401 (the allowed formats' openers register themselves on import)
    BmpImagePlugin, GifImagePlugin, Image, ImageFile, ImageOps, JpegImagePlugin, PngImagePlugin, WebPImagePlugin,
)

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
    # Pixels x bytes per pixel of every full-size buffer one image's decode holds (docs/design.md,
    # "Image decoding"); also what one worker process holds at once: a decode waits until it fits.
    max_decoded_bytes: int = opt(512 * 2**20, "memory one image's decode may hold, and all of a worker's "
                                 "decodes together (bytes of decoded pixels)", group="dedup")
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
        if self.max_pixels < 1 or self.max_decoded_bytes < 1:
            raise ValueError("max_pixels and max_decoded_bytes must be positive")


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
    colour_sig: str  # colour_signature of the view the pHash sees (docs/dedup.md)


@dataclass(frozen=True)
class ImageRejected:
    reason: str  # a name from schemas/reasons.py
    detail: str


class ImageProblem(Exception):
    """A decoding failure with its drop reason (not_image, bomb or decode_error)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


# Opened only through these formats' openers, so no other decoder (EPS's Ghostscript, libtiff,
# PSD, ...) ever sees a body. MPO (phone JPEGs carrying a second picture) comes through JPEG's
# opener and decodes its first picture. TIFF, AVIF, HEIF and ICO stay out: docs/design.md.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
# Full-size buffers a format's decode holds, the image included: libwebp keeps two canvases
# and hands Pillow a copy as bytes (measured: a 4000x4000 WebP grows RSS by 4 x 61 MB).
_DECODER_COPIES = {"WEBP": 4}
_STRIP_BYTES = 4 << 20  # the rows converted to RGB at a time when an image is reduced
HASH_DRAFT = (64, 64)  # the perceptual hash's decode: at least this size, as its JPEG draft


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only) with an allowed format's opener, then apply the pixel limit and check
    a JPEG's scans can hold the frame, before any pixel is decoded."""
    image = open_allowed(data)
    if image.width * image.height > max_pixels:
        raise ImageProblem("bomb", f"{image.width}x{image.height} exceeds the pixel limit of {max_pixels}")
    if image.format in ("JPEG", "MPO"):
        check_jpeg_scans(data)
    return image


def open_allowed(data: bytes) -> Image.Image:
    """Image.open limited to ALLOWED_FORMATS, without Pillow's process-wide MAX_IMAGE_PIXELS
    check (the pixel limit is each call's own, so --max-pixels may exceed Pillow's)."""
    prefix = data[:16]
    for name in ALLOWED_FORMATS:
        factory, accept = Image.OPEN[name]
        accepted = accept(prefix)
        if not accepted or isinstance(accepted, str):  # a str is Pillow's "maybe, but no"
            continue
        try:
            return factory(io.BytesIO(data), "")
        except Image.DecompressionBombError as err:  # a GIF frame past Pillow's own limit
            raise ImageProblem("bomb", error_detail(err)) from None
        except Exception as err:  # the signature of an allowed format over a cut or corrupt header
            raise ImageProblem("decode_error", f"{name}: {error_detail(err)}") from None
    known = recognised_format(prefix)
    raise ImageProblem("not_image", f"{known} is not an allowed image format" if known
                       else "not a JPEG, PNG, WebP, GIF or BMP image")


def recognised_format(prefix: bytes) -> Optional[str]:
    """The name of another format whose signature the bytes carry, for the ledger's detail.
    Only signature checks run here, never an opener."""
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        try:
            if accept and accept(prefix) is True:
                return name
        except Exception:  # a signature check that trips on short bytes
            continue
    return None


# --- JPEG scans: a header may claim far more pixels than the data holds ------------------
# libjpeg fills what the data lacks with grey and only warns, which Pillow ignores. Every
# block of a Huffman-coded scan costs at least its shortest DC code (and, in a sequential
# scan, its shortest AC code); scan data shorter than that is cut or forged.
_SOF_HUFFMAN = {0xC0, 0xC1, 0xC2}  # baseline, extended sequential, progressive
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # a marker other than stuffing or RSTn


def check_jpeg_scans(data: bytes) -> None:
    """Raise ImageProblem("decode_error") when a scan is too short for its frame. Pillow's
    own header parser tolerates segments this walk may not (a SOF counting more components
    than it holds): any parse failure here is the body's fault, a decode_error."""
    try:
        walk_jpeg_scans(data)
    except ImageProblem:
        raise
    except Exception as err:
        raise ImageProblem("decode_error", f"JPEG: malformed segment: {error_detail(err)}") from None


def walk_jpeg_scans(data: bytes) -> None:
    frame, tables, pos = None, {}, 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        segment = data[pos + 4:pos + 2 + length]
        pos += 2 + length
        if marker in _SOF_HUFFMAN:
            frame = jpeg_frame(segment, progressive=marker == 0xC2)
        elif 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return  # lossless, hierarchical or arithmetic-coded: no bound here
        elif marker == 0xC4:
            tables.update(shortest_codes(segment))
        elif marker == 0xDA and frame:
            end = _SCAN_END.search(data, pos)
            end = end.start() if end else len(data)
            needed = scan_bits_needed(segment, frame, tables)
            if needed > 8 * (end - pos):
                width, height = frame[0], frame[1]
                raise ImageProblem("decode_error", f"JPEG scan data ({end - pos} bytes) is too short for "
                                   f"the {width}x{height} frame (at least {needed // 8} bytes)")
            pos = end


def jpeg_frame(segment: bytes, progressive: bool) -> tuple:
    """(width, height, {component: blocks}, progressive) from a SOF segment."""
    if len(segment) < 6 or len(segment) < 6 + 3 * segment[5]:
        raise ImageProblem("decode_error", f"JPEG: a {len(segment) + 2}-byte frame header is too short for "
                           f"its {segment[5] if len(segment) > 5 else 'missing'} component count")
    height, width, count = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big"), segment[5]
    sampling = {segment[6 + 3 * i]: (segment[7 + 3 * i] >> 4, segment[7 + 3 * i] & 15) for i in range(count)}
    h_max = max((h for h, _ in sampling.values()), default=1) or 1
    v_max = max((v for _, v in sampling.values()), default=1) or 1
    blocks = {c: math.ceil(math.ceil(width * h / h_max) / 8) * math.ceil(math.ceil(height * v / v_max) / 8)
              for c, (h, v) in sampling.items()}
    return width, height, blocks, progressive


def shortest_codes(segment: bytes) -> dict:
    """{(class, table id): the shortest code's length in bits} of a DHT segment."""
    found, i = {}, 0
    while i + 17 <= len(segment):
        counts = segment[i + 1:i + 17]
        found[(segment[i] >> 4, segment[i] & 15)] = next((n + 1 for n, c in enumerate(counts) if c), 1)
        i += 17 + sum(counts)
    return found


def scan_bits_needed(segment: bytes, frame: tuple, tables: dict) -> int:
    _, _, blocks, progressive = frame
    count = segment[0] if segment else 0
    if len(segment) < 4 + 2 * count:
        return 0
    start, approximation = segment[1 + 2 * count], segment[3 + 2 * count] >> 4
    needed = 0
    for i in range(count):
        component, dc, ac = segment[1 + 2 * i], segment[2 + 2 * i] >> 4, segment[2 + 2 * i] & 15
        if progressive:  # only a first DC scan codes every block
            per_block = tables.get((0, dc), 1) if start == 0 and approximation == 0 else 0
        else:
            per_block = tables.get((0, dc), 1) + tables.get((1, ac), 1)
        needed += blocks.get(component, 0) * per_block
    return needed


# --- orientation ---------------------------------------------------------------------------
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the image by 90 degrees
_TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_90}  # as ImageOps.exif_transpose


def orientation(image: Image.Image) -> int:
    """The EXIF orientation known from the header. Image.getexif, not PNG's override, which
    would decode the whole image to look for an eXIf chunk after the pixels."""
    try:
        value = Image.Image.getexif(image).get(0x0112, 1)
    except Exception:  # a broken EXIF block: the image is used as stored
        return 1
    return value if value in _TURNS else 1


def upright_size(image: Image.Image) -> tuple[int, int]:
    """The image's size once its EXIF orientation is applied, read without decoding."""
    return image.size[::-1] if orientation(image) in _SWAPS_AXES else image.size


# --- decoding --------------------------------------------------------------------------------

def bytes_per_pixel(mode: str) -> int:
    """What Pillow stores per pixel (RGB takes 4 bytes, like RGBA)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def draft_scale(size: tuple[int, int], draft_to: Optional[tuple[int, int]]) -> int:
    """1, 2, 4 or 8: the largest reduction that keeps `size` at least `draft_to`, as a JPEG
    draft picks its DCT scale."""
    if not draft_to:
        return 1
    scale = min(size[0] // max(1, draft_to[0]), size[1] // max(1, draft_to[1]))
    return next((s for s in (8, 4, 2) if scale >= s), 1)


def plan_decode(image: Image.Image, drafts: list, max_bytes: int) -> tuple[list[int], int]:
    """Prepare the decode of one RGB view per entry of `drafts` (upright sizes each view needs
    at least, or None: full size) and return (each view's reduction, bytes the decode will
    hold). A JPEG decodes at the first view's size in the DCT; other formats decode at full
    size and are reduced strip by strip. Raises ImageProblem("bomb") over `max_bytes`."""
    swap = orientation(image) in _SWAPS_AXES
    stored = [d[::-1] if d and swap else d for d in drafts]
    full = image.size
    if isinstance(image, JpegImagePlugin.JpegImageFile):  # MPO too
        if stored[0]:
            image.draft(None, stored[0])
        scales = [1] * len(drafts)
    else:
        scales = [draft_scale(image.size, d) for d in stored]
    cost = image.width * image.height * bytes_per_pixel(image.mode) * _DECODER_COPIES.get(image.format, 1)
    if image.info.get("progressive"):  # libjpeg holds every DCT coefficient (2 bytes) of the full frame
        cost += 2 * full[0] * full[1] * (len(getattr(image, "layer", ())) or 3)
    for scale in scales:
        view = math.ceil(image.width / scale) * math.ceil(image.height / scale) * 4
        cost += view * ((0 if scale == 1 and image.mode == "RGB" else 1) + (orientation(image) != 1))
    if cost > max_bytes:
        raise ImageProblem("bomb", f"{full[0]}x{full[1]} {image.mode} needs {cost} bytes of decoded pixels, "
                                   f"over the limit of {max_bytes}")
    return scales, cost


def decode_views(image: Image.Image, scales: list[int]) -> list[Image.Image]:
    """Decode once (planned by plan_decode) into RGB views, EXIF orientation applied, alpha
    matted on white; truncated or corrupt data raises ImageProblem("decode_error")."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # set by other code in this process; it would hide truncation
        raise ImageProblem("image_error", "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set in this process; "
                                          "openwit does not decode with it")
    try:
        image.load()
        turn = _TURNS.get(orientation(image))
        views = rgb_views(image, scales)
        return [view.transpose(turn) if turn else view for view in views]
    except Exception as err:  # truncated data, corrupt scans
        raise ImageProblem("decode_error", error_detail(err)) from None


def decode_image(image: Image.Image, draft_to: Optional[tuple[int, int]] = HASH_DRAFT,
                 max_bytes: int = ImageConfig.max_decoded_bytes) -> Image.Image:
    """Decode to RGB with EXIF orientation applied; alpha is matted on white.

    `draft_to` (upright width, height): the image may come out reduced to 1/2, 1/4 or 1/8, never
    below that size (a JPEG in the DCT, other formats by a box filter), which is far cheaper.
    The default is what the perceptual hash sees; None: full size."""
    scales, _ = plan_decode(image, [draft_to], max_bytes)
    return decode_views(image, scales)[0]


def rgb_views(image: Image.Image, scales: list[int]) -> list[Image.Image]:
    """to_rgb(image).reduce(scale) for each scale, a strip of rows at a time, so the only
    full-size buffers are the decoded image and any view at scale 1."""
    if image.mode == "RGB":
        return [image if scale == 1 else image.reduce(scale) for scale in scales]
    width, height = image.size
    views = [Image.new("RGB", (math.ceil(width / s), math.ceil(height / s))) for s in scales]
    step = math.lcm(*scales)  # strips start on every view's block boundary: the same result as whole
    rows = max(step, _STRIP_BYTES // (4 * width) // step * step)
    for top in range(0, height, rows):
        strip = to_rgb(image.crop((0, top, width, min(top + rows, height))))
        for view, scale in zip(views, scales):
            view.paste(strip if scale == 1 else strip.reduce(scale), (0, top // scale))
    return views


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit gray: convert() would clip to 255
        image = image.convert("I").point(lambda v: v / 256).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


# --- the decode budget: what one worker process holds at once --------------------------------

class DecodeBudget:
    """Bytes of decoded pixels held by this process's decodes together. A decode waits, in
    arrival order (so a large one is not starved by small ones), until its bytes fit.
    A thread holds at most one reservation at a time: a second one could wait on itself."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self.waiting = deque()
        self.changed = threading.Condition()

    @contextmanager
    def hold(self, size: int):
        size = min(size, self.capacity)
        ticket = object()
        with self.changed:
            self.waiting.append(ticket)
            try:
                self.changed.wait_for(lambda: self.waiting[0] is ticket and self.used + size <= self.capacity)
            except BaseException:  # e.g. KeyboardInterrupt: a ticket left in line would block every later decode
                self.waiting.remove(ticket)
                self.changed.notify_all()
                raise
            self.waiting.popleft()
            self.used += size
            self.changed.notify_all()
        give_back_memory(size)  # what earlier decodes freed after their release, before this one allocates
        try:
            yield
        finally:
            with self.changed:
                self.used -= size
                self.changed.notify_all()


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()
_TRIM_OVER = 64 << 20  # decodes holding more than this hand their freed pages back


def give_back_memory(cost: int) -> None:
    """After a large decode: glibc keeps freed pages in the decoding thread's malloc arena, so
    each decode thread would keep the largest image it ever decoded resident (measured: 20
    9000x9000 RGBA PNGs on 4 threads, 1.5 GB instead of 0.45 GB). malloc_trim(0) returns
    them to the system; it frees nothing that is in use."""
    if _MALLOC_TRIM is not None and cost > _TRIM_OVER:
        _MALLOC_TRIM(0)


_BUDGETS: dict[int, DecodeBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def decode_budget(capacity: int) -> DecodeBudget:
    """The process's budget for this capacity (one per --max-decoded-bytes value)."""
    with _BUDGETS_LOCK:
        return _BUDGETS.setdefault(capacity, DecodeBudget(capacity))


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


def hash_view(data: bytes, image_format: Optional[str], decoded: Image.Image) -> Image.Image:
    """The small RGB view the perceptual hash and the colour signature see, from the bytes
    alone, whatever the resize settings: a JPEG is decoded again at 1/8 scale (cheap, and the
    same for every configuration); other formats give their reduced decode. The hashes work
    on at most a 32x32 thumbnail, so nothing is lost."""
    if image_format in ("JPEG", "MPO"):
        small = open_allowed(data)  # not Image.open: its global pixel limit would override --max-pixels
        small.draft(None, (64, 64))
        return to_rgb(ImageOps.exif_transpose(small))
    return decoded


def perceptual_hash(data: bytes, image_format: Optional[str], decoded: Image.Image, method: str = "phash") -> str:
    """A 64-bit perceptual hash (16 hex digits) of `hash_view`."""
    return str(HASH_METHODS[method](hash_view(data, image_format, decoded)))


def hash_view_of(data: bytes, max_pixels: int) -> tuple[Image.Image, int, int]:
    """(hash_view, upright width, height) of image bytes, as process_image makes them.
    Raises ImageProblem for bad bytes."""
    opened = open_image(data, max_pixels)
    width, height = upright_size(opened)
    # A JPEG is hashed from its own 1/8-scale decode: no full decode needed for it.
    decoded = None if opened.format in ("JPEG", "MPO") else decode_image(opened)
    try:
        return hash_view(data, opened.format, decoded), width, height
    except Exception as err:  # a JPEG whose small decode fails
        raise ImageProblem("decode_error", error_detail(err)) from None


def image_phash(data: bytes, max_pixels: int = ImageConfig.max_pixels, method: str = "phash") -> tuple[str, int, int]:
    """(perceptual hash, upright width, height) of image bytes, exactly as curation computes
    them, so an eval set's hashes compare with the pool's. Raises ImageProblem for bad bytes."""
    view, width, height = hash_view_of(data, max_pixels)
    return str(HASH_METHODS[method](view)), width, height


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
        # One decode gives the view to resize and, but for a JPEG (hashed from its own 1/8
        # decode), the view the perceptual hash sees: the same one image_phash hashes.
        jpeg = opened.format in ("JPEG", "MPO")
        scales, cost = plan_decode(opened, [size] if jpeg else [size, HASH_DRAFT], cfg.max_decoded_bytes)
    except ImageProblem as problem:
        return ImageRejected(problem.reason, str(problem))
    # The budget is held until every full-size buffer is gone (each `del` below comes first).
    with decode_budget(cfg.max_decoded_bytes).hold(cost):
        try:
            image, *small = decode_views(opened, scales)
        except ImageProblem as problem:
            del opened
            give_back_memory(cost)
            return ImageRejected(problem.reason, str(problem))
        try:
            view = hash_view(data, opened.format, small[0] if small else image)
            phash, colour_sig = str(HASH_METHODS[cfg.hash_method](view)), colour_signature(view)
            resized = resize_image(image, cfg, size)
            encoded = encode_image(resized, cfg)
            out_width, out_height = resized.size
        except Exception as err:  # e.g. a side over the encoder's limit (JPEG 65,535, WebP 16,383)
            return ImageRejected("image_error", error_detail(err))
        finally:
            del opened, image, small
            view = resized = None  # may be the decoded image itself (no resize)
            give_back_memory(cost)
    return ProcessedImage(
        data=encoded,
        sha256=hashlib.sha256(data).hexdigest(),
        stored_sha256=hashlib.sha256(encoded).hexdigest(),
        width=out_width,
        height=out_height,
        original_width=width,
        original_height=height,
        phash=phash,
        colour_sig=colour_sig,
    )


# --- colour signature (issue 26): the hue that pHash cannot see ---------------------------
# pHash hashes a grayscale thumbnail, so flat graphics that differ in hue but not in
# luminance layout (flags, logos, icons) hash alike. The colour signature is the mean CIELAB
# colour of each cell of a COLOUR_GRID x COLOUR_GRID grid over the image the pHash sees
# (alpha matted on white by to_rgb, so a transparent PNG and its copy flattened on white
# agree), 3 bytes a cell: L* x 2.55, a* + 128, b* + 128, rounded and clipped to 0..255; hex.
# common/neardup.py colour_values reads it back; docs/dedup.md has the measurements.
COLOUR_GRID = 4


def srgb_to_lab(rgb: tuple) -> tuple[float, float, float]:
    """CIELAB (D65) of an sRGB colour given as 0..255 values (floats allowed)."""
    def linear(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(float(c)) for c in rgb)
    x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047
    y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b
    z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116

    fx, fy, fz = f(x), f(y), f(z)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def colour_signature(image: Image.Image, grid: int = COLOUR_GRID) -> str:
    """Hex colour signature of a decoded RGB image (the cell means are box averages)."""
    cells = image.convert("RGB").resize((grid, grid), Image.BOX).getdata()
    out = bytearray()
    for cell in cells:
        lightness, a, b = srgb_to_lab(cell)
        out += bytes(min(255, max(0, round(v))) for v in (lightness * 2.55, a + 128, b + 128))
    return out.hex()


def image_colour_signature(data: bytes, cfg: ImageConfig = ImageConfig()) -> str:
    """The colour signature of image bytes, as process_image computes it. Raises ImageProblem."""
    return colour_signature(hash_view_of(data, cfg.max_pixels)[0])
