"""Which output directory (OUT) a curate command may write into, and what it may remove there.

openwit only ever removes or replaces what it wrote itself: the top-level names of
output/layout.py OWNED, in an OUT that carries its mark (OUT/.openwit). Both checks run
before anything is written or removed, for local and remote (gs://, s3://, ...) OUT alike:
- check_place: OUT is not the home folder (or a folder above it), a filesystem root or a
  bucket's root, not an input file, and not a folder above an input.
- check_contents: OUT holds no name openwit did not write, with or without --overwrite.
"""
from __future__ import annotations

import os

from openwit.pipeline.output import files, layout

SHOWN = 5  # foreign names a refusal lists


class OutputConflict(Exception):
    pass


def check_place(out: str, reads: list[str]) -> None:
    """Refuse an OUT whose replacement could reach files that are not openwit's; `reads` are
    the files the command reads (inputs expanded, vocabulary, ...)."""
    where = _resolved(out)
    if _is_root(where):
        raise OutputConflict(f"{out} is the root of a filesystem or bucket; choose an empty folder for --output")
    home = _resolved(os.path.expanduser("~"))
    if not files.is_remote(where) and (where == home or _inside(home, where)):
        raise OutputConflict(f"{out} is your home folder or holds it; choose an empty folder for --output")
    for path in reads:
        if _resolved(path) == where:
            raise OutputConflict(f"{out} is an input file of this command; choose an empty folder for --output")
        if _inside(_resolved(path), where):
            raise OutputConflict(f"{out} holds {path}, an input of this command; an output directory must not "
                                 "contain its inputs: choose an empty folder elsewhere for --output")
    if not files.is_remote(where) and os.path.exists(where) and not os.path.isdir(where):
        raise OutputConflict(f"{out} is a file, not a folder; choose an empty folder for --output")


def check_contents(out: str, names) -> None:
    """Refuse an OUT holding anything openwit did not write: it is never removed or replaced."""
    foreign = layout.foreign_names(names) if names else []
    if not foreign:
        return
    listed = ", ".join(foreign[:SHOWN]) + (f" and {len(foreign) - SHOWN} more" if len(foreign) > SHOWN else "")
    raise OutputConflict(f"{out} holds files openwit did not write ({listed}); openwit never removes or replaces "
                         "them, with or without --overwrite: choose an empty folder for --output")


def _resolved(path: str) -> str:
    """A local path absolute with symlinks resolved (what a removal would reach); a remote
    one without trailing slashes. "~" is not expanded: the shell does that, and openwit
    would write a folder literally named "~"."""
    if files.is_remote(path):
        return path.rstrip("/")
    return os.path.realpath(path)


def _is_root(where: str) -> bool:
    if files.is_remote(where):  # scheme://bucket: the whole bucket
        return "/" not in where.split("://", 1)[1]
    return os.path.dirname(where) == where


def _inside(path: str, folder: str) -> bool:
    if files.is_remote(path) != files.is_remote(folder):
        return False
    if files.is_remote(path):
        return path.startswith(folder + "/")
    return os.path.commonpath([path, folder]) == folder
