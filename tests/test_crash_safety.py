"""kill -9 in the middle of `openwit curate`, then the same command again: downloads staged
before the kill are reused, the result equals an uninterrupted run byte for byte, and no
partial shard is ever visible."""
import collections
import dataclasses
import glob
import os
import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from openwit.pipeline.demo import web as demo_web
from openwit.pipeline.demo.run import write_web_inputs
from openwit.pipeline.config import parse_curate_args
from openwit.pipeline.download import staging
from openwit.pipeline.output import layout
from openwit.schemas.record import Record
from test_curate_e2e import curate_args, output_bytes, run_curate


class CountingRoutes(dict):
    """The demo web's routes, counting requests per path (the handler looks paths up with get)."""

    def __init__(self, routes):
        super().__init__(routes)
        self.hits = collections.Counter()
        self.lock = threading.Lock()

    def get(self, path, default=None):
        with self.lock:
            self.hits[path] += 1
        return super().get(path, default)


def slow_web():
    """The demo web with every image answering after 50 ms, so a run lasts long enough to kill."""
    web = demo_web.build_web(n_images=120, seed=5)
    for path, response in web.routes.items():
        if path.startswith(("/img/", "/copy/")):
            web.routes[path] = dataclasses.replace(response, delay=0.05)
    return web


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    web = slow_web()
    routes = CountingRoutes(web.routes)
    with demo_web.serve(routes) as base_url:
        candidates, vocab = write_web_inputs(str(root / "web"), web, base_url)

        def argv(out):
            return curate_args(candidates, vocab, out, "--download-concurrency", "4", "--samples-per-shard", "4")

        reference = str(root / "reference")
        run_curate(argv(reference))
        yield {"argv": argv, "routes": routes, "base_url": base_url, "reference": output_bytes(reference)}


def start_curate(argv, log_path):
    log = open(log_path, "wb")
    # its own session, so the kill reaches every process the runner started
    return subprocess.Popen([sys.executable, "-m", "openwit.pipeline.cli", "curate", *argv],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill_when(process, ready, timeout=120.0):
    """SIGKILL the whole process group as soon as ready() holds; fails if the run ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the run ended before the moment to kill it"
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def receipts(out):
    return glob.glob(os.path.join(out, "staging", "fetched", "*", "*.json"))


def visible_shard_files(out):
    return {os.path.relpath(f, out): open(f, "rb").read()
            for pattern in ("*.tar", "*.parquet", "sizes.json")
            for f in glob.glob(os.path.join(out, "shards", pattern))}


def test_kill_during_downloads_then_rerun_reuses_staged_images(slow_run, tmp_path):
    out = str(tmp_path / "out")
    argv = slow_run["argv"](out)
    process = start_curate(argv, tmp_path / "killed.log")
    kill_when(process, lambda: len(receipts(out)) >= 20)
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    assert not visible_shard_files(out)
    # which URLs the killed run finished: their receipts name them
    cfg, _ = parse_curate_args(argv)
    finished = set(os.path.basename(p)[:-5] for p in receipts(out))
    paths = [path for path in slow_run["routes"] if path.startswith(("/img/", "/copy/"))]
    done_paths = {p for p in paths
                  if staging.receipt_key(slow_run["base_url"] + p, cfg.image, cfg.download) in finished}
    assert len(done_paths) >= 20

    slow_run["routes"].hits.clear()
    run_curate(argv)  # the same command again
    assert output_bytes(out) == slow_run["reference"]
    assert not any(slow_run["routes"].hits[p] for p in done_paths), "a staged download was fetched again"
    assert any(slow_run["routes"].hits[p] for p in paths)  # the rest were downloaded


def test_kill_while_shards_are_written_leaves_only_whole_shards(slow_run, tmp_path):
    out = str(tmp_path / "out")
    argv = slow_run["argv"](out)
    process = start_curate(argv, tmp_path / "killed.log")
    kill_when(process, lambda: glob.glob(os.path.join(out, "shards", "*.tar")))
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    visible = visible_shard_files(out)
    assert visible  # the kill came while shards were being written
    for name, data in visible.items():  # every visible shard file is complete and final
        assert data == slow_run["reference"][name], name

    run_curate(argv)
    assert output_bytes(out) == slow_run["reference"]



def test_a_receipt_names_its_image_relative_to_the_staging_it_is_read_from(tmp_path):
    cfg, _ = parse_curate_args(["--input", "x", "--output", "y"])
    record = Record(uid="u", url="http://127.0.0.1/a.jpg", caption="a red circle", source="s:0")
    first = str(tmp_path / "first" / "staging")
    path = staging.stage_image(first, "ab" * 32, "jpg", b"processed bytes")
    key = staging.receipt_key(record.url, cfg.image, cfg.download)
    staging.save_receipt(first, key, record.update(sha256="ab" * 32, image_format="jpg", image_path=path, width=4))
    moved = str(tmp_path / "moved" / "staging")
    os.rename(str(tmp_path / "first"), str(tmp_path / "moved"))
    reused = staging.reuse_receipt(moved, key, record)
    assert reused.image_path == layout.staged_image(moved, "ab" * 32, "jpg") and reused.width == 4
    os.remove(reused.image_path)  # the staged image is gone: download again
    assert staging.reuse_receipt(moved, key, record) is None
    assert staging.reuse_receipt(moved, staging.receipt_key(record.url + "?v=2", cfg.image, cfg.download), record) is None


def test_a_receipt_from_an_older_version_without_a_field_is_downloaded_again(tmp_path):
    """A receipt lacking colour_sig (written before the colour check) would keep a record
    without a signature for good: the output would differ from a clean run's."""
    cfg, _ = parse_curate_args(["--input", "x", "--output", "y"])
    record = Record(uid="u", url="http://127.0.0.1/a.jpg", caption="a red circle", source="s:0")
    staging_dir = str(tmp_path / "staging")
    staging.stage_image(staging_dir, "ab" * 32, "jpg", b"processed bytes")
    key = staging.receipt_key(record.url, cfg.image, cfg.download)
    staging.save_receipt(staging_dir, key, record.update(sha256="ab" * 32, image_format="jpg", colour_sig="00" * 48))
    assert staging.reuse_receipt(staging_dir, key, record).colour_sig == "00" * 48
    receipt = layout.receipt(staging_dir, key)
    fields = json.loads(open(receipt).read())
    del fields["colour_sig"]
    with open(receipt, "w") as f:
        json.dump(fields, f)
    assert staging.reuse_receipt(staging_dir, key, record) is None
