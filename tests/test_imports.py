"""`openwit curate` never imports torch or webdataset (issue 19: they were 7 s of a 55 s run's
startup, for a shard writer that is a few lines of tarfile). Only `--score-model` needs torch.

The command runs as a child process with a guard installed by a sitecustomize.py on PYTHONPATH,
so every Python process the run starts (Beam workers, fetch workers, spawned or forked) carries
it: an import of a forbidden package is written to a log, with the stack that asked for it, and
refused. Refusing makes the controls cheap (no torch is loaded to prove the guard sees it)."""
import os
import subprocess
import sys
import textwrap

import pytest

from openwit.pipeline.demo import web as demo_web
from openwit.pipeline.demo.run import write_web_inputs
from openwit.pipeline.output import layout
from test_curate_e2e import curate_args

FORBIDDEN = ("torch", "webdataset")

GUARD = textwrap.dedent('''
    import os, sys, traceback

    class ForbiddenImports:
        """Logs and refuses an import of a forbidden top-level package, in this process."""
        names = set(os.environ["OPENWIT_TEST_FORBID"].split(","))
        log = os.environ["OPENWIT_TEST_IMPORT_LOG"]

        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in self.names:
                with open(self.log, "a") as f:
                    f.write(f"pid {os.getpid()} imports {fullname}\\n{''.join(traceback.format_stack())}\\n")
                raise ImportError(f"test guard: {fullname} must not be imported here")
            return None

    sys.meta_path.insert(0, ForbiddenImports())
''')


@pytest.fixture
def guarded(tmp_path):
    """-> (env, log path): the environment that installs the guard in every child Python."""
    folder = tmp_path / "guard"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "imports.log"
    env = {**os.environ, "OPENWIT_TEST_FORBID": ",".join(FORBIDDEN), "OPENWIT_TEST_IMPORT_LOG": str(log),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}
    return env, log


def logged(log) -> str:
    return log.read_text() if log.exists() else ""


@pytest.mark.parametrize("name", FORBIDDEN)
def test_the_guard_sees_and_refuses_an_import(guarded, name):
    env, log = guarded
    result = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 1 and "test guard" in result.stderr
    assert f"imports {name}\n" in logged(log)


def test_curate_imports_neither_torch_nor_webdataset(guarded, tmp_path):
    env, log = guarded
    web = demo_web.build_web(n_images=12, seed=6)
    with demo_web.serve(web.routes) as base:
        candidates, vocab = write_web_inputs(str(tmp_path / "web"), web, base)
        out = str(tmp_path / "out")
        result = subprocess.run([sys.executable, "-m", "openwit.pipeline.cli", "curate", "--quiet",
                                 *curate_args(candidates, vocab, out)],
                                capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert logged(log) == ""
    tars = [name for name in os.listdir(layout.shards_dir(out)) if name.endswith(".tar")]
    assert tars  # the run wrote shards: the writer ran without webdataset
