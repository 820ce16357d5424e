"""The sdist that Dataflow builds from setup.py (`python -m build`) holds everything a worker
needs: built here, installed into a clean venv, and run from another directory."""
import glob
import os
import subprocess
import sys
import sysconfig
import tarfile

import pyarrow.parquet as pq
import pytest

from openwit.pipeline.demo import web as demo_web
from openwit.pipeline.demo.run import write_web_inputs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build backend comes from this environment (tests never fetch packages)
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(dist), REPO],
                   check=True, capture_output=True)
    (path,) = glob.glob(str(dist / "openwit-*.tar.gz"))
    return path


def test_the_sdist_ships_the_vocabulary_and_every_package(sdist):
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for required in ("setup.py", "pyproject.toml", "query_lists/MANIFEST.json", "pipeline/cli.py",
                     "pipeline/stages/extract.py", "trainer/train.py", "schemas/record.py"):
        assert required in names, required
    assert any(name.startswith("query_lists/") and name.endswith((".txt", ".txt.gz")) for name in names)


def clean_venv(root) -> str:
    """A new venv without openwit; its other dependencies are read from this environment's
    site-packages (a plain path entry: the installed openwit there is shadowed by the venv's)."""
    venv = str(root / "venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    (site,) = glob.glob(os.path.join(venv, "lib", "python*", "site-packages"))
    with open(os.path.join(site, "deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_installed_from_the_sdist_curate_runs_from_another_directory(sdist, tmp_path):
    venv = clean_venv(tmp_path)
    python = os.path.join(venv, "bin", "python")
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
                    "--no-build-isolation", "--quiet", sdist], check=True, capture_output=True)
    where = subprocess.run([python, "-c", "import openwit.pipeline as p; print(p.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert where.startswith(venv), where  # the sdist's copy, not this checkout's or this env's

    web = demo_web.build_web(n_images=30, seed=2)
    work = tmp_path / "elsewhere"
    with demo_web.serve(web.routes) as base_url:
        candidates, _ = write_web_inputs(str(work / "web"), web, base_url)
        # the shipped vocabulary (no --vocab) must come from the installed package
        run = subprocess.run(
            [os.path.join(venv, "bin", "openwit"), "curate", "--input", candidates, "--output", "out",
             "--allow-loopback", "--min-image-size", "32", "--near-dup-distance", "0", "--image-size", "48",
             "--timeout", "5", "--retries", "0"],
            cwd=work, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    kept = sum(pq.read_table(p).num_rows for p in glob.glob(str(work / "out" / "shards" / "*.parquet")))
    assert kept > 10
    assert glob.glob(str(work / "out" / "shards" / "*.tar"))
