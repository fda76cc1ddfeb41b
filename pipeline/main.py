"""Launcher: parse options, build the pipeline, run it.

`build_pipeline(p, options)` wires the branches and returns their PCollections so tests can assert
on them; `run(argv)` is what `python -m pipeline` and the `deid-pipeline` script call.

`main(argv)` returns the exit status (CONTRACTS.md): 0 when the run completed, even with dead
letters; 2 when it cannot start (one line naming the problem); 1 when it started and could not
finish, with one line and no traceback: "error: no space left on OUTPUT ..." for a full disk
(OSError ENOSPC however Beam wrapped it; Beam's own tracebacks of it are kept off the console),
else the exception's type only. When a local run ends, completed or failed, it removes its own
temporary files: the DICOM files it staged under OUTPUT/.tmp/<run id>/ and its WSI scratch
directory (<scratch>/run-<run id>/); files under dicom/ and wsi/ are only ever renamed into place
whole, so a failed run leaves none partial (the records of a failed run may be missing).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import logging
import sys
import uuid
from collections.abc import Sequence
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
)

from deid.classify import WSI_OUTPUT_SUBTYPE, InputRef
from deid.cloud.healthcare import HealthcareSettings, preflight
from deid.cloud.secrets import access_secret_version, check_secret_version_name
from deid.dicom.policy import profile_policy
from deid.errors import NO_SPACE_MESSAGE, ConfigError, ProfileError
from deid.keys import DeidKey
from deid.records import AuditRecord
from deid.settings import (
    Limits,
    ProfileSettings,
    RedactionSettings,
    RedactRegions,
    RunSettings,
    WsiSettings,
    is_glob,
    split_list,
    split_tag_list,
)
from pipeline.cli import HelpFormatter, configure_logging, log_level_of, program_name
from pipeline.cluster import check_dask_request, dask_runner_if_asked, is_dask_runner
from pipeline.events import event_mode, run_events
from pipeline.local_runner import LOCAL_FILES_PER_WORKER, default_runner, use_the_machine
from pipeline.manifest import new_run_id, write_manifest
from pipeline.options import DeidOptions, check_argv
from pipeline.progress import new_progress_dir, show_progress
from pipeline.summary import summary_or_note
from transforms.common import CountStatuses, DeidOutputs, ToDeadLetters
from transforms.dicom import DeidentifyDicom
from transforms.dicomweb import DicomwebDeidentify
from transforms.files import is_out_of_space, is_out_of_space_text, remove_tree, run_staging_dir
from transforms.healthcare import HealthcareDeidentify
from transforms.listing import ListInputs, admit, input_pattern
from transforms.progress import one, tap, tap_branch
from transforms.qa import WriteQaReport
from transforms.records import WriteRecords, dead_letter_audit, linkage_tables_present
from transforms.review import WriteReviewPage
from transforms.slide_files import run_scratch_location
from transforms.wsi import DeidentifyWsi

_LOG = logging.getLogger("deid")


class PipelineOutputs(NamedTuple):
    """The PCollections `build_pipeline` returns: AuditRecords (ok and dead-letter) and DeadLetterRecords."""

    audit: beam.PCollection
    dead_letters: beam.PCollection


def load_key(options: DeidOptions) -> DeidKey:
    """The run's key, read once here so that an unreadable key stops the run before it starts."""
    if options.deid_key_file and options.deid_key_secret:
        raise ConfigError("--deid_key_file and --deid_key_secret exclude each other; give one")
    if options.deid_key_secret:
        # SecretAccessError is a ConfigError: a 403 or 404 is one line and exit status 2.
        name = check_secret_version_name(options.deid_key_secret)
        return DeidKey.from_bytes(access_secret_version(name, options.secret_manager_endpoint))
    if not options.deid_key_file:
        _LOG.warning(
            "no --deid_key_file given: a random key was made for this run, so pseudonyms, UIDs and "
            "date shifts will not link to other runs"
        )
        return DeidKey.generate()
    try:
        with FileSystems.open(options.deid_key_file) as handle:
            return DeidKey.from_bytes(handle.read())
    except OSError as exc:
        raise ConfigError(f"cannot read --deid_key_file: {type(exc).__name__}") from None


