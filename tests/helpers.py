"""Helpers several test files share: a small curated output of the demo web, and the `openwit`
command run as a child process or in this process, with the check of a user's-mistake message."""
import contextlib
import os
import subprocess
import sys

from openwit.pipeline.cli import main as cli_main
from openwit.pipeline.demo import web as demo_web
from openwit.pipeline.demo.run import write_web_inputs


@contextlib.contextmanager
def curated_demo(root, n_images, seed, *extra):
    """Curate the demo web of `n_images` (build_web's seed) into ROOT/out (inputs in ROOT/web),
    with curate_args plus `extra`; yields the output path while the web still serves."""
    from test_curate_e2e import curate_args, run_curate  # (imports webdataset: only when used)

    web = demo_web.build_web(n_images=n_images, seed=seed)
    with demo_web.serve(web.routes) as base:
        candidates, vocab = write_web_inputs(str(root / "web"), web, base)
        out = str(root / "out")
        run_curate(curate_args(candidates, vocab, out, *extra))
        yield out


def openwit(*argv, env=None):
    """`openwit ARGV` as a child process (stdout and stderr captured: not a terminal)."""
    return subprocess.run([sys.executable, "-m", "openwit.pipeline.cli", *argv], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def in_process(capsys, *argv):
    """cli.main(argv) -> a result like subprocess.run's (a parser's refusal exits by SystemExit)."""
    try:
        code = cli_main(list(argv))
    except SystemExit as done:
        code = done.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


def assert_one_line_user_error(result, *words):
    """A user's mistake: exit 2, nothing on stdout, one line on stderr naming each of `words`."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
