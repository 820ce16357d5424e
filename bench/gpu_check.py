"""GPU readiness in one command (issue 21): every CUDA path of the trainer, checked on shards
made on the spot, one table out.

    python bench/gpu_check.py --json gpu_check.json            # one GPU: ViT-B/32, bf16 (<= 8 min on an H200)
    python bench/gpu_check.py --cpu-smoke --json smoke.json    # the same checks on CPU, tiny shapes (CI)

Nothing is downloaded: `openwit demo --steps 0` curates the embedded synthetic web (served on
127.0.0.1) into shards, which are then repeated (copies of the tars under new names) so that
every loader worker has full batches. Each check is one row, PASS / FAIL / SKIP, with numbers:

- openwit train: samples/s (median after the first steps) and peak GPU memory, at the
  preset's shapes (b32 on GPU: ViT-B/32, bf16 autocast; tiny on CPU);
- open_clip_train.main on the same shards and batch, if bench/setup_openclip.sh's venv exists
  (--openclip-venv; else SKIP: building it downloads ~6 GB, never done at run time);
- data wait: the share of step time spent waiting for the loader (goal < 5% on GPU), with
  the worker count;
- --compile: the compiled model's samples/s and its first (compiling) step;
- torchrun path: a 1-process run of `openwit.trainer.train` in the environment torchrun gives
  its worker, through init_process_group (NCCL on GPU, gloo on CPU) and DDP. The rendezvous
  is a file (file://), because torchrun's own launcher opens a TCP store listening on every
  interface; `--real-torchrun` uses the launcher itself (`torch.distributed.run --standalone`);
- loss falls: the first vs the last steps of the throughput run;
- resume: a run stopped halfway and resumed from its checkpoint gives the uninterrupted run's
  losses for the second half.

The device tool's budget is minutes: --budget-s stops starting new checks after that many
seconds (the rest become SKIP rows), so the table always comes back.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import bench_train  # bench/bench_train.py: this script's directory is on sys.path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OPENCLIP_VENV = os.path.join(os.path.dirname(REPO), "openclip-venv")  # setup_openclip.sh's default

# One setting per mode. warmup_steps is short in both: the checks run tens of steps, and the
# b32 preset's 2,000-step warmup would leave the learning rate near 0 (no falling loss).
MODES = {
    "gpu": dict(device="cuda", config="b32", precision="bf16", batch_size=256, images=2000, steps=60, skip=10,
                compile_steps=40, resume_steps=6, ddp_steps=10, warmup_steps=10, lr=5e-4, loss_drop=0.9,
                resume_rtol=2e-2, workers=None, openclip_model="ViT-B-32"),
    "cpu-smoke": dict(device="cpu", config="tiny", precision="fp32", batch_size=16, images=200, steps=30, skip=5,
                      compile_steps=0, resume_steps=6, ddp_steps=4, warmup_steps=3, lr=1e-3, loss_drop=0.9,
                      resume_rtol=1e-4, workers=1, openclip_model="openwit-tiny"),
}
DATA_WAIT_GOAL = 0.05


@dataclasses.dataclass
class Row:
    check: str
    status: str  # PASS, FAIL or SKIP
    result: str = ""  # the headline number, as printed
    detail: str = ""  # how it was measured, or why it was skipped / failed
    numbers: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0  # wall time of the check (the throughput run's three rows share one)


# ------------------------------------------------------------------ shards


def make_shards(work: str, images: int, min_samples: int) -> tuple[str, int, int]:
    """Curate the demo web into shards, then repeat its tars until there are min_samples.
    -> (shards dir, samples, copies)."""
    curated = bench_train.demo_shards(work, images)
    sizes = json.load(open(os.path.join(curated, "sizes.json")))
    samples = sum(sizes.values())
    copies = max(1, math.ceil(min_samples / samples))
    shards = os.path.join(work, "shards")
    os.makedirs(shards)
    repeated = {}
    for copy in range(copies):
        for name, count in sorted(sizes.items()):
            target = f"c{copy:03d}-{name}"
            shutil.copyfile(os.path.join(curated, name), os.path.join(shards, target))
            repeated[target] = count
    with open(os.path.join(shards, "sizes.json"), "w") as f:
        json.dump(repeated, f)
    return shards, samples * copies, copies


# ------------------------------------------------------------------ runs


def config(mode: dict, shards: str, output: str, **overrides):
    from openwit.trainer.config import TrainConfig, preset

    values = preset(mode["config"])
    values.update(shards=shards, output=output, device=mode["device"], precision=mode["precision"],
                  batch_size=mode["batch_size"], num_workers=mode["workers"], warmup_steps=mode["warmup_steps"],
                  lr=mode["lr"], steps=mode["steps"], log_every=10 ** 9)
    values.update(overrides)
    return TrainConfig(**values)


def run_in_process(cfg) -> dict:
    """Train here; -> losses, the per-step log and the peak GPU memory (GiB, None on CPU)."""
    import torch

    from openwit.trainer.train import train

    cuda = cfg.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = train(cfg)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None
    log = [json.loads(line) for line in open(cfg.output + ".jsonl")]
    return {"losses": result.losses, "log": [r for r in log if "loss" in r], "peak_gib": peak}


def rate_after(log: list[dict], skip: int) -> float:
    return statistics.median(r["samples_per_s"] for r in log[skip:])


def data_wait_share(log: list[dict], skip: int) -> float:
    """Seconds waited for data over seconds of the steps, after the first `skip` steps. Each
    log line has the step's samples/s and its waiting fraction; the batch is the same in all."""
    steps = log[skip:]
    seconds = [1 / r["samples_per_s"] for r in steps]  # per sample: the batch size cancels
    return sum(s * r["data_wait"] for s, r in zip(seconds, steps)) / sum(seconds)