def settings_from_options(options: DeidOptions, key: DeidKey) -> RunSettings:
    """Validate the options and freeze them into the picklable settings workers receive."""
    if not options.output:
        raise ConfigError("--output is required: a local directory or a gs:// prefix")
    sources = [options.input, options.healthcare_source_store, options.dicomweb_source]
    if not any(sources):
        raise ConfigError("--input is required (or --healthcare_source_store / --dicomweb_source)")
    regions = RedactRegions.parse(options.redact_regions)
    wsi = WsiSettings(
        tile_size=options.tile_size,
        tile_overlap=options.tile_overlap,
        label=options.label_macro,
        output_format=options.wsi_output_format,
        jpeg_quality=options.jpeg_quality,
    )
    redaction = RedactionSettings(
        text=options.redact_text,
        fill=options.redact_fill,
        regions=regions,
        scope=options.redact_text_scope,
        review_threshold=options.review_threshold,
    )
    profile = ProfileSettings(
        retain_long_full_dates=options.retain_long_full_dates,
        retain_long_modified_dates=options.retain_long_modified_dates,
        retain_patient_chars=options.retain_patient_chars,
        retain_device_id=options.retain_device_id,
        retain_institution_id=options.retain_institution_id,
        retain_uids=options.retain_uids,
        retain_safe_private=options.retain_safe_private,
        clean_descriptors=options.clean_descriptors,
        clean_graphics=options.clean_graphics,
        unlisted_text=options.unlisted_text,
        safe_private_tags=split_list(options.safe_private_tags),
        keep=split_tag_list(options.keep),
        remove=split_tag_list(options.remove),
        pixel_redaction=redaction.configured,
    )
    try:
        # A --keep/--remove entry that names nothing, or removes what every instance needs, would
        # dead-letter every instance: refuse the run instead.
        profile_policy(profile)
    except ProfileError as exc:
        raise ConfigError(str(exc)) from None
    scratch = options.scratch_location or options.view_as(GoogleCloudOptions).temp_location
    return RunSettings(
        output=options.output,
        # A key from a file or Secret Manager stays out of the job graph: workers read it themselves.
        key_token="" if options.deid_key_file or options.deid_key_secret else key.to_token(),
        key_file=options.deid_key_file or None,
        key_secret=check_secret_version_name(options.deid_key_secret) if options.deid_key_secret else None,
        secret_endpoint=options.secret_manager_endpoint or "",
        profile=profile,
        wsi=wsi,
        redaction=redaction,
        limits=Limits(max_pixels=options.max_pixels, max_file_bytes=options.max_file_bytes),
        linkage=bool(options.linkage_output),
        scratch_location=scratch,
        input_root=None if not options.input or is_glob(options.input) else options.input,
        qa_report=options.qa_report,
        review_sample_rate=options.review_sample_rate,
    )


class _ByKind(beam.PartitionFn):
    """InputRef -> 0 for DICOM, 1 for slides (unknown kinds were dead-lettered by `admit`)."""

    def partition_for(self, element: object, num_partitions: int, *args: object, **kwargs: object) -> int:
        return 1 if getattr(element, "kind", "") == "wsi" else 0


