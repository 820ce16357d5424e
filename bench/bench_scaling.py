"""Scaling with cores: whole `openwit curate` vs img2dataset, pinned to 1 core and to all cores,
same local web, same URL list, same run (issue 19).

Images: seeded crops (300-1600 px a side, aspect <= 2.2) of the real photographs of a Debian
wallpaper package (`apt-get install -y mate-backgrounds`: /usr/share/backgrounds/**/*.jpg),
each re-encoded at a web JPEG quality (75-95, moved until the file weighs 50-400 KB; a few
small, smooth crops stay under 50 KB even at 95 with full chroma); cached on disk by seed.
Without the package (or --photos DIR) the bench falls back to synthetic photo-like
sources and says so in its table. Faults, ~4.25%: 2% 404, 1% 500, 1% truncated bodies and
0.25% URLs that never answer (each tool gives up at --timeout).

The server is aiohttp in --server-processes separate processes (sendfile from the cache, one
listening socket on 127.0.0.1), never pinned. Its own ceiling is measured alone ("server
alone": a fetch-only aiohttp client with 64 connections on all cores), so a table can show
that it is not what bounds a tool. Every tool runs in a child process pinned with
sched_setaffinity to the first C cores; CPU % is that child tree's user+system time (os.wait4)
over wall time, the server's from /proc; ms/img is the child's CPU per stored image. The CPU
ceiling is openwit's process_image (decode, resize, encode, hashes) alone in C processes over
the same images, no network.

    python bench/bench_scaling.py                    # 1 core and all cores, 2,500 URLs
    python bench/bench_scaling.py --quick            # ~1 minute idle (2 under load): 120 URLs, timeout 2
    python bench/bench_scaling.py --curve            # 1,2,4,8,16 cores, in at most ~8 minutes
    python bench/bench_scaling.py --cores 1,2 --images 4000 --modes in_memory,multi_processing --json out.json
"""
from __future__ import annotations

import argparse
import asyncio
import glob
import hashlib
import io
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

IMAGE_SIZE, RESIZE_MODE, QUALITY = 256, "border", 95
CONNECTIONS, I2D_THREADS = 64, 32
PHOTO_GLOBS = ("/usr/share/backgrounds/**/*.jpg", "/usr/share/wallpapers/**/*.jpg")
CACHE_ROOT = os.path.join(tempfile.gettempdir(), "openwit-bench-scaling")
MIN_BYTES, MAX_BYTES = 50_000, 400_000
CURVE_CORES, CURVE_BUDGET_S = (1, 2, 4, 8, 16), 8 * 60
# Goals of issue 19, measured in one run.
GOAL_SCALING, GOAL_VS_I2D, GOAL_VS_CEILING = 1.7, 2.0, 0.8
NOUNS = ("flower", "meadow", "garden", "forest", "river", "mountain", "beach", "desert", "storm", "animal",
         "elephant", "insect", "tree", "leaf", "field", "sky", "rain", "wood", "lake", "valley")
ADJECTIVES = ("beautiful", "green", "yellow", "quiet", "bright", "dark", "wild", "old", "small", "large")


# ---------------------------------------------------------------- the images

def fault_of(index: int) -> str:
    if index % 400 == 50:  # one early, so that --quick has one too
        return "hang"
    return {7: "404", 33: "404", 51: "500", 90: "truncated"}.get(index % 100, "ok")


def photo_paths(photos_dir: str | None) -> list[str]:
    """Real photographs: every JPEG of the wallpaper folders, one per picture (a wallpaper package
    ships some pictures at several resolutions, named NAME_WxH.jpg; the plain NAME.jpg is kept)."""
    patterns = [os.path.join(photos_dir, "**", "*.jpg")] if photos_dir else list(PHOTO_GLOBS)
    paths = sorted({p for pattern in patterns for p in glob.glob(pattern, recursive=True)})
    stems = {os.path.splitext(os.path.basename(p))[0] for p in paths}

    def other_size(path: str) -> bool:
        stem = os.path.splitext(os.path.basename(path))[0]
        plain = re.sub(r"_\d+x\d+$", "", stem)
        return plain != stem and plain in stems

    return [p for p in paths if not other_size(p)]


