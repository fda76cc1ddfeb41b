"""Beam's DaskRunner, with a translation this pipeline can rely on (README "On-premises cluster").

`--runner=DaskRunner` runs `DeidDaskRunner`: Beam's `apache_beam.runners.dask.dask_runner.DaskRunner`
(its options, its overrides of Create, GroupByKey, Flatten and Reshuffle, its result type) with its
graph translation replaced, because Beam 2.77's translation loses work and data:

- **Only the last transform's graph is computed**: every other sink (the record files when the QA
  report comes last, a branch's writes) never runs.
- **Tagged outputs are not separated**: every consumer of a multi-output ParDo gets all of its
  outputs, so `with_exception_handling`'s dead letters arrive as good elements (`cannot unpack
  non-iterable InputRef` in transforms/common.py) and `Partition` sends every element everywhere.
- **Side inputs are recomputed inside each task** that reads them, with their whole upstream graph.
- **Reshuffle does nothing**, so a pipeline that starts from one element (the input pattern) runs in
  one partition, on one worker.
- Its dask.bag graphs are optimised by Dask, which duplicated shared stages (measured: slide
  preparation ran eleven times for one slide) and turned shared partitions into lazy iterators that
  the first reader used up (a Flatten read by two transforms lost a third of its elements).

Here the graph is a plain task graph built by `_Translator`, one list-valued task per partition,
which Dask runs as given: a ParDo runs one bundle per partition (setup, start_bundle, process,
finish_bundle, teardown) and returns each output tag's values separately; Flatten concatenates
partition lists (coalesced to at most `partitions`); GroupByKey and Reshuffle are all-to-all
exchanges into `partitions` partitions (GroupByKey routes and groups by the key's deterministic
Beam encoding, as Beam runners do; Reshuffle deals elements round-robin); a side input is one task
holding its elements, a dependency of every bundle that reads it; and every leaf PCollection (one no
transform reads) is computed, in one graph, so that a stage shared by two sinks runs once.
`partitions` is --dask_npartitions, else four per worker thread.

Anything this translation does not know (a transform other than Create, ParDo, GroupByKey, Flatten
and Reshuffle after Beam's Dask overrides; a window other than the global one) is refused before
any work (`UnsupportedOnDask`, a ConfigError). Element timestamps are not kept (all is in the global
window). Beam metrics are not collected (counters are no-ops; Beam's DaskRunnerResult.metrics() is
not implemented): the record files and the run manifest carry the counts.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam import coders
from apache_beam.internal import pickler
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner, DaskRunnerResult
from apache_beam.runners.dask.overrides import (
    _Create,
    _Flatten,
    _GroupAlsoByWindow,
    _GroupByKeyOnly,
    _Reshuffle,
    dask_overrides,
)
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue
from distributed import Client, as_completed

from deid.errors import ConfigError

# Partitions per worker thread when --dask_npartitions is not given: a few per thread, so that a
# slow partition does not leave the other threads idle.
PARTITIONS_PER_THREAD = 4
_LOG = logging.getLogger("deid")

Key = tuple[str, int]


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
            final = translator.finish()
            futures = self._client.get(translator.tasks, [final], sync=False)
        except BaseException:
            self._client.close()
            raise
        _LOG.info(
            "the Dask job started on %s: %d tasks, %d partitions per stage",
            self._cluster,
            len(translator.tasks),
            self._partitions,
        )
        return DeidDaskResult(self._client, futures)


@dataclass
class DeidDaskResult(DaskRunnerResult):  # type: ignore[misc]
    """Beam's result, which also logs how the job ended and closes the client."""

    def wait_until_finish(self, duration: int | None = None) -> str:
        """Wait for the job (`duration` in milliseconds, as Beam's); a task's exception is raised here."""
        started = time.perf_counter()
        timeout = None if duration is None else duration / 1000
        try:
            for _ in as_completed(self.futures, with_results=True, timeout=timeout, loop=self.client.loop):
                pass  # gathering the (one, tiny) result is what raises a worker's exception here
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


# -- translation: one list-valued task per partition -------------------------------------------------


