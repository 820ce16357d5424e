"""`audit verify` proves integrity: on one small curated output, every tamper case (a field
of KEY.json, a column of the shard index, an extra tar member, any edit of the ledger, a
sample moved between shards, a file removed or added) is a violation naming the file and
the field; the untouched output, and the output after a takedown or --retry-failed, verify
green; an output written before the digests existed gets a note, not a violation."""
import hashlib
import io
import json
import os
import shutil
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openwit.pipeline.audit.takedown import takedown
from openwit.pipeline.audit.verify import NO_DIGESTS, verify, verify_output
from openwit.pipeline.cli import main as cli
from openwit.pipeline.demo import web as demo_web
from openwit.pipeline.demo.run import write_web_inputs
from openwit.pipeline.output.ledger import current_state, read_ledger
from openwit.pipeline.output.manifest import manifest_sha256, read_manifest, write_manifest
from openwit.schemas.reasons import REASONS
from test_audit import rewrite_tar
from test_curate_e2e import curate_args, run_curate

FLAKY = 4  # images whose first request gets a 503, for --retry-failed to change


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One curated output (3+ shards, some 503s), its web still serving for --retry-failed."""
    root = tmp_path_factory.mktemp("tamper")
    web = demo_web.build_web(n_images=30, seed=5)
    for path in [p for p in web.routes if p.startswith("/img/")][:FLAKY]:
        web.routes[path] = [demo_web.Response(503, "text/plain", b"busy"), web.routes[path]]
    with demo_web.serve(web.routes) as base:
        candidates, vocab = write_web_inputs(str(root / "web"), web, base)
        out = str(root / "out")
        run_curate(curate_args(candidates, vocab, out, "--retries", "0", "--samples-per-shard", "5"))
        yield out


@pytest.fixture
def out(built, tmp_path):
    """A private copy to tamper with."""
    copy = str(tmp_path / "out")
    shutil.copytree(built, copy)
    return copy


def state(out_dir):
    return current_state(read_ledger(out_dir)).to_pylist()


def kept_rows(out_dir):
    return sorted((r for r in state(out_dir) if r["status"] == "kept"), key=lambda r: r["uid"])


def ledger_part_of(out_dir, uid):
    """(path, table) of the revision-0 ledger part holding a uid."""
    folder = os.path.join(out_dir, "ledger")
    for name in sorted(os.listdir(folder)):
        table = pq.read_table(os.path.join(folder, name))
        if uid in table.column("uid").to_pylist():
            return os.path.join(folder, name), table
    raise LookupError(uid)


def edit_ledger(out_dir, uid, **changes):
    """Rewrite the part holding `uid` with pyarrow, that row's fields changed; -> part name."""
    path, table = ledger_part_of(out_dir, uid)
    rows = [{**r, **changes} if r["uid"] == uid else r for r in table.to_pylist()]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return os.path.basename(path)


def shard_path(out_dir, shard, extension):
    return os.path.join(out_dir, "shards", f"{shard}.{extension}")


def add_members(tar_path, members: dict):
    with tarfile.open(tar_path, "a") as tar:
        for name, data in members.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def move_index_row(out_dir, key, source, target):
    source_table = pq.read_table(shard_path(out_dir, source, "parquet"))
    target_table = pq.read_table(shard_path(out_dir, target, "parquet"))
    moved = [r for r in source_table.to_pylist() if r["key"] == key]
    for shard, rows, schema in ((source, [r for r in source_table.to_pylist() if r["key"] != key], source_table.schema),
                                (target, target_table.to_pylist() + moved, target_table.schema)):
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), shard_path(out_dir, shard, "parquet"))