def load_source(path: str | None, index: int) -> Image.Image:
    """A source picture at most 2,400 px a side; synthetic (seeded gradient, blobs and noise) when path is None."""
    if path is None:
        rng = np.random.default_rng(10_000 + index)
        yy, xx = np.mgrid[0:1200, 0:1800] / 1200.0
        pixels = np.stack([np.sin(xx * rng.uniform(1, 6) + c) * np.cos(yy * rng.uniform(1, 6)) for c in range(3)], -1)
        pixels = (pixels * 90 + 128 + rng.normal(0, 10, pixels.shape)).clip(0, 255).astype(np.uint8)
        return Image.fromarray(pixels)
    image = Image.open(path)
    image.draft("RGB", (2400, 2400))
    image = image.convert("RGB")
    image.thumbnail((2400, 2400))
    return image


_SOURCES: list = []


def _init_sources(paths: list) -> None:
    _SOURCES[:] = [load_source(p, i) for i, p in enumerate(paths)]


def make_image(seed: int, index: int) -> bytes:
    """Index's crop: a seeded source, size, place and scale, re-encoded within 50-400 KB."""
    rng = np.random.default_rng([seed, index])
    source = _SOURCES[index % len(_SOURCES)]
    long_side = int(rng.integers(300, 1601))
    short_side = max(300, int(long_side / rng.uniform(1.0, 2.2)))
    w, h = (long_side, short_side) if rng.random() < 0.6 else (short_side, long_side)
    scale = min(source.width / w, source.height / h)
    if scale < 1:  # the crop does not fit: take the whole source's largest box of that aspect
        w, h = int(w * scale), int(h * scale)
    zoom = rng.uniform(1.0, max(1.0, min(1.3, scale)))  # little downscaling: keep the photo's detail
    box_w, box_h = min(source.width, int(w * zoom)), min(source.height, int(h * zoom))
    x, y = int(rng.integers(0, source.width - box_w + 1)), int(rng.integers(0, source.height - box_h + 1))
    crop = source.crop((x, y, x + box_w, y + box_h)).resize((w, h), Image.Resampling.LANCZOS)
    quality, subsampling = int(rng.integers(75, 96)), 2
    while True:  # web qualities: move the quality until the file weighs 50-400 KB
        out = io.BytesIO()
        crop.save(out, format="JPEG", quality=quality, subsampling=subsampling, optimize=bool(index % 2))
        size = out.tell()
        if size > MAX_BYTES and quality > 30:
            quality -= 8
        elif size < MIN_BYTES and quality < 95:
            quality = min(95, quality + 6)
        elif size < MIN_BYTES and subsampling:  # a small, smooth crop: full chroma, as some sites serve
            subsampling = 0
        else:  # within the range, or as close as a web quality gets
            return out.getvalue()


def _write_image(args) -> None:
    seed, index, path = args
    part = f"{path}.{os.getpid()}.part"  # two benches may fill the cache at once
    with open(part, "wb") as f:
        f.write(make_image(seed, index))
    os.replace(part, path)


def build_images(n: int, seed: int, photos_dir: str | None, workers: int) -> tuple[str, str]:
    """(folder of NNNNNN.jpg for every index that serves a body, description of the sources)."""
    paths = photo_paths(photos_dir)
    sources = paths or [None] * 8
    origin = f"{len(paths)} photos from {os.path.commonpath(paths) if paths else '-'}" if paths else \
        "SYNTHETIC sources (no wallpaper photos found: apt-get install -y mate-backgrounds)"
    key = hashlib.sha256(json.dumps([seed, sorted(paths), MIN_BYTES, MAX_BYTES, 3]).encode()).hexdigest()[:12]
    folder = os.path.join(CACHE_ROOT, key)
    os.makedirs(folder, exist_ok=True)
    todo = [(seed, i, image_path(folder, i)) for i in range(n)
            if fault_of(i) in ("ok", "truncated") and not os.path.exists(image_path(folder, i))]
    if todo:
        print(f"  making {len(todo)} images in {folder} ...", file=sys.stderr)
        with ProcessPoolExecutor(workers, initializer=_init_sources, initargs=(sources,)) as pool:
            list(pool.map(_write_image, todo, chunksize=8))
    return folder, origin


