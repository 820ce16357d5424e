"""Soak: >= 10K URLs over the hostile local web, every case of the download tests mixed
together, through the whole pipeline on two worker processes. Nothing crashes or hangs,
and every candidate ends with exactly one ledger row carrying its case's reason. It takes
under a minute here (timeouts overlap), so CI runs it."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from openwit.pipeline.curate.run import curate
from openwit.pipeline.demo.web import Response, serve
from openwit.pipeline.output.ledger import current_state, read_ledger
from openwit.pipeline.config import parse_curate_args
from test_hostile_e2e import hostile_routes

pytestmark = pytest.mark.timeout(600)
URLS = 10_400


def distinct_jpeg(index: int) -> bytes:
    blocks = np.random.default_rng(index).integers(0, 255, (3, 4, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(np.kron(blocks, np.ones((24, 24, 1), dtype=np.uint8))).save(out, format="JPEG")
    return out.getvalue()


def soak_web(n: int):
    """n routes cycling through the hostile cases; the plain image case gets a distinct image
    each time, the odd-format ones repeat their bytes (so exact dedup has work too)."""
    cases = list(hostile_routes().items())
    routes, expected = {}, {}
    for i in range(n):
        path, (response, reason) = cases[i % len(cases)]
        if path == "/ok.jpg":
            response = Response(200, "image/jpeg", distinct_jpeg(i))
        if path.startswith("/loop-"):  # a redirect to itself: still a loop, under this prefix
            response = Response(302, "text/html", b"moved", headers=(("Location", f"/{i}{path}"),))
        routes[f"/{i}{path}"] = response
        expected[f"/{i}{path}"] = reason
    return routes, expected


def test_ten_thousand_hostile_urls_each_end_with_their_reason(tmp_path):
    routes, expected = soak_web(URLS)
    (tmp_path / "vocab.txt").write_text("photo\n")
    with serve(routes) as base:
        rows = [{"url": base + path, "caption": f"a photo of case {path}"} for path in routes]
        (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        argv = ["--input", str(tmp_path / "in.jsonl"), "--vocab", str(tmp_path / "vocab.txt"),
                "--output", str(tmp_path / "out"), "--allow-loopback", "--timeout", "2", "--retries", "1",
                # the drip case sends a byte every 0.5 s: only the total cap ends it
                "--total-timeout", "3", "--max-retry-after", "2", "--max-image-bytes", "200000", "--image-size", "64",
                "--threshold", "100000", "--min-image-size", "32", "--max-aspect-ratio", "0",
                "--near-dup-distance", "-1", "--languages", "all",
                # one local host stands in for the whole web
                "--per-host-connections", "64", "--direct_running_mode", "multi_processing",
                "--direct_num_workers", "2"]
        cfg, beam_args = parse_curate_args(argv)
        manifest = curate(cfg, beam_args, argv)
    state = current_state(read_ledger(str(tmp_path / "out"))).to_pylist()
    assert sorted(row["source"] for row in state) == sorted(f"in.jsonl:{i}" for i in range(URLS))
    wrong = []
    for row in state:
        want = expected[row["url"][len(base):]]
        have = row["status"] if row["status"] == "kept" else row["reason"]
        if have != want and not (want == "kept" and have == "duplicate_image"):
            wrong.append((row["url"], want, have, row["detail"]))
    assert not wrong, wrong[:10]
    assert manifest["funnel"]["kept"] >= URLS // len(hostile_routes())  # every distinct plain image
