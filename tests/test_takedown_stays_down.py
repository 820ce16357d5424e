"""Issue 17, part 2: a takedown stays down. After takedowns by URL, domain and uid, nothing a
later run on the same OUT does (--extend, --retry-failed, a restart of either command, a new
takedown) publishes the removed pictures again: not under the same URL, not under a new URL
of the taken-down domain, not as the same bytes or a resized copy under an unrelated URL.

The demo web is all on 127.0.0.1, so the domain takedown names the pages' domain
(blog.example): page URLs are never fetched, and takedown matches the image's host or the
page's host alike. A new row found on www.blog.example (a subdomain) must be blocked too."""
import glob
import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from openwit.pipeline.audit.takedown import takedown
from openwit.pipeline.audit.verify import verify
from openwit.pipeline.cli import main as cli
from openwit.pipeline.demo import web as demo_web
from openwit.pipeline.output import layout
from openwit.pipeline.output.ledger import current_state, read_ledger
from scenes import jpeg, scene
from test_crash_safety import CountingRoutes
from test_curate_e2e import curate_args, run_curate


def resized(data: bytes, size) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).resize(size).save(out, "JPEG", quality=80)
    return out.getvalue()


def state(out):
    return {r["uid"]: r for r in current_state(read_ledger(out)).to_pylist()}


def by_url(out):
    return {r["url"]: r for r in state(out).values()}


def staged_files(out):
    return {os.path.relpath(p, out) for p in glob.glob(os.path.join(out, "staging", "**", "*.*"), recursive=True)}


def original_args(a, vocab, out):
    return curate_args(a, vocab, out, "--threshold", "1000", "--samples-per-shard", "4", "--near-dup-distance", "4")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("stays_down")
    images = {i: jpeg(scene(i, (240, 200))) for i in (0, 1, 2, 3, 4, 5, 6, 20, 21)}
    routes = {f"/z/{i}": demo_web.Response(200, "image/jpeg", data) for i, data in images.items()}
    routes["/mirror/copy"] = demo_web.Response(200, "image/jpeg", images[2])  # (c) the same bytes
    routes["/mirror/small"] = demo_web.Response(200, "image/jpeg", resized(images[2], (120, 100)))  # (d)
    routes = CountingRoutes(routes)
    (root / "vocab.txt").write_text("zebra\n")
    vocab, out = str(root / "vocab.txt"), str(root / "out")
    with demo_web.serve(routes) as base:
        def row(path, page, n):
            return {"url": base + path, "caption": f"a photo of a zebra, number {n}", "page_url": page}

        first = [row(f"/z/{i}", f"http://{'blog' if i == 1 else 'pages'}.example/{i}", i) for i in range(7)]
        later = [row("/z/0", "http://other.example/a", 100),                 # (a) the taken-down URL
                 row("/z/20", "http://www.blog.example/new", 101),          # (b) new URL, taken-down domain
                 row("/mirror/copy", "http://other.example/c", 102),         # (c) same bytes, other URL
                 row("/mirror/small", "http://other.example/d", 103),        # (d) a resized copy
                 row("/z/21", "http://other.example/e", 104)]                # control: a new picture
        a, b = str(root / "a.parquet"), str(root / "b.parquet")
        pq.write_table(pa.Table.from_pylist(first), a)
        pq.write_table(pa.Table.from_pylist(later), b)
        run_curate(original_args(a, vocab, out))
        before = by_url(out)
        staged_before = staged_files(out)
        urls_file = root / "urls.txt"
        urls_file.write_text(base + "/z/0\n")
        assert cli(["takedown", out, "--urls", str(urls_file), "--note", "ticket 1"]) == 0
        takedown(out, domains=["blog.example"])
        takedown(out, uids=[before[base + "/z/2"]["uid"]])
        after_takedown = {"state": by_url(out), "staged": staged_files(out), "verify": verify(out)}
        hits = dict(routes.hits)
        assert cli(["curate", "--extend", out, "--input", b]) == 0
        extend_hits = {p: routes.hits[p] - hits.get(p, 0) for p in routes.hits}
        after_extend = {"state": by_url(out), "staged": staged_files(out), "verify": verify(out)}
        assert cli(["curate", "--retry-failed", out]) == 0
        after_retry = {"state": by_url(out), "verify": verify(out)}
        assert cli(["curate", "--extend", out, "--input", b]) == 0  # the same command again (after a crash)
        after_rerun = {"state": by_url(out), "verify": verify(out), "staged": staged_files(out)}
        manifest = json.loads(Path(layout.manifest_path(out)).read_text())
    return {"base": base, "out": out, "before": before, "staged_before": staged_before,
            "after_takedown": after_takedown, "extend_hits": extend_hits, "after_extend": after_extend,
            "after_retry": after_retry, "after_rerun": after_rerun, "manifest": manifest,
            "a": a, "vocab": vocab}


