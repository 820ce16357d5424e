"""`openwit hashes export`: the perceptual hashes of an evaluation set, for --decontaminate.

Reads image files under directories (recursively), single image files, and WebDataset
.tar shards (every image member), and writes one Parquet row per image: item, pHash,
sha256, size. An unreadable image gets a row with its error and no hash, so the export
says what it could not cover instead of silently skipping it.
"""
from __future__ import annotations

import glob
import hashlib
import os
import sys
import tarfile
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from openwit.pipeline.common import progress
from openwit.pipeline.common.errors import OneLineParser, UserError
from openwit.pipeline.stages.dedup import HASH_METHOD_KEY
from openwit.pipeline.stages.image import HASH_METHODS, ImageProblem, image_phash

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".jfif", ".avif",
                    ".heic", ".heif", ".ico", ".jp2"}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
HASHES_SCHEMA = pa.schema([
    ("item", pa.string()), ("phash", pa.string()), ("sha256", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("error", pa.string()),
])


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_tar_name(name: str) -> bool:
    return name.lower().endswith(TAR_SUFFIXES)


def images_in(path: str, skipped: list) -> Iterator[tuple[str, object]]:
    """(item name, bytes or an error string) of every image under `path`, in a stable
    (sorted) order. Files under a directory that are neither images nor tars by name go to
    `skipped`, which the command reports."""
    for file in files_in(path, skipped):
        yield from images_of(file)


def files_in(path: str, skipped: list) -> list[str]:
    """The image and tar files under `path` (itself, if a file), sorted; listing them first
    gives the progress display its total."""
    if not os.path.isdir(path):
        return [path]
    found = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            (found if is_tar_name(name) or is_image_name(name) else skipped).append(full)
    return found


def images_of(file: str) -> Iterator[tuple[str, object]]:
    """(item, bytes or an error string) of one image file, or of every image in one tar."""
    if is_tar_name(file):
        yield from tar_images(file)
        return
    try:
        with open(file, "rb") as f:
            yield file, f.read()
    except OSError as err:
        yield file, f"unreadable: {err}"


def tar_images(path: str) -> Iterator[tuple[str, object]]:
    """Image members of a (possibly compressed) tar; a broken tar is one error row."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in sorted(tar.getmembers(), key=lambda m: m.name):
                if member.isfile() and is_image_name(member.name):
                    yield f"{path}/{member.name}", tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        yield path, f"unreadable tar: {type(err).__name__}: {err}"


def hash_row(item: str, data, method: str = "phash") -> dict:
    row = {"item": item, "sha256": None, "phash": None, "width": None, "height": None, "error": None}
    if isinstance(data, str):  # the file or tar could not be read
        row["error"] = data
        return row
    row["sha256"] = hashlib.sha256(data).hexdigest()
    try:
        row["phash"], row["width"], row["height"] = image_phash(data, method=method)
    except ImageProblem as problem:
        row["error"] = f"{problem.reason}: {problem}"
    except Exception as err:  # noqa: BLE001 - one file's failure is its row's error, never the whole export's
        # Named by its type (e.g. IndexError): a bug in a decoder stays visible in the export.
        row["error"] = f"internal_error: {type(err).__name__}: {err}"
    return row


def expand(paths: list[str]) -> list[str]:
    found = []
    for path in paths:
        matches = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
        missing = [m for m in matches if not os.path.exists(m)]
        if not matches or missing:
            raise UserError(f"{path}: no such file or folder; pass the eval set's image folders, image files "
                            "or .tar shards")
        found += matches
    return found


def export_hashes(paths: list[str], output: str, method: str = "phash", skipped=None, show=None) -> pa.Table:
    """Hash every image under `paths` into `output`. `show`: progress.Options for a display
    over the files (a tar is one file; None: no display). No image at all is a user error,
    raised before anything is written."""
    skipped = [] if skipped is None else skipped
    todo = [file for path in expand(paths) for file in files_in(path, skipped)]
    if not todo:
        example = f" (e.g. {skipped[0]})" if skipped else ""
        raise UserError(f"no image or .tar file under {', '.join(paths)}{example}; images are named "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS)[:4])}, ... : pass the folder of the eval set's images")
    rows = []
    with progress.LoopProgress("hashes", len(todo), show or progress.Options(quiet=True)) as shown:
        for file in todo:
            rows += [hash_row(item, data, method) for item, data in images_of(file)]
            shown.advance(images=len(rows))
    # The method travels with the file: hashes of two methods must never be compared.
    table = pa.Table.from_pylist(rows, schema=HASHES_SCHEMA.with_metadata({HASH_METHOD_KEY: method}))
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    pq.write_table(table, output)
    return table


def main(argv=None) -> int:
    parser = OneLineParser(prog="openwit hashes", description="Perceptual hashes of an eval set.")
    sub = parser.add_subparsers(dest="what", required=True, parser_class=OneLineParser)
    export = sub.add_parser("export", help="hash images (directories, files, .tar shards) into a Parquet file")
    export.add_argument("paths", nargs="+", help="image directories, image files or WebDataset .tar shards")
    export.add_argument("-o", "--output", required=True, help="hashes.parquet to write")
    export.add_argument("--hash-method", choices=tuple(HASH_METHODS), default="phash",
                        help="must match curate's --hash-method")
    progress.add_flags(export)
    args = parser.parse_args(argv)
    if os.path.isdir(args.output):
        raise UserError(f"-o {args.output}: is a folder; give the path of the .parquet file to write")
    skipped = []
    table = export_hashes(args.paths, args.output, args.hash_method, skipped, progress.options_of(args))
    errors = table.column("error").drop_null()
    print(f"{table.num_rows - len(errors)} images hashed, {len(errors)} unreadable (rows with an error) "
          f"-> {args.output}")
    if skipped:
        print(f"{len(skipped)} files skipped, not image or tar names, e.g. {skipped[0]}", file=sys.stderr)
    if table.num_rows == 0:  # only tars without image members
        print("openwit hashes: no images found in the .tar files", file=sys.stderr)
        return 1
    return 0
