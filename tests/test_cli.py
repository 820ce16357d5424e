import pytest

from openwit.pipeline.cli import main
from openwit.pipeline.options import parse_curate_args


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "curate", "audit", "hashes", "takedown", "vocab", "train", "eval"):
        assert command in out


@pytest.mark.parametrize("argv", [["demo", "--help"], ["curate", "--help"], ["audit", "--help"],
                                  ["audit", "summary", "--help"], ["vocab", "build", "--help"],
                                  ["vocab", "verify", "--help"], ["train", "--help"], ["evaluate", "--help"],
                                  ["eval", "--help"], ["audit", "trace", "--help"], ["audit", "verify", "--help"],
                                  ["audit", "report", "--help"], ["audit", "croissant", "--help"],
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