@dataclass
class _Translator(PipelineVisitor):  # type: ignore[misc]
    """Visits the leaf transforms in order and builds `tasks`, a Dask task graph; each PCollection
    is the list of its partitions' keys."""

    partitions: int
    tasks: dict[Any, Any] = field(default_factory=dict)
    keys: dict[Any, list[Key]] = field(default_factory=dict)
    consumed: set[Any] = field(default_factory=set)
    side_keys: dict[Any, Key] = field(default_factory=dict)
    _names: itertools.count = field(default_factory=itertools.count)  # type: ignore[type-arg]

    def visit_transform(self, node: AppliedPTransform) -> None:
        transform = node.transform
        kind = type(transform)
        for pcoll in node.outputs.values():
            _require_global_window(node, pcoll)
        if kind is _Create:
            self._set_output(node, self._create(node.full_label, list(transform.values)))
        elif kind is beam.ParDo:
            self._par_do(node)
        elif kind is _GroupByKeyOnly:
            route = (_route_by_key, node.full_label)
            self._set_output(node, self._exchange(node.full_label, self._main_input(node), route, _group))
        elif kind is _GroupAlsoByWindow:
            self._set_output(node, self._main_input(node))  # grouped already; global window only
        elif kind is _Flatten:
            inputs = [key for pcoll in node.inputs for key in self._input(pcoll)]
            self._set_output(node, self._coalesce(node.full_label, inputs))
        elif kind is _Reshuffle:
            route = (_route_round_robin,)
            self._set_output(node, self._exchange(node.full_label, self._main_input(node), route, _concat))
        else:
            raise UnsupportedOnDask(
                f"the Dask runner cannot run step {node.full_label!r} ({kind.__name__}); "
                "run this pipeline on the DirectRunner or Dataflow"
            )

    def finish(self) -> Key:
        """One task over every leaf PCollection: computing it runs the whole pipeline once."""
        leaves = [key for pcoll, keys in self.keys.items() if pcoll not in self.consumed for key in keys]
        final = (self._name("pipeline", "done"), 0)
        self.tasks[final] = (_count, leaves)
        return final

    # -- PCollections as partition keys

    def _name(self, label: str, what: str) -> str:
        """A unique task name from a Beam step label (shown in Dask's dashboard and task stream)."""
        safe = "".join(c if c.isalnum() else "_" for c in label)[-80:]
        return f"beam-{safe}-{what}-{next(self._names)}"

    def _input(self, pcoll: Any) -> list[Key]:
        self.consumed.add(pcoll)
        return self.keys[pcoll]

    def _main_input(self, node: AppliedPTransform) -> list[Key]:
        (pcoll,) = node.inputs
        return self._input(pcoll)

    def _set_output(self, node: AppliedPTransform, keys: list[Key]) -> None:
        for pcoll in node.outputs.values():
            self.keys[pcoll] = keys

    def _side_input(self, pcoll: Any) -> Key:
        """One task holding a side input's elements, shared by every bundle (and step) reading it."""
        if pcoll not in self.side_keys:
            key = (self._name(str(pcoll.producer.full_label), "side"), 0)
            self.tasks[key] = (_concat, self._input(pcoll))
            self.side_keys[pcoll] = key
        self.consumed.add(pcoll)
        return self.side_keys[pcoll]

    # -- primitives

    def _create(self, label: str, values: list[Any]) -> list[Key]:
        count = max(1, min(len(values), self.partitions))
        name = self._name(label, "create")
        size = -(-len(values) // count) if values else 0
        for index in range(count):
            # Pickled: a value that looks like a task or a key stays data, never run or looked up.
            self.tasks[(name, index)] = (_loads, pickler.dumps(values[index * size : (index + 1) * size]))
        return [(name, index) for index in range(count)]

    def _par_do(self, node: AppliedPTransform) -> None:
        transform = node.transform
        args, kwargs = transform.raw_side_inputs
        views = list(node.side_inputs)
        tags = list(node.outputs)
        spec = pickler.dumps(
            _BundleSpec(
                fn=transform.fn,
                args=list(args),
                kwargs=dict(kwargs),
                views=[(type(view), view._view_options()) for view in views],
                label=node.full_label,
                tags=tags,
            )
        )
        sides = [self._side_input(view.pvalue) for view in views]
        bundle = self._name(node.full_label, "bundle")
        inputs = self._main_input(node)
        for index, key in enumerate(inputs):
            self.tasks[(bundle, index)] = (_run_bundle, key, spec, *sides)
        if len(tags) == 1:  # the bundle returns that output's values itself
            self.keys[node.outputs[tags[0]]] = [(bundle, index) for index in range(len(inputs))]
            return
        for position, tag in enumerate(tags):
            name = self._name(node.full_label, f"output{position}")
            for index in range(len(inputs)):
                self.tasks[(name, index)] = (_pick, (bundle, index), position)
            self.keys[node.outputs[tag]] = [(name, index) for index in range(len(inputs))]

    def _coalesce(self, label: str, keys: list[Key]) -> list[Key]:
        """A Flatten's partitions: its inputs' partitions, merged down to at most `partitions`."""
        if not keys:
            return self._create(label, [])
        if len(keys) <= self.partitions:
            return keys
        name = self._name(label, "flatten")
        chunks = _chunks(keys, self.partitions)
        for index, chunk in enumerate(chunks):
            self.tasks[(name, index)] = (_concat, chunk)
        return [(name, index) for index in range(len(chunks))]

    def _exchange(self, label: str, keys: list[Key], route: tuple[Any, ...], merge: Any) -> list[Key]:
        """All-to-all: each input partition is split into `partitions` pieces by `route`, and output
        partition j merges piece j of every input."""
        split = self._name(label, "split")
        for index, key in enumerate(keys):
            self.tasks[(split, index)] = (route[0], key, self.partitions, index, *route[1:])
        pieces = [(split, index) for index in range(len(keys))]
        name = self._name(label, "merge")
        for target in range(self.partitions):
            self.tasks[(name, target)] = (merge, [(_piece, piece, target) for piece in pieces])
        return [(name, target) for target in range(self.partitions)]


def _require_global_window(node: AppliedPTransform, pcoll: Any) -> None:
    windowing = getattr(pcoll, "windowing", None)
    if windowing is not None and not isinstance(windowing.windowfn, GlobalWindows):
        raise UnsupportedOnDask(
            f"the Dask runner runs only globally windowed pipelines; step {node.full_label!r} is windowed"
        )


def _chunks(keys: Sequence[Key], count: int) -> list[list[Key]]:
    size = -(-len(keys) // count)
    return [list(keys[start : start + size]) for start in range(0, len(keys), size)]


# -- the functions the tasks run (on the workers; module-level, so pickled by reference) -------------


def _loads(data: bytes) -> list[Any]:
    values: list[Any] = pickler.loads(data)
    return values


def _concat(parts: Iterable[list[Any]]) -> list[Any]:
    return list(itertools.chain.from_iterable(parts))


def _count(parts: Iterable[list[Any]]) -> int:
    return sum(len(part) for part in parts)


def _pick(outputs: tuple[list[Any], ...], position: int) -> list[Any]:
    return outputs[position]


def _piece(pieces: list[list[Any]], target: int) -> list[Any]:
    return pieces[target]


def _route_round_robin(part: list[Any], partitions: int, index: int) -> list[list[Any]]:
    """Reshuffle: deal the elements of input partition `index` over the outputs, starting at `index`."""
    pieces: list[list[Any]] = [[] for _ in range(partitions)]
    for position, element in enumerate(part):
        pieces[(index + position) % partitions].append(element)
    return pieces


def _key_bytes(key: Any, label: str) -> bytes:
    """The deterministic Beam encoding of a GroupByKey key (Beam groups by encoded keys)."""
    try:
        encoded: bytes = coders.FastPrimitivesCoder().as_deterministic_coder(label).encode(key)
    except (TypeError, ValueError):
        # Beam's message quotes the key; this one names its type only.
        raise TypeError(f"step {label!r}: a {type(key).__name__} key has no deterministic encoding") from None
    return encoded


def _route_by_key(part: list[tuple[Any, Any]], partitions: int, _index: int, label: str) -> list[list[Any]]:
    """GroupByKey: (encoded key, key, value) to the output chosen by a digest of the encoded key,
    the same in every worker process (Python's own hash of a str is not)."""
    pieces: list[list[Any]] = [[] for _ in range(partitions)]
    for key, value in part:
        encoded = _key_bytes(key, label)
        target = int.from_bytes(hashlib.sha256(encoded).digest()[:8], "big") % partitions
        pieces[target].append((encoded, key, value))
    return pieces


def _group(pieces: Iterable[list[tuple[bytes, Any, Any]]]) -> list[tuple[Any, list[Any]]]:
    """(key, [values]) per encoded key; values were wrapped in WindowedValues by Beam's ReifyWindows."""
    groups: dict[bytes, tuple[Any, list[Any]]] = {}
    for piece in pieces:
        for encoded, key, value in piece:
            entry = groups.setdefault(encoded, (key, []))
            entry[1].append(value.value if isinstance(value, WindowedValue) else value)
    return list(groups.values())


# -- running one bundle (a partition) on a worker ----------------------------------------------------


@dataclass
class _BundleSpec:
    fn: beam.DoFn
    args: list[Any]
    kwargs: dict[str, Any]
    views: list[tuple[type, dict[str, Any]]]
    label: str
    tags: list[str | None]


class _TaggingReceiver(Receiver):  # type: ignore[misc]
    def __init__(self, out: list[Any] | None) -> None:
        self._out = out

    def receive(self, windowed_value: WindowedValue) -> None:
        if self._out is not None:  # None: a tag no transform reads
            self._out.append(windowed_value.value)


class _Receivers(dict):  # type: ignore[type-arg]
    """tag -> receiver, made on first use; values of tags nobody reads are dropped, as Beam does."""

    def __init__(self, tags: list[str | None]) -> None:
        super().__init__()
        self.outputs: dict[str | None, list[Any]] = {tag: [] for tag in tags}

    def __missing__(self, tag: str | None) -> _TaggingReceiver:
        receiver = self[tag] = _TaggingReceiver(self.outputs.get(tag))
        return receiver


def _windowed(value: Any) -> WindowedValue:
    return WindowedValue(value, 0, (GlobalWindow(),))


def _run_bundle(items: list[Any], spec_bytes: bytes, *side_values: list[Any]) -> Any:
    """Run one DoFn over one partition. Returns the values of its one output, or a tuple of lists,
    one per output tag in `spec.tags` order."""
    spec: _BundleSpec = pickler.loads(spec_bytes)
    receivers = _Receivers(spec.tags)
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
    invoker.invoke_setup()
    try:
        invoker.invoke_start_bundle()
        for item in items:
            invoker.invoke_process(_windowed(item))
        invoker.invoke_finish_bundle()
    finally:
        invoker.invoke_teardown()
    outputs = [receivers.outputs[tag] for tag in spec.tags]
    return outputs[0] if len(outputs) == 1 else tuple(outputs)
