"""Beam's DaskRunner, with the translation this pipeline needs (README "On-premises cluster").

`--runner=DaskRunner` runs `DeidDaskRunner`: Beam's `apache_beam.runners.dask.dask_runner.DaskRunner`
(its options, overrides and result) with its graph translation replaced, because Beam 2.77's
translation loses work and data this pipeline relies on:

- **Only the last transform's graph is computed.** Beam computes the bag of the last transform
  visited; every other sink (the record files when the QA report is last, a branch's writes) never
  runs. Here every leaf PCollection (one no transform reads) is computed, in one graph, so shared
  stages run once.
- **Tagged outputs are not separated.** Beam gives every consumer of a multi-output ParDo all of its
  outputs mixed, so `with_exception_handling`'s dead letters arrive as good elements
  (`cannot unpack non-iterable InputRef`) and `Partition` sends every element to every branch. Here a
  ParDo's bundle emits (tag, value) pairs and each output PCollection is the bag of its own tag.
- **Side inputs are recomputed inside each task.** Beam iterates the side input's bag from within a
  task, which recomputes its whole upstream graph (re-running slide preparation, with its writes)
  once per partition. Here a side input is materialised once, as a dependency of the tasks.
- **Reshuffle does nothing.** Beam drops it, so a pipeline that starts from one element (the input
  pattern) runs in one partition on one worker. Here it regroups the elements into `--dask_npartitions`
  partitions (default: four per worker thread).

Anything this translation does not know (a transform other than Create, ParDo, GroupByKey, Flatten
and Reshuffle after Beam's Dask overrides; a window other than the global one) is refused before
any work (`UnsupportedOnDask`, a ConfigError) rather than run wrongly. Element timestamps are not
kept (everything is in the global window). Beam metrics are not collected: counters are no-ops on
Dask (Beam's DaskRunnerResult.metrics() is not implemented); the records and manifest carry the counts.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import dask.bag as db
from apache_beam.internal import pickler
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner, DaskRunnerResult
from apache_beam.runners.runner import PipelineState
from apache_beam.runners.dask.overrides import (
    _Create,
    _Flatten,
    _GroupAlsoByWindow,
    _GroupByKeyOnly,
    _Reshuffle,
    dask_overrides,
)
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue
from distributed import Client, as_completed

from deid.errors import ConfigError

# Partitions per worker thread when --dask_npartitions is not given: a few per thread, so that a
# slow partition does not leave the other threads idle.
PARTITIONS_PER_THREAD = 4
_LOG = logging.getLogger("deid")


class UnsupportedOnDask(ConfigError):
    """The pipeline holds something this translation cannot run faithfully; raised before any work."""


class DeidDaskRunner(DaskRunner):  # type: ignore[misc]  # Beam's runners are untyped
    """Beam's DaskRunner on an already connected `client`, with the translation of this module.

    The client is this runner's: it is closed when the job ends (`DeidDaskResult`) or fails to start.
    """

    def __init__(self, client: Client, partitions: int, cluster: str = "a Dask cluster") -> None:
        super().__init__()
        self._client = client
        self._partitions = max(1, partitions)
        self._cluster = cluster

    def run_pipeline(self, pipeline: beam.Pipeline, options: Any) -> DaskRunnerResult:
        try:
            pipeline.replace_all(dask_overrides())
            translator = _Translator(self._partitions)
            pipeline.visit(translator)
            # One collection over every leaf: Dask optimises each collection it is given on its own,
            # so separate ones would fuse a shared stage differently and run it once per leaf
            # (measured: slide preparation eleven times). Only a count comes back to this process.
            done = db.concat([leaf.map_partitions(_size) for leaf in translator.leaves()]).sum()
            futures = [self._client.compute(done)]
        except BaseException:
            self._client.close()
            raise
        _LOG.info("the Dask job started on %s: %d partitions per stage", self._cluster, self._partitions)
        return DeidDaskResult(self._client, futures)


@dataclass
class DeidDaskResult(DaskRunnerResult):  # type: ignore[misc]
    """Beam's result, which also logs how the job ended and closes the client."""

    def wait_until_finish(self, duration: int | None = None) -> str:
        """Wait for every leaf (`duration` in milliseconds, as Beam's); a task's exception is raised here."""
        started = time.perf_counter()
        timeout = None if duration is None else duration / 1000
        try:
            for _ in as_completed(self.futures, with_results=True, timeout=timeout, loop=self.client.loop):
                pass  # gathering the (tiny) results is what raises a worker's exception here
            self._state = PipelineState.DONE
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            _LOG.log(
                logging.INFO if self._state == PipelineState.DONE else logging.ERROR,
                "the Dask job ended: %s after %.1f s",
                self._state,
                time.perf_counter() - started,
            )
            self.client.close()
        return str(self._state)