def build_pipeline(p: beam.Pipeline, options: PipelineOptions, settings: RunSettings | None = None) -> PipelineOutputs:
    """Wire listing, the DICOM and WSI branches, and the audit/dead-letter/linkage writers."""
    deid_options = options.view_as(DeidOptions)
    if settings is None:
        settings = settings_from_options(deid_options, load_key(deid_options))
    branches: list[DeidOutputs] = []
    dead_letters: list[beam.PCollection] = []

    dicom_refs = None
    wsi: DeidOutputs | None = None
    if deid_options.input:
        refs, unreadable = p | "ListInputs" >> ListInputs(deid_options.input, settings.output, settings)
        admitted = refs | "Admit" >> beam.Map(admit, settings.limits.max_file_bytes).with_exception_handling(
            main_tag="admitted", dead_letter_tag="refused"
        )
        dead_letters += [unreadable, admitted["refused"] | "Refused" >> ToDeadLetters()]
        tap(refs, "ProgressListed", settings.progress_dir, one("listed"))
        for label, failed in (("ProgressUnreadable", unreadable), ("ProgressRefused", admitted["refused"])):
            tap(failed, label, settings.progress_dir, one("dead_letter"))
        tap(unreadable, "ProgressUnreadableListed", settings.progress_dir, one("listed"))
        dicom_refs, wsi_refs = admitted["admitted"] | "ByKind" >> beam.Partition(_ByKind(), 2)
        if not _cloud_takes_dicom(deid_options):
            branches.append(dicom_refs | "Dicom" >> DeidentifyDicom(settings))
        wsi = wsi_refs | "Wsi" >> _wsi_branch(settings)
        tap_branch(wsi, "ProgressWsi", settings.progress_dir)  # DICOM instances count themselves
        branches.append(wsi)
    if wsi is not None and deid_options.healthcare_source_store and settings.wsi.output_format != "tiff":
        # Slides written as DICOM VL Whole Slide Microscopy go to the source store with the DICOM inputs.
        wsi_instances = wsi.audit | "WsiDicomOutputs" >> beam.FlatMap(wsi_dicom_outputs, settings.output)
        dicom_refs = (
            (dicom_refs, wsi_instances) | "DicomAndWsiInstances" >> beam.Flatten()
            if dicom_refs is not None
            else wsi_instances
        )
    branches += _cloud_branches(p, deid_options, settings, dicom_refs)

    all_dead = ([b.dead_letters for b in branches] + dead_letters) | "AllDeadLetters" >> beam.Flatten()
    audit = (
        [b.audit for b in branches] + [all_dead | "DeadLetterAudit" >> beam.Map(dead_letter_audit)]
    ) | "AllAudit" >> beam.Flatten()
    _ = audit | "CountStatuses" >> CountStatuses()

    records: dict[str, beam.PCollection] = {"audit": audit, "dead_letter": all_dead}
    if deid_options.linkage_output:
        records["linkage"] = [b.linkage for b in branches] | "AllLinkage" >> beam.Flatten()
    _ = records | "WriteRecords" >> WriteRecords(settings.output, settings.run_id, deid_options.linkage_output)
    if settings.qa_report:
        entries = [b.qa for b in branches if b.qa is not None] or [p | "NoQaEntries" >> beam.Create([])]
        qa = entries | "AllQaEntries" >> beam.Flatten()
        _ = (audit, qa, all_dead) | "WriteQaReport" >> WriteQaReport(settings.output)
    if _may_hold(settings):
        _ = audit | "WriteReviewPage" >> WriteReviewPage(settings.output)
    return PipelineOutputs(audit=audit, dead_letters=all_dead)


def _may_hold(settings: RunSettings) -> bool:
    """Whether this run can hold an input for review (uncertain text, or a sample of clean outputs)."""
    redaction = settings.redaction
    return (redaction.review_threshold > 0 and redaction.text != "off") or settings.review_sample_rate > 0


def wsi_dicom_outputs(record: AuditRecord, output: str) -> list[InputRef]:
    """AuditRecord of a written slide -> InputRefs of its DICOM instances under OUTPUT/wsi/.

    subtype 'wsi-output' tells the Healthcare branch that these are outputs, not inputs: they are
    stored and de-identified, but the slide already has its own audit record.
    """
    if record.status != "ok":
        return []
    return [
        InputRef(
            path=FileSystems.join(output, *rel.split("/")),
            size=0,
            sha256=record.input_sha256,
            kind="dicom",
            subtype=WSI_OUTPUT_SUBTYPE,
        )
        for rel in record.outputs
        if rel.startswith("wsi/") and rel.endswith(".dcm")
    ]


# --- Cloud branches (Healthcare API, DICOMweb servers): transforms/healthcare.py, transforms/dicomweb.py ---
def _cloud_takes_dicom(options: DeidOptions) -> bool:
    """DICOM inputs go to the Healthcare API (stored, then de-identified there) or, de-identified here,
    to a --dicomweb_destination server instead of under OUTPUT."""
    return bool(options.healthcare_source_store or options.dicomweb_destination)


def _cloud_branches(
    p: beam.Pipeline, options: DeidOptions, settings: RunSettings, dicom_refs: beam.PCollection | None
) -> list[DeidOutputs]:
    branches: list[DeidOutputs] = []
    healthcare = HealthcareSettings.from_options(options)
    if healthcare is not None:
        source = dicom_refs if dicom_refs is not None else p
        branches.append(source | "Healthcare" >> HealthcareDeidentify(healthcare, settings.limits))
        tap_branch(branches[-1], "ProgressHealthcare", settings.progress_dir)
    if options.dicomweb_source or options.dicomweb_destination:
        local = dicom_refs if dicom_refs is not None and healthcare is None else p
        branches.append(
            local | "Dicomweb" >> DicomwebDeidentify(settings, options.dicomweb_source, options.dicomweb_destination)
        )
    return branches