def losses_fall(losses: list[float], drop: float) -> tuple[bool, float, float]:
    """The mean of the last 5 steps is at most `drop` x the mean of the first 5."""
    first, last = statistics.fmean(losses[:5]), statistics.fmean(losses[-5:])
    return last <= drop * first, first, last


# ------------------------------------------------------------------ checks


def check_throughput(mode, shards, work) -> tuple[list[Row], dict]:
    cfg = config(mode, shards, os.path.join(work, "eager.pt"))
    run = run_in_process(cfg)
    rate = rate_after(run["log"], mode["skip"])
    peak = run["peak_gib"]
    rows = [Row("openwit train", "PASS", f"{rate:.0f} samples/s" + (f", peak {peak:.1f} GiB" if peak else ""),
                f"{mode['config']} preset, batch {cfg.batch_size}, {cfg.precision}, median of steps "
                f"{mode['skip']}..{cfg.steps - 1}", {"samples_per_s": rate, "peak_gib": peak})]
    wait = data_wait_share(run["log"], mode["skip"])
    numbers = {"data_wait": wait, "workers": cfg.num_workers}
    if mode["device"] == "cuda":
        status = "PASS" if wait < DATA_WAIT_GOAL else "FAIL"
        detail = f"goal < {DATA_WAIT_GOAL:.0%}, {cfg.num_workers} loader workers"
    else:
        status = "SKIP"
        detail = (f"the < {DATA_WAIT_GOAL:.0%} goal is for a GPU; on CPU model and loader share the cores "
                  f"({cfg.num_workers} worker)")
    rows.append(Row("data wait", status, f"{wait:.1%} ({cfg.num_workers} workers)", detail, numbers))
    fell, first, last = losses_fall(run["losses"], mode["loss_drop"])
    rows.append(Row("loss falls", "PASS" if fell else "FAIL", f"{first:.3f} -> {last:.3f}",
                    f"mean of the first 5 vs the last 5 of {len(run['losses'])} steps; pass: last <= "
                    f"{mode['loss_drop']} x first", {"first": first, "last": last, "steps": len(run["losses"])}))
    return rows, {"samples_per_s": rate}