def test_a_fresh_output_verifies_green_and_its_manifest_pins_every_file(built, capsys):
    assert verify_output(built) == ([], [])
    digests = read_manifest(built)["digests"]
    on_disk = {f"{folder}/{name}" for folder in ("shards", "ledger", "stats")
               for name in os.listdir(os.path.join(built, folder))}
    assert set(digests["files"]) == on_disk and len(read_manifest(built)["shards"]) >= 3
    assert {"shards/sizes.json", "stats/entries.parquet", "stats/balance.json"} <= on_disk
    for name, sha in digests["files"].items():
        assert hashlib.sha256(open(os.path.join(built, name), "rb").read()).hexdigest() == sha
    assert cli(["audit", "verify", built]) == 0
    pinned = hashlib.sha256(open(os.path.join(built, "manifest.json"), "rb").read()).hexdigest()
    assert f"manifest.json sha256 {pinned}" in capsys.readouterr().out


def test_an_edited_url_in_key_json(out):
    row = kept_rows(out)[0]
    member = row["key"] + ".json"

    def change(name, data):
        if name != member:
            return data
        return json.dumps({**json.loads(data), "url": "http://elsewhere.example/x.jpg"}, sort_keys=True).encode()

    rewrite_tar(shard_path(out, row["shard"], "tar"), change)
    violations = verify(out)
    assert (f"{row['shard']}/{row['key']}.json: url is 'http://elsewhere.example/x.jpg', "
            f"the ledger's row says {row['url']!r}") in violations
    assert any(v.startswith(f"shards/{row['shard']}.tar: sha256") for v in violations)


def test_an_edited_caption_in_the_shard_index(out):
    row = kept_rows(out)[0]
    index = shard_path(out, row["shard"], "parquet")
    table = pq.read_table(index)
    rows = [{**r, "caption": "a caption someone changed"} if r["key"] == row["key"] else r for r in table.to_pylist()]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), index)
    violations = verify(out)
    assert (f"{row['shard']}.parquet [{row['key']}]: caption is 'a caption someone changed', "
            f"the ledger's row says {row['caption']!r}") in violations
    assert any(v.startswith(f"shards/{row['shard']}.parquet: sha256") for v in violations)


def test_an_extra_tar_member(out):
    row = kept_rows(out)[0]
    add_members(shard_path(out, row["shard"], "tar"), {row["key"] + ".exe": b"MZ not an image"})
    violations = verify(out)
    assert any(v.startswith(f"{row['shard']}/{row['key']}.exe: unexpected member of {row['shard']}.tar")
               for v in violations)
    assert any(v.startswith(f"shards/{row['shard']}.tar: sha256") for v in violations)


@pytest.mark.parametrize("field", ["url", "language", "source"])
def test_an_edited_field_of_a_kept_ledger_row(out, field):
    row = kept_rows(out)[0]
    value = {"url": "http://elsewhere.example/y.jpg", "language": "xx", "source": "other.parquet:1"}[field]
    part = edit_ledger(out, row["uid"], **{field: value})
    violations = verify(out)
    assert any(v.startswith(f"ledger/{part}: sha256") and v.endswith(f"(changed columns: {field})")
               for v in violations), violations
    # the shard no longer says what the ledger says: KEY.json and the index name the field
    assert f"{row['shard']}/{row['key']}.json: {field} is {row[field]!r}, the ledger's row says {value!r}" in violations
    assert any(v.startswith(f"{row['shard']}.parquet [{row['key']}]: {field} is") for v in violations)


def test_a_drop_reason_changed_to_another_valid_one(out):
    row = next(r for r in state(out) if r["stage"] == "download" and r["reason"] == "http_404")
    other = next(name for name, r in REASONS.items() if r.stage == "download" and name != "http_404")
    part = edit_ledger(out, row["uid"], reason=other)
    violations = verify(out)
    assert not any("unknown reason" in v or "belongs to stage" in v for v in violations)  # a valid reason...
    assert any(v.startswith(f"ledger/{part}: sha256") and v.endswith("(changed columns: reason)")
               for v in violations), violations  # ...caught by the digest
    assert not any(v.startswith("manifest.json: funnel") for v in violations)  # same stage, same funnel


