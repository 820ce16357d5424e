"""`openwit audit explorer`: driven in Debian's headless chromium over the DevTools protocol
(on a pipe: no port, no network), on the demo output; what the page shows must be what the
ledger says, with no console error. Plus the report's near-duplicate strips and links."""
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys

import pyarrow as pa
import pytest

from openwit.pipeline.audit import explorer as explorer_module
from openwit.pipeline.audit.explorer import MARKER, Keys, NotAnExplorer, Plan, parse_distances, shown_out, write_explorer
from openwit.pipeline.audit.takedown import takedown
from openwit.pipeline.cli import main as cli
from openwit.pipeline.demo import run as demo
from openwit.pipeline.output import files
from openwit.pipeline.output.ledger import current_state, read_ledger
from openwit.schemas.reasons import REASONS

from test_audit import chromium

DUPLICATES = ("near_duplicate", "duplicate_image", "duplicate_url")


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer")
    assert demo.main(["--output", str(root / "demo"), "--steps", "0"]) == 0
    return str(root / "demo" / "curated")


@pytest.fixture(scope="module")
def explored(curated, tmp_path_factory):
    """The demo's explorer with small chunks, so paging crosses chunk files everywhere."""
    target = str(tmp_path_factory.mktemp("site") / "explorer")
    patch = pytest.MonkeyPatch()
    for name, value in (("ROWS_PER_CHUNK", 100), ("CAPTIONS_PER_CHUNK", 250), ("ENTRIES_PER_CHUNK", 5),
                        ("CLUSTERS_PER_CHUNK", 3), ("CLUSTER_INDEX_PER_CHUNK", 4), ("BATCH_ROWS", 64)):
        patch.setattr(explorer_module, name, value)
    try:
        write_explorer(curated, target)
    finally:
        patch.undo()
    return target


def ledger_state(out_dir):
    return current_state(read_ledger(out_dir)).to_pylist()


# ------------------------------------------------------------------ a DevTools client on a pipe


class Browser:
    """Headless chromium with --remote-debugging-pipe: commands on fd 3, answers on fd 4,
    NUL-terminated JSON. Records console errors, exceptions and failed loads."""

    def __init__(self, profile):
        to_child, self.write_fd = os.pipe()
        self.read_fd, from_child = os.pipe()

        def wire():  # in the child: its fd 3 reads our commands, fd 4 writes its answers
            # via fds above 4 first: a pipe end may itself be fd 3 or 4, and dup2 onto the
            # same number would keep its close-on-exec flag
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child, from_child)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
                   "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]
        self.process = subprocess.Popen(command, preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self.buffer, self.next_id, self.errors = b"", 0, []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable", session=self.session)

    def send(self, method, params=None, session=None, timeout=60):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        while True:
            reply = self.receive(timeout)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.note(reply)

    def receive(self, timeout):
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.read_fd], [], [], timeout)
            if not ready:
                raise TimeoutError("chromium did not answer")
            data = os.read(self.read_fd, 1 << 20)
            if not data:
                raise RuntimeError("chromium closed the pipe")
            self.buffer += data
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def note(self, event):
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            self.errors.append(params["exceptionDetails"].get("exception", {}).get("description", "exception"))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(params["entry"]["text"] + " " + params["entry"].get("url", ""))

    def evaluate(self, expression):
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session=self.session)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"].get("exception", {}).get("description"))
        return result["result"].get("value")

    def act(self, script):
        """Run an action (a click, a typed search) and wait until the render it caused is done."""
        before = self.evaluate("app.generation")
        self.evaluate(script)
        return self.evaluate(f"(async () => {{ while (app.generation === {before}) "
                             "await new Promise(r => setTimeout(r, 10)); await app.settled; return true; })()")

    def open(self, url):
        self.send("Page.navigate", {"url": url}, session=self.session)
        self.evaluate("(async () => { while (typeof app === 'undefined' || !app.meta || !app.generation) "
                      "await new Promise(r => setTimeout(r, 10)); await app.settled; return true; })()")

    def close(self):
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.write_fd)
        os.close(self.read_fd)


@pytest.fixture
def browser(tmp_path):
    chromium()  # skips (or fails under OPENWIT_REQUIRE_CHROMIUM) without one
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def test_the_devtools_harness_sees_console_errors_and_failed_loads(browser, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><script src="missing.js"></script>'
                    '<script>console.error("boom"); var app = {meta: 1, generation: 1, settled: null};'
                    'setTimeout(() => missingFunction(), 0);</script></body></html>')
    browser.open(page.as_uri())
    browser.evaluate("new Promise(r => setTimeout(r, 100))")
    assert any("boom" in e for e in browser.errors)
    assert any("missingFunction" in e for e in browser.errors)
    assert any("missing.js" in e for e in browser.errors)


