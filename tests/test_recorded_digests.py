"""The manifest's digests of shard files come from their writers' record, not a re-read: a
curate's (and a takedown's) manifest holds the sha256 of the bytes on disk, and writing the
manifest reads no shard tar or index (at 40K shards that re-read was hours of I/O)."""
import builtins
import hashlib
import os
import shutil

import pytest

from openwit.pipeline.audit.takedown import takedown
from openwit.pipeline.audit.verify import verify_output
from openwit.pipeline.output import files, layout, manifest as manifests, shards
from openwit.pipeline.output.ledger import current_state, read_ledger
from helpers import curated_demo


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    with curated_demo(tmp_path_factory.mktemp("recorded"), 20, 7, "--samples-per-shard", "5") as out:
        return out


@pytest.fixture
def out(built, tmp_path):
    copy = str(tmp_path / "out")
    shutil.copytree(built, copy)
    return copy


def fresh_digests(out_dir):
    """FOLDER/FILE -> sha256 of the bytes on disk now, for every digested file."""
    return {f"{folder}/{name}": hashlib.sha256(open(os.path.join(out_dir, folder, name), "rb").read()).hexdigest()
            for folder in layout.DIGESTED for name in os.listdir(os.path.join(out_dir, folder))}


@pytest.fixture
def shard_reads(monkeypatch):
    """Every read of a shard file (tar or index) through files.sha256, files.read_file or open."""
    reads = []

    def is_shard_file(path):
        path = str(path)
        return os.path.basename(os.path.dirname(path)) == layout.SHARDS and path.endswith((".tar", ".parquet"))

    def counted(function):
        def wrapper(path, *args, **kwargs):
            if is_shard_file(path) and "w" not in str(args[:1] or kwargs.get("mode", "r")):
                reads.append(os.path.basename(str(path)))
            return function(path, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(files, "sha256", counted(files.sha256))
    monkeypatch.setattr(files, "read_file", counted(files.read_file))
    monkeypatch.setattr(builtins, "open", counted(builtins.open))
    return reads


def test_a_curates_digests_are_the_sha256s_of_its_files(built):
    digests = manifests.read_manifest(built)["digests"]["files"]
    assert digests == fresh_digests(built)
    record = shards.recorded_digests(layout.shards_dir(built))
    tars = [name for name in digests if name.endswith(".tar")]
    assert len(tars) >= 3  # every shard tar and index was recorded by its writer
    assert {name: digests[name] for name in record} == record
    assert set(record) == {n for n in digests if n.startswith("shards/") and n.endswith((".tar", ".parquet"))}
    assert not any(name.startswith(layout.STATE) for name in digests)  # the record is no file of the release


def test_writing_the_manifest_reads_no_shard_file(out, shard_reads):
    before = manifests.read_manifest(out)
    manifests.write_manifest(out, dict(before))
    assert shard_reads == []
    assert manifests.read_manifest(out)["digests"] == before["digests"]


def test_after_a_takedown_the_digests_are_the_files_and_only_its_shard_was_read(out, shard_reads):
    row = next(r for r in current_state(read_ledger(out)).to_pylist() if r["status"] == "kept")
    assert takedown(out, uids=[row["uid"]])["samples_removed"] == 1
    assert set(shard_reads) <= {f"{row['shard']}.tar", f"{row['shard']}.parquet"}  # rewrite_shard's own read
    shard_reads.clear()
    assert manifests.read_manifest(out)["digests"]["files"] == fresh_digests(out)
    assert verify_output(out) == ([], [])


def test_without_a_record_the_files_are_hashed(out, shard_reads):
    os.remove(layout.shard_digests_path(layout.shards_dir(out)))  # an output from before the record
    manifest = manifests.read_manifest(out)
    manifests.write_manifest(out, manifest)
    assert manifest["digests"]["files"] == fresh_digests(out)
    assert any(name.endswith(".tar") for name in shard_reads)  # (the count above sees reads)
