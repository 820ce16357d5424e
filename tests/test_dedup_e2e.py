"""Dedup, decontamination and the default filters through the real Beam pipeline: photo-
like images served on 127.0.0.1 with resized/recompressed copies, repeated URLs, an eval set
planted in the pool (resized), images the DataComp size rules drop, and flat graphics that
differ only in hue (flags, transparent icons) with a copy each."""
import json
import os
import tarfile
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest
from flat_graphics import encode, flattened, members, scaled
from scenes import jpeg, scene

from openwit.pipeline.audit import hashes as hashes_cli
from openwit.pipeline.curate.run import curate
from openwit.pipeline.demo.web import Response, serve
from openwit.pipeline.output.ledger import current_state, read_ledger
from openwit.pipeline.config import parse_curate_args
from openwit.pipeline.common.urls import normalize_url

COPIES = [((640, 480), 90), ((300, 225), 50)]  # (size, JPEG quality) of each copy of an original
DUPLICATED = range(0, 12)  # originals that also have copies on other URLs
EVAL = range(12, 16)  # eval images: a resized PNG goes to the eval set, the JPEG to the pool
PLAIN = range(16, 22)
# Equal-luminance hue variants: one pHash per family, distinct pictures (issue 26).
FLAT = [image for family, image in members(hues=4) if family in ("h3", "cross", "icon-ring")]


def flat_copy(image):
    """A flag enlarged 1.6x as JPEG q95; an icon flattened onto white as JPEG q90."""
    return encode(scaled(image, 1.6) if image.mode == "RGB" else flattened(image), "JPEG", 95 if image.mode == "RGB" else 90)


def image_route(data):
    return Response(200, "image/jpeg", data)


def build(root):
    routes, rows = {}, []

    def add(path, data, caption, url=None):
        routes[path] = image_route(data)
        rows.append({"url": url or "{base}" + path, "caption": caption, "page_url": "{base}/page" + path})

    for seed in [*DUPLICATED, *EVAL, *PLAIN]:
        add(f"/img/{seed}.jpg", jpeg(scene(seed), 95), f"a photo of place number {seed}")
    for seed in DUPLICATED:
        for n, (size, quality) in enumerate(COPIES):
            add(f"/copy/{seed}-{n}.jpg", jpeg(scene(seed, size), quality), f"another photo of place {seed}")
    # The same image URL seen on other pages, written differently: one download.
    rows.append({"url": "{base}/img/./0.jpg#gallery", "caption": "the first photo again", "page_url": "{base}/other"})
    rows.append({"url": "{base}/img/%30.jpg", "caption": "the first photo once more", "page_url": "{base}/third"})
    for n, image in enumerate(FLAT):
        add(f"/flat/{n}.png", encode(image, "PNG"), f"a photo of flag number {n}")
        add(f"/flat/{n}-copy.jpg", flat_copy(image), f"another photo of flag number {n}")
    add("/small.jpg", jpeg(scene(90, (160, 120))), "a photo that is too small")
    add("/wide.jpg", jpeg(scene(91, (700, 220))), "a photo that is too wide")
    rows.append({"url": "{base}/img/16.jpg", "caption": "une photo d'un endroit en France", "page_url": None})
    eval_dir = root / "eval"
    eval_dir.mkdir()
    for seed in EVAL:
        scene(seed, (256, 192)).save(eval_dir / f"eval-{seed}.png")
    return routes, rows, str(eval_dir)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dedup")
    routes, rows, eval_dir = build(root)
    assert hashes_cli.main(["export", eval_dir, "-o", str(root / "hashes.parquet")]) == 0
    (root / "vocab.txt").write_text("photo\n")
    with serve(routes) as base:
        with open(root / "in.jsonl", "w") as f:
            for row in rows:
                row = {k: (v.replace("{base}", base) if isinstance(v, str) else v) for k, v in row.items()}
                f.write(json.dumps(row) + "\n")
        argv = ["--input", str(root / "in.jsonl"), "--vocab", str(root / "vocab.txt"), "--output", str(root / "out"),
                "--allow-loopback", "--threshold", "100000", "--image-size", "64", "--timeout", "5",
                "--decontaminate", str(root / "hashes.parquet")]  # every filter default as shipped
        cfg, beam_args = parse_curate_args(argv)
        manifest = curate(cfg, beam_args, argv)
    state = current_state(read_ledger(str(root / "out"))).to_pylist()
    return {"state": state, "by_url": {r["url"].split("127.0.0.1:", 1)[-1].split("/", 1)[-1]: r for r in state},
            "manifest": manifest, "root": root}


def same_url(run, path):
    """The rows whose URL normalises to the image at `path`, written in several ways."""
    return [r for r in run["state"] if urlsplit(normalize_url(r["url"])).path == "/" + path]


def downloaded(run, path):
    """The one row of those that was downloaded (the others are duplicate_url)."""
    [row] = [r for r in same_url(run, path) if r["reason"] != "duplicate_url"]
    return row