SHOWN_UIDS = "[...document.querySelectorAll('#grid .card')].map(c => c.dataset.uid)"
TOTAL = "Number(document.querySelector('#count').dataset.total)"


def choose(name, value):
    return (f"(() => {{ const s = document.querySelector('select[name={name}]'); s.value = {json.dumps(value)}; "
            "s.dispatchEvent(new Event('change')); })()")


def type_in(name, text):
    return (f"(() => {{ const i = document.querySelector('input[name={name}]'); i.value = {json.dumps(text)}; "
            "i.dispatchEvent(new Event('change')); })()")


def test_the_explorer_shows_what_the_ledger_says(curated, explored, browser):
    state = ledger_state(curated)
    kept = sorted((r for r in state if r["status"] == "kept"), key=lambda r: (r["shard"], r["key"]))
    browser.open("file://" + os.path.join(explored, "index.html"))

    # kept samples: every one counted, the first page in shard/key order
    assert browser.evaluate(TOTAL) == len(kept)
    assert browser.evaluate(SHOWN_UIDS) == [r["uid"] for r in kept[:48]]

    # dropped, filtered by a drop reason: exactly the ledger's rows with that reason
    per_reason = {}
    for r in state:
        if r["reason"]:
            per_reason.setdefault(r["reason"], []).append(r["uid"])
    # the largest reason that fits one page (the whole of it is compared), a duplicate one if any
    reason = max((name for name, uids in per_reason.items() if len(uids) <= 48),
                 key=lambda name: (name in DUPLICATES, len(per_reason[name]), name))
    browser.act("document.querySelector('a[data-view=dropped]').click()")
    browser.act(choose("reason", reason))
    expected = sorted(per_reason[reason])
    assert browser.evaluate(TOTAL) == len(expected)
    assert browser.evaluate(SHOWN_UIDS) == expected
    assert REASONS[reason].description in browser.evaluate("document.querySelector('#reason-text').textContent")

    # a candidate opens its ledger row
    browser.act("document.querySelector('#grid .card').click()")
    shown = browser.evaluate("Object.fromEntries([...document.querySelectorAll('#ledger-row tr')]"
                             ".map(tr => [tr.dataset.field, tr.querySelector('td').textContent]))")
    row = next(r for r in state if r["uid"] == expected[0])
    for field in ("uid", "status", "stage", "reason", "detail", "duplicate_of", "caption", "url", "page_url", "source",
                  "sha256", "phash", "shard", "key"):
        assert shown[field] == ("" if row[field] is None else str(row[field])), field
    browser.act("document.querySelector('#detail .close').click()")
    assert browser.evaluate("document.querySelector('#detail').hidden")

    # a caption search among the kept samples
    browser.act("document.querySelector('a[data-view=kept]').click()")
    words = {w for r in kept for w in re.findall(r"[a-z]{4,}", r["caption"].lower())}
    hits = {w: sum(w in r["caption"].lower() for r in kept) for w in words}
    word = max((w for w in words if hits[w] < len(kept)), key=lambda w: (hits[w], w))
    browser.act(type_in("q", word.upper()))  # case-insensitive
    matching = [r["uid"] for r in kept if word in r["caption"].lower()]
    assert 48 < len(matching) < len(kept)  # the match crosses pages and caption chunks
    assert browser.evaluate(TOTAL) == len(matching)
    assert browser.evaluate(SHOWN_UIDS) == matching[:48]

    # duplicate clusters: largest first, then by survivor uid, paged across clusters files
    browser.act("document.querySelector('a[data-view=clusters]').click()")
    current = {r["uid"] for r in state}
    sizes = {}
    for r in state:
        if r["status"] != "kept" and r["reason"] in DUPLICATES and r["duplicate_of"] in current:
            sizes[r["duplicate_of"]] = sizes.get(r["duplicate_of"], 0) + 1
    order = sorted(sizes, key=lambda uid: (-sizes[uid], uid))
    shown_survivors = "[...document.querySelectorAll('.cluster')].map(c => c.dataset.survivor)"
    assert browser.evaluate(TOTAL) == len(order) > 3  # more clusters than one clusters file holds (3 here)
    assert browser.evaluate(shown_survivors) == order[:20]
    if len(order) > 20:
        browser.act("document.querySelector('.pager button:last-child').click()")
        assert browser.evaluate(shown_survivors) == order[20:40]
    # a survivor found by its uid through the index files; an unknown uid says so
    browser.act("location.hash = 'view=clusters&cluster=' + " + json.dumps(order[-1]))
    assert browser.evaluate(shown_survivors) == [order[-1]]
    browser.act("location.hash = 'view=clusters&cluster=no-such-uid'")
    assert browser.evaluate(shown_survivors) == []
    assert "no duplicate cluster has the survivor no-such-uid" in browser.evaluate(
        "document.querySelector('#status').textContent")
    browser.act("location.hash = 'view=clusters'")

    # a duplicate cluster: the survivor and exactly its duplicates, with their distances
    survivor = browser.evaluate("document.querySelector('.cluster').dataset.survivor")
    browser.act("document.querySelector('.cluster h3').click()")
    members = browser.evaluate("[...document.querySelectorAll('.cluster .member')].map(m => "
                               "[m.dataset.uid, m.dataset.reason, m.dataset.phashDistance ?? null])")
    copies = {r["uid"]: r for r in state if r["duplicate_of"] == survivor and r["reason"] in DUPLICATES}
    assert sorted(m[0] for m in members) == sorted(copies) and copies
    for uid, shown_reason, distance in members:
        assert shown_reason == copies[uid]["reason"]
        hit = re.search(r"at distance (\d+)", copies[uid]["detail"] or "")
        assert distance == (hit.group(1) if hit else None)
    assert browser.evaluate("document.querySelector('.cluster .survivor').dataset.uid") == survivor

    # balancing: an entry's counts, and its kept and balanced-out candidates
    entries = files.read_parquet(os.path.join(curated, "stats", "entries.parquet")).to_pylist()
    browser.act("document.querySelector('a[data-view=balancing]').click()")
    top = max(entries, key=lambda e: (e["matches_in_pool"], -e["entry_id"]))
    assert browser.evaluate("document.querySelector('#entries tr.entry').dataset.entry") == str(top["entry_id"])
    browser.act("document.querySelector('#entries tr.entry').click()")
    counts = browser.evaluate("document.querySelector('#entry-counts').textContent")
    assert f"{top['matches_in_pool']} matches in the pool, {top['kept_pre_balance']} kept before download, " \
           f"{top['kept_final']} kept in the shards" in counts
    shown_fates = [r for r in state if top["entry_id"] in (r["entry_ids"] or [])
                   and (r["status"] == "kept" or r["reason"] in ("balanced_out_pre", "balanced_out_final"))]
    assert browser.evaluate(TOTAL) == len(shown_fates)
    assert sum(r["status"] == "kept" for r in shown_fates) == top["kept_final"]

    # the timeline holds the run
    browser.act("document.querySelector('a[data-view=timeline]').click()")
    assert browser.evaluate("document.querySelectorAll('#timeline li.curate').length") == 1
    assert browser.errors == []


