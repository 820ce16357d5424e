"""openwit's own Beam pipeline options: how a run executes, never what it produces.

They are not CurateConfig fields on purpose: a receipt is keyed by the settings that could
change a download's result, and the output's fingerprint by the config, so the number of
fetch workers must change neither (a rerun on a bigger machine reuses everything).
"""
from __future__ import annotations

import os

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

LOCAL_RUNNERS = {"FnApiRunner", "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner"}


class FetchOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--fetch_workers", type=int, default=0,
            help="openwit: processes that download and process images beside each Beam worker; 0 (auto): "
                 "one per core on a local in_memory run, 1 (in the Beam worker itself) on other runners "
                 "and in multi_processing mode, whose workers are processes already")


def usable_cores() -> int:
    """The cores this process may run on (taskset and cgroup pinning included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def fetch_workers(options: PipelineOptions) -> int:
    """The number of fetch-worker processes per download DoFn: the flag, or auto."""
    chosen = options.view_as(FetchOptions).fetch_workers
    if chosen < 0:
        raise ValueError(f"--fetch_workers must be >= 0 (0: auto), got {chosen}")
    if chosen:
        return chosen
    if os.name != "posix":  # the workers talk over inherited pipe descriptors
        return 1
    runner = options.view_as(StandardOptions).runner or "FnApiRunner"
    mode = options.view_as(DirectOptions).direct_running_mode or "in_memory"
    local = (runner if isinstance(runner, str) else type(runner).__name__) in LOCAL_RUNNERS
    return usable_cores() if local and mode == "in_memory" else 1
