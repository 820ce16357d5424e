"""End-to-end: the real pipeline on Beam (FnApiRunner) over the hostile demo web on 127.0.0.1."""
import glob
import json
import os
import shutil

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from openwit.pipeline.demo import web as demo_web
from openwit.pipeline.curate.run import OutputConflict, curate
from openwit.pipeline.demo.run import write_web_inputs
from openwit.pipeline.output.ledger import current_state, read_ledger
from openwit.pipeline.config import parse_curate_args
from openwit.schemas.reasons import REASONS


def curate_args(candidates, vocab, out, *extra):
    return ["--input", candidates, "--vocab", vocab, "--output", out, "--threshold", "100000",
            "--samples-per-shard", "40", "--image-size", "48", "--max-image-bytes", str(2 * 1024 * 1024),
            "--timeout", "5", "--retries", "1", "--ledger-parts", "3", "--allow-loopback",
            # the synthetic web: small flat drawings (alike in pHash) with captions in several languages
            "--min-image-size", "32", "--near-dup-distance", "0", "--languages", "all", *extra]


def run_curate(argv):
    cfg, beam_args = parse_curate_args(argv)
    return curate(cfg, beam_args, argv)


def output_bytes(out):
    """Every shard, index, sizes.json and ledger part, as bytes by relative path."""
    files = glob.glob(os.path.join(out, "shards", "*")) + glob.glob(os.path.join(out, "ledger", "*"))
    return {os.path.relpath(f, out): open(f, "rb").read() for f in sorted(files)}


@pytest.fixture(scope="module")
def web_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    web = demo_web.build_web(n_images=100, seed=3)
    with demo_web.serve(web.routes) as base_url:
        candidates, vocab = write_web_inputs(str(root / "web"), web, base_url)
        out = str(root / "out")
        manifest = run_curate(curate_args(candidates, vocab, out))
        first = output_bytes(out)
        run_curate(curate_args(candidates, vocab, out))  # the same command again: a clean restart
        second = output_bytes(out)
        other = str(root / "other")
        run_curate(curate_args(candidates, vocab, other))
        yield {"root": root, "out": out, "manifest": manifest, "first": first, "second": second,
               "other": output_bytes(other), "candidates": candidates, "vocab": vocab, "web": web}


def ledger_state(out):
    return current_state(read_ledger(out)).to_pylist()


def test_one_terminal_record_per_candidate(web_run):
    rows = ledger_state(web_run["out"])
    n_input = pq.read_table(web_run["candidates"]).num_rows
    assert len(rows) == n_input == len(web_run["web"].rows)
    assert read_ledger(web_run["out"]).num_rows == n_input  # no uid written twice
    for row in rows:
        assert row["status"] in ("kept", "dropped")
        if row["status"] == "dropped":
            assert REASONS[row["reason"]].stage == row["stage"]
        else:
            assert row["shard"] and row["key"] and row["sha256"] and row["reason"] is None


def test_hostile_urls_get_their_reasons(web_run):
    by_path = {}
    for row in ledger_state(web_run["out"]):
        path = row["url"].split("127.0.0.1", 1)[-1].split("/", 2)[1] if "127.0.0.1:" in row["url"] else row["url"]
        by_path.setdefault(path, set()).add(row["reason"])
    assert by_path["missing"] == {"http_404"}
    assert by_path["error"] == {"http_5xx"}
    assert by_path["html"] == {"not_image"}
    assert by_path["truncated"] == {"decode_error"}
    assert by_path["huge"] == {"too_large"}
    assert by_path[""] == {"missing_url"}
    assert by_path["ftp://127.0.0.1/x.jpg"] == {"unsupported_scheme"}


def test_duplicates_name_their_survivor(web_run):
    rows = ledger_state(web_run["out"])
    by_uid = {r["uid"]: r for r in rows}
    duplicates = [r for r in rows if r["reason"] == "duplicate_image"]
    assert len(duplicates) == 4  # one copy of every 25th image
    for dup in duplicates:
        survivor = by_uid[dup["duplicate_of"]]
        assert survivor["status"] == "kept" and survivor["sha256"] == dup["sha256"]


def test_shards_read_back_and_match_the_ledger(web_run):
    out = web_run["out"]
    sizes = json.load(open(os.path.join(out, "shards", "sizes.json")))
    tars = sorted(glob.glob(os.path.join(out, "shards", "*.tar")))
    assert [os.path.basename(t) for t in tars] == sorted(sizes)
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode("pil").to_tuple("__key__", "jpg", "txt", "json"))
    kept = {r["key"]: r for r in ledger_state(out) if r["status"] == "kept"}
    assert len(samples) == sum(sizes.values()) == len(kept) > 80
    for key, image, caption, meta in samples:
        assert image.size == (48, 48)
        assert caption == kept[key]["caption"] == meta["caption"]
        assert meta["sha256"] == kept[key]["sha256"] and meta["uid"] == kept[key]["uid"]
    for tar in tars:
        index = pq.read_table(tar.replace(".tar", ".parquet"))
        assert index.num_rows == sizes[os.path.basename(tar)]


def test_reruns_are_byte_identical(web_run):
    assert web_run["first"] and web_run["first"] == web_run["second"] == web_run["other"]


def test_manifest_records_the_run(web_run):
    manifest = json.load(open(os.path.join(web_run["out"], "manifest.json")))
    assert manifest["output_action"] == "restart"
    # Beam's counters, gathered while the run went, tell the same funnel as the ledger
    assert manifest["funnel_from_metrics"] == manifest["funnel"]
    assert manifest["beam_counters"]["candidates"] == manifest["funnel"]["candidates"] == len(web_run["web"].rows)
    assert len(manifest["vocab"]["sha256"]) == 64 and manifest["inputs"][0]["sha256"]
    assert manifest["funnel"]["candidates"] == len(web_run["web"].rows)
    assert manifest["funnel"]["kept"] == sum(manifest["shards"].values())
    assert manifest["beam_args"][:2] == ["--runner", "FnApiRunner"]