def rows_in(site, meta):
    """Every row of the rows files, in explorer order, as a dict."""
    found = []
    for name in sorted(n for n in os.listdir(os.path.join(site, "data")) if n.startswith("rows-")):
        text = open(os.path.join(site, "data", name), encoding="utf-8").read()
        found += [dict(zip(meta["columns"], values)) for values in json.loads(text[text.index(",") + 1:-3])]
    return found


def test_every_candidate_is_in_exactly_one_rows_chunk(curated, explored):
    meta, chunks = None, []
    for name in sorted(os.listdir(os.path.join(explored, "data"))):
        text = open(os.path.join(explored, "data", name), encoding="utf-8").read()
        label, value = re.fullmatch(r'openwit\.take\("([^"]+)",(.*)\);\n', text, re.S).groups()
        if label == "meta":
            meta = json.loads(value)
        elif label.startswith("rows-"):
            chunks.append(json.loads(value))
    uids = [row[meta["columns"].index("uid")] for chunk in chunks for row in chunk]
    assert len(chunks) > 1 and len(uids) == len(set(uids)) == meta["rows"]
    assert set(uids) == {r["uid"] for r in ledger_state(curated)}


def test_distances_are_read_from_the_detail_as_written_and_extended():
    detail = "phash 8f0e at distance 3 from 8f0f of 0123abcd"
    assert parse_distances(detail) == {"phash": 3}
    assert parse_distances(detail + "; colour distance 0.25") == {"phash": 3, "colour": 0.25}
    assert parse_distances("phash 8f0e at distance 3 (colour distance: 12) from 8f0f of x") == {"phash": 3, "colour": 12}
    assert parse_distances("the same image bytes") == {} and parse_distances(None) == {}