def test_every_copy_joins_its_largest_version(run):
    by_url, by_uid = run["by_url"], {r["uid"]: r for r in run["state"]}
    for seed in DUPLICATED:
        survivor = by_url[f"copy/{seed}-0.jpg"]  # 640x480: the largest resolution survives
        assert survivor["status"] == "kept", survivor
        for loser in (downloaded(run, f"img/{seed}.jpg"), by_url[f"copy/{seed}-1.jpg"]):
            assert (loser["reason"], loser["duplicate_of"]) == ("near_duplicate", survivor["uid"]), loser
            assert by_uid[loser["duplicate_of"]]["phash"]


def lab_distance(a: str, b: str) -> float:
    """Colour distance by definition: the largest per-cell CIELAB distance of two signatures."""
    def cells(sig):
        codes = bytes.fromhex(sig)
        return [(codes[i] / 2.55, codes[i + 1] - 128, codes[i + 2] - 128) for i in range(0, len(codes), 3)]
    return max(sum((x - y) ** 2 for x, y in zip(p, q)) ** 0.5 for p, q in zip(cells(a), cells(b)))


def test_no_near_duplicate_drop_is_farther_than_k_from_its_survivor(run):
    """Clusters are stars, not chains: each drop names a survivor within --near-dup-distance
    (the default, 8) and within the colour limit (10), and its detail records both
    distances and the survivor."""
    by_uid = {r["uid"]: r for r in run["state"]}
    drops = [r for r in run["state"] if r["reason"] == "near_duplicate"]
    assert drops
    for r in drops:
        survivor = by_uid[r["duplicate_of"]]
        distance = (int(r["phash"], 16) ^ int(survivor["phash"], 16)).bit_count()
        colour = lab_distance(r["colour_sig"], survivor["colour_sig"])
        assert distance <= 8 and colour <= 10, r
        assert r["detail"] == (f"phash {r['phash']} at distance {distance} from {survivor['phash']} of "
                               f"{survivor['uid']}, colour distance {colour:.1f}")