def _preflight_cloud(options: DeidOptions) -> None:
    """One-line ConfigErrors (bad store name, missing store, expired token, 403) before the run."""
    healthcare = HealthcareSettings.from_options(options)
    if healthcare is not None:
        preflight(healthcare)


# --- end of cloud branches ---


def _wsi_branch(settings: RunSettings) -> beam.PTransform:
    return DeidentifyWsi(settings)


def _check_output_writable(output: str) -> None:
    # Named like every staging file (`.part`): on the Terraform deployment the worker may delete only those.
    probe = FileSystems.join(output, ".tmp", f"probe-{uuid.uuid4().hex}.part")
    try:
        with FileSystems.create(probe) as handle:
            handle.write(b"")
        FileSystems.delete([probe])
    except (OSError, beam.io.filesystem.BeamIOError) as exc:
        if is_out_of_space(exc):
            raise ConfigError("no space left on OUTPUT; free space and run again") from None
        raise ConfigError(f"--output is not writable ({type(exc).__name__}); check the path and permissions") from None


def _check_linkage_is_new(prefix: str | None) -> None:
    """On an object store linkage tables are never replaced (`transforms.files.write_record`): a
    --linkage_output that already holds them is refused before any work, not at the run's end."""
    if not prefix:
        return
    try:
        present = linkage_tables_present(prefix)
    except (OSError, beam.io.filesystem.BeamIOError) as exc:
        raise ConfigError(
            f"--linkage_output cannot be listed ({type(exc).__name__}); check the path and permissions"
        ) from None
    if present:
        raise ConfigError(
            "--linkage_output already holds linkage tables, which are never replaced on Cloud Storage; "
            "give this run its own prefix (for example gs://<linkage bucket>/<job name>/)"
        )


def _check_input_matches(location: str | None) -> None:
    """An --input that matches nothing is a typo, not an empty run: refuse it before any work."""
    if not location:
        return
    try:
        found = FileSystems.match([input_pattern(location)], limits=[1])[0].metadata_list
    except (OSError, beam.io.filesystem.BeamIOError) as exc:
        raise ConfigError(f"--input cannot be listed ({type(exc).__name__}); check the path and permissions") from None
    if not found:
        raise ConfigError("--input matches no file; check the path or pattern")


def pipeline_options_from_argv(argv: Sequence[str]) -> PipelineOptions:
    """Beam's options for `argv`; a malformed DeidOptions value raises ConfigError.

    Without --runner the run is local (`default_runner`), on all cores when the input is large
    enough (`use_the_machine`).
    """
    check_argv(argv)
    options = PipelineOptions(list(argv))
    standard = options.view_as(StandardOptions)
    deid_options = options.view_as(DeidOptions)
    if not standard.runner:
        standard.runner = "DirectRunner"
        # An event run's --input is watched, not listed: its files today say nothing of its size.
        use_the_machine(options, argv, None if event_mode(deid_options) else deid_options.input)
    local = standard.runner in StandardOptions.LOCAL_RUNNERS or is_dask_runner(standard.runner)
    uses_gcs = any(
        (value or "").startswith("gs://")
        for value in (deid_options.input, deid_options.output, deid_options.linkage_output, deid_options.deid_key_file)
    )
    if local and not uses_gcs and not deid_options.healthcare_source_store:
        # Nothing here talks to Google: skip Beam's credential lookup, which retries for ~26 s offline.
        options.view_as(GoogleCloudOptions).no_auth = True
    options.view_as(SetupOptions).save_main_session = False
    return options


