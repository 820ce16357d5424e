"""A small synthetic web for the demo and the tests, served on 127.0.0.1 only.

Images are procedurally drawn scenes (a coloured shape on a background) whose captions
describe them, with shape frequencies following a Zipf law so balancing has a head to cut.
The web is hostile on purpose: 404s, 500s, HTML served as image/jpeg, truncated JPEGs,
RGBA and palette PNGs, exact duplicates under other URLs, a too-large body, captions too
short or matching nothing, rows without URL or with a non-http scheme.
"""
from __future__ import annotations

import contextlib
import io
import random
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross", "hexagon", "ring")
# More concepts for bench/experiment_balance.py: 16 in all, each a distinct silhouette.
MORE_SHAPES = ("frame", "heart", "moon", "arrow", "bar", "dome", "wedge", "pentagon")
COLORS = {
    "red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (240, 210, 30),
    "purple": (140, 50, 170), "orange": (245, 140, 20), "black": (15, 15, 15),
}
BACKGROUNDS = {"white": (250, 250, 250), "gray": (128, 128, 128), "beige": (225, 210, 180)}
TEMPLATES = (
    "a {color} {shape} on a {bg} background",
    "photo of a {color} {shape}",
    "A {color} {shape}, drawn on {bg}.",
    "the {shape} is {color}",
    "{color} {shape} clipart",
)
EXTRA_ENTRIES = ("a", "on", "photo", "background", "drawn", "clipart")


def demo_vocab() -> list[str]:
    return list(SHAPES) + list(COLORS) + [b for b in BACKGROUNDS] + list(EXTRA_ENTRIES)


def _star(cx, cy, r, points=5):
    import math

    coords = []
    for i in range(points * 2):
        radius = r if i % 2 == 0 else r * 0.45
        angle = math.pi / points * i - math.pi / 2
        coords.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return coords


def draw_scene(shape: str, color: str, bg: str, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """One shape, centred with some jitter, covering about half the shorter side."""
    w, h = size
    image = Image.new("RGB", size, BACKGROUNDS[bg])
    draw = ImageDraw.Draw(image)
    r = min(w, h) * rng.uniform(0.28, 0.4)
    cx, cy = w / 2 + rng.uniform(-0.08, 0.08) * w, h / 2 + rng.uniform(-0.08, 0.08) * h
    fill = COLORS[color]
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(3, int(r / 3)))
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif shape == "cross":
        t = r / 3
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
    elif shape == "hexagon":
        draw.regular_polygon((cx, cy, r), 6, fill=fill)
    elif shape == "star":
        draw.polygon(_star(cx, cy, r), fill=fill)
    elif not _draw_more(draw, shape, cx, cy, r, fill, BACKGROUNDS[bg]):
        raise ValueError(f"unknown shape {shape!r}")
    return image


def _draw_more(draw, shape: str, cx: float, cy: float, r: float, fill, background) -> bool:
    """The MORE_SHAPES; False for a name it does not know."""
    if shape == "frame":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(3, int(r / 3)))
    elif shape == "heart":
        for dx in (-r / 2, r / 2):
            draw.ellipse((cx + dx - r / 2, cy - 3 * r / 4, cx + dx + r / 2, cy + r / 4), fill=fill)
        draw.polygon([(cx - r, cy - r / 8), (cx + r, cy - r / 8), (cx, cy + r)], fill=fill)
    elif shape == "moon":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        draw.ellipse((cx - r / 3, cy - r, cx + 5 * r / 3, cy + r), fill=background)
    elif shape == "arrow":
        draw.rectangle((cx - r, cy - r / 5, cx + r / 6, cy + r / 5), fill=fill)
        draw.polygon([(cx + r / 6, cy - 2 * r / 3), (cx + r, cy), (cx + r / 6, cy + 2 * r / 3)], fill=fill)
    elif shape == "bar":
        draw.rectangle((cx - r, cy - r / 4, cx + r, cy + r / 4), fill=fill)
    elif shape == "dome":
        draw.pieslice((cx - r, cy - r / 2, cx + r, cy + 3 * r / 2), 180, 360, fill=fill)
    elif shape == "wedge":
        draw.polygon([(cx - r, cy - r), (cx + r, cy - r), (cx, cy + r)], fill=fill)
    elif shape == "pentagon":
        draw.regular_polygon((cx, cy, r), 5, fill=fill)
    else:
        return False
    return True


def encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple = ()  # extra (name, value) pairs: Location, Retry-After, X-Robots-Tag ...
    delay: float = 0.0  # seconds before answering (a server that hangs)
    drip: float = 0.0  # seconds between body bytes (a server that drips)


@dataclass
class DemoWeb:
    routes: dict  # path -> Response
    rows: list  # candidate rows: url (with {base} placeholder), caption, page_url


def _zipf_shape(rng: random.Random) -> str:
    weights = [1.0 / (rank + 1) for rank in range(len(SHAPES))]
    return rng.choices(SHAPES, weights=weights)[0]


