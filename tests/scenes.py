"""Photo-like test images shared by the dedup tests: distinct per seed, rich enough that
distinct seeds are far apart in pHash (>= 14 bits measured), as distinct photos are."""
import io

import numpy as np
from PIL import Image, ImageDraw


def scene(seed: int, size=(400, 300)) -> Image.Image:
    """A random low-frequency colour field with a few discs."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((400, 300), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y, r = rng.integers(0, 400), rng.integers(0, 300), rng.integers(15, 80)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image if size == (400, 300) else image.resize(size, Image.LANCZOS)


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
