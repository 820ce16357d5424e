"""Packaging for openwit.

The repository keeps the required top-level folders (pipeline/, trainer/, schemas/,
query_lists/) and maps them under one `openwit` namespace so their import names
cannot collide with other installed packages. Dataflow's --setup_file builds an sdist
from this file, so it must keep working with plain `python -m build`.
"""
from setuptools import setup

PACKAGE_DIRS = {
    "openwit.pipeline": "pipeline",
    "openwit.pipeline.stages": "pipeline/stages",
    "openwit.trainer": "trainer",
    "openwit.schemas": "schemas",
    "openwit.query_lists": "query_lists",
}

setup(
    packages=list(PACKAGE_DIRS),
    package_dir=PACKAGE_DIRS,
    package_data={"openwit.query_lists": ["*.txt", "*.txt.gz", "*.json"]},
    include_package_data=True,
)