def check_compile(mode, shards, work, eager_rate: float) -> Row:
    if not mode["compile_steps"]:
        return Row("--compile", "SKIP", "", "torch.compile on CPU spends minutes compiling (measured: about 3 min "
                   "for 12 steps of the tiny model on 2 cores; docs/performance.md); run on a GPU, or --cpu-compile")
    steps = mode["compile_steps"]
    cfg = config(mode, shards, os.path.join(work, "compiled.pt"), compile=True, steps=steps)
    run = run_in_process(cfg)
    rate = rate_after(run["log"], min(mode["skip"], steps // 2))
    first_step = cfg.batch_size / run["log"][0]["samples_per_s"]
    return Row("--compile", "PASS", f"{rate:.0f} samples/s ({rate / eager_rate:.2f}x eager)",
               f"first step (compiling) {first_step:.0f} s; median of steps {min(mode['skip'], steps // 2)}.."
               f"{steps - 1}", {"samples_per_s": rate, "speedup": rate / eager_rate, "first_step_s": first_step,
                                "peak_gib": run["peak_gib"]})


def check_resume(mode, shards, work) -> Row:
    """Uninterrupted N steps vs N/2 steps, stopped (checkpoint saved), then resumed to N."""
    from openwit.trainer.train import train

    steps = mode["resume_steps"]
    half = steps // 2
    whole = train(config(mode, shards, os.path.join(work, "whole.pt"), steps=steps)).losses
    stopped = os.path.join(work, "stopped.pt")
    train(config(mode, shards, stopped, steps=steps), stop_at=half)
    resumed_cfg = config(mode, shards, os.path.join(work, "resumed.pt"), steps=steps, resume=stopped)
    resumed = train(resumed_cfg).losses
    import torch

    step = torch.load(resumed_cfg.output, map_location="cpu", weights_only=True)["step"]
    differences = [abs(a - b) / abs(b) for a, b in zip(resumed[half:], whole[half:])]
    worst = max(differences) if differences else math.inf
    ok = step == steps and len(resumed) == steps and worst <= mode["resume_rtol"]
    return Row("resume", "PASS" if ok else "FAIL", f"max rel. diff {worst:.1e}",
               f"stopped at step {half}, resumed to {step}; losses of steps {half}..{steps - 1} vs the "
               f"uninterrupted run (pass: <= {mode['resume_rtol']:.0e})",
               {"resumed_losses": resumed[half:], "whole_losses": whole[half:], "max_rel_diff": worst,
                "final_step": step, "steps": steps})


def check_torchrun(mode, shards, work, real_torchrun: bool, timeout: float) -> Row:
    """One process through init_process_group and DDP, launched as a separate program."""
    output = os.path.join(work, "ddp.pt")
    flags = ["--config", mode["config"], "--shards", shards, "--output", output, "--device", mode["device"],
             "--precision", mode["precision"], "--batch-size", str(mode["batch_size"]), "--steps",
             str(mode["ddp_steps"]), "--warmup-steps", str(mode["warmup_steps"]), "--num-workers",
             str(mode["workers"]), "--log-every", "1"]
    env = dict(os.environ)
    if real_torchrun:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                   "-m", "openwit.trainer.train", *flags]
        how = "torch.distributed.run --standalone --nproc_per_node 1"
    else:
        # What torchrun puts in its worker's environment; the rendezvous is a file, not TCP.
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", GROUP_RANK="0",
                   TORCHELASTIC_RUN_ID="gpu-check", MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo")
        command = [sys.executable, "-m", "openwit.trainer.train", *flags,
                   "--dist-init-method", f"file://{os.path.join(work, 'rendezvous')}"]
        how = "torchrun's worker environment, file:// rendezvous"
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return Row("torchrun path", "FAIL", "timeout", f"{how}: over {timeout:.0f} s")
    seconds = time.perf_counter() - start
    backend = "nccl" if mode["device"] == "cuda" else "gloo"
    log = done.stdout + done.stderr
    marker = f"(DDP, {backend})"
    step = None
    if done.returncode == 0 and os.path.exists(output):
        import torch

        step = torch.load(output, map_location="cpu", weights_only=True)["step"]
    ok = done.returncode == 0 and marker in log and step == mode["ddp_steps"]
    detail = f"{how}; {mode['ddp_steps']} steps in {seconds:.0f} s"
    if not ok:
        detail += f"; rc {done.returncode}, saw {marker!r}: {marker in log}, checkpoint step {step}; " + log[-600:]
    return Row("torchrun path", "PASS" if ok else "FAIL", f"1 process, DDP {backend}", detail,
               {"returncode": done.returncode, "ddp": marker in log, "final_step": step, "seconds": seconds})


def check_openclip(mode, shards, work, venv: str, eager_rate: float, timeout_steps: int) -> Row:
    if not os.path.exists(os.path.join(venv, "bin", "python")):
        return Row("open_clip_train.main", "SKIP", "", f"no open_clip venv at {venv}: bash bench/setup_openclip.sh "
                   f"builds it (downloads ~6 GB, never at run time); --openclip-venv DIR")
    try:
        rate = bench_train.openclip_rate(venv, shards, timeout_steps, mode["batch_size"], mode["device"], work,
                                         model=mode["openclip_model"], workers=mode["workers"])
    except Exception as err:  # its failure is a row, not the end of the table
        return Row("open_clip_train.main", "FAIL", "", f"{type(err).__name__}: {str(err)[-600:]}")
    return Row("open_clip_train.main", "PASS", f"{rate:.0f} samples/s (openwit {eager_rate / rate:.2f}x)",
               f"model {mode['openclip_model']} (77 BPE tokens; openwit: {mode['config']} preset's byte context), "
               f"same shards and batch", {"samples_per_s": rate,
                                                                          "openwit_ratio": eager_rate / rate})


# ------------------------------------------------------------------ main


def environment(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "cpus": os.cpu_count()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def table(rows: list[Row]) -> str:
    lines = [f"{'check':<22}{'status':<7}{'result':<42}{'s':>5}  detail"]
    lines += [f"{r.check:<22}{r.status:<7}{r.result:<42}{r.seconds:>5.0f}  {r.detail}" for r in rows]
    return "\n".join(lines)


def run_checks(mode: dict, args, work: str) -> list[Row]:
    start = time.perf_counter()
    rows: list[Row] = []
    workers = mode["workers"]
    # Every worker needs a few full batches per epoch: it batches its own shards.
    shards, samples, copies = make_shards(work, mode["images"], min_samples=4 * workers * mode["batch_size"])
    rows.append(Row("shards", "PASS", f"{samples} samples", f"openwit demo --images {mode['images']} --steps 0, "
                    f"tars repeated {copies}x; {time.perf_counter() - start:.0f} s", {"samples": samples}))
    rows[-1].seconds = time.perf_counter() - start
    throughput_start = time.perf_counter()
    throughput, numbers = check_throughput(mode, shards, work)
    for row in throughput:
        row.seconds = time.perf_counter() - throughput_start
    rows += throughput
    eager = numbers["samples_per_s"]
    checks = [
        ("--compile", lambda: check_compile(mode, shards, work, eager)),
        ("resume", lambda: check_resume(mode, shards, work)),
        ("torchrun path", lambda: check_torchrun(mode, shards, work, args.real_torchrun,
                                                 timeout=max(60.0, args.budget_s / 3))),
        ("open_clip_train.main", lambda: check_openclip(mode, shards, work, args.openclip_venv, eager, mode["steps"])),
    ]
    for name, check in checks:
        spent = time.perf_counter() - start
        if spent > args.budget_s:
            rows.append(Row(name, "SKIP", "", f"time budget: {spent:.0f} s spent of --budget-s {args.budget_s:.0f}"))
            continue
        check_start = time.perf_counter()
        try:
            rows.append(check())
        except Exception as err:  # one broken check must not hide the others
            rows.append(Row(name, "FAIL", "", f"{type(err).__name__}: {str(err)[-600:]}"))
        rows[-1].seconds = time.perf_counter() - check_start
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="all checks on CPU with tiny shapes (CI)")
    parser.add_argument("--json", default="", help="also write the table as JSON to this file")
    parser.add_argument("--openclip-venv", default=DEFAULT_OPENCLIP_VENV)
    parser.add_argument("--workers", type=int, default=None, help="loader workers (GPU default: CPUs - 2, at most 12)")
    parser.add_argument("--real-torchrun", action="store_true",
                        help="launch with torch.distributed.run (its TCP store listens on every interface)")
    parser.add_argument("--cpu-compile", action="store_true", help="also run the --compile check on CPU (minutes)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no new check after this many seconds")
    parser.add_argument("--work", default="", help="keep the shards and checkpoints here (default: a temp dir)")
    args = parser.parse_args(argv)
    mode = dict(MODES["cpu-smoke" if args.cpu_smoke else "gpu"])
    if args.workers is not None:
        mode["workers"] = args.workers
    elif mode["workers"] is None:
        mode["workers"] = max(1, min(12, (os.cpu_count() or 4) - 2))
    if args.cpu_compile:
        mode["compile_steps"] = 12
    if mode["device"] == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: torch sees no CUDA device; --cpu-smoke runs the checks on CPU")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or tmp
        os.makedirs(work, exist_ok=True)
        if glob.glob(os.path.join(work, "*")):
            raise SystemExit(f"gpu_check: --work {work} is not empty")
        rows = run_checks(mode, args, work)
    seconds = time.perf_counter() - start
    print(table(rows))
    print(f"{'cpu-smoke' if args.cpu_smoke else 'gpu'} mode, {seconds:.0f} s, {environment(mode['device'])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mode": "cpu-smoke" if args.cpu_smoke else "gpu", "seconds": seconds,
                       "environment": environment(mode["device"]), "settings": mode,
                       "rows": [dataclasses.asdict(r) for r in rows]}, f, indent=1)
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