def _scene_bytes(rng: random.Random, index: int):
    shape, color, bg = _zipf_shape(rng), rng.choice(list(COLORS)), rng.choice(list(BACKGROUNDS))
    size = (rng.randint(72, 160), rng.randint(72, 160))
    image = draw_scene(shape, color, bg, size, rng)
    if index % 10 == 3:  # PNG with alpha: the decoder must matte it
        return shape, color, bg, "image/png", encode(image.convert("RGBA"), "PNG")
    if index % 10 == 7:  # palette PNG
        return shape, color, bg, "image/png", encode(image.convert("P"), "PNG")
    return shape, color, bg, "image/jpeg", encode(image, "JPEG")


def build_web(n_images: int = 300, seed: int = 0) -> DemoWeb:
    rng = random.Random(seed)
    routes, rows = {}, []

    def add(path, response, caption, **row):
        routes[path] = response
        rows.append({"url": "{base}" + path, "caption": caption, "page_url": "{base}/page" + path, **row})

    for i in range(n_images):
        shape, color, bg, ctype, body = _scene_bytes(rng, i)
        caption = rng.choice(TEMPLATES).format(color=color, shape=shape, bg=bg)
        add(f"/img/{i:04d}", Response(200, ctype, body), caption)
        if i % 25 == 0:  # the same image under another URL and caption: an exact duplicate
            add(f"/copy/{i:04d}", Response(200, ctype, body), f"{color} {shape} again")
    truncated = encode(draw_scene("square", "red", "white", (120, 120), rng), "JPEG")
    for i in range(8):
        add(f"/missing/{i}", Response(404, "text/html", b"not found"), "a red square on a white background")
    for i in range(4):
        add(f"/error/{i}", Response(500, "text/html", b"oops"), "a blue circle on a gray background")
    for i in range(4):
        add(f"/html/{i}", Response(200, "image/jpeg", b"<html><body>nope</body></html>"), "photo of a green star")
    for i in range(4):
        add(f"/truncated/{i}", Response(200, "image/jpeg", truncated[: len(truncated) // 3]), "a red square drawn")
    add("/huge/0", Response(200, "image/jpeg", b"\xff" * (3 * 1024 * 1024)), "a black ring on a white background")
    rows += [
        {"url": "{base}/img/0000", "caption": "ok", "page_url": None},  # too short
        {"url": "{base}/img/0001", "caption": "lorem ipsum dolor sit amet", "page_url": None},  # no entry
        {"url": "", "caption": "a red circle without url", "page_url": None},
        {"url": "ftp://127.0.0.1/x.jpg", "caption": "a blue square via ftp", "page_url": None},
    ]
    return DemoWeb(routes, rows)


def rows_for(web: DemoWeb, base_url: str) -> list[dict]:
    return [{**row, "url": row["url"].replace("{base}", base_url),
             "page_url": (row["page_url"] or "").replace("{base}", base_url) or None} for row in web.rows]


def _handler(routes: dict):
    hits, lock = {}, threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

        def do_GET(self):
            response = self.pick(routes.get(self.path, Response(404, "text/plain", b"no such path")))
            time.sleep(response.delay)
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers:
                self.send_header(name, value)
            self.end_headers()
            if not response.drip:
                self.wfile.write(response.body)
                return
            for i in range(len(response.body)):
                self.wfile.write(response.body[i: i + 1])
                self.wfile.flush()
                time.sleep(response.drip)

        def pick(self, route):
            """A list of responses is served in turn (e.g. a 429, then the image)."""
            if not isinstance(route, list):
                return route
            with lock:
                hits[self.path] = hits.get(self.path, 0) + 1
                return route[min(hits[self.path], len(route)) - 1]

        def log_message(self, *args):  # keep the demo's output readable
            pass

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 refuses connections under concurrent downloads

    def handle_error(self, request, client_address):
        pass  # clients that hang up early (byte cap, timeouts) are expected here


@contextlib.contextmanager
def serve(routes: dict):
    """Serve routes on 127.0.0.1 on a free port; yields the base URL."""
    server = QuietServer(("127.0.0.1", 0), _handler(routes))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def write_heldout(out_dir: str, per_class: int = 50, seed: int = 1) -> str:
    """A labelled held-out set (label = shape), drawn with another seed, never in the shards.
    50 a class (400 images): with 12 (96 images) one accuracy had a standard error of ~5
    points, enough to put a 35% model under the demo test's 25% bar now and then."""
    import csv
    import os

    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(seed + 10_000)
    with open(os.path.join(out_dir, "labels.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label"])
        for shape in SHAPES:
            for i in range(per_class):
                image = draw_scene(shape, rng.choice(list(COLORS)), rng.choice(list(BACKGROUNDS)), (96, 96), rng)
                name = f"{shape}_{i:03d}.jpg"
                image.save(os.path.join(out_dir, name), quality=90)
                writer.writerow([name, shape])
    return out_dir