def partitions_for(options: Any, threads: int) -> int:
    """--dask_npartitions, else PARTITIONS_PER_THREAD per worker thread of the cluster."""
    given = options.view_as(DaskOptions).npartitions
    return int(given) if given else max(1, threads) * PARTITIONS_PER_THREAD


# -- translation ---------------------------------------------------------------------------------------


@dataclass
class _Translator(PipelineVisitor):  # type: ignore[misc]
    """Visits the leaf transforms in order and builds one bag per PCollection."""

    partitions: int
    bags: dict[Any, db.Bag] = field(default_factory=dict)
    consumed: set[Any] = field(default_factory=set)

    def visit_transform(self, node: AppliedPTransform) -> None:
        transform = node.transform
        kind = type(transform)
        for pcoll in node.outputs.values():
            _require_global_window(node, pcoll)
        if kind is _Create:
            self._set_main(node, _create(list(transform.values), self.partitions))
        elif kind is beam.ParDo:
            self._par_do(node)
        elif kind is _GroupByKeyOnly:
            self._set_main(node, _group_by_key(self._main_input(node), self.partitions))
        elif kind is _GroupAlsoByWindow:
            self._set_main(node, self._main_input(node))  # grouped already, global window only
        elif kind is _Flatten:
            inputs = [self._input(pcoll) for pcoll in node.inputs]
            self._set_main(node, db.concat(inputs) if inputs else _create([], 1))
        elif kind is _Reshuffle:
            self._set_main(node, _spread(self._main_input(node), self.partitions))
        else:
            raise UnsupportedOnDask(
                f"the Dask runner cannot run step {node.full_label!r} ({kind.__name__}); "
                "run this pipeline on the DirectRunner or Dataflow"
            )

    def leaves(self) -> list[db.Bag]:
        return [bag for key, bag in self.bags.items() if key not in self.consumed]

    def _input(self, pcoll: Any) -> db.Bag:
        self.consumed.add(pcoll)
        return self.bags[pcoll]

    def _main_input(self, node: AppliedPTransform) -> db.Bag:
        (pcoll,) = node.inputs
        return self._input(pcoll)

    def _set_main(self, node: AppliedPTransform, bag: db.Bag) -> None:
        for pcoll in node.outputs.values():
            self.bags[pcoll] = bag

    def _par_do(self, node: AppliedPTransform) -> None:
        transform = node.transform
        args, kwargs = transform.raw_side_inputs
        views = list(node.side_inputs)
        spec = pickler.dumps(
            _BundleSpec(
                fn=transform.fn,
                args=list(args),
                kwargs=dict(kwargs),
                views=[(type(view), view._view_options()) for view in views],
                label=node.full_label,
            )
        )
        materialised = [_materialise(self._input(view.pvalue)) for view in views]
        tagged = self._main_input(node).map_partitions(
            _run_bundle, spec, *materialised, token=_token(node.full_label)
        )
        for tag, pcoll in node.outputs.items():
            self.bags[pcoll] = tagged.map_partitions(_select, tag)


def _require_global_window(node: AppliedPTransform, pcoll: Any) -> None:
    windowing = getattr(pcoll, "windowing", None)
    if windowing is not None and not isinstance(windowing.windowfn, GlobalWindows):
        raise UnsupportedOnDask(
            f"the Dask runner runs only globally windowed pipelines; step {node.full_label!r} is windowed"
        )


def _token(label: str) -> str:
    """A task name prefix from a Beam step label (shown in Dask's dashboard and task stream)."""
    return "beam-" + "".join(c if c.isalnum() else "_" for c in label)[-80:]


def _create(values: list[Any], partitions: int) -> db.Bag:
    return db.from_sequence(values, npartitions=max(1, min(len(values), partitions)))


def _spread(bag: db.Bag, partitions: int) -> db.Bag:
    """Reshuffle: all elements into one partition, then split evenly into `partitions` (Reshuffles
    here carry small elements: input paths, tile bands)."""
    return bag.repartition(npartitions=1).repartition(npartitions=partitions).map_partitions(_listed)


