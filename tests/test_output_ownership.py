"""Output ownership (issue 17): openwit removes or replaces only what it wrote in OUT.

One real curate run gives an OUT holding only openwit's output; every other case is a
refusal, checked to leave the directory exactly as it was (no pipeline runs for those)."""
import os
import shutil
from pathlib import Path

import pytest

from openwit.pipeline.cli import main as cli
from openwit.pipeline.curate.run import OutputConflict, prepare_output
from openwit.pipeline.demo import run as demo
from openwit.pipeline.demo import web as demo_web
from openwit.pipeline.output import layout
from test_curate_e2e import curate_args, output_bytes, run_curate
from test_remote_paths import SCHEME, remote_root  # noqa: F401 (the fixture and its stand-in scheme)


def listing(folder):
    """Every path below folder with its bytes (None for a folder): what 'untouched' compares."""
    seen = {}
    for root, dirs, names in os.walk(folder):
        for name in dirs:
            seen[os.path.relpath(os.path.join(root, name), folder)] = None
        for name in names:
            path = Path(root, name)
            seen[os.path.relpath(path, folder)] = path.read_bytes()
    return seen


def add_foreign_files(out):
    """A user's thesis, notes and a git repository, in a folder openwit also wrote to."""
    (out / "thesis.txt").write_text("years of work")
    (out / ".git" / "objects").mkdir(parents=True)
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    for i in range(5):
        (out / f"note{i}.md").write_text(f"note {i}")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One real run: OUT holding only openwit's output, and the command that wrote it."""
    root = tmp_path_factory.mktemp("ownership")
    web = demo_web.build_web(n_images=20, seed=5)
    with demo_web.serve(web.routes) as base_url:
        candidates, vocab = demo.write_web_inputs(str(root / "web"), web, base_url)
        out = root / "out"
        manifest = run_curate(curate_args(candidates, vocab, str(out)))
        yield {"root": root, "out": out, "candidates": candidates, "vocab": vocab, "manifest": manifest,
               "bytes": output_bytes(str(out))}