def run(argv: Sequence[str] | None = None, run_id: str | None = None) -> beam.runners.runner.PipelineResult:
    """Parse argv, build and run the pipeline; wait for it when running locally. The run writes its
    own record files and, when it ends (or is submitted to a remote runner), its manifest. A run on a
    local runner shows its progress on stderr (`pipeline.progress`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    check_dask_request(argv)
    options = pipeline_options_from_argv(argv)
    deid_options = options.view_as(DeidOptions)
    started = dt.datetime.now(dt.UTC)
    run_id = run_id or new_run_id(started)
    settings = dataclasses.replace(settings_from_options(deid_options, load_key(deid_options)), run_id=run_id)
    runner_name = options.view_as(StandardOptions).runner
    # A Dask job is this process's too: it dies with its client, so the launcher waits and cleans up.
    local = runner_name in StandardOptions.LOCAL_RUNNERS or is_dask_runner(runner_name)
    own_scratch = None
    if local:
        # One scratch directory per run, which this process removes when the run ends.
        own_scratch = run_scratch_location(settings.scratch_location, run_id)
        settings = dataclasses.replace(settings, scratch_location=own_scratch)
    if not event_mode(deid_options):  # a watched --input may be empty when the job starts
        _check_input_matches(deid_options.input)
    _check_output_writable(settings.output)
    if event_mode(deid_options):
        return run_events(options, settings, started)
    _check_linkage_is_new(deid_options.linkage_output)
    _preflight_cloud(deid_options)
    runner = dask_runner_if_asked(options, settings) or default_runner(argv, options)
    if runner_name in StandardOptions.LOCAL_RUNNERS:
        settings = dataclasses.replace(settings, progress_dir=new_progress_dir())
    pipeline = beam.Pipeline(runner=runner, options=options)
    build_pipeline(pipeline, options, settings)
    try:
        with show_progress(settings.progress_dir):
            result = pipeline.run()
            if local:
                result.wait_until_finish()
    except BaseException:
        if local:  # a remote job may still be using them
            _remove_run_files(settings, own_scratch)
        with contextlib.suppress(Exception):  # the run's own failure is what the user must see
            write_manifest(settings.output, run_id, options, started, "failed", 1)
        raise
    if local:
        _remove_run_files(settings, own_scratch)
    write_manifest(settings.output, run_id, options, started, "completed" if local else "submitted", 0)
    return result


def _remove_run_files(settings: RunSettings, own_scratch: str | None) -> None:
    """This run's staged DICOM files and, for a local run, the scratch directory made for it alone
    (never a shared --scratch_location or temp_location)."""
    remove_tree(run_staging_dir(settings.output, settings.run_id))
    if own_scratch:
        remove_tree(own_scratch)
    if settings.progress_dir:
        remove_tree(settings.progress_dir)


class _QuietFullDisk(logging.Filter):
    """Drops the log records (Beam's tracebacks) of a full disk: main() prints one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and is_out_of_space(record.exc_info[1]):
            return False
        return not (record.levelno >= logging.WARNING and is_out_of_space_text(record.getMessage()))


def help_text() -> str:
    """`python -m pipeline --help`: every option of DeidOptions with its help (Beam's own options too)."""
    prog = program_name()
    parser = argparse.ArgumentParser(
        prog=prog,
        usage=f"{prog} --input INPUT --output OUTPUT [options]",
        formatter_class=HelpFormatter,
        description="De-identify DICOM files and whole-slide images.",
        epilog="Apache Beam pipeline options (--runner, --project, --region, --temp_location, "
        "--direct_running_mode, ...) are accepted as well. Without --runner the job runs locally "
        "on the DirectRunner's engine (FnApiRunner), on all cores (multi_processing) for inputs of "
        f"at least {2 * LOCAL_FILES_PER_WORKER} files unless --direct_running_mode or "
        "--direct_num_workers say otherwise.",
    )
    DeidOptions._add_argparse_args(parser)
    return parser.format_help()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(help_text())
        return 0
    restore_logging = configure_logging(log_level_of(args))
    run_id = new_run_id()
    quiet = _QuietFullDisk()
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        run(args, run_id=run_id)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the run started: one line, exit 1 (CONTRACTS.md)
        if is_out_of_space(exc):
            print(f"error: {NO_SPACE_MESSAGE}", file=sys.stderr)
        else:
            print(
                f"error: the run could not finish ({type(exc).__name__}; the log above has details); "
                "records of this run may be missing: run again into the same OUTPUT",
                file=sys.stderr,
            )
        return 1
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
        restore_logging()
    output = PipelineOptions(args).view_as(DeidOptions).output
    print(summary_or_note(output, run_id))
    print(f"done: results under {output} (audit/, dead_letter/, dicom/, wsi/)")
    return 0