def _group_by_key(bag: db.Bag, partitions: int) -> db.Bag:
    """(key, WindowedValue) pairs from Beam's ReifyWindows -> (key, [values]); keys are hashed by
    dask's `tokenize`, the same in every worker process."""
    if bag.npartitions > partitions:
        bag = bag.repartition(npartitions=partitions)
    return bag.groupby(_first, shuffle="tasks").map_partitions(_grouped_partition)


def _first(item: tuple[Any, Any]) -> Any:
    return item[0]


def _grouped_partition(groups: Iterable[tuple[Any, list[tuple[Any, Any]]]]) -> list[tuple[Any, list[Any]]]:
    return [
        (key, [value.value if isinstance(value, WindowedValue) else value for _, value in items])
        for key, items in groups
    ]


def _materialise(bag: db.Bag) -> Any:
    """A side input's elements as one list, computed once as a dependency of the tasks reading it."""
    return bag.reduction(_listed, _concat, split_every=False)


def _concat(parts: Iterable[list[Any]]) -> list[Any]:
    return list(itertools.chain.from_iterable(parts))


# Every PCollection's partitions are lists made by these functions of ours. Dask's bag optimisation
# turns a partition made by `list`, `reify`, `map` or `filter` into a lazy iterator when it inlines
# it, and a lazy partition that two transforms read is used up by the first: the second would see
# elements missing (measured: a Flatten read by two transforms lost a third of its elements).
def _listed(part: Iterable[Any]) -> list[Any]:
    return list(part)


def _size(part: Iterable[Any]) -> list[int]:
    return [sum(1 for _ in part)]


def _select(part: Iterable[tuple[str | None, Any]], tag: str | None) -> list[Any]:
    """The values of one output tag of a ParDo's (tag, value) pairs."""
    return [value for item_tag, value in part if item_tag == tag]


# -- running one bundle (a partition) on a worker ----------------------------------------------------


@dataclass
class _BundleSpec:
    fn: beam.DoFn
    args: list[Any]
    kwargs: dict[str, Any]
    views: list[tuple[type, dict[str, Any]]]
    label: str


class _TaggingReceiver(Receiver):  # type: ignore[misc]
    def __init__(self, tag: str | None, out: list[tuple[str | None, Any]]) -> None:
        self._tag = tag
        self._out = out

    def receive(self, windowed_value: WindowedValue) -> None:
        self._out.append((self._tag, windowed_value.value))


class _Receivers(dict):  # type: ignore[type-arg]
    """tag -> receiver, made on first use (a DoFn may emit tags nobody declared; they are dropped
    by the filters of the declared outputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[tuple[str | None, Any]] = []

    def __missing__(self, tag: str | None) -> _TaggingReceiver:
        receiver = self[tag] = _TaggingReceiver(tag, self.out)
        return receiver


def _windowed(value: Any) -> WindowedValue:
    return WindowedValue(value, 0, (GlobalWindow(),))


def _run_bundle(items: Iterable[Any], spec_bytes: bytes, *side_values: list[Any]) -> list[tuple[str | None, Any]]:
    """Run one DoFn over one partition: setup, start_bundle, process each, finish_bundle, teardown.
    Returns the (tag, value) pairs of every output, tag None for the main output."""
    spec: _BundleSpec = pickler.loads(spec_bytes)
    receivers = _Receivers()
    side_inputs = [
        SideInputMap(view_class, options, [_windowed(v) for v in values])
        for (view_class, options), values in zip(spec.views, side_values, strict=True)
    ]
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(spec.fn),
        _OutputHandler(
            window_fn=GlobalWindows(),
            main_receivers=receivers[None],
            tagged_receivers=receivers,
            per_element_output_counter=None,
            output_batch_converter=None,
            process_yields_batches=False,
            process_batch_yields_elements=False,
        ),
        context=DoFnContext(spec.label, state=None),
        side_inputs=side_inputs,
        input_args=spec.args,
        input_kwargs=spec.kwargs,
        user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam(),
    )
    import sys as _s, time as _t, os as _o
    items = list(items)
    _t0 = _t.time()
    invoker.invoke_setup()
    try:
        invoker.invoke_start_bundle()
        for item in items:
            invoker.invoke_process(_windowed(item))
        invoker.invoke_finish_bundle()
    finally:
        invoker.invoke_teardown()
        print("BUNDLE", _o.getpid(), spec.label, len(items), round(_t.time() - _t0, 3), file=_s.stderr, flush=True)
    return receivers.out

