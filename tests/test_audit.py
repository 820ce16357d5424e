"""The audit tools on a real curated output (the demo's): summary, trace, verify (and the
corruptions it must catch), takedown, the HTML report in a headless browser, Croissant."""
import glob
import io
import json
import os
import re
import shutil
import subprocess
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from openwit.pipeline.demo import run as demo
from openwit.pipeline.audit.summary import summary_text, trace_text
from openwit.pipeline.cli import main as cli
from openwit.pipeline.output.ledger import current_state, read_ledger
from openwit.pipeline.audit.takedown import takedown
from openwit.pipeline.audit.verify import verify


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    assert demo.main(["--output", str(root / "demo"), "--steps", "0"]) == 0
    return str(root / "demo" / "curated")


@pytest.fixture
def out(curated, tmp_path):
    """A private copy to corrupt or take down from."""
    copy = str(tmp_path / "out")
    shutil.copytree(curated, copy)
    return copy


def state(out_dir):
    return current_state(read_ledger(out_dir)).to_pylist()


def kept_rows(out_dir):
    return sorted((r for r in state(out_dir) if r["status"] == "kept"), key=lambda r: r["uid"])


def rewrite_tar(path, change):
    """Rewrite a tar member by member; change(name, data) -> new data, or None to drop it."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar if m.isfile()]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for member, data in members:
            data = change(member.name, data)
            if data is not None:
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    with open(path, "wb") as f:
        f.write(out.getvalue())


def test_summary_has_funnel_reasons_languages_and_balancing(curated):
    text = summary_text(curated)
    assert "candidates" in text and "language_not_allowed" in text
    # per language: candidates, dropped before balancing, balanced out, dropped after, kept (they add up)
    en = re.search(r"^en\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", text, re.M)
    assert en and int(en[1]) == sum(int(en[k]) for k in range(2, 6)) and int(en[5]) > 0
    assert "balancing: t = 40 (fixed)" in text and "largest entry:" in text


def test_trace_by_uid_url_and_shard_key(curated, capsys):
    row = kept_rows(curated)[0]
    by_uid = trace_text(curated, row["uid"])
    assert by_uid == trace_text(curated, row["url"]) == trace_text(curated, f"{row['shard']}/{row['key']}")
    assert f"uid {row['uid']}" in by_uid and row["caption"] in by_uid and row["page_url"] in by_uid
    duplicate = next(r for r in state(curated) if r["reason"] == "duplicate_image")
    survivor = trace_text(curated, duplicate["duplicate_of"])
    assert "survivor of" in survivor and duplicate["uid"] in survivor
    assert cli(["audit", "trace", curated, "http://nowhere.invalid/x.jpg"]) == 1
    assert "no candidate" in capsys.readouterr().err


def test_verify_passes_on_a_fresh_output(curated, capsys):
    assert verify(curated) == []
    assert cli(["audit", "verify", curated]) == 0


def test_verify_catches_a_corrupted_image(out):
    row = kept_rows(out)[0]
    rewrite_tar(os.path.join(out, "shards", row["shard"] + ".tar"),
                lambda name, data: data[:-10] + b"0123456789" if name == row["key"] + ".jpg" else data)
    assert any(f"{row['shard']}/{row['key']}: image bytes differ" in v for v in verify(out))


def test_verify_catches_a_deleted_sample(out, capsys):
    row = kept_rows(out)[0]
    rewrite_tar(os.path.join(out, "shards", row["shard"] + ".tar"),
                lambda name, data: None if name.startswith(row["key"] + ".") else data)
    violations = verify(out)
    assert f"{row['shard']}/{row['key']}: kept in the ledger but missing from the shards" in violations
    assert any(v.startswith(f"sizes.json: {row['shard']}.tar says") for v in violations)
    assert cli(["audit", "verify", out]) == 1
    assert "violation(s)" in capsys.readouterr().out


def test_verify_catches_an_edited_ledger(out):
    part = sorted(glob.glob(os.path.join(out, "ledger", "*.parquet")))[0]
    table = pq.read_table(part)
    rows = table.to_pylist()
    edited = next(r for r in rows if r["status"] == "kept")
    edited["caption"] = "a caption someone changed"
    dropped = next(r for r in rows if r["status"] == "dropped")
    dropped["reason"] = "no_such_reason"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), part)
    violations = verify(out)
    assert f"{edited['shard']}/{edited['key']}: caption differs from the ledger's" in violations
    assert any("unknown reason 'no_such_reason'" in v for v in violations)


def test_verify_catches_a_sample_without_a_ledger_row_and_wrong_counts(out):
    part = sorted(glob.glob(os.path.join(out, "ledger", "*.parquet")))[0]
    table = pq.read_table(part)
    kept = [r for r in table.to_pylist() if r["status"] == "kept"][0]
    pq.write_table(table.filter(pa.compute.not_equal(table.column("uid"), kept["uid"])), part)
    violations = verify(out)
    assert f"{kept['shard']}/{kept['key']}: sample in the shard without a kept ledger row" in violations
    assert any(v.startswith("manifest.json: funnel") for v in violations)  # one candidate fewer


def test_verify_catches_a_changed_vocabulary(out):
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    vocab = os.path.join(out, "vocab-copy.txt")
    shutil.copy(manifest["vocab"]["path"], vocab)
    with open(vocab, "a") as f:
        f.write("an entry added later\n")
    manifest["vocab"]["path"] = vocab
    json.dump(manifest, open(os.path.join(out, "manifest.json"), "w"))
    assert any(v.startswith("vocabulary:") and "no longer has the sha256" in v for v in verify(out))


def test_takedown_rewrites_only_affected_shards_and_keeps_verify_green(out):
    kept = kept_rows(out)
    target, by_page = kept[0], kept[1]
    untouched = {os.path.basename(p): open(p, "rb").read() for p in glob.glob(os.path.join(out, "shards", "*.tar"))}
    urls = os.path.join(out, "urls.txt")
    with open(urls, "w") as f:
        f.write(f"{target['url']}\n{by_page['page_url']}\n")
    assert cli(["takedown", out, "--urls", urls, "--note", "ticket 42"]) == 0
    after = {r["uid"]: r for r in state(out)}
    for row in (target, by_page):
        taken = after[row["uid"]]
        assert (taken["status"], taken["stage"], taken["reason"]) == ("dropped", "takedown", "takedown")
        assert taken["revision"] == 1 and taken["recorded_at"] and "ticket 42" in taken["detail"]
    assert verify(out) == []
    changed = {name for name, data in untouched.items() if open(os.path.join(out, "shards", name), "rb").read() != data}
    assert changed == {target["shard"] + ".tar", by_page["shard"] + ".tar"}
    sizes = json.load(open(os.path.join(out, "shards", "sizes.json")))
    samples = list(wds.WebDataset(sorted(glob.glob(os.path.join(out, "shards", "*.tar"))), shardshuffle=False))
    assert len(samples) == sum(sizes.values()) == len(kept) - 2
    funnel = json.load(open(os.path.join(out, "manifest.json")))["funnel"]
    assert funnel["write"] - funnel["takedown"] == 2 and funnel["kept"] == len(kept) - 2
    assert takedown(out, uids=[target["uid"]])["taken_down"] == 0  # already taken down: no new row


def test_takedown_by_domain_covers_every_candidate_of_the_host(out):
    host = kept_rows(out)[0]["url"].split("/")[2].split(":")[0]  # 127.0.0.1: the demo web's only host
    on_host = [r for r in state(out) if host in (r["url"] or "") or host in (r["page_url"] or "")]
    result = takedown(out, domains=[host])
    assert result["taken_down"] == len(on_host) > 0
    assert not kept_rows(out) and verify(out) == []
    assert set(json.load(open(os.path.join(out, "shards", "sizes.json"))).values()) == {0}


def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("OPENWIT_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (OPENWIT_REQUIRE_CHROMIUM) but not installed")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return path


def headless(args, tmp_path):
    """Run headless chromium with no background networking; -> (stdout, stderr)."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
               f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    return done.stdout, done.stderr


