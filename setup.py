"""Packaging for openwit.

The repository keeps the required top-level folders (pipeline/, trainer/, schemas/,
query_lists/) and maps them under one `openwit` namespace so their import names
cannot collide with other installed packages. Dataflow's --setup_file builds an sdist
from this file, so it must keep working with plain `python -m build`.
"""
import os

from setuptools import setup

ROOTS = ("pipeline", "trainer", "schemas", "query_lists")


def package_dirs() -> dict:
    """openwit.<root>[.<sub>...] -> folder, for every folder with an __init__.py."""
    dirs = {}
    for root in ROOTS:
        for folder, _, names in sorted(os.walk(root)):
            if "__init__.py" in names:
                dirs["openwit." + folder.replace(os.sep, ".")] = folder
    return dirs


PACKAGE_DIRS = package_dirs()

setup(
    packages=list(PACKAGE_DIRS),
    package_dir=PACKAGE_DIRS,
    package_data={"openwit.query_lists": ["*.txt", "*.txt.gz", "*.json"],
                  "openwit.pipeline.audit": ["explorer_assets/*"]},  # the explorer's page
    include_package_data=True,
)