def image_path(folder: str, index: int) -> str:
    return os.path.join(folder, f"{index:06d}.jpg")


# ---------------------------------------------------------------- the server

def serve(sock: socket.socket, folder: str) -> None:
    """One server process: aiohttp on the shared listening socket, bodies by sendfile."""
    from aiohttp import web

    async def handle(request):
        index = int(request.match_info["index"])
        fault = fault_of(index)
        if fault == "hang":
            await asyncio.sleep(3600)
        if fault in ("404", "500"):
            return web.Response(status=int(fault), text="no")
        if fault == "truncated":
            with open(image_path(folder, index), "rb") as f:
                body = f.read()
            return web.Response(body=body[: len(body) // 2], content_type="image/jpeg")
        return web.FileResponse(image_path(folder, index), headers={"Content-Type": "image/jpeg"})

    async def main():
        app = web.Application()
        app.router.add_get("/img/{index}.jpg", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock, backlog=1024).start()
        await asyncio.Event().wait()

    asyncio.run(main())


def start_server(folder: str, processes: int) -> tuple[list, str]:
    """(server processes, base URL). Forked children share one listening socket on 127.0.0.1."""
    import multiprocessing

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    context = multiprocessing.get_context("fork")
    servers = [context.Process(target=serve, args=(sock, folder), daemon=True) for _ in range(processes)]
    for server in servers:
        server.start()
    port = sock.getsockname()[1]
    sock.close()
    return servers, f"http://127.0.0.1:{port}"


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the runs (each a pinned child)

def run_pinned(command: list[str], cpus: list[int], server_pids: list[int], env=None) -> dict:
    """Run command pinned to cpus; its wall seconds, CPU seconds and peak RSS (its whole process
    tree, from wait4) and the server's CPU seconds meanwhile."""
    server_before = sum(proc_cpu_seconds(p) for p in server_pids)
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env,
                                 preexec_fn=lambda: os.sched_setaffinity(0, cpus))
        # wait4: the CPU and peak RSS of its whole tree. The RSS includes this bench's own size
        # at the fork (ru_maxrss survives exec), a floor of a few tens of MB here.
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:5])} failed ({child.returncode}):\n{stderr[-3000:]}")
    return {"wall": seconds, "wall_total": seconds, "cpu": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024,
            "server_cpu": sum(proc_cpu_seconds(p) for p in server_pids) - server_before, "stdout": stdout}


def write_inputs(root: str, n: int, base: str) -> tuple[str, str]:
    """(candidates parquet, vocabulary file): English captions, each matching two entries."""
    rows = [{"url": f"{base}/img/{i}.jpg", "page_url": f"{base}/page/{i}",
             "caption": f"a {ADJECTIVES[i % 10]} {NOUNS[i % 20]} near the {NOUNS[(i // 20) % 20]}, photo {i}"}
            for i in range(n)]
    candidates, vocab = os.path.join(root, "candidates.parquet"), os.path.join(root, "vocab.txt")
    pq.write_table(pa.Table.from_pylist(rows), candidates)
    with open(vocab, "w") as f:
        f.write("\n".join(NOUNS + ADJECTIVES) + "\n")
    return candidates, vocab