def test_the_explorer_refuses_a_folder_it_did_not_write_and_a_place_in_out(curated, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert cli(["audit", "explorer", curated, "-o", str(foreign)]) == 2
    assert (foreign / "notes.txt").read_text() == "keep me" and len(os.listdir(foreign)) == 1
    assert cli(["audit", "explorer", curated, "-o", os.path.join(curated, "explorer")]) == 2
    assert not os.path.exists(os.path.join(curated, "explorer"))


def test_takedowns_show_on_the_timeline_and_as_drops(curated, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(curated, out)
    uid = next(r["uid"] for r in ledger_state(out) if r["status"] == "kept")
    result = takedown(out, uids=[uid], note="ticket 7")
    site = str(tmp_path / "site")
    write_explorer(out, site, max_images=0)
    text = open(os.path.join(site, "data", "meta.js"), encoding="utf-8").read()
    meta = json.loads(text[text.index(",") + 1:-3])
    events = [e for e in meta["timeline"] if e["kind"] == "takedown"]
    assert [(e["revision"], e["taken_down"]) for e in events] == [(result["revision"], result["taken_down"])]
    assert {"name": "takedown", "count": result["taken_down"]}.items() <= next(
        r for r in meta["reasons"] if r["name"] == "takedown").items()
    assert not os.path.exists(os.path.join(site, "img"))  # --max-images 0: no thumbnail
    # the taken-down sample is one row, in its latest revision, among the drops
    shown = {}
    for row in rows_in(site, meta):
        assert row["uid"] not in shown
        shown[row["uid"]] = row
    assert set(shown) == {r["uid"] for r in ledger_state(out)}
    assert (shown[uid]["status"], shown[uid]["revision"]) == ("dropped", result["revision"])
    # writing it again over itself is allowed, and leaves no stale file
    write_explorer(out, site, max_images=0)


def test_the_report_shows_near_duplicate_strips_and_links_into_the_explorer(curated, explored):
    page = open(os.path.join(explored, "report.html"), encoding="utf-8").read()
    state = ledger_state(curated)
    strips = re.findall(r'<div class="strip" data-survivor="([^"]+)">(.*?)</div>', page)
    assert strips
    for survivor, strip in strips:
        near = {r["uid"] for r in state if r["duplicate_of"] == survivor and r["reason"] == "near_duplicate"}
        shown = set(re.findall(r'<figure class="member" data-uid="([^"]+)"><img', strip))
        assert shown and shown <= near
        assert f'<figure class="survivor" data-uid="{survivor}"><img' in strip
        assert f'href="index.html#view=clusters&amp;cluster={survivor}"' in page
    reasons = {r["reason"] for r in state if r["reason"]}
    assert set(re.findall(r'class="reason-link" data-reason="([^"]+)"', page)) == reasons


def tree(folder):
    """Every path under folder with its bytes (None for a folder)."""
    found = {}
    for root, dirs, names in os.walk(folder):
        for name in dirs:
            found[os.path.relpath(os.path.join(root, name), folder)] = None
        for name in names:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = open(path, "rb").read()
    return found


def test_a_web_project_with_an_explorer_js_is_refused_and_left_untouched(curated, tmp_path, capsys):
    site = tmp_path / "site"
    (site / "img").mkdir(parents=True)
    (site / "explorer.js").write_text("// my own explorer")
    (site / "index.html").write_text("<h1>my site</h1>")
    (site / "img" / "logo.png").write_bytes(b"\x89PNG my logo")
    before = tree(site)
    with pytest.raises(NotAnExplorer, match=MARKER):
        write_explorer(curated, str(site), max_images=0)
    assert cli(["audit", "explorer", curated, "-o", str(site), "--max-images", "0"]) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "not written by `openwit audit explorer`" in message
    assert tree(site) == before


def test_an_earlier_explorer_is_rewritten_and_only_its_own_files_go(curated, tmp_path):
    site = tmp_path / "site"
    write_explorer(curated, str(site), max_images=3)
    assert (site / MARKER).is_file() and len(os.listdir(site / "img")) > 0
    (site / "data" / "rows-99999.js").write_text("stale")
    (site / "index.html").write_text("stale page")
    (site / "README.txt").write_text("the user's note next to it")
    write_explorer(curated, str(site), max_images=0)
    assert not (site / "data" / "rows-99999.js").exists() and not (site / "img").exists()
    assert "stale" not in (site / "index.html").read_text()
    assert (site / "README.txt").read_text() == "the user's note next to it"


def test_an_interrupted_first_write_is_accepted_by_the_next_run(curated, tmp_path, monkeypatch):
    site = tmp_path / "site"

    def broken(target):
        raise KeyboardInterrupt

    monkeypatch.setattr(explorer_module, "copy_page", broken)
    with pytest.raises(KeyboardInterrupt):
        write_explorer(curated, str(site), max_images=0)
    assert os.listdir(site)  # the marker and data/ were written before it stopped
    monkeypatch.undo()
    write_explorer(curated, str(site), max_images=0)
    assert (site / "index.html").is_file() and (site / "data" / "meta.js").is_file()


@pytest.mark.parametrize("name", ["data", "img", "index.html"])
def test_a_symbolic_link_inside_an_earlier_explorer_is_refused(curated, tmp_path, name):
    site = tmp_path / "site"
    write_explorer(curated, str(site), max_images=0)
    victim = tmp_path / "victim"
    if name == "index.html":
        victim.write_text("someone else's page")
        (site / name).unlink()
    else:
        victim.mkdir()
        (victim / "keep.txt").write_text("keep me")
        shutil.rmtree(site / name, ignore_errors=True)
    os.symlink(victim, site / name)
    before = tree(tmp_path / "victim") if victim.is_dir() else victim.read_bytes()
    with pytest.raises(NotAnExplorer, match="symbolic link"):
        write_explorer(curated, str(site), max_images=3)
    assert (tree(victim) if victim.is_dir() else victim.read_bytes()) == before
    assert os.path.islink(site / name)


def test_a_link_into_out_does_not_hide_that_the_explorer_would_be_inside_it(curated, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(curated, out)
    before = sorted(os.listdir(out))
    os.symlink(out, tmp_path / "alias")
    assert cli(["audit", "explorer", str(out), "-o", str(tmp_path / "alias" / "explorer"), "--max-images", "0"]) == 2
    assert "outside DIR" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == before


def test_a_negative_max_images_is_refused(curated, tmp_path, capsys):
    site = tmp_path / "site"
    with pytest.raises(SystemExit) as exit_:
        cli(["audit", "explorer", curated, "-o", str(site), "--max-images", "-1"])
    assert exit_.value.code == 2 and "negative" in capsys.readouterr().err
    assert not site.exists()


def test_a_reason_met_at_two_stages_is_two_fates():
    def drop(uid, stage):
        return {"revision": 0, "uid": uid, "status": "dropped", "stage": stage, "reason": "internal_error",
                "language": None, "shard": None, "key": None}

    rows = [drop("a", "download"), drop("b", "score"), drop("c", "download")]
    keys = Keys()
    keys.add(0, pa.RecordBatch.from_pylist(rows))
    plan = Plan(keys, len(rows))
    assert [(r["stage"], r["name"], r["count"]) for r in plan.reasons] == [
        ("download", "internal_error", 2), ("score", "internal_error", 1)]
    stage_of = {r["uid"]: r["stage"] for r in rows}
    assert [plan.reasons[code - 1]["stage"] for code in plan.fate] == [stage_of[u] for u in plan.uids.to_pylist()]


def test_meta_keeps_a_remote_out_as_given():
    assert shown_out("gs://bucket/run") == "gs://bucket/run"
    assert shown_out("s3://b/x/") == "s3://b/x/"
    assert shown_out("relative/out") == os.path.abspath("relative/out")


def test_the_writers_memory_does_not_grow_with_the_ledger(tmp_path):
    """The writer streams: 4x the candidates cost far less than the ~5 KB per candidate of
    holding the ledger (what the first writer did). Two synthesised ledgers of the same
    shape (bench/bench_explorer.py), each written by its own process, which reports its
    VmHWM."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
    import bench_explorer

    peaks = {}
    for n in (20000, 80000):
        out = str(tmp_path / f"ledger-{n}")
        bench_explorer.synthesize(out, n, parts=2)
        result = bench_explorer.write_in_child(out, str(tmp_path / f"explorer-{n}"))
        assert result["candidates"] == n
        peaks[n] = result["peak_bytes"]
    # measured +31 to +44 MB (500-750 B per added candidate: uid, small ids, sort, cluster
    # captions, allocator slack); the first writer needed ~300 MB more
    assert peaks[80000] - peaks[20000] < 60000 * 1500, peaks
