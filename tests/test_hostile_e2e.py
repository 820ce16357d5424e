"""The whole pipeline over a hostile web on 127.0.0.1: every URL ends with exactly one ledger
row, and each hostile case with its exact reason. Traffic never leaves 127.0.0.0/8: the
private and metadata targets are IP literals that the downloader refuses before connecting."""
import io
import json
import socket
import struct
import zlib

import pytest
from PIL import Image

from openwit.pipeline.curate.run import curate
from openwit.pipeline.demo.web import Response, serve
from openwit.pipeline.output.ledger import current_state, read_ledger
from openwit.pipeline.config import parse_curate_args

pytestmark = pytest.mark.timeout(240)


def image_bytes(mode="RGB", size=(96, 72), fmt="JPEG", **save):
    image = Image.new(mode, size, "red" if mode in ("RGB", "RGBA", "P") else 128)
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


def noisy_jpeg():
    out = io.BytesIO()
    Image.effect_noise((400, 300), 64).convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


def rotated_jpeg():
    image = Image.new("RGB", (80, 40), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


def png_header_claiming(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def animated(fmt):
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


def jpeg(body=None):
    return Response(200, "image/jpeg", body or image_bytes())


def redirect(location):
    return Response(302, "text/html", b"moved", headers=(("Location", location),))


def hostile_routes():
    jpg = image_bytes()
    return {
        "/ok.jpg": (jpeg(), "kept"),
        "/missing": (Response(404, "text/html", b"no"), "http_404"),
        "/gone": (Response(410, "text/html", b"gone"), "http_404"),
        "/forbidden": (Response(403, "text/html", b"no"), "http_4xx"),
        "/error": (Response(500, "text/html", b"oops"), "http_5xx"),
        "/busy": ([Response(429, "text/plain", b"wait", headers=(("Retry-After", "1"),)),
                   jpeg(image_bytes(size=(100, 70)))], "kept"),
        "/slow-down": (Response(429, "text/plain", b"later", headers=(("Retry-After", "3600"),)), "http_429"),
        "/hang": (Response(200, "image/jpeg", jpg, delay=30), "timeout"),
        "/drip": (Response(200, "image/jpeg", jpg, drip=0.5), "timeout"),
        "/loop-a": (redirect("/loop-b"), "too_many_redirects"),
        "/loop-b": (redirect("/loop-a"), "too_many_redirects"),
        "/to-private": (redirect("http://10.0.0.1/x.jpg"), "blocked_address"),
        "/to-metadata": (redirect("http://169.254.169.254/latest/meta-data"), "blocked_address"),
        "/to-ftp": (redirect("ftp://127.0.0.1/x.jpg"), "unsupported_redirect"),
        "/noai": (Response(200, "image/jpeg", jpg, headers=(("X-Robots-Tag", "noai, noimageai"),)), "opted_out"),
        "/html": (Response(200, "image/jpeg", b"<html><body>not an image</body></html>"), "not_image"),
        "/truncated": (jpeg(noisy_jpeg()[:6000]), "decode_error"),
        "/bomb": (Response(200, "image/png", png_header_claiming(100_000, 100_000)), "bomb"),
        "/huge": (jpeg(b"\xff\xd8" + b"\x00" * 300_000), "too_large"),
        "/pixel.gif": (Response(200, "image/gif", image_bytes("RGB", (1, 1), "GIF")), "image_too_small"),
        "/rotated.jpg": (jpeg(rotated_jpeg()), "kept"),
        "/cmyk.jpg": (jpeg(image_bytes("CMYK")), "kept"),
        "/la.png": (Response(200, "image/png", image_bytes("LA", fmt="PNG")), "kept"),
        "/palette.png": (Response(200, "image/png", image_bytes("P", fmt="PNG", transparency=0)), "kept"),
        "/gray16.png": (Response(200, "image/png", image_bytes("I;16", fmt="PNG")), "kept"),
        "/anim.gif": (Response(200, "image/gif", animated("GIF")), "kept"),
        "/anim.webp": (Response(200, "image/webp", animated("WEBP")), "kept"),
    }


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    cases = hostile_routes()
    (root / "vocab.txt").write_text("photo\n")
    with serve({path: response for path, (response, _) in cases.items()}) as base:
        rows = [{"url": base + path, "caption": f"a photo of case {path}"} for path in cases]
        expected = [reason for _, reason in cases.values()]
        extra = [
            (f"http://127.0.0.1:{closed_port()}/x.jpg", "connection_refused"),
            ("http://10.0.0.1/direct.jpg", "blocked_address"),
            ("http://169.254.169.254/latest/meta-data", "blocked_address"),
            ("ftp://127.0.0.1/x.jpg", "unsupported_scheme"),
        ]
        rows += [{"url": url, "caption": f"a photo of {reason}"} for url, reason in extra]
        expected += [reason for _, reason in extra]
        lines = [json.dumps(r) for r in rows] + ["{not json"]
        expected.append("malformed_row")
        (root / "in.jsonl").write_text("\n".join(lines) + "\n")
        argv = ["--input", str(root / "in.jsonl"), "--vocab", str(root / "vocab.txt"), "--output", str(root / "out"),
                "--allow-loopback", "--timeout", "2", "--total-timeout", "3", "--retries", "1", "--max-retry-after", "2",
                "--max-image-bytes", "200000", "--image-size", "64", "--threshold", "100000",
                # small test images, none of them near-duplicates of another by intent
                "--min-image-size", "32", "--max-aspect-ratio", "0", "--near-dup-distance", "-1", "--languages", "all"]
        cfg, beam_args = parse_curate_args(argv)
        curate(cfg, beam_args, argv)
    state = {row["source"]: row for row in current_state(read_ledger(str(root / "out"))).to_pylist()}
    return state, expected


def test_no_url_is_lost(hostile_run):
    state, expected = hostile_run
    assert sorted(state) == sorted(f"in.jsonl:{i}" for i in range(len(expected)))


def test_every_hostile_case_has_its_exact_reason(hostile_run):
    state, expected = hostile_run
    got = [state[f"in.jsonl:{i}"] for i in range(len(expected))]
    outcomes = [row["status"] if row["status"] == "kept" else row["reason"] for row in got]
    mismatches = [(row["url"], want, have, row["detail"]) for row, want, have in zip(got, expected, outcomes)
                  if want != have]
    assert not mismatches


def test_rotated_jpeg_keeps_its_upright_size(hostile_run):
    state, _ = hostile_run
    [row] = [r for r in state.values() if r["url"].endswith("/rotated.jpg")]
    assert (row["original_width"], row["original_height"]) == (40, 80)