def test_a_sample_moved_between_shards_with_sizes_kept_consistent(out):
    row = kept_rows(out)[0]
    source = row["shard"]
    target = next(name for name in read_manifest(out)["shards"] if name != source + ".tar")[:-len(".tar")]
    with tarfile.open(shard_path(out, source, "tar")) as tar:
        moved = {m.name: tar.extractfile(m).read() for m in tar if m.name.startswith(row["key"] + ".")}
    rewrite_tar(shard_path(out, source, "tar"), lambda name, data: None if name in moved else data)
    add_members(shard_path(out, target, "tar"), moved)
    move_index_row(out, row["key"], source, target)
    sizes_path = os.path.join(out, "shards", "sizes.json")
    sizes = json.load(open(sizes_path))
    sizes[source + ".tar"] -= 1
    sizes[target + ".tar"] += 1
    json.dump(sizes, open(sizes_path, "w"), indent=1)
    violations = verify(out)
    assert f"{target}/{row['key']}: sample in the shard without a kept ledger row" in violations
    assert f"{source}/{row['key']}: kept in the ledger but missing from the shards" in violations
    assert not any(v.startswith("sizes.json:") for v in violations)  # consistent with the tars...
    for name in (f"{source}.tar", f"{target}.tar", f"{source}.parquet", f"{target}.parquet", "sizes.json"):
        assert any(v.startswith(f"shards/{name}: sha256") for v in violations), name  # ...but not the manifest's
    assert "manifest.json: shard sizes differ from sizes.json's" in violations


def test_a_missing_and_an_extra_file(out):
    os.remove(os.path.join(out, "stats", "entries.parquet"))
    open(os.path.join(out, "shards", "notes.txt"), "w").write("added later\n")
    violations = verify(out)
    assert "stats/entries.parquet: in the manifest's digests, missing from the output" in violations
    assert "shards/notes.txt: not in the manifest's digests (added after the manifest was written)" in violations


def test_a_rewritten_manifest_passes_but_changes_the_pinned_sha256(out):
    """What verify cannot prove: whoever rewrites the manifest too. Only the published
    sha256 of the manifest catches that."""
    pinned = manifest_sha256(out)
    row = next(r for r in state(out) if r["reason"] == "http_404")
    edit_ledger(out, row["uid"], reason="http_4xx")
    write_manifest(out, read_manifest(out))  # the digests of the tampered files
    assert verify(out) == []
    assert manifest_sha256(out) != pinned


def test_after_a_takedown_the_output_verifies_green(out):
    before = read_manifest(out)["digests"]["files"]
    row = kept_rows(out)[0]
    assert takedown(out, uids=[row["uid"]])["samples_removed"] == 1
    assert verify_output(out) == ([], [])
    after = read_manifest(out)["digests"]["files"]
    changed = {name for name in before if after.get(name) != before[name]}
    assert {f"shards/{row['shard']}.tar", f"shards/{row['shard']}.parquet", "shards/sizes.json"} <= changed
    assert any(name.startswith("ledger/rev001-") for name in set(after) - set(before))  # the takedown's rows


def test_after_retry_failed_the_output_verifies_green(out):
    assert cli(["curate", "--retry-failed", out]) == 0
    manifest = read_manifest(out)
    assert manifest["updates"][0]["rows_appended"] >= FLAKY  # the 503s answered: shards changed
    assert verify_output(out) == ([], [])


def test_an_output_without_digests_gets_a_note_not_a_violation(out, capsys):
    path = os.path.join(out, "manifest.json")
    manifest = json.load(open(path))
    del manifest["digests"]
    open(path, "w").write(json.dumps(manifest, indent=1, sort_keys=True))
    assert verify_output(out) == ([], [NO_DIGESTS])
    assert cli(["audit", "verify", out]) == 0
    assert f"note: {NO_DIGESTS}" in capsys.readouterr().out
    takedown(out, uids=[kept_rows(out)[0]["uid"]])  # any later write records them
    assert "digests" in read_manifest(out) and verify_output(out) == ([], [])