def test_a_different_command_is_refused_unless_overwrite(web_run, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(web_run["out"], out)
    argv = curate_args(web_run["candidates"], web_run["vocab"], out, "--seed", "5")
    with pytest.raises(OutputConflict):
        run_curate(argv)
    assert run_curate(argv + ["--overwrite"])["output_action"] == "overwrite"


@pytest.mark.parametrize("runner_args", [
    ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"],
    ["--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type", "LOOPBACK"],
    ["--fetch_workers", "1"],  # downloads in Beam's own process (the default here: one per core)
    ["--fetch_workers", "3"],
], ids=["fnapi-multiprocessing-2", "portable-loopback", "fetch-workers-1", "fetch-workers-3"])
def test_other_runners_give_the_same_bytes(web_run, tmp_path, runner_args):
    out = str(tmp_path / "out")
    run_curate(curate_args(web_run["candidates"], web_run["vocab"], out, *runner_args))
    assert output_bytes(out) == web_run["first"]


def test_audit_summary_reads_the_funnel_from_the_ledger(web_run, capsys):
    from openwit.pipeline.cli import main

    assert main(["audit", "summary", web_run["out"]]) == 0
    out = capsys.readouterr().out
    funnel = web_run["manifest"]["funnel"]
    funnel_lines = out.split("\n\n")[0].splitlines()[1:]  # the reasons table follows a blank line
    printed = {line.split()[0]: int(line.split()[1]) for line in funnel_lines}
    assert printed == funnel
    assert "http_404" in out and "duplicate_image" in out


def test_a_stage_that_raises_drops_the_record_instead_of_failing_the_run(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from openwit.pipeline.beam.graph import apply_stage
    from openwit.schemas.record import Record

    def build():
        def fn(record):
            if record.caption == "boom":
                raise RuntimeError("a bug <object at 0x7f00>")
            return record
        return fn

    records = [Record(uid=f"u{i}", url=f"http://127.0.0.1/{i}", caption=c, source=f"f:{i}")
               for i, c in enumerate(["fine", "boom", "also fine"])]
    with beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(["--runner", "FnApiRunner"])) as p:
        kept, dropped = apply_stage(p | beam.Create(records), "text", build)
        assert_that(kept | "KeptUids" >> beam.Map(lambda r: r.uid), equal_to(["u0", "u2"]), label="kept")
        assert_that(dropped | "Why" >> beam.Map(lambda r: (r.uid, r.stage, r.reason, r.detail)),
                    equal_to([("u1", "text", "internal_error", "RuntimeError: a bug <object>")]), label="dropped")


def test_a_hostile_input_file_reaches_the_ledger_whole(web_run, tmp_path):
    rows = [
        {"url": web_run["web"].rows[0]["url"], "caption": "a red \ud800 square on a white background"},
        {"url": "http://127.0.0.1:1/x.jpg", "caption": "line\u2028separated caption of a blue circle"},
        {"url": "http://127.0.0.1:1/\u00e9 space.jpg", "caption": "海辺の赤い円の写真"},
        {"url": "http://[::1", "caption": "a broken url of a red star"},
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n", encoding="utf-8")  # \\ud800 escaped, as JSON carries it
    out = str(tmp_path / "out")
    run_curate(curate_args(str(path), web_run["vocab"], out, "--retries", "0"))
    state = ledger_state(out)
    assert sorted(r["source"] for r in state) == [f"hostile.jsonl:{i}" for i in range(5)]
    assert {r["reason"] for r in state} >= {"malformed_row"}
    assert all(r["reason"] != "internal_error" for r in state), [r["detail"] for r in state]


def test_two_phase_balancing_and_entry_statistics(web_run, tmp_path):
    out = str(tmp_path / "out")
    manifest = run_curate(curate_args(web_run["candidates"], web_run["vocab"], out) + ["--threshold", "4"])
    state = ledger_state(out)
    reasons = {r["reason"] for r in state}
    assert {"balanced_out_pre", "balanced_out_final"} <= reasons
    stats = pq.read_table(os.path.join(out, "stats", "entries.parquet")).to_pylist()
    vocab = open(web_run["vocab"]).read().split("\n")[:-1]
    assert [s["entry"] for s in stats] == vocab and [s["entry_id"] for s in stats] == list(range(len(vocab)))
    for s in stats:
        assert s["matches_in_pool"] >= s["kept_pre_balance"] >= s["kept_final"]
    kept_ids = [i for r in state if r["status"] == "kept" for i in r["entry_ids"]]
    assert sum(s["kept_final"] for s in stats) == len(kept_ids)
    matched = [r for r in state if r["stage"] not in ("read", "text", "match")]
    assert sum(s["matches_in_pool"] for s in stats) == sum(len(r["entry_ids"]) for r in matched)
    balance = manifest["balancing"]
    assert balance["threshold"] == 4 and balance["pre_download_threshold"] == 8.0 and balance["rule"] == "fixed"


def test_tail_fraction_picks_the_threshold(web_run, tmp_path):
    out = str(tmp_path / "out")
    argv = [a for a in curate_args(web_run["candidates"], web_run["vocab"], out)]
    argv[argv.index("--threshold"):argv.index("--threshold") + 2] = ["--tail-fraction", "0.06"]
    balance = run_curate(argv)["balancing"]
    assert balance["rule"] == "tail_fraction" and balance["tail_share"] >= 0.06
    assert balance["threshold"] > 1
