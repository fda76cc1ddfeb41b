"""The runner of a run without --runner: Beam's FnApiRunner, on as many cores as the input earns.

`use_the_machine` picks the DirectRunner's running mode and number of workers from the size of the
input (unless the user's own --direct_* options say); `default_runner` makes the FnApiRunner itself,
because Beam 2.77's DirectRunner first tries the Prism runner, a binary it downloads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from apache_beam.runners.runner import PipelineRunner

from transforms.listing import input_pattern

# Without --runner: one SDK worker process per this many input files, up to all cores; an input
# too small for two runs in this process. Two worker processes cost ~6 s of CPU to start and stop
# (each imports Beam and our code): measured on an idle 2-core machine (README "Benchmarks"), 500
# CT files took 12.4-13.5 s either way and 1,000 files 15.5-16.0 s on two workers against 17.5-18.3 s
# in process, so they start from 1,000 files (on busy cores the extra CPU weighs more).
LOCAL_FILES_PER_WORKER = 500
# An input file at least this large (a JPEG-tiled slide of roughly 600 megapixels or more) gets all
# cores whatever the number of files: its tile bands are spread over the worker processes. Measured
# on 2 cores (README "Benchmarks"): a 109 MB 32k x 32k slide ran 37.6 s in process and 31.7 s on two
# workers; a 27 MB 16k x 16k one 15.6 s and 16.2 s.
LOCAL_BIG_INPUT_BYTES = 64 * 1024 * 1024
_DIRECT_MODE = "--direct_running_mode"
_DIRECT_WORKERS = "--direct_num_workers"


def use_the_machine(options: PipelineOptions, argv: Sequence[str], location: str | None) -> None:
    """Local parallelism of a run without --runner, unless the user's own --direct_* options say.

    Neither --direct_running_mode nor --direct_num_workers given: `multi_processing` with one worker
    per LOCAL_FILES_PER_WORKER input files, up to os.cpu_count(), or all cores when one input file
    holds at least LOCAL_BIG_INPUT_BYTES; otherwise one in-process worker (`in_memory`), since worker
    processes would cost more than they save.
    Only a mode given: os.cpu_count() workers for a parallel mode. Only a number of workers given:
    `multi_processing` for more than one. DICOMweb and Healthcare API sources run in process.
    """
    given = {arg.split("=", 1)[0] for arg in argv}
    direct = options.view_as(DirectOptions)
    cores = os.cpu_count() or 1
    if _DIRECT_MODE in given and _DIRECT_WORKERS in given:
        return
    if _DIRECT_MODE in given:
        direct.direct_num_workers = 1 if direct.direct_running_mode == "in_memory" else cores
        return
    if _DIRECT_WORKERS in given:
        workers = direct.direct_num_workers or cores
        direct.direct_running_mode = "multi_processing" if workers > 1 else "in_memory"
        return
    count, largest = _list_inputs(location, cores * LOCAL_FILES_PER_WORKER)
    workers = cores if largest >= LOCAL_BIG_INPUT_BYTES else min(cores, count // LOCAL_FILES_PER_WORKER)
    if workers >= 2:
        direct.direct_running_mode, direct.direct_num_workers = "multi_processing", workers
    else:
        direct.direct_running_mode, direct.direct_num_workers = "in_memory", 1


def _list_inputs(location: str | None, limit: int) -> tuple[int, int]:
    """(how many files --input matches, counting up to `limit`; the largest one's size in bytes);
    (0, 0) when it cannot be listed (the run reports that itself, before any work)."""
    if not location:
        return 0, 0
    try:
        listed = FileSystems.match([input_pattern(location)], limits=[limit])[0].metadata_list
    except Exception:  # noqa: BLE001 - a listing failure is _check_input_matches's to report
        return 0, 0
    return len(listed), max((m.size_in_bytes or 0 for m in listed), default=0)


def default_runner(argv: Sequence[str], options: PipelineOptions) -> PipelineRunner | None:
    """The runner of a run without --runner, else None (the runner --runner names).

    Beam's FnApiRunner, in this process or in `multi_processing` SDK worker processes (the options
    of `use_the_machine`), made here rather than through the DirectRunner: Beam 2.77's DirectRunner
    first tries the Prism runner for every pipeline Prism supports, which downloads a binary, and
    falls back to the BundleBasedDirectRunner (no worker processes) when it cannot. The pipeline
    options go to the worker processes as the DirectRunner sends them.
    """
    if PipelineOptions(list(argv)).view_as(StandardOptions).runner:
        return None
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=provision)