def run_openwit(root: str, candidates: str, vocab: str, cores: list[int], mode: str, timeout: float,
                server_pids: list[int]) -> dict:
    out = os.path.join(root, f"ow-{mode}-{len(cores)}")
    running_mode, _, fetch = mode.partition("+fetch")  # e.g. in_memory+fetch1: --fetch_workers 1
    runner = ["--direct_running_mode", running_mode] + (["--fetch_workers", fetch] if fetch else [])
    if running_mode == "multi_processing":
        runner += ["--direct_num_workers", str(len(cores))]
    command = [sys.executable, "-m", "openwit.pipeline.cli", "curate", "--input", candidates, "--vocab", vocab,
               "--output", out, "--threshold", "1000000000", "--image-size", str(IMAGE_SIZE), "--resize-mode",
               RESIZE_MODE, "--encode-quality", str(QUALITY), "--timeout", str(timeout), "--retries", "0",
               "--allow-loopback", "--download-concurrency", str(CONNECTIONS),
               # one local host stands in for the whole web: lift the per-host limit to the concurrency
               "--per-host-connections", str(CONNECTIONS), "--quiet", *runner]
    result = run_pinned(command, cores, server_pids)
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    timeouts = sum(r["count"] for r in manifest["drop_reasons"] if "timeout" in r["reason"])
    return {**result, "stored": manifest["funnel"]["image"], "timeouts": timeouts}


def run_img2dataset(root: str, candidates: str, cores: list[int], timeout: float, server_pids: list[int]) -> dict:
    out = os.path.join(root, f"i2d-{len(cores)}")
    n = pq.read_metadata(candidates).num_rows
    per_shard = max(50, min(1000, math.ceil(n / (2 * len(cores)))))  # every process gets shards
    command = [sys.executable, "-m", "img2dataset.main", "--url_list", candidates, "--input_format", "parquet",
               "--url_col", "url", "--caption_col", "caption", "--output_format", "webdataset", "--output_folder",
               out, "--processes_count", str(len(cores)), "--thread_count", str(I2D_THREADS), "--image_size",
               str(IMAGE_SIZE), "--resize_mode", RESIZE_MODE, "--timeout", str(timeout), "--retries", "0",
               "--encode_quality", str(QUALITY), "--number_sample_per_shard", str(per_shard),
               "--enable_wandb", "False"]
    result = run_pinned(command, cores, server_pids, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    stats = [json.load(open(p)) for p in glob.glob(os.path.join(out, "*_stats.json"))]
    timeouts = sum(c for s in stats for msg, c in s.get("status_dict", {}).items() if "timed out" in msg.lower())
    return {**result, "stored": sum(s["successes"] for s in stats), "timeouts": timeouts}


def run_ceiling(root: str, folder: str, n: int, cores: list[int], server_pids: list[int]) -> dict:
    paths = os.path.join(root, "good.txt")
    with open(paths, "w") as f:
        f.write("\n".join(image_path(folder, i) for i in range(n) if fault_of(i) == "ok"))
    result = run_pinned([sys.executable, __file__, "--child-ceiling", paths, str(len(cores))], cores, server_pids)
    inner = json.loads(result["stdout"].strip().splitlines()[-1])
    # the pool's own seconds (imports and warm-up excluded), so the ceiling is the work alone
    return {**result, "wall": inner["seconds"], "stored": inner["done"], "timeouts": 0}


def run_server_alone(root: str, base: str, n: int, cores: list[int], server_pids: list[int]) -> dict:
    urls = os.path.join(root, "urls.txt")
    with open(urls, "w") as f:
        f.write("\n".join(f"{base}/img/{i}.jpg" for i in range(n) if fault_of(i) == "ok"))
    result = run_pinned([sys.executable, __file__, "--child-fetch", urls], cores, server_pids)
    inner = json.loads(result["stdout"].strip().splitlines()[-1])
    return {**result, "wall": inner["seconds"], "stored": inner["done"], "timeouts": 0}


def _process(path: str) -> bool:
    from openwit.pipeline.stages.image import ImageConfig, ProcessedImage, process_image

    with open(path, "rb") as f:
        data = f.read()
    cfg = ImageConfig(image_size=IMAGE_SIZE, resize_mode=RESIZE_MODE, quality=QUALITY)
    return isinstance(process_image(data, cfg), ProcessedImage)


def child_ceiling(paths_file: str, workers: int) -> None:
    paths = open(paths_file).read().split("\n")
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_process, paths[: 2 * workers]))  # warm the workers' imports
        start = time.perf_counter()
        done = sum(pool.map(_process, paths, chunksize=8))
        print(json.dumps({"seconds": time.perf_counter() - start, "done": done}))