@pytest.fixture
def inputs(tmp_path):
    """A tiny input and vocabulary for refusals: nothing is downloaded before they happen."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.csv").write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,a red circle\n")
    (data / "vocab.txt").write_text("circle\n")
    return data


def curate_cli(capsys, data, out, *extra):
    """`openwit curate` as typed: -> (exit code, stderr)."""
    code = cli(["curate", "--input", str(data / "in.csv"), "--vocab", str(data / "vocab.txt"),
                "--output", str(out), *extra])
    return code, capsys.readouterr().err


def test_foreign_files_and_git_survive_overwrite_and_are_named(built, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(built["out"], out)
    add_foreign_files(out)
    before = listing(out)
    for extra in ((), ("--overwrite",), ("--overwrite", "--seed", "9")):
        code = cli(["curate", *curate_args(built["candidates"], built["vocab"], str(out), *extra)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(f"openwit curate: {out} holds files openwit did not write (")
        assert ".git, note0.md, note1.md, note2.md, note3.md and 2 more" in err and "empty folder" in err
        assert listing(out) == before  # nothing removed, nothing written (.openwit/run.json included)


def test_a_folder_of_the_users_own_files_is_not_called_another_commands_output(inputs, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text("{}")  # openwit's names, but no .openwit: not openwit's
    (mine / "stats").mkdir()
    before = listing(mine)
    code, err = curate_cli(capsys, inputs, mine, "--overwrite")
    assert code == 2 and "holds files openwit did not write (manifest.json, stats)" in err
    assert "different" not in err
    assert listing(mine) == before


def test_the_same_command_restarts_and_a_different_one_needs_overwrite(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built["out"], out)
    argv = curate_args(built["candidates"], built["vocab"], str(out))
    assert run_curate(argv)["output_action"] == "restart"
    assert output_bytes(str(out)) == built["bytes"]
    (out / layout.CROISSANT).write_text("{}")  # `audit croissant`'s default place: openwit's
    (out / "manifest.json.partial-1-2").write_text("{")  # a crash's leftover: openwit's too
    other = argv + ["--samples-per-shard", "5"]
    with pytest.raises(OutputConflict, match="the output of a different openwit command"):
        run_curate(other)
    manifest = run_curate(other + ["--overwrite"])
    assert manifest["output_action"] == "overwrite"
    assert sorted(os.listdir(out)) == [".openwit", "ledger", "manifest.json", "shards", "staging", "stats"]
    # the other command's dataset, not the old one
    assert manifest["shard_count"] > built["manifest"]["shard_count"]
    assert sorted(os.listdir(out / "shards")) == sorted(
        ["sizes.json"] + [f"{name[:-4]}{ext}" for name in manifest["shards"] for ext in (".tar", ".parquet")])


def test_an_output_holding_an_input_is_refused_untouched(inputs, capsys):
    before = listing(inputs)
    for out in (inputs, inputs.parent):  # the input's folder, and a folder above it
        for extra in ((), ("--overwrite",)):
            code, err = curate_cli(capsys, inputs, out, *extra)
            assert code == 2 and f"{out} holds {inputs / 'in.csv'}, an input of this command" in err
    assert listing(inputs) == before


def test_an_output_that_is_an_input_file_is_refused_untouched(inputs, capsys):
    before = listing(inputs)
    code, err = curate_cli(capsys, inputs, inputs / "in.csv", "--overwrite")
    assert code == 2 and "is an input file of this command" in err
    (inputs.parent / "notes.txt").write_text("mine")  # any other file is not a folder either
    code, err = curate_cli(capsys, inputs, inputs.parent / "notes.txt", "--overwrite")
    assert code == 2 and "notes.txt is a file, not a folder" in err
    assert listing(inputs) == before and (inputs.parent / "notes.txt").read_text() == "mine"


def test_relative_paths_and_symlinks_are_resolved(inputs, tmp_path, capsys, monkeypatch):
    (tmp_path / "link").symlink_to(inputs)
    monkeypatch.chdir(inputs)
    before = listing(inputs)
    for out in (".", tmp_path / "link"):
        code, err = curate_cli(capsys, inputs, out, "--overwrite")
        assert code == 2 and "an input of this command" in err
    assert listing(inputs) == before


def test_home_is_refused_untouched(inputs, tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("export PATH\n")
    monkeypatch.setenv("HOME", str(home))
    before = listing(home)
    for out in (home, tmp_path):  # home, and a folder above it
        code, err = curate_cli(capsys, inputs, out, "--overwrite")
        assert code == 2 and err == f"openwit curate: {out} is your home folder or holds it; choose an empty folder " \
            "for --output\n"
    assert listing(home) == before


def test_the_filesystem_root_is_refused_untouched(inputs, capsys):
    before = sorted(os.listdir("/"))
    code, err = curate_cli(capsys, inputs, "/", "--overwrite")
    assert code == 2 and "openwit curate: / is the root of a filesystem or bucket" in err
    assert sorted(os.listdir("/")) == before


def test_a_remote_output_follows_the_same_rules(built, remote_root):  # noqa: F811
    stored = remote_root / "datasets" / "run1"
    shutil.copytree(built["out"], stored)
    out = f"{SCHEME}://datasets/run1"
    (stored / "thesis.txt").write_text("years of work")
    before = listing(stored)
    with pytest.raises(OutputConflict, match=r"holds files openwit did not write \(thesis.txt\)"):
        prepare_output(out, "another command", overwrite=True)
    assert listing(stored) == before
    (stored / "thesis.txt").unlink()
    with pytest.raises(OutputConflict, match="different openwit command"):
        prepare_output(out, "another command", overwrite=False)
    assert prepare_output(out, "another command", overwrite=True) == "overwrite"
    assert os.listdir(stored) == [".openwit"]  # openwit's output replaced, ready for the new run


def test_a_remote_bucket_root_or_an_output_above_a_remote_input_is_refused(built, remote_root):  # noqa: F811
    (remote_root / "bucket" / "crawl").mkdir(parents=True)
    shutil.copy(built["candidates"], remote_root / "bucket" / "crawl" / "candidates.parquet")
    before = listing(remote_root)
    bucket = f"{SCHEME}://bucket"
    for out, message in ((bucket, "root of a filesystem or bucket"), (bucket + "/", "root of a"),
                         (bucket + "/crawl/", "an input of this command"),
                         (bucket + "/crawl/candidates.parquet", "is an input file")):
        argv = curate_args(bucket + "/crawl/*.parquet", built["vocab"], out, "--overwrite")
        with pytest.raises(OutputConflict, match=message):
            run_curate(argv)
    assert listing(remote_root) == before


def test_the_demo_never_replaces_files_it_did_not_write(tmp_path):
    out = tmp_path / "demo"
    (out / "curated").mkdir(parents=True)
    (out / "curated" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match=r"openwit demo: .* holds files openwit did not write \(notes.txt\)"):
        demo.main(["--output", str(out), "--images", "12", "--steps", "0", "--overwrite"])
    assert (out / "curated" / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(out / "curated")) == ["notes.txt"]
