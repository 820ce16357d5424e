import re

import pytest

from openwit.pipeline.cli import main
from openwit.pipeline.config import parse_curate_args


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "curate", "audit", "hashes", "takedown", "vocab", "train", "eval"):
        assert command in out


@pytest.mark.parametrize("argv", [["demo", "--help"], ["curate", "--help"], ["audit", "--help"],
                                  ["audit", "summary", "--help"], ["vocab", "build", "--help"],
                                  ["vocab", "verify", "--help"], ["train", "--help"], ["evaluate", "--help"],
                                  ["eval", "--help"], ["audit", "trace", "--help"], ["audit", "verify", "--help"],
                                  ["audit", "report", "--help"], ["audit", "croissant", "--help"], ["audit", "explorer", "--help"],
                                  ["takedown", "--help"], ["hashes", "export", "--help"]])
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_unknown_command_fails(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_beam_flags_pass_through_and_fnapirunner_is_the_default():
    cfg, beam_args = parse_curate_args(["--input", "a.csv", "--vocab", "v.txt", "--output", "o",
                                        "--direct_num_workers", "2", "--threshold", "7"])
    assert cfg.threshold == 7 and cfg.inputs == ("a.csv",)
    assert beam_args == ["--runner", "FnApiRunner", "--direct_num_workers", "2"]
    _, beam_args = parse_curate_args(["--input", "a.csv", "--vocab", "v.txt", "--output", "o",
                                      "--runner=PortableRunner", "--job_endpoint", "embed"])
    assert beam_args == ["--runner=PortableRunner", "--job_endpoint", "embed"]


def test_a_mistyped_flag_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_curate_args(["--input", "a.csv", "--output", "o", "--theshold", "5"])
    assert exit_info.value.code == 2
    assert "--theshold" in capsys.readouterr().err


def test_beam_options_of_remote_runners_are_accepted():
    _, beam_args = parse_curate_args(["--input", "a.csv", "--output", "o", "--runner", "DataflowRunner",
                                      "--project", "p", "--region", "europe-west1", "--temp_location", "gs://b/t",
                                      "--setup_file", "./setup.py", "--flink_master", "localhost:8081"])
    assert "--setup_file" in beam_args


def test_curate_dry_run_prints_the_plan_and_sample_counts_and_writes_nothing(tmp_path, capsys):
    import json

    rows = [{"url": f"http://127.0.0.1/{i}.jpg", "caption": "a photo of a red bicycle"} for i in range(6)]
    rows += [{"url": "http://127.0.0.1/0.jpg#again", "caption": "the same red bicycle again"},
             {"url": "http://127.0.0.1/x.jpg", "caption": "IMG_1234.jpg"},
             {"url": "http://127.0.0.1/y.jpg", "caption": "une photo d'un vélo rouge dans la rue"},
             {"url": "http://127.0.0.1/z.jpg", "caption": "nothing in the list here"},
             {"url": "", "caption": "a caption without a url"}]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "vocab.txt").write_text("bicycle\n")
    out = tmp_path / "out"
    argv = ["curate", "--dry-run", "--input", str(tmp_path / "in.jsonl"), "--vocab", str(tmp_path / "vocab.txt"),
            "--output", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "stage plan:" in printed and "languages en" in printed and "1 vocabulary entries" in printed
    counts = dict(re.findall(r"^  (\S.*?)\s{2,}(\d+)\s", printed.split("sample:")[1], re.M))
    assert counts == {"to download": "6", "duplicate_url": "1", "text: caption_too_short": "1",
                      "text: language_not_allowed": "1", "match: unmatched": "1", "read: missing_url": "1"}
    assert not out.exists()
    assert main(argv[:3] + [str(tmp_path / "missing.jsonl")] + argv[4:]) == 2
