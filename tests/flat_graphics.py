"""Flat graphics that pHash cannot tell apart (issue 26), and their copies, for the
near-duplicate tests and bench/bench_dedup.py --colour.

A *family* is one luminance layout (stripes, a cross, a canton, an emblem on a field, an
icon shape on a transparent background). Its members differ only in hue: every region of
every member has the same luma (PIL's L = 0.299 R + 0.587 G + 0.114 B, what pHash sees), so
members of a family hash (almost) alike while being distinct pictures. Every member has
copies a pipeline meets on the web: resized, re-encoded (JPEG q 60-95, WebP), and for
icons flattened onto white.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

LUMA = np.array([0.299, 0.587, 0.114])
# Two unit vectors spanning the plane of zero luma change: hue directions at equal luma.
_E1 = np.array([1.0, -1.0, 0.0]) - LUMA @ np.array([1.0, -1.0, 0.0]) / (LUMA @ LUMA) * LUMA
_E1 /= np.linalg.norm(_E1)
_E2 = np.cross(LUMA / np.linalg.norm(LUMA), _E1)


def equal_luma_colour(luma: float, hue_degrees: float, chroma: float = 1.0) -> tuple[int, int, int]:
    """An sRGB colour of the given luma whose hue is the angle in the equal-luma plane;
    `chroma` in (0, 1] is the fraction of the largest step that stays inside 0..255."""
    angle = math.radians(hue_degrees)
    direction = math.cos(angle) * _E1 + math.sin(angle) * _E2
    grey = np.full(3, float(luma))
    limits = [((255 if d > 0 else 0) - g) / d for g, d in zip(grey, direction) if abs(d) > 1e-9]
    step = chroma * min(limits)
    return tuple(int(round(v)) for v in np.clip(grey + step * direction, 0, 255))


def flag(layout: str, colours: list, size=(300, 200)) -> Image.Image:
    """A flag of `layout` with region colours in order (field first)."""
    w, h = size
    image = Image.new("RGB", size, colours[0])
    draw = ImageDraw.Draw(image)
    if layout == "h3":
        draw.rectangle((0, h // 3, w, 2 * h // 3), fill=colours[1])
        draw.rectangle((0, 2 * h // 3, w, h), fill=colours[2])
    elif layout == "v3":
        draw.rectangle((w // 3, 0, 2 * w // 3, h), fill=colours[1])
        draw.rectangle((2 * w // 3, 0, w, h), fill=colours[2])
    elif layout == "h2":
        draw.rectangle((0, h // 2, w, h), fill=colours[1])
    elif layout == "cross":
        draw.rectangle((w // 3 - 15, 0, w // 3 + 15, h), fill=colours[1])
        draw.rectangle((0, h // 2 - 15, w, h // 2 + 15), fill=colours[1])
    elif layout == "canton":
        draw.rectangle((0, 0, w // 2, h // 2), fill=colours[1])
        draw.ellipse((w // 4 - 25, h // 4 - 25, w // 4 + 25, h // 4 + 25), fill=colours[2])
    elif layout == "disc":  # an emblem on a field, like the UN and WHO flags
        draw.ellipse((w // 2 - 60, h // 2 - 60, w // 2 + 60, h // 2 + 60), fill=colours[1])
    elif layout == "diagonal":
        draw.polygon([(0, h), (0, h - 60), (w - 90, 0), (w, 0), (90, h)], fill=colours[1])
    elif layout == "star":
        cx, cy, points = w / 2, h / 2, []
        for i in range(10):
            r = 70 if i % 2 == 0 else 28
            a = math.pi / 2 + i * math.pi / 5
            points.append((cx + r * math.cos(a), cy - r * math.sin(a)))
        draw.polygon(points, fill=colours[1])
    return image


FLAG_LAYOUTS = {  # layout -> luma of its regions
    "h3": (110, 150, 90), "v3": (120, 80, 160), "h2": (140, 100), "cross": (100, 170),
    "canton": (130, 90, 235), "disc": (150, 240), "diagonal": (90, 140), "star": (120, 170),
}
ICON_SHAPES = ("circle", "square", "triangle", "ring")


def icon(shape: str, colour: tuple, size: int = 256) -> Image.Image:
    """A one-colour icon on a fully transparent background (RGBA)."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    m = size // 6
    box = (m, m, size - m, size - m)
    if shape == "circle":
        draw.ellipse(box, fill=colour + (255,))
    elif shape == "square":
        draw.rounded_rectangle(box, radius=size // 10, fill=colour + (255,))
    elif shape == "triangle":
        draw.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=colour + (255,))
    elif shape == "ring":
        draw.ellipse(box, fill=colour + (255,))
        draw.ellipse((2 * m, 2 * m, size - 2 * m, size - 2 * m), fill=(0, 0, 0, 0))
    return image


def members(hues: int = 6, chroma: float = 0.9) -> list[tuple[str, Image.Image]]:
    """(family, image) of every distinct graphic: each flag layout and icon shape in `hues`
    hue variants, 360 / hues degrees apart (each region's hue offset differently)."""
    out = []
    for family, lumas in FLAG_LAYOUTS.items():
        for v in range(hues):
            colours = [equal_luma_colour(y, 360 * v / hues + 97 * region, chroma) for region, y in enumerate(lumas)]
            out.append((family, flag(family, colours)))
    for shape in ICON_SHAPES:
        for v in range(hues):
            out.append((f"icon-{shape}", icon(shape, equal_luma_colour(120, 360 * v / hues + 20, chroma))))
    return out


def encode(image: Image.Image, fmt: str, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": quality} if fmt in ("JPEG", "WEBP") else {}))
    return out.getvalue()


def flattened(image: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """An RGBA image composited onto an opaque background (what an editor's export does)."""
    if image.mode != "RGBA":
        return image
    canvas = Image.new("RGBA", image.size, background + (255,))
    return Image.alpha_composite(canvas, image).convert("RGB")


def scaled(image: Image.Image, factor: float) -> Image.Image:
    return image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS)


def copies(image: Image.Image) -> list[tuple[str, bytes]]:
    """(name, bytes) of the original (PNG, alpha kept) and of its copies."""
    flat = flattened(image)
    return [
        ("original png", encode(image, "PNG")),
        ("0.5x png", encode(scaled(image, 0.5), "PNG")),
        ("jpeg q60", encode(flat, "JPEG", 60)),
        ("0.75x jpeg q75", encode(scaled(flat, 0.75), "JPEG", 75)),
        ("1.6x jpeg q95", encode(scaled(flat, 1.6), "JPEG", 95)),
        ("webp q80", encode(image, "WEBP", 80)),
        ("flattened png", encode(flat, "PNG")),
    ]
