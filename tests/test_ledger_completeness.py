"""Ledger completeness under every stage's drops: one curate run whose input makes every
stage drop something, then a takedown; per stage, its drops are in the ledger with that
stage's reasons, and every input row has exactly one current row."""
import json
from collections import Counter

import pytest
from scenes import jpeg, scene

from openwit.pipeline.curate.run import curate
from openwit.pipeline.demo.web import Response, serve
from openwit.pipeline.output.ledger import current_state, read_ledger
from openwit.pipeline.config import parse_curate_args
from openwit.pipeline.audit.takedown import takedown
from openwit.pipeline.audit.verify import verify
from openwit.schemas.reasons import REASONS, STAGES

# Captions sharing the entry "zebra", over t = 10 and t x slack = 30, so both balancing phases
# drop some. Draws hash the URL, whose port changes per run: with 90 rows about 30 survive
# the first phase (a final phase with no drop would need <= 10: odds ~1e-6).
HEAD = 90


def web_and_rows():
    image = lambda seed, size=(400, 300): Response(200, "image/jpeg", jpeg(scene(seed, size)))  # noqa: E731
    routes = {f"/ok/{i}.jpg": image(i) for i in range(16)}
    routes.update({f"/zebra/{i}.jpg": image(100 + i, (260, 200)) for i in range(HEAD)})
    routes.update({"/html.jpg": Response(200, "image/jpeg", b"<html>not an image</html>"),
                   "/tiny.jpg": image(50, (120, 90)), "/same-bytes.jpg": routes["/ok/13.jpg"],
                   "/resized.jpg": image(14, (640, 480))})
    rows = [(f"/zebra/{i}.jpg", "a zebra in a field") for i in range(HEAD)]
    rows += [
        ("/ok/12.jpg", "a photo of an old castle"), ("/ok/12.jpg#again", "the same photo of a stone bridge"),  # url_dedup
        ("/ok/13.jpg", "a photo of a small garden"), ("/same-bytes.jpg", "a photo of a tall tower"),  # dedup (exact)
        ("/ok/14.jpg", "a photo of a dark forest"), ("/resized.jpg", "a photo of a burning candle"),  # dedup (near)
        ("/ok/15.jpg", "a photo of a wooden violin"),  # kept, then taken down
        ("/missing.jpg", "a photo of a white rabbit"),  # download: 404
        ("/html.jpg", "a photo of a snowy mountain"), ("/tiny.jpg", "a photo of a paper lantern"),  # image
        ("/ok/0.jpg", "ab"), ("/ok/1.jpg", "une photo d'un zèbre dans un champ"),  # text
        ("/ok/2.jpg", "nothing from the vocabulary here"),  # match
        ("", "a photo of a red apple"), ("ftp://127.0.0.1/x.jpg", "a photo of a wide river"),  # read
    ]
    return routes, rows


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("complete")
    routes, rows = web_and_rows()
    vocab = ["zebra", "castle", "bridge", "garden", "tower", "forest", "candle", "violin", "rabbit", "mountain",
             "lantern", "apple", "river"]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    with serve(routes) as base:
        with open(root / "in.jsonl", "w") as f:
            for path, caption in rows:
                url = path if "://" in path or not path else base + path
                f.write(json.dumps({"url": url, "caption": caption}) + "\n")
            f.write("{broken json\n")  # read: malformed_row
        argv = ["--input", str(root / "in.jsonl"), "--vocab", str(root / "vocab.txt"), "--output", str(root / "out"),
                "--allow-loopback", "--threshold", "10", "--pre-download-slack", "3", "--seed", "3", "--timeout", "10",
                "--retries", "1"]
        curate(*parse_curate_args(argv), argv)
    out = str(root / "out")
    kept = [r for r in current_state(read_ledger(out)).to_pylist() if r["status"] == "kept"]
    violin = next(r for r in kept if "violin" in r["caption"])
    takedown(out, uids=[violin["uid"]])
    return {"out": out, "inputs": len(rows) + 1}


# write drops nothing by design; score runs only with --score-model, and tests/test_score.py
# checks its drops the same way (one current row per input, its reason, verify green)
@pytest.mark.parametrize("stage", [s for s in STAGES if s not in ("write", "score")])
def test_every_stage_drops_are_in_the_ledger(run, stage):
    rows = current_state(read_ledger(run["out"])).to_pylist()
    assert len(rows) == len({r["uid"] for r in rows}) == run["inputs"]  # one current row per input row
    dropped = [r for r in rows if r["stage"] == stage]
    assert dropped, f"this input should make {stage} drop something: {Counter(r['stage'] for r in rows)}"
    for row in dropped:
        assert row["status"] == "dropped" and REASONS[row["reason"]].stage == stage
    assert verify(run["out"]) == []
