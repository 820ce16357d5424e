"""Errors a user made (issue 18 item 5): one line naming the problem and the fix, exit 2,
no traceback; `--debug` (or OPENWIT_DEBUG=1) shows the traceback; real bugs keep theirs."""
import os
import subprocess
import sys

import apache_beam as beam
import pytest

from openwit.pipeline.common import errors
from openwit.pipeline.common.errors import UserError
from helpers import assert_one_line_user_error, in_process, openwit


@pytest.fixture
def files(tmp_path):
    (tmp_path / "vocab.txt").write_text("dog\n")
    (tmp_path / "good.csv").write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,a dog\n")
    (tmp_path / "link.csv").write_text("link,caption\nhttp://127.0.0.1:9/a.jpg,a dog\n")
    (tmp_path / "quote.csv").write_text('"url,caption\nhttp://127.0.0.1:9/a.jpg,a dog\n')
    (tmp_path / "a-file").write_text("not a folder\n")
    return tmp_path


def curate(files, *argv):
    return openwit("curate", "--vocab", str(files / "vocab.txt"), *argv)


def test_no_input_matches_the_glob(files):
    result = curate(files, "--input", str(files / "missing-*.csv"), "--output", str(files / "out"))
    assert_one_line_user_error(result, "no input file matches", "--input")
    assert not os.path.exists(files / "out")


def test_an_input_without_the_url_column(files):
    result = curate(files, "--input", str(files / "link.csv"), "--output", str(files / "out"))
    assert_one_line_user_error(result, "no url column 'url'", "link", "--url-col")
    assert not os.path.exists(files / "out")  # refused before anything was written


def test_a_csv_with_a_broken_header(files):
    result = curate(files, "--input", str(files / "quote.csv"), "--output", str(files / "out"))
    assert_one_line_user_error(result, "quote.csv", "header")


def test_out_is_a_file(files):
    result = curate(files, "--input", str(files / "good.csv"), "--output", str(files / "a-file"))
    assert_one_line_user_error(result, "is a file", "--output")
    assert (files / "a-file").read_text() == "not a folder\n"


def test_out_cannot_be_created(files):
    result = curate(files, "--input", str(files / "good.csv"), "--output", str(files / "a-file" / "out"))
    assert_one_line_user_error(result, "is a file", "--output")


@pytest.mark.parametrize("flags, words", [
    (["--threshold", "many"], ["--threshold", "many"]),
    (["--min-score", "0.5"], ["--min-score needs --score-model"]),
    (["--progress-every", "0"], ["--progress-every"]),
])
def test_bad_option_values(files, flags, words, capsys):
    # in this process (nothing runs before the parser refuses): the command as typed, via cli.main
    assert_one_line_user_error(in_process(capsys, "curate", "--vocab", str(files / "vocab.txt"), "--input",
                                          str(files / "good.csv"), "--output", str(files / "out"), *flags), *words)


def test_extract_words_its_user_errors(files, capsys):
    assert_one_line_user_error(in_process(capsys, "extract", str(files / "none-*.warc.gz"), "-o",
                                          str(files / "c.parquet")), "no input file matches")
    assert_one_line_user_error(in_process(capsys, "extract", str(files / "good.csv"), "-o",
                                          str(files / "no" / "c.parquet")), "folder does not exist")


def test_debug_shows_the_traceback(files):
    argv = ["--input", str(files / "link.csv"), "--output", str(files / "out")]
    for result in (curate(files, "--debug", *argv), openwit("curate", "--vocab", str(files / "vocab.txt"), *argv,
                                                              env={errors.DEBUG_ENV: "1"})):
        assert result.returncode == 1
        assert "Traceback" in result.stderr and "UserError: " in result.stderr


def _raise_user_error(_):
    raise UserError("in.csv: no url column 'url'; pass --url-col")


def test_a_user_error_inside_a_beam_worker_is_found_in_its_wrapping():
    with pytest.raises(Exception) as raised:
        with beam.Pipeline(runner="FnApiRunner") as p:
            _ = p | beam.Create([1]) | "ReadFiles" >> beam.Map(_raise_user_error)
    assert "[while running" in str(raised.value)  # Beam's wrapping, which the message must lose
    assert errors.user_message(raised.value) == "in.csv: no url column 'url'; pass --url-col"


def test_a_worker_traceback_text_is_searched_and_bugs_are_not_user_errors():
    text = ("Traceback (most recent call last):\n  File \"read.py\", line 9\n"
            "openwit.pipeline.common.errors.UserError: x.csv: no url column 'u'; pass --url-col "
            "[while running 'Read/ReadFiles']")
    assert errors.user_message(RuntimeError(text)) == "x.csv: no url column 'u'; pass --url-col"
    assert errors.user_message(RuntimeError("list index out of range")) is None
    assert errors.user_message(KeyError("url")) is None
    assert errors.report("curate", ZeroDivisionError("bug"), debug=False) is None  # keeps its traceback


def test_only_a_worker_traceback_that_ends_in_a_user_error_is_one():
    handled = ("Traceback (most recent call last):\n  File \"read.py\", line 9\n"
               "openwit.pipeline.common.errors.UserError: x.csv: no url column 'u'\n\n"
               "During handling of the above exception, another exception occurred:\n\n"
               "Traceback (most recent call last):\n  File \"read.py\", line 11\n"
               "IndexError: list index out of range [while running 'Read/ReadFiles']")
    assert errors.user_message(RuntimeError(handled)) is None  # the worker ended on a bug
    # only Beam's wrapper is read as a traceback: any other exception's text is just text
    assert errors.user_message(KeyError("UserError: x.csv: no url column 'u'")) is None
    assert errors.user_message(ValueError("row 3: UserError: not a user error")) is None


BUG_WHILE_HANDLING = """
import sys
from openwit.pipeline import cli
from openwit.pipeline.common.errors import UserError

def buggy(argv):
    try:
        raise UserError("x.csv: no url column 'u'; pass --url-col")
    except UserError:
        return {}["a bug in the handler"]

cli.COMMANDS["buggy"] = ("__main__", "buggy", "")
sys.exit(cli.main(["buggy"]))
"""


def test_a_bug_raised_while_a_user_error_is_handled_keeps_its_traceback():
    result = subprocess.run([sys.executable, "-c", BUG_WHILE_HANDLING], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" in result.stderr and "KeyError: 'a bug in the handler'" in result.stderr


def test_audit_commands_word_a_wrong_dir(files):
    for what in ("summary", "verify"):
        assert_one_line_user_error(openwit("audit", what, str(files / "nowhere")), "no such folder")
        assert_one_line_user_error(openwit("audit", what, str(files)), "not a finished")