REMOVED = ("/z/0", "/z/1", "/z/2")
BLOCKED_LATER = ("/mirror/copy", "/mirror/small", "/z/20")


def test_the_first_run_kept_everything(run):
    assert all(r["status"] == "kept" for r in run["before"].values()) and len(run["before"]) == 7


def test_a_takedown_writes_the_blocklist_and_purges_only_the_removed_staged_files(run):
    base, before = run["base"], run["before"]
    blocklist = json.loads(Path(layout.blocklist_path(run["out"])).read_text())
    assert blocklist["domains"] == ["blog.example"]
    assert blocklist["uids"] == [before[base + "/z/2"]["uid"]]
    images = {i["uid"]: i for i in blocklist["images"]}
    for path in REMOVED:
        row = before[base + path]
        assert {k: images[row["uid"]][k] for k in ("sha256", "stored_sha256", "phash", "page_url")} == {
            k: row[k] for k in ("sha256", "stored_sha256", "phash", "page_url")}
    gone = run["staged_before"] - run["after_takedown"]["staged"]
    removed_images = {os.path.join("staging", before[base + p]["sha256"][:2],
                                   f"{before[base + p]['sha256']}.{before[base + p]['image_format']}") for p in REMOVED}
    assert removed_images <= gone
    assert len(gone) == 6  # three staged images and three receipts, nothing else
    assert not any(before[base + p]["sha256"] in name for p in ("/z/3", "/z/4") for name in gone)
    assert all(run["after_takedown"]["state"][base + p]["reason"] == "takedown" for p in REMOVED)
    assert run["after_takedown"]["verify"] == []


def test_extend_publishes_none_of_them_again(run):
    base, now = run["base"], run["after_extend"]["state"]
    for path in BLOCKED_LATER:
        assert (now[base + path]["status"], now[base + path]["stage"], now[base + path]["reason"]) == (
            "dropped", "takedown", "taken_down"), path
    assert "taken-down domain blog.example" in now[base + "/z/20"]["detail"]
    assert "sha256" in now[base + "/mirror/copy"]["detail"]
    assert "phash" in now[base + "/mirror/small"]["detail"]
    # (a): the same URL as the taken-down /z/0; two rows have that URL now
    same_url = [r for r in state(run["out"]).values() if r["url"] == base + "/z/0"]
    assert len(same_url) == 2 and {r["reason"] for r in same_url} == {"takedown", "taken_down"}
    assert now[base + "/z/21"]["status"] == "kept"  # a new picture is published
    assert run["after_extend"]["verify"] == []


def test_blocked_urls_are_not_even_downloaded(run):
    hits = run["extend_hits"]
    assert not hits.get("/z/0") and not hits.get("/z/20")
    assert hits.get("/z/21") == 1  # the control was fetched


def test_the_removed_pictures_stay_out_of_staging(run):
    base, before = run["base"], run["before"]
    for snapshot in (run["after_extend"], run["after_rerun"]):
        for path in REMOVED:
            assert not any(before[base + path]["sha256"] in name for name in snapshot["staged"]), path


def test_retry_and_a_rerun_keep_them_out(run):
    base = run["base"]
    for snapshot in (run["after_retry"], run["after_rerun"]):
        published = {url for url, r in snapshot["state"].items() if r["status"] == "kept"}
        assert published == {base + p for p in ("/z/3", "/z/4", "/z/5", "/z/6", "/z/21")}
        assert snapshot["verify"] == []
    assert run["manifest"]["updates"][-1]["rows_appended"] == 0