def child_fetch(urls_file: str) -> None:
    """The server's ceiling: fetch every healthy URL, read the body, nothing else."""
    import aiohttp

    urls = open(urls_file).read().split("\n")

    async def main() -> int:
        done, queue = 0, list(reversed(urls))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS)) as session:
            async def worker():
                nonlocal done
                while queue:
                    async with session.get(queue.pop()) as response:
                        body = await response.read()  # before the +=, which would read done first
                    done += len(body) > 0
            await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        return done

    start = time.perf_counter()
    done = asyncio.run(main())
    print(json.dumps({"seconds": time.perf_counter() - start, "done": done}))


# ---------------------------------------------------------------- the table

def row(tool: str, cores: int, result: dict, healthy: int) -> dict:
    wall = result["wall"]
    lost = None if tool.startswith(("cpu ceiling", "server alone")) else healthy - result["stored"]
    return {"tool": tool, "cores": cores, "images_per_s": result["stored"] / wall, "seconds": wall,
            "stored": result["stored"], "healthy_lost": lost, "timeouts": result["timeouts"],
            # CPU over the child's whole life (a ceiling's row times the pool alone, but its CPU is all)
            "cpu_pct": 100 * result["cpu"] / result["wall_total"],
            "server_cpu_pct": 100 * result["server_cpu"] / result["wall_total"],
            # CPU per stored image: what a busy shared machine changes least (startup included)
            "cpu_ms_per_image": 1000 * result["cpu"] / max(1, result["stored"]),
            "peak_rss_mib": result["peak_rss_mib"]}


def healthy_count(n: int) -> int:
    """URLs whose image both tools should store: ok bodies (truncated ones fail to decode)."""
    return sum(fault_of(i) == "ok" for i in range(n))


def rate(rows: list[dict], tool: str, cores: int):
    found = [r["images_per_s"] for r in rows if r["tool"] == tool and r["cores"] == cores]
    return found[0] if found else None


def summarize(rows: list[dict], core_counts: list[int], openwit_tools: list[str]) -> tuple[dict, list[dict]]:
    """(scaling factor per tool from the fewest to the most cores, the issue's goals)."""
    low, high = core_counts[0], core_counts[-1]
    tools = sorted({r["tool"] for r in rows if r["tool"] != "server alone (fetch only)"})
    scaling = {}
    for tool in tools:
        a, b = rate(rows, tool, low), rate(rows, tool, high)
        if a and b and high != low:
            scaling[tool] = {"from_cores": low, "to_cores": high, "factor": b / a,
                             "per_step": {f"{x}->{y}": rate(rows, tool, y) / rate(rows, tool, x)
                                          for x, y in zip(core_counts, core_counts[1:])
                                          if rate(rows, tool, x) and rate(rows, tool, y)}}
    measured = [t for t in openwit_tools if all(rate(rows, t, c) for c in core_counts)] or openwit_tools
    best = max(measured, key=lambda t: rate(rows, t, high) or 0)
    goals = []
    if 1 in core_counts and 2 in core_counts and rate(rows, best, 1) and rate(rows, "img2dataset", 1):
        factor = rate(rows, best, 2) / rate(rows, best, 1)
        goals.append(goal(f"{best}: scaling 1 -> 2 cores >= {GOAL_SCALING}x (img2dataset: "
                          f"{rate(rows, 'img2dataset', 2) / rate(rows, 'img2dataset', 1):.2f}x)",
                          factor, GOAL_SCALING))
    goals.append(goal(f"{best} >= {GOAL_VS_I2D}x img2dataset at {high} cores",
                      rate(rows, best, high) / rate(rows, "img2dataset", high), GOAL_VS_I2D))
    goals.append(goal(f"{best} >= {GOAL_VS_CEILING}x the CPU ceiling at {high} cores",
                      rate(rows, best, high) / rate(rows, "cpu ceiling", high), GOAL_VS_CEILING))
    lost = sum(r["healthy_lost"] for r in rows if r["tool"] in openwit_tools)
    goals.append({"goal": "zero healthy images lost by openwit (all runs; no CPU hog here)", "value": lost,
                  "pass": lost == 0})
    return scaling, goals


