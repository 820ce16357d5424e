"""Inputs and outputs go through Beam's FileSystems, so any scheme Beam knows (gs://, s3://
with Beam's extras) works like a local path. A stand-in scheme backed by a local folder
takes the same code path here (Beam picks a filesystem by the path's scheme) without a
network."""
import gzip
import json
import os

import pytest
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

from openwit.pipeline.demo import web as demo_web
from openwit.pipeline.audit.summary import summary_text
from openwit.pipeline.audit.croissant import provenance
from openwit.pipeline.curate.run import describe_inputs
from openwit.pipeline.demo.run import write_web_inputs
from openwit.pipeline.config import parse_curate_args
from openwit.pipeline.stages import read
from test_curate_e2e import curate_args, output_bytes, run_curate

SCHEME = "openwit-remote"


class StandInRemoteFileSystem(LocalFileSystem):
    """`openwit-remote://PATH` is the local folder ROOT/PATH; paths keep their scheme both ways."""

    @property
    def root(self) -> str:
        # From the environment, set by the fixture: openwit's fetch-worker processes import
        # this class as a Beam plugin (pipeline/download/pool.py) and inherit the variable.
        return os.environ["OPENWIT_TEST_REMOTE_ROOT"]

    @classmethod
    def scheme(cls):
        return SCHEME

    def local(self, path: str) -> str:
        if not path.startswith(f"{SCHEME}://"):  # already local: Beam's own helpers call back in
            return path
        return os.path.join(self.root, path[len(SCHEME) + 3:])

    def remote(self, path: str) -> str:
        return f"{SCHEME}://{os.path.relpath(path, self.root)}"

    def _list(self, dir_or_prefix):
        for meta in super()._list(self.local(dir_or_prefix)):
            yield FileMetadata(self.remote(meta.path), meta.size_in_bytes, meta.last_updated_in_seconds)

    def metadata(self, path):
        meta = super().metadata(self.local(path))
        return FileMetadata(path, meta.size_in_bytes, meta.last_updated_in_seconds)

    def open(self, path, *args, **kwargs):
        return super().open(self.local(path), *args, **kwargs)

    def create(self, path, *args, **kwargs):
        return super().create(self.local(path), *args, **kwargs)

    def rename(self, sources, destinations):
        return super().rename([self.local(p) for p in sources], [self.local(p) for p in destinations])

    def delete(self, paths):
        return super().delete([self.local(p) for p in paths])

    def exists(self, path):
        return super().exists(self.local(path))

    def checksum(self, path):
        return f"stand-in:{super().checksum(self.local(path))}"


@pytest.fixture
def remote_root(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENWIT_TEST_REMOTE_ROOT", str(tmp_path / "bucket"))
    return tmp_path / "bucket"


def test_a_gzipped_glob_on_a_remote_scheme_reads_like_a_local_file(remote_root):
    (remote_root / "crawl").mkdir(parents=True)
    rows = [{"url": f"http://127.0.0.1:9/{i}.jpg", "caption": f"a red circle number {i}"} for i in range(5)]
    for part in range(2):
        with gzip.open(remote_root / "crawl" / f"part-{part}.jsonl.gz", "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    files = read.expand_inputs([f"{SCHEME}://crawl/*.jsonl.gz"])
    assert [name for _, name in files] == ["part-0.jsonl.gz", "part-1.jsonl.gz"]
    records = list(read.read_candidates(*files[1], parse_curate_args(["--input", "x", "--output", "y"])[0].read))
    assert [r.caption for r in records] == [r["caption"] for r in rows]
    assert records[0].source.startswith("part-1.jsonl.gz")


def test_curate_reads_remote_inputs_and_gives_the_local_run_bytes(remote_root, tmp_path):
    web = demo_web.build_web(n_images=40, seed=4)
    with demo_web.serve(web.routes) as base_url:
        candidates, vocab = write_web_inputs(str(remote_root / "web"), web, base_url)
        local_out, remote_out = str(tmp_path / "local"), str(tmp_path / "remote")
        run_curate(curate_args(candidates, vocab, local_out))
        remote_input = f"{SCHEME}://web/*.parquet"
        manifest = run_curate(curate_args(remote_input, vocab, remote_out))
    assert output_bytes(remote_out) == output_bytes(local_out)  # uids use the name below the glob
    (described,) = manifest["inputs"]
    assert described["path"] == f"{SCHEME}://web/candidates.parquet"
    assert described["checksum"].startswith("stand-in:") and described["size"] == os.path.getsize(candidates)
    cfg, _ = parse_curate_args(curate_args(remote_input, vocab, remote_out))
    assert describe_inputs(cfg) == manifest["inputs"]
    # the Croissant export names a remote input by its checksum
    assert f"{SCHEME}://web/candidates.parquet (checksum stand-in:" in provenance(manifest)["data_collection"]


def test_curate_writes_to_a_remote_output_and_restarts_there(remote_root, tmp_path):
    web = demo_web.build_web(n_images=40, seed=4)
    with demo_web.serve(web.routes) as base_url:
        candidates, vocab = write_web_inputs(str(tmp_path / "web"), web, base_url)
        local_out = str(tmp_path / "local")
        run_curate(curate_args(candidates, vocab, local_out))
        remote_out = f"{SCHEME}://datasets/run1"
        first = run_curate(curate_args(candidates, vocab, remote_out))
        stored = str(remote_root / "datasets" / "run1")
        assert output_bytes(stored) == output_bytes(local_out)
        assert first["output_action"] == "new" and os.path.exists(os.path.join(stored, "manifest.json"))
        assert os.listdir(os.path.join(stored, "staging"))  # images staged in the bucket too
        again = run_curate(curate_args(candidates, vocab, remote_out))
    assert again["output_action"] == "restart" and again["funnel"] == first["funnel"]
    assert output_bytes(stored) == output_bytes(local_out)
    assert f"kept {first['funnel']['kept']}" in " ".join(summary_text(remote_out).split())