def test_verify_fails_when_a_shard_holds_blocked_content(run, tmp_path):
    """A blocklist entry for a published picture (as if the blocklist were written but a shard
    was restored from a backup): verify names the sample."""
    import shutil

    out = str(tmp_path / "copy")
    shutil.copytree(run["out"], out)
    kept = next(r for r in state(out).values() if r["status"] == "kept")
    path = layout.blocklist_path(out)
    blocklist = json.loads(Path(path).read_text())
    blocklist["images"].append({"uid": "0" * 20, "url": None, "normalized_url": None, "page_url": None,
                                "sha256": kept["sha256"], "stored_sha256": None, "phash": None})
    Path(path).write_text(json.dumps(blocklist))
    problems = verify(out)
    assert len(problems) == 1 and f"{kept['shard']}/{kept['key']}" in problems[0] and "blocklist" in problems[0]


def test_a_restart_of_the_original_command_keeps_them_out(run, tmp_path):
    import shutil

    out = str(tmp_path / "restart")
    shutil.copytree(run["out"], out)
    base = run["base"]
    # Same fingerprint: a restart. The web is gone: the kept rows come from their receipts, and
    # the removed ones are blocked before any download (a fetch would fail, not be published).
    run_curate(original_args(run["a"], run["vocab"], out))
    now = by_url(out)
    assert {url for url, r in now.items() if r["status"] == "kept"} == {base + p for p in ("/z/3", "/z/4", "/z/5", "/z/6")}
    assert all(now[base + p]["reason"] == "taken_down" for p in REMOVED)
    assert verify(out) == []


def test_the_blocklist_matches_names_and_pictures():
    from openwit.pipeline.stages.blocklist import Blocklist

    removed = {"uid": "u1", "url": "http://img.example/a.jpg", "normalized_url": "http://img.example/a.jpg",
               "page_url": "http://page.example/p", "sha256": "aa", "stored_sha256": "bb", "phash": "00000000000000ff"}
    blocklist = Blocklist.from_dict(Blocklist(uids=["u9"], urls=["HTTP://Req.Example:80/x"], domains=["Blog.Example."],
                                              images=[removed]).to_dict())
    assert blocklist.named("u9", None, None)
    assert blocklist.named("u2", "http://req.example/x", None)  # a requested URL, normalised
    assert blocklist.named("u2", "http://other.example/i.jpg", "http://req.example/x")  # ... or the page
    assert blocklist.named("u2", "http://IMG.example/a.jpg#top", None)  # a removed candidate's image URL
    assert not blocklist.named("u2", "http://other.example/i.jpg", "http://page.example/p")  # not its page
    assert blocklist.named("u2", "http://cdn.blog.example/new.jpg", None)  # a subdomain, a new URL
    assert not blocklist.named("u2", "http://notblog.example/new.jpg", None)  # not a suffix of the name
    assert not blocklist.named("u2", None, None)
    assert blocklist.content("aa", None, None, 0) and blocklist.content("zz", "bb", None, 0)
    assert blocklist.content("zz", "yy", "00000000000000fc", 2)  # 2 bits away
    assert not blocklist.content("zz", "yy", "00000000000000fc", 1)
    assert not Blocklist() and not Blocklist.load("/nonexistent/blocklist.json")


def test_a_new_takedown_applies_the_whole_blocklist(run, tmp_path):
    """A kept sample the blocklist catches (here: a picture added to it by hand, and a domain)
    leaves with the next takedown, whatever that one names."""
    import shutil

    out = str(tmp_path / "again")
    shutil.copytree(run["out"], out)
    base, rows = run["base"], by_url(out)
    path = layout.blocklist_path(out)
    blocklist = json.loads(Path(path).read_text())
    z3 = rows[base + "/z/3"]
    blocklist["images"].append({"uid": "0" * 20, "url": None, "normalized_url": None, "page_url": None,
                                "sha256": z3["sha256"], "stored_sha256": None, "phash": None})
    Path(path).write_text(json.dumps(blocklist))
    result = takedown(out, urls=[base + "/z/21"])
    now = by_url(out)
    assert result["taken_down"] == 2 and result["samples_removed"] == 2
    assert now[base + "/z/3"]["reason"] == now[base + "/z/21"]["reason"] == "takedown"
    assert now[base + "/z/4"]["status"] == "kept"
    assert not any(z3["sha256"] in name for name in staged_files(out))
    assert verify(out) == []