def test_flat_graphics_in_other_hues_stay_and_their_copies_go(run):
    """Each family's hue variants share (almost) one pHash: pHash alone kept one per family.
    Now every variant is kept once: its copy (a transparent icon's flattened JPEG too) is
    the near-duplicate."""
    by_url = run["by_url"]
    phashes = {}
    for n, image in enumerate(FLAT):
        original, copy = by_url[f"flat/{n}.png"], by_url[f"flat/{n}-copy.jpg"]
        kept, dropped = (copy, original) if image.mode == "RGB" else sorted((original, copy), key=lambda r: r["uid"])
        assert kept["status"] == "kept", kept  # a flag's copy is larger: it survives
        assert (dropped["reason"], dropped["duplicate_of"]) == ("near_duplicate", kept["uid"]), dropped
        phashes.setdefault(n // 4, []).append(int(original["phash"], 16))
    # the variants of a family really are pHash near-duplicates of one another
    assert all((values[0] ^ v).bit_count() <= 8 for values in phashes.values() for v in values)


def test_distinct_images_are_not_merged(run):
    for seed in PLAIN:
        assert run["by_url"][f"img/{seed}.jpg"]["status"] == "kept"
    kept = [r for r in run["state"] if r["status"] == "kept"]
    assert len(kept) == len(DUPLICATED) + len(PLAIN) + len(FLAT)


def test_planted_eval_images_are_all_dropped(run):
    for seed in EVAL:
        row = run["by_url"][f"img/{seed}.jpg"]
        assert row["reason"] == "eval_contamination" and f"eval-{seed}.png" in row["detail"], row


def test_one_download_per_normalised_url(run):
    rows = same_url(run, "img/0.jpg")
    first = downloaded(run, "img/0.jpg")
    repeats = [r for r in run["state"] if r["reason"] == "duplicate_url"]
    assert len(rows) == 3 and len(repeats) == 2 and {r["duplicate_of"] for r in repeats} == {first["uid"]}
    assert first["uid"] == min(r["uid"] for r in rows)
    pages = {(r["page_url"] or "").rsplit("/", 1)[-1] for r in rows}
    assert pages == {"0.jpg", "other", "third"}  # every page the image was seen on stays on record


def test_the_funnel_from_beam_metrics_equals_the_ledgers(run):
    manifest = run["manifest"]
    assert manifest["funnel_from_metrics"] == manifest["funnel"]
    assert manifest["beam_counters"]["dropped.dedup.near_duplicate"] == 2 * len(DUPLICATED) + len(FLAT)


def test_default_filters_drop_small_wide_and_foreign(run):
    reasons = {r["reason"] for r in run["state"]}
    assert run["by_url"]["small.jpg"]["reason"] == "image_too_small"
    assert run["by_url"]["wide.jpg"]["reason"] == "aspect_ratio"
    assert "language_not_allowed" in reasons
    for row in run["state"]:
        if row["reason"] not in ("duplicate_url",) and row["stage"] != "read":
            assert row["language"] and 0 < row["language_score"] <= 1  # recorded for every candidate


def test_hashes_export_reads_dirs_shards_and_reports_bad_files(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    scene(1, (200, 150)).save(images / "a.png")
    (images / "sub" / "b.jpg").write_bytes(jpeg(scene(2)))
    (images / "broken.jpg").write_bytes(b"not an image")
    (images / "notes.txt").write_text("skipped and reported: not an image name")
    (images / "broken.tar").write_bytes(b"not a tar at all" * 100)
    with tarfile.open(tmp_path / "shard-000000.tar", "w") as tar:
        tar.add(images / "sub" / "b.jpg", arcname="000001.jpg")
        tar.add(images / "a.png", arcname="000002.png")
    out = tmp_path / "hashes.parquet"
    assert hashes_cli.main(["export", str(images), str(tmp_path / "shard-*.tar"), "-o", str(out)]) == 0
    rows = {os.path.relpath(r["item"], tmp_path): r for r in pq.read_table(out).to_pylist()}
    assert rows["images/broken.tar"]["error"].startswith("unreadable tar")
    assert set(rows) == {"images/a.png", "images/broken.jpg", "images/broken.tar", "images/sub/b.jpg",
                         "shard-000000.tar/000001.jpg", "shard-000000.tar/000002.png"}
    assert rows["images/broken.jpg"]["phash"] is None and rows["images/broken.jpg"]["error"].startswith("not_image")
    assert rows["images/a.png"]["phash"] == rows["shard-000000.tar/000002.png"]["phash"]
    assert rows["images/sub/b.jpg"]["phash"] == rows["shard-000000.tar/000001.jpg"]["phash"]
    assert (rows["images/a.png"]["width"], rows["images/a.png"]["height"]) == (200, 150)
    from openwit.pipeline.cli import main as cli_main  # a UserError: the command exits 2 (issue 25)

    assert cli_main(["hashes", "export", str(tmp_path / "missing"), "-o", str(out)]) == 2


def test_decontaminate_checks_the_hash_method_of_the_eval_file(tmp_path, capsys):
    scene(3).save(tmp_path / "e.png")
    hashes = str(tmp_path / "dhash.parquet")
    assert hashes_cli.main(["export", str(tmp_path / "e.png"), "-o", hashes, "--hash-method", "dhash"]) == 0
    base = ["--input", "x.jsonl", "--output", str(tmp_path / "out"), "--decontaminate", hashes]
    with pytest.raises(SystemExit):
        parse_curate_args(base)  # the pool would be hashed with phash: no comparison possible
    assert "holds dhash hashes but --hash-method is phash" in capsys.readouterr().err
    cfg, _ = parse_curate_args(base + ["--hash-method", "dhash"])
    assert cfg.image.hash_method == "dhash" and cfg.decontaminate == hashes
    pq.write_table(pq.read_table(hashes).replace_schema_metadata(None), str(tmp_path / "plain.parquet"))
    with pytest.raises(SystemExit):
        parse_curate_args(base[:-1] + [str(tmp_path / "plain.parquet")])
    assert "not written by `openwit hashes export`" in capsys.readouterr().err


def test_every_hash_method_finds_a_resized_copy():
    from openwit.pipeline.stages.image import HASH_METHODS, image_phash

    original, copy = jpeg(scene(4), 95), jpeg(scene(4, (300, 225)), 60)
    other = jpeg(scene(5), 95)
    for method in HASH_METHODS:
        a, b, c = (int(image_phash(data, method=method)[0], 16) for data in (original, copy, other))
        assert (a ^ b).bit_count() <= 8 < (a ^ c).bit_count(), method


def test_image_and_caption_mode_keeps_other_captions_through_near_dedup(tmp_path):
    """Identical bytes have identical pHashes: near-dedup must not undo --exact-dedup image+caption."""
    routes = {"/a.jpg": image_route(jpeg(scene(1))), "/b.jpg": image_route(jpeg(scene(1))),
              "/c.jpg": image_route(jpeg(scene(1, (640, 480))))}
    rows = [("/a.jpg", "a photo of a red place"), ("/b.jpg", "a photo of a red place"),
            ("/b.jpg?copy", "another photo of the same place"), ("/c.jpg", "a photo of a red place")]
    (tmp_path / "vocab.txt").write_text("photo\n")
    with serve({**routes, "/b.jpg?copy": routes["/b.jpg"]}) as base:
        with open(tmp_path / "in.jsonl", "w") as f:
            f.writelines(json.dumps({"url": base + path, "caption": caption}) + "\n" for path, caption in rows)
        argv = ["--input", str(tmp_path / "in.jsonl"), "--vocab", str(tmp_path / "vocab.txt"),
                "--output", str(tmp_path / "out"), "--allow-loopback", "--exact-dedup", "image+caption"]
        curate(*parse_curate_args(argv), argv)
    by_caption = {}
    for row in current_state(read_ledger(str(tmp_path / "out"))).to_pylist():
        by_caption.setdefault(row["caption"], []).append(row["reason"])
    assert by_caption["another photo of the same place"] == [None]  # same image, its own caption: kept
    assert sorted(map(str, by_caption["a photo of a red place"])) == ["None", "duplicate_image", "near_duplicate"]