def console_errors(page, tmp_path):
    dom, log = headless(["--dump-dom", page.as_uri()], tmp_path)
    return dom, [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def test_the_browser_harness_sees_console_errors(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><script>console.error("boom"); missingFunction();</script></body></html>')
    _, errors = console_errors(page, tmp_path)
    assert any("boom" in line for line in errors) and any("missingFunction" in line for line in errors)


def test_report_in_a_headless_browser(curated, tmp_path):
    report = tmp_path / "report.html"
    assert cli(["audit", "report", curated, "-o", str(report)]) == 0
    page = report.read_text()
    assert "http://" not in re.sub(r'href="[^"]*"', "", page).replace("http://www.w3.org/2000/svg", "")
    dom, errors = console_errors(report, tmp_path)
    assert errors == []
    for plot in ("plot-funnel", "plot-reasons", "plot-languages", "plot-sizes", "plot-entries", "samples"):
        assert f'id="{plot}"' in dom, plot
    shown = dict(re.findall(r'<tr data-step="([^"]+)"><td>[^<]*</td><td class="count">(\d+)</td>', dom))
    funnel = json.load(open(os.path.join(curated, "manifest.json")))["funnel"]
    assert {step: int(n) for step, n in shown.items()} == funnel
    assert len(re.findall(r'<figure class="sample"', dom)) == 24
    _, _ = headless([f"--screenshot={tmp_path / 'report.png'}", "--window-size=900,3000", report.as_uri()], tmp_path)
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_croissant_loads_offline_and_its_records_match(curated, tmp_path):
    mlc = pytest.importorskip("mlcroissant")
    assert cli(["audit", "croissant", curated]) == 0
    dataset = mlc.Dataset(jsonld=os.path.join(curated, "croissant.json"))
    samples = list(dataset.records("samples"))
    kept = kept_rows(curated)
    assert len(samples) == len(kept)
    assert {s["samples/uid"].decode() for s in samples} == {r["uid"] for r in kept}
    assert len(list(dataset.records("ledger"))) == read_ledger(curated).num_rows
    document = json.load(open(os.path.join(curated, "croissant.json")))
    assert any("t = 40" in step for step in document["rai:dataPreprocessingProtocol"])
    os.remove(os.path.join(curated, "croissant.json"))  # leave the shared output as it was


def test_provenance_doc_lists_every_reason_and_ledger_column():
    from openwit.schemas.reasons import REASONS
    from openwit.schemas.record import LEDGER_FIELDS

    text = open(os.path.join(os.path.dirname(__file__), "..", "docs", "provenance.md")).read()
    assert all(f"`{name}`" in text for name in REASONS), [n for n in REASONS if f"`{n}`" not in text]
    assert all(f"| `{name}` |" in text for name in LEDGER_FIELDS)
