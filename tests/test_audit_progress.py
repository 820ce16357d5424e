"""Issue 25 for the other long commands: `audit verify`, `takedown`, `hashes export` and the
merge of `curate --retry-failed`. Off a terminal each shows periodic plain progress lines on
stderr (done of total) and then its normal result; --quiet shows only the result; a user's
mistake is one line, exit 2, no traceback.

Progress lines come every --progress-every seconds; 1e-9 makes every step of the loop print
one, so the lines can be counted against the shards or files the command went through."""
import json
import os
import shutil
import tarfile

import pyarrow.parquet as pq
import pytest

from openwit.pipeline.audit.verify import verify
from openwit.pipeline.output import layout
from openwit.pipeline.output.ledger import current_state, read_ledger
from helpers import assert_one_line_user_error, curated_demo, openwit, in_process
from scenes import jpeg, scene

EVERY_STEP = ["--progress-every", "1e-9"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small real output with several shards; the web stays up for --retry-failed."""
    with curated_demo(tmp_path_factory.mktemp("audit_progress"), 30, 7, "--samples-per-shard", "4") as out:
        yield {"out": out}


@pytest.fixture
def copy(built, tmp_path):
    """A private copy of the output, for the commands that change it."""
    path = str(tmp_path / "out")
    shutil.copytree(built["out"], path)
    return path


def run(capsys, *argv):
    """`openwit ARGV` in this process, stderr captured (not a terminal): (exit, stdout, stderr)."""
    result = in_process(capsys, *argv)
    return result.returncode, result.stdout, result.stderr


def progress_lines(err: str, what: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("progress ") and f"; {what} " in line]


def kept(out):
    return [r for r in current_state(read_ledger(out)).to_pylist() if r["status"] == "kept"]


def tars(out):
    return [name for name in sorted(os.listdir(layout.shards_dir(out))) if name.endswith(".tar")]


# ------------------------------------------------------------------ audit verify


def test_verify_shows_a_line_per_shard_then_its_result(built, capsys):
    n = len(tars(built["out"]))
    assert n >= 3
    code, out, err = run(capsys, "audit", "verify", built["out"], *EVERY_STEP)
    assert code == 0, out + err
    lines = progress_lines(err, "verify")
    assert len(lines) == n, err
    assert [line.split("; ")[1] for line in lines] == [f"verify {i}/{n} shards" for i in range(1, n + 1)]
    assert lines[-1].endswith(f"{len(kept(built['out'])):,} samples")
    # before the shards, every file is read again against the manifest's digests
    digested = [name for folder in ("shards", "ledger", "stats") for name in os.listdir(os.path.join(built["out"], folder))
                if os.path.isfile(os.path.join(built["out"], folder, name))]
    assert progress_lines(err, "digests")[-1].split("; ")[1] == f"digests {len(digested)}/{len(digested)} files"
    assert err.index("; digests ") < err.index("; verify ")
    assert "shards, ledger and manifest agree" in out and "manifest.json sha256" in out


def test_verify_quiet_shows_only_the_result(built, capsys):
    code, out, err = run(capsys, "audit", "verify", built["out"], "--quiet", *EVERY_STEP)
    assert code == 0 and err == ""
    assert "shards, ledger and manifest agree" in out


def test_verify_as_a_process_off_a_terminal(built, tmp_path):
    json_path = str(tmp_path / "p.json")
    result = openwit("audit", "verify", built["out"], *EVERY_STEP, "--progress-json", json_path)
    assert result.returncode == 0, result.stderr
    assert len(progress_lines(result.stderr, "verify")) == len(tars(built["out"]))
    assert "\r" not in result.stderr and "Traceback" not in result.stderr
    shown = json.load(open(json_path))
    assert shown["finished"] and shown["done"] == shown["total"] == len(tars(built["out"]))
    assert shown["samples"] == len(kept(built["out"]))


def test_verify_words_a_bad_progress_option(built, capsys):
    assert_one_line_user_error(in_process(capsys, "audit", "verify", built["out"], "--progress-every", "0"),
                               "--progress-every")


# ------------------------------------------------------------------ takedown


def urls_file(out, path, shards_wanted=2):
    """The URLs of one kept sample in each of the first shards."""
    first = {}
    for row in sorted(kept(out), key=lambda r: (r["shard"], r["key"])):
        first.setdefault(row["shard"], row["url"])
    urls = list(first.values())[:shards_wanted]
    path.write_text("\n".join(urls) + "\n")
    return str(path)


def test_takedown_shows_a_line_per_rewritten_shard_then_its_result(copy, tmp_path, capsys):
    code, out, err = run(capsys, "takedown", copy, "--urls", urls_file(copy, tmp_path / "urls.txt"), *EVERY_STEP)
    assert code == 0, err
    result = json.loads(out)
    assert result["samples_removed"] >= 2 and len(result["shards_rewritten"]) == 2
    lines = progress_lines(err, "takedown")
    assert [line.split("; ")[1] for line in lines] == ["takedown 1/2 shards", "takedown 2/2 shards"], err
    assert lines[-1].endswith(f"{result['samples_removed']} samples_removed")
    assert verify(copy) == []


def test_takedown_quiet_shows_only_the_result(copy, tmp_path, capsys):
    code, out, err = run(capsys, "takedown", copy, "--urls", urls_file(copy, tmp_path / "urls.txt"), "--quiet",
                         *EVERY_STEP)
    assert code == 0 and err == ""
    assert json.loads(out)["taken_down"] >= 2


def test_takedown_words_a_missing_list_file_and_changes_nothing(copy, tmp_path, capsys):
    before = {name: open(os.path.join(copy, name), "rb").read() for name in ("manifest.json",)}
    missing = str(tmp_path / "no-such-list.txt")
    assert_one_line_user_error(in_process(capsys, "takedown", copy, "--urls", missing), "--urls", missing,
                               "no such file")
    assert_one_line_user_error(in_process(capsys, "takedown", copy, "--uids", str(tmp_path)), "--uids", "is a folder")
    assert open(os.path.join(copy, "manifest.json"), "rb").read() == before["manifest.json"]
    assert not os.path.exists(layout.blocklist_path(copy))
    assert_one_line_user_error(in_process(capsys, "takedown", str(tmp_path / "nowhere"), "--urls", missing),
                               "no such folder")


# ------------------------------------------------------------------ hashes export


@pytest.fixture
def eval_set(tmp_path):
    images = tmp_path / "eval"
    (images / "sub").mkdir(parents=True)
    for i in range(3):
        scene(i, (64, 48)).save(images / f"{i}.png")
    (images / "sub" / "3.jpg").write_bytes(jpeg(scene(3)))
    with tarfile.open(images / "shard.tar", "w") as tar:  # one file of the five, two images
        tar.add(images / "0.png", arcname="000001.png")
        tar.add(images / "sub" / "3.jpg", arcname="000002.jpg")
    return images


def test_hashes_export_shows_a_line_per_file_then_its_result(eval_set, tmp_path, capsys):
    output = str(tmp_path / "h.parquet")
    code, out, err = run(capsys, "hashes", "export", str(eval_set), "-o", output, *EVERY_STEP)
    assert code == 0, err
    lines = progress_lines(err, "hashes")
    assert [line.split("; ")[1] for line in lines] == [f"hashes {i}/5 files" for i in range(1, 6)], err
    assert lines[-1].endswith("6 images")
    assert out.startswith("6 images hashed, 0 unreadable") and pq.read_table(output).num_rows == 6


def test_hashes_export_quiet_shows_only_the_result(eval_set, tmp_path, capsys):
    code, out, err = run(capsys, "hashes", "export", str(eval_set), "-o", str(tmp_path / "h.parquet"), "--quiet",
                         *EVERY_STEP)
    assert code == 0 and err == ""
    assert out.startswith("6 images hashed")


def test_hashes_export_words_a_missing_folder_and_a_folder_without_images(tmp_path, capsys):
    output = tmp_path / "h.parquet"
    missing = str(tmp_path / "nowhere")
    assert_one_line_user_error(in_process(capsys, "hashes", "export", missing, "-o", str(output)), missing,
                               "no such file or folder")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    assert_one_line_user_error(in_process(capsys, "hashes", "export", str(tmp_path / "notes"), "-o", str(output)),
                               "no image", "readme.txt")
    assert not output.exists()  # refused before anything was written
    assert_one_line_user_error(in_process(capsys, "hashes", "export", str(tmp_path / "notes"), "-o", str(tmp_path)),
                               "is a folder")


# ------------------------------------------------------------------ the merge of --retry-failed


def test_the_merge_of_retry_failed_shows_its_progress_and_quiet_hides_it(copy, capsys):
    merged = sorted(os.listdir(layout.shards_dir(copy))) + sorted(os.listdir(layout.stats_dir(copy)))
    n = len([name for name in merged if not name.startswith(".")])
    code, out, err = run(capsys, "curate", "--retry-failed", copy, *EVERY_STEP)
    assert code == 0, err
    lines = progress_lines(err, "merge")
    assert [line.split("; ")[1] for line in lines] == [f"merge {i}/{n} files" for i in range(1, n + 1)], err
    assert out.startswith("retry_failed: ")
    code, out, err = run(capsys, "curate", "--retry-failed", copy, "--quiet", *EVERY_STEP)
    assert code == 0 and err == "", err
    assert out.startswith("retry_failed: 0 ledger rows appended")
    assert verify(copy) == []


# ------------------------------------------------------------------ audit's other user errors


def test_audit_words_a_ledger_folder_without_parts_and_an_output_that_is_a_folder(built, tmp_path, capsys):
    (tmp_path / "half" / "ledger").mkdir(parents=True)  # a run that never finished writing its ledger
    for what in ("verify", "summary"):
        assert_one_line_user_error(in_process(capsys, "audit", what, str(tmp_path / "half")), "no ledger part",
                                   "finished run")
    for what in ("report", "croissant"):
        assert_one_line_user_error(in_process(capsys, "audit", what, built["out"], "-o", str(tmp_path)), "is a folder")


def test_a_loop_line_gains_its_rate_and_eta_once_a_second_has_passed(monkeypatch):
    import io

    from openwit.pipeline.common import progress

    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    stream = io.StringIO()
    with progress.LoopProgress("verify", 10, progress.Options(quiet=False, every=1e-9), unit="shards",
                               stream=stream) as shown:
        for _ in range(4):
            now[0] += 2.0  # a shard every two seconds
            shown.advance()
    lines = stream.getvalue().splitlines()
    assert lines[-1] == "progress 0:00:08; verify 4/10 shards (0.5 shards/s, ETA 0:00:12)"
