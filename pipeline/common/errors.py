"""Errors a user made, told as one line (issue 18).

A `UserError` is a mistake in the command line or its files (no input matches a glob, OUT
is a file, an input lacks the url column, a bad option value): the command prints its
message, one line that names the problem and the fix, and exits 2. Anything else is a bug
and keeps its traceback. `openwit --debug ...` (or OPENWIT_DEBUG=1) shows the traceback of
a user error too.

A UserError raised inside a Beam worker reaches the launcher wrapped: re-raised with
" [while running 'Stage']" appended (FnApiRunner in process: still a UserError), or, from a
worker process (--direct_running_mode=multi_processing), as a RuntimeError whose text is the
worker's traceback (fn_runner.py: `raise RuntimeError(result.error)`). `user_message` finds
it in either form. It follows only explicit causes (`raise ... from`), never the exception
being handled when another was raised: a bug in an `except UserError:` block is a bug.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Optional

DEBUG_ENV = "OPENWIT_DEBUG"
DEBUG_FLAG = "--debug"
EXIT_USAGE = 2
# A traceback text's exception line, e.g. "openwit.pipeline.common.errors.UserError: MESSAGE [while running 'X']"
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*): (.+)$")
# What Beam raises in the launcher for a failed worker process, the worker's traceback as text.
_BEAM_WRAPPERS = (RuntimeError,)
_BEAM_SUFFIX = re.compile(r"(\s*\[while running '[^']*'\])+\s*$")


class UserError(ValueError):
    """A mistake of the user's, with its fix in the message. A ValueError, so that code
    catching bad values (dry run, tests) still does."""


def user_message(err: BaseException) -> Optional[str]:
    """The one-line message of the UserError behind err (itself, its causes, or Beam's
    wrapping of it), or None when err is not a user's error."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, UserError):
            return _one_line(str(err))
        if type(err) in _BEAM_WRAPPERS:
            found = user_error_in_traceback(str(err))
            if found is not None:
                return _one_line(found)
        err = err.__cause__
    return None


def user_error_in_traceback(text: str) -> Optional[str]:
    """The message when the traceback text ends in a UserError: its last exception line is
    the one that ended the worker (a UserError above it is one that was being handled)."""
    for line in reversed(text.splitlines()):
        match = _EXCEPTION_LINE.match(line)
        if match:
            return match.group(2) if match.group(1).rsplit(".", 1)[-1] == "UserError" else None
    return None


def _one_line(message: str) -> str:
    return _BEAM_SUFFIX.sub("", message.strip().splitlines()[0] if message.strip() else message)


def debug_wanted(argv: list[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def report(command: str, err: BaseException, debug: bool) -> Optional[int]:
    """Print a user error as one line and return its exit status; None: not a user error
    (or --debug), and the caller re-raises it with its traceback."""
    message = user_message(err)
    if message is None or debug:
        return None
    print(f"openwit {command}: {message}", file=sys.stderr)
    return EXIT_USAGE


class OneLineParser(argparse.ArgumentParser):
    """argparse that words a bad option as one line (with the pointer to --help) instead of
    the whole usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def check_output_dir(out: str, ledger_dir: str) -> None:
    """A local DIR given to an audit command is a curate output: it has its ledger folder
    (output/layout.py names it). Remote ones are left to the first read."""
    if "://" in out:
        return
    if not os.path.isdir(out):
        raise UserError(f"{out}: no such folder; pass the --output folder of an `openwit curate` run")
    if not os.path.isdir(ledger_dir):
        raise UserError(f"{out} has no {os.path.basename(ledger_dir)}/ folder, so it is not a finished "
                        "`openwit curate` output; pass the --output folder of a finished run")
