"""Download throughput: img2dataset's CLI vs openwit's download stage, same server, same URLs,
same run; plus the CPU ceiling (openwit's decode + resize + encode of the same files, no
network) measured in the same run while the server runs.

The server (aiohttp, a separate process, 127.0.0.1 only) serves N distinct JPEGs of realistic
size (640x480, seeded) with 5% faults: 2% 404, 1% 500, 1% truncated bodies and 1% URLs that
never answer (both tools give up at --timeout). Successes/s = images stored / wall seconds.
Goals (issue 5): openwit >= 1.5x img2dataset, and >= 0.8 of the CPU ceiling.

    python bench/bench_download.py [--images 3000] [--timeout 5]
"""
from __future__ import annotations

import argparse
import functools
import glob
import io
import json
import operator
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

import local_server  # bench/local_server.py: this script's directory is on sys.path

IMAGE_SIZE, RESIZE_MODE = 256, "border"


def make_jpeg(index: int) -> bytes:
    """A 640x480 photo-like JPEG: smooth colour fields, shapes and sensor-like noise."""
    rng = np.random.default_rng(index)
    base = np.linspace(0, 1, 640)[None, :, None] * rng.uniform(0, 255, 3) + rng.uniform(0, 80, 3)
    pixels = np.clip(base + rng.normal(0, 12, (480, 640, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y, r = rng.integers(0, 640), rng.integers(0, 480), rng.integers(20, 120)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def fault_of(index: int) -> str:
    return {7: "404", 33: "404", 51: "500", 77: "hang", 90: "truncated"}.get(index % 100, "ok")


def run_img2dataset(urls: str, out: str, timeout: float, processes: int, threads: int) -> tuple[float, int]:
    command = [
        sys.executable, "-m", "img2dataset.main", "--url_list", urls, "--input_format", "parquet",
        "--url_col", "url", "--caption_col", "caption", "--output_format", "webdataset", "--output_folder", out,
        "--processes_count", str(processes), "--thread_count", str(threads), "--image_size", str(IMAGE_SIZE),
        "--resize_mode", RESIZE_MODE, "--timeout", str(timeout), "--retries", "0", "--encode_quality", "95",
        "--number_sample_per_shard", "1000", "--enable_wandb", "False",
    ]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    seconds = time.perf_counter() - start
    successes = sum(json.load(open(p))["successes"] for p in glob.glob(os.path.join(out, "*_stats.json")))
    return seconds, successes


def run_openwit(urls: str, out: str, timeout: float, runner_args: list[str]) -> tuple[float, int]:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from openwit.pipeline.config import parse_curate_args
    from openwit.pipeline.beam.download_fn import DownloadFn
    from openwit.pipeline.beam.graph import read_stage

    # One local host stands in for the whole web: lift the per-host politeness limit to the
    # concurrency (img2dataset has no such limit), or hanging URLs would hold the host's 8 slots.
    cfg, beam_args = parse_curate_args(["--input", urls, "--output", out, "--timeout", str(timeout), "--retries",
                                        "0", "--allow-loopback", "--image-size", str(IMAGE_SIZE), "--resize-mode",
                                        RESIZE_MODE, "--per-host-connections", "64", *runner_args])
    p = beam.Pipeline(options=PipelineOptions(beam_args))
    candidates, _ = read_stage(p, cfg)
    fetched = (candidates | beam.Reshuffle()
               | beam.ParDo(DownloadFn(cfg, os.path.join(out, "staging"))).with_outputs("dropped", main="kept"))
    _ = fetched.kept | beam.combiners.Count.Globally() | beam.io.WriteToText(os.path.join(out, "count"))
    start = time.perf_counter()
    p.run().wait_until_finish()
    seconds = time.perf_counter() - start
    with open(os.path.join(out, "count-00000-of-00001")) as f:
        return seconds, int(f.read())


def _process(data: bytes) -> bool:
    from openwit.pipeline.stages.image import ImageConfig, ProcessedImage, process_image

    return isinstance(process_image(data, ImageConfig(image_size=IMAGE_SIZE, resize_mode=RESIZE_MODE)), ProcessedImage)


def cpu_ceiling(images: list[bytes], workers: int) -> tuple[float, int]:
    good = [data for i, data in enumerate(images) if fault_of(i) == "ok"]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_process, good[:20]))  # warm the workers' imports
        start = time.perf_counter()
        done = sum(pool.map(_process, good, chunksize=16))
    return time.perf_counter() - start, done


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    import resource

    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def measured(run, server_pid: int):
    """(result of run(), client CPU seconds, server CPU seconds)."""
    client, server = own_cpu_seconds(), cpu_seconds(server_pid)
    result = run()
    return result, own_cpu_seconds() - client, cpu_seconds(server_pid) - server


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--img2dataset", default="2x16,2x64,4x32", help="processes x threads configs to try")
    parser.add_argument("--openwit", default="in_memory", help="FnApiRunner modes to try (in_memory, multi_processing)")
    args = parser.parse_args()
    images = [make_jpeg(i) for i in range(args.images)]
    cores = os.cpu_count() or 1
    server, base = local_server.start(functools.partial(operator.getitem, images), fault_of)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            urls = os.path.join(tmp, "urls.parquet")
            pq.write_table(pa.Table.from_pylist(
                [{"url": f"{base}/img/{i}.jpg", "caption": f"image {i}"} for i in range(args.images)]), urls)
            (seconds, done), client, srv = measured(lambda: cpu_ceiling(images, cores), server.pid)
            rows.append(("cpu ceiling (decode+resize+encode, no network)", done / seconds, seconds, done, client, srv))
            for config in args.img2dataset.split(","):
                processes, threads = (int(x) for x in config.split("x"))
                out = os.path.join(tmp, f"i2d-{config}")
                (seconds, done), client, srv = measured(
                    lambda: run_img2dataset(urls, out, args.timeout, processes, threads), server.pid)
                rows.append((f"img2dataset {processes} processes x {threads} threads", done / seconds, seconds, done,
                             client, srv))
            for mode in args.openwit.split(","):
                runner = ["--direct_running_mode", mode] + (["--direct_num_workers", str(cores)]
                                                            if mode == "multi_processing" else [])
                (seconds, done), client, srv = measured(
                    lambda: run_openwit(urls, os.path.join(tmp, f"ow-{mode}"), args.timeout, runner), server.pid)
                rows.append((f"openwit FnApiRunner {mode}", done / seconds, seconds, done, client, srv))
    finally:
        server.terminate()
    print_table(rows, args)


def print_table(rows, args) -> None:
    ceiling = rows[0][1]  # rows: (name, successes/s, seconds, stored, client cpu s, server cpu s)
    best_i2d = max(r[1] for r in rows if r[0].startswith("img2dataset"))
    best_ow = max(r[1] for r in rows if r[0].startswith("openwit"))
    print(f"{args.images} URLs (5% faults, 1% hanging), timeout {args.timeout}s, {os.cpu_count()} cores, "
          f"image {IMAGE_SIZE} {RESIZE_MODE}")
    print(f"{'run':<48}{'successes/s':>12}{'seconds':>9}{'stored':>7}{'vs i2d':>8}{'vs ceil':>8}"
          f"{'client cpu':>11}{'server cpu':>11}{'cores busy':>11}")
    for name, rate, seconds, done, client, srv in rows:
        print(f"{name:<48}{rate:>12.1f}{seconds:>9.1f}{done:>7}{rate / best_i2d:>7.2f}x{rate / ceiling:>7.2f}x"
              f"{client:>10.1f}s{srv:>10.1f}s{(client + srv) / seconds:>11.2f}")
    print(f"goal: openwit >= 1.5x img2dataset: {best_ow / best_i2d:.2f}x {verdict(best_ow >= 1.5 * best_i2d)}")
    print(f"goal: openwit >= 0.8x CPU ceiling: {best_ow / ceiling:.2f}x {verdict(best_ow >= 0.8 * ceiling)}")


if __name__ == "__main__":
    main()