def goal(text: str, value: float, threshold: float) -> dict:
    return {"goal": text, "value": value, "pass": value >= threshold}


def print_table(report: dict) -> None:
    cfg = report["config"]
    print(f"{cfg['images']} URLs ({cfg['healthy']} healthy; 4% faults, {cfg['hanging']} hanging), timeout "
          f"{cfg['timeout']} s, {cfg['cpus']} cores here, {cfg['server_processes']} server process(es); "
          f"images: {cfg['images_from']}; {cfg['image_kb_mean']:.0f} KB mean, "
          f"{cfg['image_px_mean']:.0f} px mean longer side")
    print(f"{'tool':<36}{'cores':>6}{'images/s':>10}{'seconds':>9}{'stored':>8}{'lost':>6}{'t/o':>5}"
          f"{'CPU %':>8}{'ms/img':>7}{'server %':>9}{'vs ceil':>8}{'peak RSS':>9}")
    for r in report["rows"]:
        ceiling = rate(report["rows"], "cpu ceiling", r["cores"])
        print(f"{r['tool']:<36}{r['cores']:>6}{r['images_per_s']:>10.1f}{r['seconds']:>9.1f}{r['stored']:>8}"
              f"{'-' if r['healthy_lost'] is None else r['healthy_lost']:>6}{r['timeouts']:>5}{r['cpu_pct']:>8.0f}"
              f"{r['cpu_ms_per_image']:>7.1f}{r['server_cpu_pct']:>9.0f}"
              f"{r['images_per_s'] / ceiling if ceiling else 0:>7.2f}x"
              f"{r['peak_rss_mib']:>8.0f}M")
    for tool, s in report["scaling"].items():
        steps = ", ".join(f"{k}: {v:.2f}x" for k, v in s["per_step"].items())
        print(f"scaling {tool}: {s['from_cores']} -> {s['to_cores']} cores {s['factor']:.2f}x ({steps})")
    for g in report["goals"]:
        value = f"{g['value']:.2f}x" if isinstance(g["value"], float) else str(g["value"])
        print(f"goal: {g['goal']}: {value} {'PASS' if g['pass'] else 'FAIL'}")
    for skipped in report["skipped"]:
        print(f"skipped: {skipped}")


# ---------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", help="comma-separated core counts (default: 1 and all)")
    parser.add_argument("--images", type=int, help="URLs (default 2500; --quick 120; --curve 4000)")
    parser.add_argument("--timeout", type=float, help="both tools' timeout in seconds (default 10; --quick 2)")
    parser.add_argument("--modes", default="in_memory,in_memory+fetch1",
                        help="openwit FnApiRunner modes: in_memory (fetch workers: one per core), "
                             "in_memory+fetchN (--fetch_workers N), multi_processing")
    parser.add_argument("--quick", action="store_true", help="a ~1 minute run that a test can make")
    parser.add_argument("--curve", action="store_true",
                        help=f"cores {','.join(map(str, CURVE_CORES))} (those this machine has) in at most "
                             f"~{CURVE_BUDGET_S // 60} minutes: core counts left when the budget is spent are skipped")
    parser.add_argument("--server-processes", type=int, help="default: 1 per 4 cores")
    parser.add_argument("--photos", help="folder of JPEG photos (default: the wallpaper packages' folders)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the table here as JSON")
    parser.add_argument("--child-ceiling", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--child-fetch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cpus = len(os.sched_getaffinity(0))
    if args.cores:
        args.core_counts = sorted({int(c) for c in args.cores.split(",")})
    elif args.curve:
        args.core_counts = [c for c in CURVE_CORES if c <= cpus]
    else:
        args.core_counts = sorted({1, cpus})
    if max(args.core_counts) > cpus:
        parser.error(f"--cores asks for {max(args.core_counts)} cores; this process may use {cpus}")
    args.images = args.images or (120 if args.quick else 4000 if args.curve else 2500)
    args.timeout = args.timeout or (2.0 if args.quick else 10.0)
    args.server_processes = args.server_processes or max(1, cpus // 4)
    return args


def image_stats(folder: str, n: int) -> tuple[float, float]:
    sizes, sides = [], []
    for i in range(0, n, max(1, n // 200)):
        if fault_of(i) == "ok":
            sizes.append(os.path.getsize(image_path(folder, i)))
            sides.append(max(Image.open(image_path(folder, i)).size))
    return float(np.mean(sizes)) / 1000, float(np.mean(sides))


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child_ceiling:
        return child_ceiling(args.child_ceiling[0], int(args.child_ceiling[1]))
    if args.child_fetch:
        return child_fetch(args.child_fetch)
    all_cpus = sorted(os.sched_getaffinity(0))
    started = time.perf_counter()
    folder, origin = build_images(args.images, args.seed, args.photos, len(all_cpus))
    kb, px = image_stats(folder, args.images)
    healthy = healthy_count(args.images)
    modes = args.modes.split(",")
    openwit_tools = [f"openwit curate {m}" for m in modes]
    servers, base = start_server(folder, args.server_processes)
    server_pids = [s.pid for s in servers]
    rows, skipped, step_seconds = [], [], 0.0
    try:
        with tempfile.TemporaryDirectory() as root:
            candidates, vocab = write_inputs(root, args.images, base)
            alone = run_server_alone(root, base, args.images, all_cpus, server_pids)
            rows.append(row("server alone (fetch only)", len(all_cpus), alone, healthy))
            for c in args.core_counts:
                elapsed = time.perf_counter() - started
                if args.curve and step_seconds and elapsed + step_seconds > CURVE_BUDGET_S:
                    # more cores take less time, so the last step's time bounds the next one's
                    skipped.append(f"{c} cores: {elapsed:.0f} s spent + {step_seconds:.0f} s for the last step "
                                   f"would pass the {CURVE_BUDGET_S} s budget")
                    continue
                step_started = time.perf_counter()
                cpus = all_cpus[:c]
                print(f"  {c} core(s): ceiling, img2dataset, openwit ...", file=sys.stderr)
                rows.append(row("cpu ceiling", c, run_ceiling(root, folder, args.images, cpus, server_pids), healthy))
                rows.append(row("img2dataset", c, run_img2dataset(root, candidates, cpus, args.timeout, server_pids),
                                healthy))
                for mode, tool in zip(modes, openwit_tools):
                    result = run_openwit(root, candidates, vocab, cpus, mode, args.timeout, server_pids)
                    rows.append(row(tool, c, result, healthy))
                step_seconds = time.perf_counter() - step_started
                if args.json:  # what is measured so far survives a failure later in the run
                    with open(args.json, "w") as f:
                        json.dump({"partial": True, "rows": rows}, f, indent=1)
    finally:
        for server in servers:
            server.terminate()
    measured = sorted({r["cores"] for r in rows if r["tool"] == "img2dataset"})
    scaling, goals = summarize(rows, measured, openwit_tools)
    report = {"config": {"images": args.images, "healthy": healthy, "hanging": sum(
        fault_of(i) == "hang" for i in range(args.images)), "timeout": args.timeout, "cpus": len(all_cpus),
        "server_processes": args.server_processes, "images_from": origin, "image_kb_mean": kb, "image_px_mean": px,
        "cores": measured, "modes": modes, "seconds_total": time.perf_counter() - started},
        "rows": rows, "scaling": scaling, "goals": goals, "skipped": skipped}
    print_table(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
