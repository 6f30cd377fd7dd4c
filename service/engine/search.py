"""The memoizing search: scikit-learn's GridSearchCV semantics on a dask graph.

:meth:`SearchRunner.search` validates its arguments with scikit-learn's own search
class, draws the candidates and folds exactly as scikit-learn does, plans
one task per distinct Merkle key (:mod:`.plan`), skips every score already
in the persistent cache, runs the rest on dask.distributed and formats the
results with scikit-learn's own ``_format_results`` so ``cv_results_`` is
the same to the last bit. The refit on all rows uses the same keys.
"""

from __future__ import annotations

import functools
import gc
import itertools
import logging
import math
import sys
import threading
import time
import warnings
import weakref
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

import numpy as np

from memogrid.data import as_target, is_frame, is_text, memory_order, one_number_dtype
from memogrid.layout import restore_strides
from memogrid.spec import NO_FITS

from ..store.cache import ResultCache
from ..store.datasets import DataRef, DatasetStore
from . import keys
from .filters import checked_filters
from .plan import (
    Fold,
    Plan,
    assemble,
    build_plan,
    build_refit_plan,
    check_fit_param_names,
)
from .tasks import (
    ALL_CORES,
    WARNINGS_KEY,
    DataSpec,
    RefitOutput,
    ScoreOutput,
    TaskContext,
    Warned,
    cached_score,
    caller_identity,
    cannot_load,
    load_refit,
    loads_here,
    module_of,
    result_settings,
    run_cached_step,
    run_refit,
    run_score,
    run_score_batch,
    run_step,
    run_train_transform,
    silent_worker_idle,
    silent_workers,
    step_cached,
    unwanted_work,
    worker_cpu_seconds,
)

_WARNINGS_LOCK = threading.Lock()

#: per dask client: how many running searches want each score or refit task
#: key. One client holds one future state per key, so ``client.cancel`` on a
#: key cancels it for every search of that client; a search cancels only the
#: keys no other search still wants (:func:`_cancel_own`).
_wanted: weakref.WeakKeyDictionary[Any, Counter[str]] = weakref.WeakKeyDictionary()
_wanted_lock = threading.Lock()


@contextmanager
def _wanting(client: Any, keys: list[str]) -> Iterator[None]:
    """Count this search among those that want ``keys`` while the block runs."""
    with _wanted_lock:
        counts = _wanted.setdefault(client, Counter())
        counts.update(keys)
    try:
        yield
    finally:
        with _wanted_lock:
            counts.subtract(keys)
            for k in keys:
                if counts[k] <= 0:
                    del counts[k]


class SharedFits:
    """Who counted the fits the running searches of one dask client received.

    Two searches at once that share a step (or a whole (candidate, split),
    or a refit) get one computation under one dask key, and both receive
    its output saying "fit". The first search to receive a fit counts it;
    for every other running search it is ``"shared"``: summed over searches
    running together, fits are the fits that ran. A fit is told apart from
    another fit of the same key by its duration, measured to the
    nanosecond in the task and carried in its output. What was counted is
    forgotten when the last running search of the client ends, and the
    oldest beyond :attr:`KEPT` fits while searches keep running (a search
    served one of those long after it ran counts it as its own).
    """

    KEPT = 100_000

    def __init__(self) -> None:
        self.running = 0
        #: fit -> the search counting it, oldest first
        self.counted: OrderedDict[tuple[Any, ...], int] = OrderedDict()


@dataclass
class FitCounter:
    """One search's view of :class:`SharedFits`."""

    shared: SharedFits
    search: int

    def _mine(self, fit: tuple[Any, ...]) -> bool:
        """Whether this search counts ``fit`` (callers hold the lock)."""
        counted = self.shared.counted
        by = counted.setdefault(fit, self.search)
        if len(counted) > self.shared.KEPT:
            counted.popitem(last=False)
        return by == self.search

    def output(self, skey: str, o: ScoreOutput) -> ScoreOutput:
        """``o`` with the fits another running search counted as "shared"."""
        with _wanted_lock:
            prov = tuple(
                (k, "shared", t) if how == "fit" and not self._mine((k, t)) else (k, how, t)
                for k, how, t in o.provenance
            )
            final = o.final
            if final == "fit":
                r = o.result
                if not self._mine((skey, r.get("fit_time"), r.get("score_time"))):
                    final = "shared"
        if prov == o.provenance and final == o.final:
            return o
        return replace(o, provenance=prov, final=final)

    def refit(
        self, key: str, final: str, fit_time: float, provenance: tuple[tuple[str, str, float], ...]
    ) -> tuple[str, int]:
        """How this search got the refit ``key`` (``final``: "fit", "hit";
        or "shared"), and how many of the steps in its ``provenance`` were
        fitted for it that this search counts."""
        with _wanted_lock:
            if final == "fit" and not self._mine((key, fit_time)):
                final = "shared"
            fits = sum(how == "fit" and self._mine((k, t)) for k, how, t in provenance)
        return final, fits


_shared_fits: weakref.WeakKeyDictionary[Any, SharedFits] = weakref.WeakKeyDictionary()
_searches = itertools.count()


@contextmanager
def _counting_fits(client: Any) -> Iterator[FitCounter]:
    """This search's count of fits among the searches of ``client`` running now."""
    with _wanted_lock:
        shared = _shared_fits.setdefault(client, SharedFits())
        shared.running += 1
    try:
        yield FitCounter(shared, next(_searches))
    finally:
        with _wanted_lock:
            shared.running -= 1
            if not shared.running:
                shared.counted.clear()


def _cancel_own(client: Any, futures: list) -> None:
    """Cancel those of ``futures`` that no other running search of ``client`` wants.

    The rest stay wanted by the other search and are left running; this
    search stops waiting for them as soon as it sees its cancel flag.
    """
    with _wanted_lock:
        counts = _wanted.get(client, Counter())
        own = [f for f in futures if counts[f.key] <= 1]
    if own:
        client.cancel(own)


def _result(future: Any, cancel: threading.Event | None) -> Any:
    """``future``'s result; as soon as ``cancel`` is set, its task is cancelled
    (unless another running search wants it: it goes on for that one) and
    :class:`SearchCancelled` raised.

    Waits on a done-callback rather than ``future.result(timeout=...)``:
    under load distributed's ``sync`` could end a timed wait with an
    ``UnboundLocalError`` (seen in a 20-job concurrency test).
    """
    if cancel is None:
        return future.result()
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    while not done.wait(0.1):
        if cancel.is_set():
            _cancel_own(future.client, [future])
            raise SearchCancelled()
    return future.result()


_gc_lock = threading.Lock()
_gc_pauses = 0  # planners inside gc_paused() now
_gc_was_enabled = False


def _sent_by_value(obj: Any) -> bool:
    """Whether a class or function is code cloudpickle sends by value (one
    of ``__main__``, made in a function, of a module not imported): pickle
    cannot name it by module and name."""
    name = getattr(obj, "__module__", None)
    module = sys.modules.get(name) if isinstance(name, str) else None
    if module is None or name == "__main__":
        return True
    found: Any = module
    for part in getattr(obj, "__qualname__", "").split("."):
        found = getattr(found, part, None)
    return found is not obj


def _values_in(*roots: Any) -> Iterator[Any]:
    """Every estimator in ``roots`` (estimators, lists, dicts of candidate
    values) and every parameter value of each, deeply."""
    stack = list(roots)
    seen: set[int] = set()
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        yield value
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif hasattr(value, "get_params") and not isinstance(value, type):
            stack.extend(value.get_params(deep=False).values())


def _classes_by_value(*roots: Any) -> list[type]:
    """The classes (bases included) of everything in ``roots`` that
    cloudpickle sends by value."""
    found: dict[type, None] = {}
    for value in _values_in(*roots):
        for cls in (value if isinstance(value, type) else type(value)).__mro__:
            if cls not in found and _sent_by_value(cls):
                found[cls] = None
    return list(found)


def _tracked_classes(own: list[type], *roots: Any) -> list[type]:
    """Every class cloudpickle would send by value with ``roots`` and so
    overwrite when objects of it come back: the roots' own classes
    (``own``: :func:`_classes_by_value`), and those their code reaches (a
    helper class a method calls), which only pickling them finds;
    cloudpickle keeps them in its class tracker."""
    import cloudpickle
    from cloudpickle import cloudpickle as tracker

    found = dict.fromkeys(own)
    tracked = getattr(tracker, "_DYNAMIC_CLASS_TRACKER_BY_CLASS", None)
    if tracked is not None:
        try:
            cloudpickle.dumps(roots)
        except Exception:  # noqa: BLE001 - the search itself will say
            pass
        found.update(dict.fromkeys(list(tracked)))
    return list(found)


def callers_classes(fitted: Any, classes: list[type]) -> None:
    """Make every object in ``fitted`` whose class is a copy of one of the
    caller's own (by module and name, among ``classes``: those of the
    search's estimators, :func:`_classes_by_value`) an instance of the
    caller's class.

    A model read from the cache in another session than the one that
    stored it was made by its class's code as stored there (the same code:
    it is in the key), but cloudpickle gives it a class object of its own;
    the caller would get a lookalike that ``isinstance`` denies and pickle
    cannot name."""
    named: dict[tuple[str, str], list[type]] = {}
    for c in classes:
        named.setdefault((c.__module__, c.__qualname__), []).append(c)
    # a name two of the caller's classes share says not which one is meant
    own = {name: cs[0] for name, cs in named.items() if len(cs) == 1}
    live = set(classes)
    if not own:
        return
    stack, seen = [fitted], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            stack.extend(obj.values())
            continue
        if isinstance(obj, (list, tuple)):
            stack.extend(obj)
            continue
        held = getattr(obj, "__dict__", None)
        if not isinstance(held, dict):
            continue
        mine = own.get((type(obj).__module__, type(obj).__qualname__))
        if mine is not None and type(obj) not in live:
            obj.__class__ = mine
        stack.extend(held.values())


@contextmanager
def callers_code_kept(own: list[type], *roots: Any) -> Iterator[None]:
    """Keep the caller's own classes as they are while fitted objects come
    back from the workers.

    An object of a class cloudpickle sends by value (a notebook's
    transformer) comes back as an instance of the caller's class, but
    cloudpickle first sets that class's attributes to the copies it
    carried: methods whose globals are a copy of the caller's module as it
    was. Edits to a helper or a constant the class reads would no longer
    reach it, here or in any search's key. Each such class (``own``, the
    roots' own, or one their code reaches: :func:`_tracked_classes`) is
    put back as it was when the block exits.
    """
    kept = {cls: dict(vars(cls)) for cls in _tracked_classes(own, *roots)}
    try:
        yield
    finally:
        for cls, attrs in kept.items():
            for name, attr in attrs.items():
                if name not in ("__dict__", "__weakref__") and vars(cls).get(name) is not attr:
                    setattr(cls, name, attr)


def callers_functions(own: Mapping[str, Any], fitted: Any) -> None:
    """Give a fitted estimator tree the caller's own functions where its
    parameters hold copies the workers sent back (a ``FunctionTransformer``'s
    ``func`` of a notebook): scikit-learn's best estimator holds the
    caller's function, which pickles by name; a copy does not. ``own`` is
    the configured tree's ``get_params(deep=True)``."""
    if not hasattr(fitted, "get_params"):
        return
    theirs = fitted.get_params(deep=True)
    kept = {}
    for path, value in own.items():
        got = theirs.get(path, value)
        if (
            got is not value
            and callable(value)
            and not hasattr(value, "get_params")
            and _sent_by_value(value)
            and getattr(got, "__qualname__", None) == getattr(value, "__qualname__", "")
            and getattr(got, "__module__", None) == getattr(value, "__module__", "")
        ):
            kept[path] = value
    if kept:
        fitted.set_params(**kept)


def _keeping_callers_code(run: _F) -> _F:
    """A search's run under :func:`callers_code_kept` for its estimators."""

    @functools.wraps(run)
    def kept(self: Any, prepared: Any, *args: Any, **kwargs: Any) -> Any:
        own = prepared.by_value_classes
        with callers_code_kept(own, prepared.base, prepared.candidates):
            return run(self, prepared, *args, **kwargs)

    return kept  # type: ignore[return-value]


def _pairwise(base: Any, candidates: list[dict[str, Any]]) -> bool:
    """Whether the search's X is pairwise (a kernel or distance matrix, which
    folds slice by rows and columns), refusing grids where candidates differ.

    scikit-learn slices per candidate; the engine slices a fold once for all
    of them, so a grid mixing ``kernel="precomputed"`` with other kernels
    (or swapping in estimators that differ) is refused by name.
    """
    from sklearn.base import clone
    from sklearn.utils import get_tags

    own = bool(get_tags(base).input_tags.pairwise)
    seen: set[tuple[str, Any]] = set()
    for candidate in candidates:
        for name, value in candidate.items():
            if isinstance(value, str):
                if value != "precomputed":
                    continue
                mark: Any = value
            elif keys._is_estimator(value):
                mark = id(value)  # the grid's own objects, shared by its candidates
            else:
                continue
            if (name, mark) in seen:
                continue
            seen.add((name, mark))
            try:
                est = clone(base).set_params(**{name: clone(value, safe=False)})
                theirs = bool(get_tags(est).input_tags.pairwise)
            except Exception:  # scikit-learn's own checks report it later
                continue
            if theirs != own:
                raise ValueError(
                    f"the grid mixes candidates whose X is a precomputed (pairwise) matrix "
                    f"with candidates whose X is not ({name}={value!r}): scikit-learn "
                    "slices those folds differently; search them separately"
                )
    return own


@dataclass
class WarningLog:
    """What a search warned about: each text once, in the order they first
    came, and how often each came (scikit-learn's search raises a warning
    once per fit that gave it)."""

    texts: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    #: where each text was first raised: [module, file, line], for a client
    #: raising it again from there (filters that name a module match it)
    sources: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, text: str, source: tuple[str | None, str, int] | None = None) -> None:
        if text not in self.counts:
            self.texts.append(text)
        if source is not None and source[0] and text not in self.sources:
            self.sources[text] = list(source)
        self.counts[text] += 1

    def repeated(self) -> dict[str, int]:
        """The texts that came more than once, by how often."""
        return {text: n for text, n in self.counts.items() if n > 1}


def _report_caught(caught: Iterable[Any], reemit: bool, log: WarningLog) -> None:
    """Log warnings caught in this process and, if ``reemit``, raise them
    again as they were raised (from their module, for filters that name one)."""
    for w in caught:
        module = module_of(w.filename)
        log.add(f"{w.category.__name__}: {w.message}", (module, w.filename, w.lineno))
        if reemit:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, module=module)


def _text(item: Warned) -> str:
    """How a warning is listed in a result: ``"ConvergenceWarning: ..."``."""
    return f"{item[0]}: {item[1]}"


def _raise_warned(
    warned: list[Warned] | tuple[Warned, ...],
    reemit: bool,
    log: WarningLog | None,
) -> None:
    """Raise the warnings fits gave in worker processes here, where
    scikit-learn's own search would have raised them, and log them.

    Each keeps its class, module, file and line, so the caller's filters
    treat it as scikit-learn's, and each is raised once per fit: scikit-
    learn's own input checks change the filters at every fit, which resets
    Python's once-per-location memory, so its search shows them all too.
    """
    from memogrid.errors import warning_category

    for item in warned:
        name, message, filename, lineno = item[:4]
        module = item[4] if len(item) > 4 else None
        category = warning_category(name)
        text = _text(item)
        if log is not None:
            log.add(text, (module, filename, lineno))
        if reemit:
            if category is UserWarning and name != "UserWarning":
                message = text  # a class not raised by name keeps it in the text
            warnings.warn_explicit(message, category, filename, lineno, module=module)
    if isinstance(warned, list):
        warned.clear()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold off CPython's cyclic garbage collector while a plan or graph is built.

    A large plan is hundreds of thousands of small objects that all stay
    alive; the collector runs every 700 net allocations and each older
    generation pass walks everything allocated so far, for nothing. On the
    benchmark's 10,000 candidates x 5 folds this was 0.25-0.43 s of the
    1.0-1.15 s that planning and building the graph took. Reference counting
    still frees everything at once; only garbage in reference cycles waits
    for the end. Nested and concurrent planners share one pause: the
    collector comes back, if it was on, when the last of them is done.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


log = logging.getLogger(__name__)


class WorkerLost(RuntimeError):
    """A task killed every worker it ran on (a crash, not a Python error)."""


class WorkersCannotLoad(RuntimeError):
    """A search's estimators or scorers name code the workers cannot load."""


#: seconds without a heartbeat after which a worker is taken to be busy in a
#: task holding the GIL (or stopped): it is not waited for where waiting
#: could only delay (see :func:`silent_workers`)
SILENT_SECONDS = 5.0


def pickled_globals(blob: bytes) -> frozenset[tuple[str, str]] | None:
    """The (module, name) of each global unpickling ``blob`` looks up, or
    None where that cannot be told from the pickle: code cloudpickle sends by
    value imports what it refers to as it is rebuilt."""
    import pickletools

    strings = ("UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8")
    found: set[tuple[str, str]] = set()
    memo: dict[int, Any] = {}
    # what the latest ops (memo stores aside) pushed: a string, or None for
    # anything else; a memo store records the latest
    pushed: deque[Any] = deque([None, None], maxlen=2)
    try:
        for op, arg, _ in pickletools.genops(blob):
            name = op.name
            if name in strings:
                pushed.append(arg)
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(int(cast(int, arg))))
            elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                memo[len(memo) if name == "MEMOIZE" else int(cast(int, arg))] = pushed[-1]
            elif name in ("GLOBAL", "INST"):
                module, _, qualname = str(arg).partition(" ")
                found.add((module, qualname))
                pushed.append(None)
            elif name == "STACK_GLOBAL":
                if not (isinstance(pushed[-2], str) and isinstance(pushed[-1], str)):
                    return None
                found.add((pushed[-2], pushed[-1]))
                pushed.append(None)
            else:
                pushed.append(None)
    except Exception:  # noqa: BLE001 - not a pickle it can read: not known
        return None
    if any(m == "cloudpickle" or m.startswith("cloudpickle.") for m, _ in found):
        return None
    return frozenset(found)


class LoadCheck:
    """Whether every worker can load a search's estimators and scorers,
    asked once, before the search sends its first tasks.

    A worker that cannot unpickle a task (its class comes from a module
    installed only where the search was prepared) fails in dask's message
    handling, not in the task, and the search would wait for it forever.
    Asked first, each worker loads the same objects inside a function and
    says what stopped it; the search fails at once, naming it. A worker that
    loaded every class and function the objects name before (``known``:
    worker address -> (module, name) pairs, kept by the runner across
    searches) is not asked again: one busy in another search's fit holding
    the GIL would not answer, and each search started meanwhile waited
    :attr:`patience` for it."""

    #: seconds the workers are waited for (asked again every few seconds, the
    #: search's cancel flag looked at between): one busy in a fit that holds
    #: the GIL answers late; one frozen (stopped) never does, and is skipped
    patience = 30.0

    def __init__(
        self,
        client: Any,
        objects: Any,
        cancel: threading.Event | None = None,
        known: dict[str, set[tuple[str, str]]] | None = None,
    ):
        self.client = client
        self.objects = objects
        self.cancel = cancel
        self.done = False
        self.known = known if known is not None else {}

    def __call__(self) -> None:
        if self.done:
            return
        # pickled as dask pickles tasks (by reference where pickle can,
        # whatever cloudpickle is told to send by value), so what loads
        # here loads in a task
        from distributed.protocol.pickle import dumps

        blob = dumps(self.objects)
        workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        if not workers:
            return  # no worker yet: ask again before the next tasks
        for gone in set(self.known) - set(workers):
            self.known.pop(gone, None)  # another search's check may have dropped it
        named = pickled_globals(blob)
        ask = [w for w in workers if named is None or not named <= self.known.get(w, set())]
        answers = self._answers(ask, blob) if ask else {}
        for worker, answer in sorted(answers.items()):
            if isinstance(answer, ImportError):
                # it could not even load the check: the engine's own module
                # (or one it needs) is missing where that worker runs
                answer = cannot_load(answer)
            elif isinstance(answer, BaseException):
                continue  # the worker went away while asked: not its answer
            if answer:
                raise WorkersCannotLoad(f"the dask worker at {worker} {answer}")
            if named is not None:
                self.known.setdefault(worker, set()).update(named)
        self.done = True

    def _answers(self, workers: list[str], blob: bytes) -> dict[str, Any]:
        """Every worker's answer, asked all at once (again every 5 s, the
        cancel flag looked at between, for :attr:`patience` seconds); then
        each worker alone, briefly, and one that is silent is skipped."""
        deadline = time.monotonic() + self.patience
        while True:
            if self.cancel is not None and self.cancel.is_set():
                raise SearchCancelled()
            try:
                return dict(
                    self.client.run(
                        loads_here, blob, workers=workers, on_error="return", callback_timeout=5
                    )
                )
            except TimeoutError:
                if time.monotonic() < deadline:
                    continue
            except Exception:  # noqa: BLE001 - the cluster changed while asked: each alone
                pass
            break
        answers: dict[str, Any] = {}
        for worker in workers:
            try:
                answers.update(
                    self.client.run(
                        loads_here, blob, workers=[worker], on_error="return", callback_timeout=2
                    )
                )
            except Exception:  # noqa: BLE001 - silent (stopped, or holding the GIL) or gone
                log.warning("the dask worker at %s did not answer the load check", worker)
        return answers


def describe_task(plan: Plan, members: Mapping[str, tuple[str, ...]], key: Any) -> str:
    """A task's key in words: the step or final estimator, and its fold."""
    folds = list(plan.folds)
    key = str(key).removeprefix(LOADED)
    node: Any = plan.steps.get(key) or plan.scores.get(key) or plan.ttrains.get(key)
    if node is None and key in members:
        node = plan.scores.get(members[key][0])
    if node is None or not hasattr(node, "link"):
        return f"task {key}"
    link = node.link
    what = "step" if key in plan.steps else "final estimator"
    params = ", ".join(f"{k}={v!r}" for k, v in link.overrides)[:200]
    name = "/".join(link.path) or type(link.base).__name__
    fold = folds.index(node.fold) if node.fold in folds else "refit"
    return f"{what} {name!r} = {type(link.base).__name__}({params}) on fold {fold}"


class SearchCancelled(Exception):
    """The search was cancelled before it finished."""


@dataclass
class SearchStats:
    """What one search computed and what it found in the cache."""

    candidates: int = 0
    splits: int = 0
    #: distinct step, score and train-transform nodes of its plan: an upper
    #: bound on what runs (a step under a cached one is neither run nor
    #: loaded), not hits + fits
    tasks: int = 0
    score_hits: int = 0  # (candidate, split) results found in the cache
    step_hits: int = 0  # intermediate steps loaded from the cache or worker memory
    resident: int = 0  # of those, outputs still in worker memory from an earlier search
    step_fits: int = 0  # intermediate steps fitted
    final_fits: int = 0  # final-estimator fits (scores computed)
    #: fits another search running at the same time counted: one
    #: computation served both (:class:`SharedFits`)
    step_shared: int = 0
    final_shared: int = 0
    refit: str = ""  # "fit", "hit", "shared" or "" (no refit)
    refit_step_fits: int = 0  # intermediate steps fitted on all rows for the refit

    @property
    def hits(self) -> int:
        return self.score_hits + self.step_hits + (self.refit == "hit")

    @property
    def fits(self) -> int:
        return self.step_fits + self.final_fits

    @property
    def shared(self) -> int:
        return self.step_shared + self.final_shared

    @property
    def misses(self) -> int:
        return self.fits + self.shared

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.update(hits=self.hits, fits=self.fits, shared=self.shared, misses=self.misses)
        return d


@dataclass
class SearchResult:
    """What scikit-learn's fitted ``*SearchCV`` exposes, plus memo stats."""

    cv_results_: dict[str, Any]
    n_splits_: int
    multimetric_: bool
    scorer_: Any
    best_index_: int | None = None
    best_params_: dict[str, Any] | None = None
    best_score_: float | None = None
    best_estimator_: Any = None
    refit_time_: float | None = None
    warnings: list[str] = field(default_factory=list)
    #: of ``warnings``, those the refit raised, each as often as it came (a
    #: client that refits a candidate it picked, as a search of its own,
    #: raises only these again)
    refit_warnings: list[str] = field(default_factory=list)
    #: of ``warnings``, those raised more than once, by how often
    #: (scikit-learn's search raises a warning once per fit that gave it)
    warning_counts: dict[str, int] = field(default_factory=dict)
    #: of ``warnings``, where each was raised: [module, file, line]
    warning_sources: dict[str, list[Any]] = field(default_factory=dict)
    stats: SearchStats = field(default_factory=SearchStats)


@dataclass(frozen=True)
class Scoring:
    """Scorer plus error policy, shipped to score tasks as one object."""

    scorer: Any
    error_score: Any
    return_train_score: bool
    token: str = ""  # content id of the scoring spec, for dask's graph token

    def __dask_tokenize__(self) -> tuple[str, str]:
        return ("Scoring", self.token)

    def __iter__(self):  # unpacked by run_score
        return iter((self.scorer, self.error_score, self.return_train_score))


ProgressFn = Callable[[int, int, int, ScoreOutput | None], None]
#: ``on_result(score_key, output)``: every result, cached ones included
ResultFn = Callable[[str, ScoreOutput], None]


def _scorer_token(scorer: Any) -> Any:
    """A scorer name as itself; a scorer object (``make_scorer(...)``) or a
    callable by its content (its class or code and its settings)."""
    return scorer if isinstance(scorer, str) else keys.canonical(scorer)


def _scorers_token(scoring: Any) -> Any:
    if scoring is None or isinstance(scoring, str):
        return ["scoring", scoring]
    if isinstance(scoring, (list, tuple, set)):
        return ["scoring-list", sorted(scoring)]
    if isinstance(scoring, Mapping):
        items = [(k, _scorer_token(v)) for k, v in scoring.items()]
        return ["scoring-dict", sorted(items, key=lambda kv: kv[0])]
    if callable(scoring):
        return ["scoring-callable", _scorer_token(scoring)]
    raise TypeError(
        "scoring must be None, a scorer name, a scorer or callable, or a list or dict "
        f"of them, not {scoring!r}"
    )


def _is_array_like(value: Any) -> bool:
    return isinstance(value, (np.ndarray, list, tuple)) or type(value).__name__ in (
        "DataFrame",
        "Series",
    )


def _param_token(value: Any) -> Any:
    if isinstance(value, DataRef):
        return ["data", value.key_id]
    return keys.canonical(value)


def _n_columns(X: Any) -> int:
    shape = getattr(X, "shape", None)
    return int(shape[1]) if shape is not None and len(shape) > 1 else 1


#: Below this many cells (rows x columns) of training input, a fit is so
#: cheap that dask's cost per task (~1.5 ms measured: scheduler, transport,
#: result) matters, and several score fits go in one task. At or above it
#: every fit is a task of its own: finer tasks spread better over the
#: workers and leave less idle at the end. Measured, seed search (8,000 x
#: 500 per fold), 8 paired cold runs: one fit per task 0.938 x the time of
#: two per task (median 4.46 s vs 4.83 s); 1,000 trivial fits on 160 x 5:
#: 16 per task 1.42 s, 8 per task 1.57 s, 4 per task 1.95 s.
BATCH_BELOW_CELLS = 100_000


def score_batch(pending: int, threads: int, tasks_per_thread: int, train_cells: int) -> int:
    """How many score fits to run per dask task.

    One per task on data of at least :data:`BATCH_BELOW_CELLS` cells;
    below, enough per task to leave about ``tasks_per_thread`` tasks per
    worker thread (at most 64 fits per task).
    """
    if train_cells >= BATCH_BELOW_CELLS:
        return 1
    return min(64, max(1, math.ceil(pending / (max(1, threads) * tasks_per_thread))))


#: Default :attr:`SearchRunner.gather_every`. Fetching a result costs a round
#: trip through the scheduler: measured on a 2-process LocalCluster, 90
#: results fetched one by one took 0.15 s of the service process's CPU and
#: 0.1 s of the workers', against 0.03 s together in one fetch; the seed
#: search finishes a score every 50 ms or so, on cores that fit models.
#: Progress and partial results reach the caller up to this much later; the
#: last batch is fetched as soon as the last task ends.
GATHER_EVERY = 0.25


def _coalesced(ac: Any, every: float) -> Iterator[list[Any]]:
    """Batches of finished futures from ``ac`` (a dask ``as_completed``):
    while others run, at most one batch per ``every`` seconds; the final
    batch at once."""
    if every <= 0:
        yield from ac.batches()
        return
    cond = getattr(ac, "thread_condition", None)
    held: list[Any] = []
    since = 0.0
    while True:
        if not held:
            try:
                held = ac.next_batch(block=True)
            except StopIteration:
                return
            since = time.monotonic()
        else:
            held.extend(ac.next_batch(block=False))
        left = since + every - time.monotonic()
        if left <= 0 or ac.is_empty():
            yield held
            held = []
            continue
        if cond is None:
            time.sleep(min(left, 0.01))
        else:
            with cond:  # woken by every future that finishes
                if not ac.has_ready():
                    cond.wait(timeout=left)


@dataclass
class PreparedSearch:
    """A validated, planned search: what :meth:`SearchRunner.run` executes."""

    sk: Any  # scikit-learn's search object: validation, scorers, formatting
    refit_metric: str
    candidates: list[dict[str, Any]]
    n_splits: int
    base: Any
    plan: Plan
    ctx: TaskContext
    scoring: Scoring
    fit_param_tokens: dict[str, Any]
    refit_fold: Fold
    warnings: list[str]
    #: warnings scikit-learn gave while the search was prepared (drawing
    #: candidates), reported and re-emitted with the run's own
    sk_warnings: list[Any] = field(default_factory=list)
    #: cells (rows x columns) of X in the largest training fold: how big
    #: each fit's input is, before any transformer
    train_cells: int = 0

    @functools.cached_property
    def by_value_classes(self) -> list[type]:
        """The classes of its estimators and candidates that cloudpickle
        sends by value (a notebook's), found once per search."""
        return _classes_by_value(self.base, self.candidates)

    @property
    def total(self) -> int:
        """Distinct (candidate, split) results to load or compute.

        Candidates that configure the same chain (``None`` and
        ``"passthrough"`` for one step, say) share their results and count
        once; this is the ``total`` that ``on_progress`` reports.
        """
        return len(self.plan.scores)


#: what a search's runner counts for each output it keeps on the workers
#: besides the output's own bytes (see :attr:`ResidentOutputs.key_bytes`):
#: measured at about 6 kB of Python objects in the service and 26 kB in a
#: worker per key held, with a margin
RESIDENT_KEY_BYTES = 64 * 2**10


class ResidentOutputs:
    """Step outputs kept in worker memory between searches, up to a byte budget.

    After a search, the step outputs its final estimators were fitted on
    (and the refit's) stay on the workers, held here as dask futures; the
    least recently used are let go first once they exceed ``budget`` bytes.
    A later search needing the same step key gets the output without
    reading the disk cache (its tasks take a future of the output as their
    input), and the scheduler runs its final fits on the worker that holds
    it: a search that only changes the final estimator's parameters reads
    nothing from disk. Outputs are kept only once their search no longer
    needs them, so a search never holds more than dask itself would.

    The set and each search own separate references: :meth:`get` hands out
    a new one, :meth:`keep` takes its own, so letting an output go here
    never pulls it from under a search using it. If a worker holding outputs
    dies, dask restores them from their recipes (which read the disk cache
    first); a worker the engine restarts has its outputs let go first
    (:meth:`let_go_on`).
    """

    def __init__(self, budget: int, key_bytes: int = 0):
        self.budget = int(budget)
        #: what holding a key costs besides its output, counted with it: the
        #: scheduler's and the worker's task state, the futures, the recipe
        #: (its estimator, its data references). Without it, tiny outputs
        #: (a scaler's on small data) piled up by the hundred thousand.
        self.key_bytes = int(key_bytes)
        self._held: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        """A new future of ``key``'s output (marked recently used), or None.

        The caller owns the future (release it, or let it go out of scope).
        One that failed, was cancelled or lost is dropped here: the search
        then loads or fits the step as if it had never been held.
        """
        from distributed import Future

        with self._lock:
            held = self._held.get(key)
            if held is None:
                return None
            if held[0].status == "finished":
                self._held.move_to_end(key)
                return Future(held[0].key, held[0].client)
            del self._held[key]
            self._nbytes -= held[1]
        held[0].release()
        return None

    def keep(self, items: Iterable[tuple[str, Any, int]]) -> None:
        """Hold ``(key, future, nbytes)`` items; drop the oldest beyond the budget.

        Only finished futures are kept, each through a reference of its own.
        """
        from distributed import Future

        dropped = []
        with self._lock:
            for key, future, output_bytes in items:
                nbytes = output_bytes + self.key_bytes
                if nbytes > self.budget or future.status != "finished":
                    continue
                old = self._held.pop(key, None)
                if old is not None:
                    self._nbytes -= old[1]
                    dropped.append(old[0])
                self._held[key] = (Future(future.key, future.client), nbytes)
                self._nbytes += nbytes
            while self._nbytes > self.budget and self._held:
                _, (future, nbytes) = self._held.popitem(last=False)
                self._nbytes -= nbytes
                dropped.append(future)
        # futures are released outside the lock (each release messages the scheduler)
        for future in dropped:
            future.release()

    def discard(self, key: str, future: Any = None) -> None:
        """Let ``key``'s output go (if held; given ``future``, only if it is
        still the one held, not one kept anew meanwhile)."""
        with self._lock:
            held = self._held.get(key)
            if held is None or (future is not None and held[0] is not future):
                return
            del self._held[key]
            self._nbytes -= held[1]
        held[0].release()

    def let_go_on(self, client: Any, workers: Iterable[str]) -> list[str]:
        """Let go of the outputs held on ``workers`` alone (about to restart).

        dask would otherwise rebuild every one of them on the workers left,
        reading the disk cache, wanted or not: after a restart in an
        hour-long soak, some 1,500 outputs at once, beside the searches'
        own work. A later search needing one loads it as if it had never
        been held. Returns the step keys let go.
        """
        with self._lock:
            held = {key: future for key, (future, _) in self._held.items()}
        if not held:
            return []
        gone = set(workers)
        holders = client.who_has(list(held.values()))  # futures: keys alone ask for none
        keys = [
            key for key, future in held.items() if set(holders.get(future.key, ())) <= gone
        ]  # held nowhere else (or nowhere: being rebuilt already)
        for key in keys:
            self.discard(key, held[key])
        return keys

    def clear(self) -> None:
        with self._lock:
            held, self._held, self._nbytes = self._held, OrderedDict(), 0
        for future, _ in held.values():
            future.release()

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def __len__(self) -> int:
        return len(self._held)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._held)


#: dask key prefix of a task loading a step from the disk cache: a loader has
#: another recipe (no inputs) than the task fitting the step, and dask must
#: never see one key with two recipes (the fitting one may still be known to
#: the scheduler as an ancestor of an output held in worker memory)
LOADED = "loaded-"

#: how the engine's dask keys begin (:mod:`.keys`; batches of scores;
#: loaders): a worker running anything else is none of its business
ENGINE_KEYS = ("step-", "score-", "scores-", "refit-", "ttrain-", LOADED)


@dataclass
class Reuse:
    """How a graph names the steps it does not fit: held or loaded ones."""

    #: held step key -> this search's future of its output (the graph's tasks
    #: take the future itself as their argument: the key is not submitted again)
    futures: dict[str, Any] = field(default_factory=dict)
    #: step key -> the dask key of the task loading it from the disk cache
    loaded: dict[str, str] = field(default_factory=dict)

    def ref(self, key: str | None) -> Any:
        """What a task takes for the step ``key``: a future, a loader's key or the key."""
        if key is None:
            return None
        held = self.futures.get(key)
        return held if held is not None else self.loaded.get(key, key)

    def provenance(self, prov: tuple[tuple[str, str, float], ...]) -> tuple:
        """``prov`` as if the held steps had been loaded from the cache.

        A held output's provenance tells how an earlier search made it: the
        held step becomes a hit and the steps before it in the chain (its
        ancestors, made by that earlier search) drop out, as they do for a
        step loaded from the cache. Other chains' provenance is untouched.
        """
        held = [i for i, (k, _, _) in enumerate(prov) if k in self.futures]
        if not held:
            return prov
        i = held[-1]
        return ((prov[i][0], "hit", prov[i][2]), *prov[i + 1 :])

    def output(self, o: ScoreOutput) -> ScoreOutput:
        prov = self.provenance(o.provenance)
        return o if prov is o.provenance else replace(o, provenance=prov)

    def finish(self, dsk: dict[str, Any]) -> None:
        """Point ``dsk``'s tasks at the held and loaded steps they use.

        Tasks name their inputs by step key; a held step's key is not in
        the graph (submitting it again with another recipe would confuse
        the scheduler), so its future takes the key's place, and a loaded
        step's loader key takes it for a loaded one.
        """
        subs: dict[str, Any] = {**self.loaded, **self.futures}
        if not subs:
            return
        for k, task in dsk.items():
            if any(isinstance(a, str) and a in subs for a in task):
                dsk[k] = tuple(subs[a] if isinstance(a, str) and a in subs else a for a in task)

    def release(self) -> None:
        """Let go of this search's references to held outputs."""
        for future in self.futures.values():
            future.release()


_F = TypeVar("_F", bound=Callable[..., Any])


def _in_code_scope(fn: _F) -> _F:
    """``fn`` run inside :func:`keys.code_scope`: user code digested once a call."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with keys.code_scope():
            return fn(*args, **kwargs)

    return cast(_F, run)


class SearchRunner:
    """Runs searches against one dataset store, one cache and one dask client."""

    def __init__(
        self,
        client: Any,
        store: DatasetStore,
        cache: ResultCache | None,
        *,
        blas_threads: int | None = 1,
        refit_blas_threads: int | None = ALL_CORES,
        tasks_per_thread: int = 32,
        resident_bytes: int = 2 * 2**30,
        gather_every: float = GATHER_EVERY,
        address: str | None = None,
    ):
        #: None until the scheduler at ``address`` first answers
        self.client = client
        self.store = store
        self.cache = cache
        #: BLAS/OpenMP threads per fold task and for the refit (None: no
        #: limit; ``ALL_CORES``: every core of the worker's machine). The
        #: defaults are scikit-learn's GridSearchCV(n_jobs=-1): its workers
        #: fit folds at one thread and it refits in the calling process at
        #: BLAS's default, and the last bits of a large matrix product
        #: depend on the thread count
        self.blas_threads = blas_threads
        self.refit_blas_threads = refit_blas_threads
        #: score tasks to aim for per worker thread on small data; more
        #: scores than that are batched so that cheap fits do not drown in
        #: per-task overhead (see :func:`score_batch`)
        self.tasks_per_thread = tasks_per_thread
        #: seconds between fetches of finished scores while others still run
        #: (0: fetch each batch as it finishes; see :func:`_coalesced`)
        self.gather_every = gather_every
        #: step outputs kept in worker memory between searches (0: none)
        self.resident = (
            ResidentOutputs(resident_bytes, RESIDENT_KEY_BYTES) if resident_bytes > 0 else None
        )
        # stopping a cancelled search's work (_stop_unwanted_work)
        self._reaper_lock = threading.Lock()
        self._reaper_running = False
        self._reaper_until = 0.0
        self._restarted: dict[str, float] = {}  # worker name: when last restarted
        # restarting frozen workers (_watch_frozen): searches running, whether
        # the watch runs, and each silent worker's (since, CPU seconds then)
        self._searching = 0
        self._frozen_watch = False
        self._frozen_idle = threading.Event()
        self._frozen: dict[str, tuple[float, float]] = {}
        #: seconds without a heartbeat after which a worker is taken to be
        #: busy holding the GIL, and its cache writes not waited for
        self.silent_seconds = SILENT_SECONDS
        #: the globals each worker loaded a search's objects with (LoadCheck)
        self._loads: dict[str, set[tuple[str, str]]] = {}
        #: where each worker runs (host, process), as it said: asked once
        self._places: dict[str, tuple[Any, ...]] = {}
        # an external scheduler's address, to connect (again) to (ensure_connected)
        if client is not None:
            address = client.scheduler.address if client.cluster is None else None
        self._address = address
        self._next_connect = 0.0
        #: whether :meth:`ensure_connected` made the client (its maker closes it)
        self.connected_here = False

    def ensure_connected(self) -> bool:
        """Whether the dask client is connected. dask's client tries to
        reconnect to a scheduler it lost for 30 s, then closes for good
        (every later search failed until the service restarted): a closed
        client of an external scheduler is replaced by a new one to the same
        address, tried at most every 5 s while the scheduler is away."""
        status = "closed" if self.client is None else getattr(self.client, "status", "running")
        if status == "running":
            return True
        if status not in ("closed", "closing") or self._address is None:
            return False  # reconnecting on its own
        now = time.monotonic()
        if now < self._next_connect:
            return False
        self._next_connect = now + 5.0
        from .cluster import CONNECT_SECONDS, make_client

        first = self.client is None
        try:
            self.client = make_client(self._address, timeout=CONNECT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - still away: asked again later
            log.info("the dask scheduler at %s is still away: %r", self._address, exc)
            return False
        self.connected_here = True
        log.warning(
            "connected to the dask scheduler at %s%s", self._address, "" if first else " again"
        )
        return True

    def waiting_for(self) -> str | None:
        """What a search would wait for now, in words (None: nothing): the
        scheduler, or a worker (one whose scheduler went away exits). Told
        to users: the scheduler's address is not (the service's log has it)."""
        client = self.client
        if client is None or getattr(client, "status", "running") != "running":
            return "the dask scheduler does not answer"
        try:
            workers = client.scheduler_info()["workers"]
        except Exception:  # noqa: BLE001 - closing just now: asked again next time
            return None
        return None if workers else "no dask worker is connected to the scheduler"

    # -- data -------------------------------------------------------------
    def _ref(self, value: Any) -> DataRef | None:
        if value is None or isinstance(value, DataRef):
            return value
        return self.store.put(value)

    # -- the search -----------------------------------------------------
    def _one_task_per_process(self) -> bool:
        """Whether every worker runs one task at a time in a process of its
        own (not this one), so that a task may set process-wide state such
        as warnings filters."""
        nthreads = self.client.nthreads()
        if not nthreads or any(n != 1 for n in nthreads.values()):
            return False
        # workers of one process can each run one thread (a LocalCluster of
        # threads over tcp): told apart by where they run. Each is asked once:
        # one busy later in a fit holding the GIL (scipy's lstsq) would not
        # answer, and every search started meanwhile waited ask_timeout and
        # then left the caller's filters out
        self._places = {w: p for w, p in self._places.items() if w in nthreads}
        unknown = [w for w in nthreads if w not in self._places]
        if unknown:
            try:  # a worker stopped or holding the GIL does not answer: not known
                where = self.client.run(
                    caller_identity, workers=unknown, callback_timeout=self.ask_timeout
                )
            except TimeoutError:
                return False
            self._places.update((w, tuple(p)) for w, p in where.items())
        places = [self._places[w] for w in nthreads if w in self._places]
        if len(places) != len(nthreads):
            return False  # one left while asked: asked again next time
        return len(set(places)) == len(places) and caller_identity() not in places

    @_in_code_scope
    def prepare(
        self,
        estimator: Any,
        X: Any,
        y: Any = None,
        *,
        param_grid: Any = None,
        param_distributions: Any = None,
        n_iter: int = 10,
        random_state: Any = None,
        groups: Any = None,
        cv: Any = None,
        scoring: Any = None,
        refit: bool | str = True,
        error_score: Any = np.nan,
        return_train_score: bool = False,
        fit_params: Mapping[str, Any] | None = None,
        x_order: str | None = None,
        y_order: str | None = None,
        warning_filters: Sequence[Sequence[Any]] = (),
    ) -> PreparedSearch:
        """Validate a search, draw its candidates and folds, and plan its tasks.

        Arguments are scikit-learn's (a grid search with ``param_grid``, a
        randomized one with ``param_distributions``). ``X``, ``y``, ``groups``
        and fit-param values may be arrays or DataFrames (stored
        content-addressed first) or :class:`DataRef`; X may also be a scipy
        sparse matrix (stored as the CSR one scikit-learn searches).
        ``x_order`` is the memory order ("C" or "F") of the caller's X, which the refit
        reproduces as scikit-learn refits on X itself (and, for a DataFrame,
        which every fold keeps: see :func:`memogrid.data.memory_order`); by
        default it is read off X ("C" for an array by :class:`DataRef`, "F",
        pandas' own layout, for a frame by reference); ``y_order`` likewise
        for a 2-D y. ``warning_filters`` are a caller's warnings filters
        (:func:`memogrid.spec.caller_warning_filters`) that the tasks run
        under, where every worker runs one task at a time in a process of
        its own (else they are not applied, and the result says so).
        Nothing runs yet.
        """
        from sklearn import get_config as sklearn_config
        from sklearn.base import clone, is_classifier

        self.ensure_connected()  # a client dask closed after losing its scheduler
        from sklearn.model_selection import (
            GridSearchCV,
            ParameterGrid,
            ParameterSampler,
            RandomizedSearchCV,
            check_cv,
        )
        from sklearn.utils.validation import _num_samples, indexable

        if (param_grid is None) == (param_distributions is None):
            raise ValueError("give exactly one of param_grid and param_distributions")
        for name, given in (("x_order", x_order), ("y_order", y_order)):
            if given not in (None, "C", "F"):
                raise ValueError(f"{name} must be 'C' or 'F', not {given!r}")
        common = dict(
            scoring=scoring,
            refit=refit,
            cv=cv,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        if param_grid is not None:
            sk: Any = GridSearchCV(estimator, param_grid, **common)
        else:
            sk = RandomizedSearchCV(
                estimator,
                param_distributions,
                n_iter=n_iter,
                random_state=random_state,
                **common,
            )
        sk._validate_params()
        scorers, refit_metric = sk._get_scorers()
        # error_score is part of the scorers' identity: a scorer that fails on
        # a fold reports it, and that result is cached like any other
        scorers_token = [_scorers_token(scoring), keys.canonical(error_score)]

        x_ref = self._ref(X)
        if x_ref is not None and is_text(X):
            # documents: a vectorizer reads an object array as it reads a
            # list, and workers hold it at its own size, not as numpy text
            x_ref = DataRef(x_ref.root, x_ref.dataset_id, as_object=True)
        y_ref = self._ref(as_target(y))
        g_ref = self._ref(groups)
        assert x_ref is not None
        # read here to plan the search, not kept: the workers keep what they load
        X_local = x_ref.load(keep=False)
        order = x_order if x_order is not None else memory_order(X)
        if is_frame(X_local):
            if x_order is None and not is_frame(X):
                order = "F"  # a frame by reference, as pandas lays frames out
            if order == "C" and one_number_dtype(X_local):
                x_ref = replace(x_ref, rows_first=True)
                X_local = x_ref.load(keep=False)
        y_local = y_ref.load(keep=False) if y_ref is not None else None
        if y_order is None:
            y_order = memory_order(y) if isinstance(y, np.ndarray) else "C"
        g_local = g_ref.load(keep=False) if g_ref is not None else None
        X_local, y_local = indexable(X_local, y_local)
        fit_params = dict(fit_params or {})
        check_fit_param_names(estimator, list(fit_params))
        if fit_params and sklearn_config().get("enable_metadata_routing"):
            raise ValueError(
                "fit params under scikit-learn's metadata routing "
                "(enable_metadata_routing=True) are not supported: the engine routes "
                "them by step name, as scikit-learn does with routing off"
            )
        # array-likes go to the store (sliced per fold by the workers);
        # anything else is a literal keyed by content
        fp_refs = {name: self._ref(v) if _is_array_like(v) else v for name, v in fit_params.items()}
        fp_tokens = {name: _param_token(v) for name, v in fp_refs.items()}
        score_params: dict[str, Any] = {}
        if fp_refs.get("sample_weight") is not None and sk._check_scorers_accept_sample_weight():
            score_params["sample_weight"] = fp_refs["sample_weight"]
        score_tokens = sorted((k, _param_token(v)) for k, v in score_params.items())

        # scikit-learn's order, which a RandomState shared by the estimator,
        # the sampler and the splitter sees: the folds counted, the
        # estimator copied, the candidates drawn, then the folds split
        cv_checked = check_cv(cv, y_local, classifier=is_classifier(estimator))
        split_kw = {"groups": g_local}
        n_splits = cv_checked.get_n_splits(X_local, y_local, **split_kw)
        base = clone(estimator)
        drawn: list[warnings.WarningMessage] = []
        if param_grid is not None:
            candidates = list(ParameterGrid(param_grid))
        else:
            # scikit-learn warns here when n_iter exceeds a grid of lists;
            # kept for the result (a service records it, run() re-emits it)
            with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as drawn:
                warnings.simplefilter("always")
                candidates = list(
                    ParameterSampler(param_distributions, n_iter, random_state=random_state)
                )
        # a splitter warns as it splits (StratifiedKFold about a class with
        # fewer members than folds): kept for the result like the sampler's
        with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as split_warned:
            warnings.simplefilter("always")
            splits = list(cv_checked.split(X_local, y_local, **split_kw))
        if len(splits) != n_splits:
            raise ValueError(
                "cv.split and cv.get_n_splits return inconsistent results. "
                f"Expected {n_splits} splits, got {len(splits)}"
            )
        pairwise = _pairwise(base, candidates) if candidates else False
        gid = g_ref.key_id if g_ref is not None else None
        yid = y_ref.key_id if y_ref is not None else None
        sk_config = result_settings()
        filters = checked_filters(list(warning_filters))
        unfiltered = bool(filters) and not self._one_task_per_process()
        if unfiltered:
            filters = ()  # not applied, so not in any key
        folds = [
            Fold(
                keys.fold_key(
                    x_ref.key_id,
                    yid,
                    gid,
                    tr,
                    te,
                    self.blas_threads,
                    "C",
                    sk_config,
                    warning_filters=filters,
                    pairwise=pairwise,
                ),
                np.asarray(tr),
                np.asarray(te),
            )
            for tr, te in splits
        ]
        if not candidates or not folds:
            raise ValueError(NO_FITS)
        with gc_paused():
            plan = build_plan(
                base,
                candidates,
                folds,
                scorers_token=scorers_token,
                return_train_score=return_train_score,
                fit_param_tokens=fp_tokens,
                score_param_tokens=score_tokens,
            )
        data = DataSpec(
            X=x_ref,
            y=y_ref,
            fit_params=tuple(fp_refs.items()),
            score_params=tuple(score_params.items()),
            pairwise_estimator=base if pairwise else None,
        )
        ctx = TaskContext(
            self.cache,
            data,
            self.blas_threads,
            sk_config,
            caller_identity(),
            filters,
            keys.LIBRARY_VERSIONS,
        )
        warn = []
        if unfiltered:
            warn.append(
                "the caller's warnings filters were not applied to the fits: the "
                "cluster's workers do not each run one task at a time in a process of "
                "their own, and warnings filters are process-wide"
            )
        if plan.unseeded:
            warn.append(
                "estimators with random_state=None are memoized like any other: a "
                "cached fit is reused instead of drawing new randomness: "
                + ", ".join(plan.unseeded)
            )
        all_rows = np.arange(_num_samples(X_local))
        no_rows = np.arange(0)
        refit_fold = Fold(
            keys.fold_key(
                x_ref.key_id,
                yid,
                gid,
                all_rows,
                no_rows,
                self.refit_blas_threads,
                order,
                sk_config,
                y_order,
                filters,
            ),
            all_rows,
            no_rows,
            whole=True,
            order=order,
            y_order=y_order,
        )
        return PreparedSearch(
            sk=sk,
            refit_metric=refit_metric,
            candidates=candidates,
            n_splits=n_splits,
            base=base,
            plan=plan,
            ctx=ctx,
            scoring=Scoring(
                scorers,
                error_score,
                return_train_score,
                keys.token_id([scorers_token, bool(return_train_score)]),
            ),
            fit_param_tokens=fp_tokens,
            refit_fold=refit_fold,
            warnings=warn,
            sk_warnings=[*split_warned, *drawn],
            train_cells=max(len(f.train) for f in folds) * _n_columns(X_local),
        )

    @_keeping_callers_code
    def run(
        self,
        prepared: PreparedSearch,
        *,
        on_progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        on_result: ResultFn | None = None,
        reemit_warnings: bool = True,
        warnings_into: WarningLog | None = None,
    ) -> SearchResult:
        """Run a prepared search to its scikit-learn shaped result.

        ``on_progress(done, total, hits, output)`` is called once with the
        cached results and then as each (candidate, split) result arrives;
        ``on_result(score_key, output)`` is called for every distinct result,
        the cached ones first (``plan.grid`` maps score keys to candidates
        and splits); setting ``cancel`` stops the search and releases its
        dask tasks (a task another running search of the same client also
        wants goes on for that search: this one stops at its next result).
        The warnings scikit-learn gives while formatting results (failed
        fits, non-finite scores) land in ``SearchResult.warnings`` and are
        also re-emitted here unless ``reemit_warnings`` is false (a service
        records them instead). ``warnings_into`` collects them as they come,
        so that a search whose refit fails keeps what came before, as
        scikit-learn's raised it before the error.

        A cancelled search stops the work already running for it too: a
        worker process still fitting a task nobody wants any more is
        restarted (:meth:`_stop_unwanted_work`).
        """
        with self._reaper_lock:
            self._searching += 1
            self._frozen_idle.clear()
        self._watch_frozen()
        try:
            with _counting_fits(self.client) as counter:
                return self._run(
                    prepared,
                    counter,
                    on_progress=on_progress,
                    cancel=cancel,
                    on_result=on_result,
                    reemit_warnings=reemit_warnings,
                    warnings_into=warnings_into,
                )
        except SearchCancelled:
            self._stop_unwanted_work()
            raise
        finally:
            with self._reaper_lock:
                self._searching -= 1
                if not self._searching:
                    self._frozen_idle.set()

    def _run(
        self,
        prepared: PreparedSearch,
        counter: FitCounter,
        *,
        on_progress: ProgressFn | None,
        cancel: threading.Event | None,
        on_result: ResultFn | None,
        reemit_warnings: bool,
        warnings_into: WarningLog | None,
    ) -> SearchResult:
        from sklearn.base import clone
        from sklearn.metrics._scorer import _MultimetricScorer
        from sklearn.model_selection._validation import (
            _insert_error_scores,
            _warn_or_raise_about_fit_failures,
        )

        p = prepared
        sk, plan = p.sk, p.plan
        error_score, refit = sk.error_score, sk.refit
        scorers = p.scoring.scorer
        stats = SearchStats(candidates=len(p.candidates), splits=p.n_splits)
        log = warnings_into if warnings_into is not None else WarningLog()
        for note in p.warnings:
            log.add(note)
        _report_caught(p.sk_warnings, reemit_warnings, log)
        loadable = LoadCheck(
            self.client, (p.base, p.candidates, p.scoring, p.ctx), cancel, self._loads
        )
        outputs = self._run_plan(
            plan,
            p.ctx,
            p.scoring,
            stats,
            counter,
            on_progress,
            cancel,
            on_result,
            p.train_cells,
            loadable,
        )
        out = []
        warned: list[Warned] = []  # what the fits warned about in the workers
        for row in plan.grid:
            for skey in row:
                o = outputs[skey]
                r = dict(o.result)
                warned.extend(r.pop(WARNINGS_KEY, ()))
                if o.exception is not None and (error_score == "raise" or "test_scores" not in r):
                    _raise_warned(warned, reemit_warnings, log)
                    raise o.exception
                out.append(r)
        _raise_warned(warned, reemit_warnings, log)

        # catch_warnings swaps process-wide state: one search at a time
        with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _warn_or_raise_about_fit_failures(out, error_score)
            if callable(sk.scoring):
                # its results' shape is known only now: a failed fold's one
                # error score becomes one per metric, as scikit-learn does
                _insert_error_scores(out, error_score)
            results = sk._format_results(p.candidates, p.n_splits, out)
        _report_caught(caught, reemit_warnings, log)

        multimetric = isinstance(out[0]["test_scores"], dict)
        refit_metric = p.refit_metric
        if callable(sk.scoring) and multimetric:  # a callable giving several metrics
            sk._check_refit_for_multimetric(out[0]["test_scores"])
            refit_metric = refit
        res = SearchResult(
            cv_results_=results,
            n_splits_=p.n_splits,
            multimetric_=multimetric,
            scorer_=scorers._scorers if isinstance(scorers, _MultimetricScorer) else scorers,
            warnings=log.texts,
            stats=stats,
        )
        if refit or not multimetric:
            # scikit-learn's own types: a numpy integer, and no best_score_
            # when a callable refit picked the candidate
            res.best_index_ = sk._select_best_index(refit, refit_metric, results)
            if not callable(refit):
                res.best_score_ = results[f"mean_test_{refit_metric}"][res.best_index_]
            res.best_params_ = results["params"][res.best_index_]
        if refit:
            assert res.best_params_ is not None
            start = time.perf_counter()
            best = clone(p.base).set_params(**clone(res.best_params_, safe=False))
            fitted, stats.refit, stats.refit_step_fits, refit_warned = self._run_refit(
                p.base,
                res.best_params_,
                p.refit_fold,
                p.fit_param_tokens,
                p.ctx,
                counter,
                cancel,
                loadable,
            )
            res.refit_warnings = [_text(w) for w in refit_warned]  # each as often as it came
            _raise_warned(refit_warned, reemit_warnings, log)
            # the fitted models' strided views, laid out as they were fitted
            own = best.get_params(deep=True)
            res.best_estimator_ = assemble(best, fitted)
            callers_functions(own, res.best_estimator_)
            callers_classes(res.best_estimator_, p.by_value_classes)
            restore_strides(res.best_estimator_)
            res.refit_time_ = time.perf_counter() - start
        res.warning_counts = log.repeated()
        res.warning_sources = log.sources
        if stats.fits or stats.shared or stats.refit in ("fit", "shared"):
            self._drain_writes()
        return res

    def search(
        self,
        estimator: Any,
        X: Any,
        y: Any = None,
        *,
        on_progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        **kwargs: Any,
    ) -> SearchResult:
        """Prepare and run a search; ``kwargs`` as for :meth:`prepare`."""
        prepared = self.prepare(estimator, X, y, **kwargs)
        return self.run(prepared, on_progress=on_progress, cancel=cancel)

    # -- execution --------------------------------------------------------
    def _run_plan(
        self,
        plan: Plan,
        ctx: TaskContext,
        scoring: Scoring,
        stats: SearchStats,
        counter: FitCounter,
        on_progress: ProgressFn | None,
        cancel: threading.Event | None,
        on_result: ResultFn | None = None,
        train_cells: int = 0,
        loadable: LoadCheck | None = None,
    ) -> dict[str, ScoreOutput]:
        total = len(plan.scores)
        outputs: dict[str, ScoreOutput] = {}
        pending = []
        for skey in plan.scores:
            hit = cached_score(self.cache, skey) if self.cache is not None else None
            if hit is not None:
                outputs[skey] = ScoreOutput(hit, (), "hit")
            else:
                pending.append(skey)
        stats.score_hits = len(outputs)
        if on_result is not None:
            for skey, o in outputs.items():
                on_result(skey, o)
        stats.tasks = len(plan.steps) + len(plan.scores) + len(plan.ttrains)
        done = len(outputs)
        if on_progress is not None:
            on_progress(done, total, stats.hits, None)
        if not pending:
            return outputs
        if loadable is not None:
            loadable()

        from distributed import as_completed

        threads = sum(self.client.nthreads().values()) or 1
        batch = score_batch(len(pending), threads, self.tasks_per_thread, train_cells)
        reuse = Reuse()
        dsk, members = self.graph(plan, pending, ctx, scoring, batch, reuse)
        stats.resident = len(reuse.futures)
        task_keys = list(members)
        # the step outputs final fits use: kept in worker memory afterwards
        parent_of: dict[str, str] = {}
        waiting: dict[str, int] = {}  # parent -> its score tasks not yet done
        if self.resident is not None:
            for tkey, skeys in members.items():
                parent = plan.scores[skeys[0]].parent
                if parent is not None:
                    parent_of[tkey] = parent
                    waiting[parent] = waiting.get(parent, 0) + 1
        fresh = [p for p in waiting if p not in reuse.futures]
        with _wanting(self.client, task_keys):
            try:
                futures = self.client.get(
                    dsk, task_keys + [reuse.ref(p) for p in fresh], sync=False
                )
            except BaseException:
                reuse.release()
                raise
            score_futures = futures[: len(task_keys)]
            parent_futures = dict(zip(fresh, futures[len(task_keys) :], strict=True))
            parent_futures.update((p, reuse.futures[p]) for p in waiting if p in reuse.futures)
            sizes: dict[str, int] = {}
            failed: set[str] = set()
            seen_steps: set[str] = set()
            # cancelling cancels a key for every search of this client: only the
            # score tasks no other search wants; the steps are let go by
            # dropping their futures
            stop = self._watch_cancel(cancel, score_futures)
            try:
                # gather results in batches: one round trip per batch, not per task
                for ended in _coalesced(as_completed(score_futures), self.gather_every):
                    if cancel is not None and cancel.is_set():
                        raise SearchCancelled()
                    finished = []
                    for fut, got in zip(ended, self.client.gather(ended), strict=True):
                        outs = got if isinstance(got, list) else [got]
                        for skey, o in zip(members[fut.key], outs, strict=True):
                            o = counter.output(skey, reuse.output(o))
                            outputs[skey] = o
                            self._count(o, seen_steps, stats)
                            done += 1
                            if on_result is not None:
                                on_result(skey, o)
                            if on_progress is not None:
                                on_progress(done, total, stats.hits, o)
                        parent = parent_of.get(fut.key)
                        if parent is not None:
                            sizes[parent] = outs[0].parent_nbytes
                            if any(o.final == "skipped" for o in outs):
                                failed.add(parent)  # a failed step is not kept
                            waiting[parent] -= 1
                            if not waiting[parent]:
                                finished.append(parent)
                    self._keep_resident(finished, parent_futures, sizes, failed)
            except BaseException as exc:
                for fut in parent_futures.values():
                    fut.release()  # not kept: let the workers drop the step
                parent_futures.clear()
                _cancel_own(self.client, score_futures)
                if cancel is not None and cancel.is_set():
                    raise SearchCancelled() from None
                from distributed import KilledWorker

                if isinstance(exc, KilledWorker):
                    if loadable is not None:  # a worker that joined since, unable to load it?
                        loadable.done = False
                        loadable()  # WorkersCannotLoad, naming what it misses
                    task = describe_task(plan, members, exc.task)
                    raise WorkerLost(
                        "a task kept killing the worker running it and was given up after "
                        f"the scheduler's allowed failures: {task} (or the workers could not "
                        "load it: their logs say)"
                    ) from None
                raise
            finally:
                stop.set()
                reuse.release()
            return outputs

    def _keep_resident(
        self,
        keys: list[str],
        futures: dict[str, Any],
        sizes: dict[str, int],
        failed: set[str],
    ) -> None:
        """Hand the step outputs ``keys`` (no longer needed) to the resident set."""
        if self.resident is None or not keys:
            return
        kept = [(k, futures[k], sizes[k]) for k in keys if k not in failed]
        self.resident.keep(kept)  # takes references of its own
        for k in keys:
            futures.pop(k).release()

    def _drain_writes(self) -> None:
        """Wait until every worker has stored what it computed in the cache.

        Tasks queue their cache entries for a low-priority writer thread
        (:meth:`ResultCache.set_later`) so that writing never delays a fit;
        draining before a search returns means the next search, in any
        process, finds everything this one computed. Except what a worker
        silent for :attr:`silent_seconds` holds (busy in another search's fit
        holding the GIL): it writes that when the fit ends, and a search
        before then may compute it again.
        """
        if self.cache is None:
            return
        from ..store.cache import drain_writes_async

        # a worker busy in another search's fit holding the GIL would answer
        # (and write) only when that fit ends: it is not waited for, and
        # writes what it holds of this search's when it can. Asked for a few
        # seconds at a time, so that one falling silent meanwhile is seen so
        deadline = time.monotonic() + 120.0
        said: set[str] = set()
        while True:
            try:
                silent = set(self.client.run_on_scheduler(silent_workers, self.silent_seconds))
                workers: list[str] | None = [w for w in self.client.nthreads() if w not in silent]
            except Exception:  # noqa: BLE001 - asked of every worker, as before
                silent, workers = set(), None
            for worker in sorted(silent - said):
                log.info("not waiting for the cache writes of the silent dask worker %s", worker)
            said |= silent
            if workers == []:
                log.warning("no dask worker answers: the cache writes are made when they do")
                return
            left = deadline - time.monotonic()
            try:
                outs = self.client.run(
                    drain_writes_async,
                    workers=workers,
                    on_error="return",
                    callback_timeout=max(0.1, min(self.silent_seconds, left)),
                )
                break
            except TimeoutError:  # still writing, or fallen silent: asked again
                if left <= self.silent_seconds:  # a worker stopped or stuck
                    log.warning("the workers did not finish their cache writes within 120 s")
                    return
        failed = {worker: out for worker, out in outs.items() if isinstance(out, BaseException)}
        for worker, exc in failed.items():  # a worker lost at the end loses only its writes
            log.warning("could not drain cache writes on %s: %r", worker, exc)

    #: seconds the workers have to say where they run (whether warnings
    #: filters can apply); unanswered, the filters are left out
    ask_timeout = 30.0

    #: seconds a cancelled search's tasks have to end on their own before
    #: the workers still running them are restarted; how long they are
    #: looked for; and the least time between two restarts of one worker
    #: (a LocalCluster gives up a worker missing for 15 s)
    unwanted_grace = 2.0
    unwanted_watch = 120.0
    restart_every = 30.0

    def _stop_unwanted_work(self) -> None:
        """In the background: restart each worker process still running the
        engine's tasks that no search wants any more (a cancelled search's
        fit goes on in its worker until it ends, and a fit may take hours),
        once it runs nothing else that is wanted and holds nothing of
        another client's; looked for every :attr:`unwanted_grace` seconds
        for :attr:`unwanted_watch` seconds. Only workers under a nanny,
        which starts a new process in the old one's place; a worker that
        does not answer (a fit holding the GIL) is asked again."""
        with self._reaper_lock:
            self._reaper_until = time.monotonic() + self.unwanted_watch
            if self._reaper_running:
                return  # the running one looks longer
            self._reaper_running = True
        threading.Thread(target=self._reap, name="memogrid-stop-unwanted", daemon=True).start()

    def _reap(self) -> None:
        client = self.client
        try:
            while True:
                time.sleep(self.unwanted_grace)
                with self._reaper_lock:
                    if time.monotonic() > self._reaper_until:
                        return
                try:
                    workers = client.scheduler_info(n_workers=-1)["workers"]
                except Exception as exc:  # noqa: BLE001 - a cluster gone: nothing runs
                    log.info("could not list the workers to stop unwanted work: %r", exc)
                    return
                stuck = []
                for addr, info in workers.items():
                    name = info.get("name", addr)
                    recent = time.monotonic() - self._restarted.get(name, -1e9)
                    if not info.get("nanny") or recent < self.restart_every:
                        continue  # nothing would start it again, or it just was
                    try:
                        got = client.run(
                            unwanted_work, ENGINE_KEYS, workers=[addr], callback_timeout=10
                        )
                    except Exception:  # noqa: BLE001 - busy holding the GIL, or gone
                        # a cancelled fit holding the GIL (a regex backtracking
                        # for hours) kept its worker forever: the scheduler
                        # answers for it instead
                        try:
                            idle = client.run_on_scheduler(silent_worker_idle, addr, ENGINE_KEYS)
                        except Exception:  # noqa: BLE001 - no answer there either: next time
                            continue
                        silent = "(what it runs: it has not answered for 10 s)"
                        got = {addr: ([silent], [])} if idle else {}
                    unwanted, others = got.get(addr, ([], []))
                    if unwanted and not others:
                        stuck.append(addr)
                        self._restarted[name] = time.monotonic()
                        log.warning(
                            "restarting the worker %s: it is still running %s, which no "
                            "search wants any more (cancelled)",
                            addr,
                            ", ".join(unwanted)[:300],
                        )
                if stuck:
                    self._restart(stuck)
        finally:
            with self._reaper_lock:
                self._reaper_running = False

    #: a worker silent this long (no heartbeat) whose process used almost no
    #: CPU meanwhile is stopped or deadlocked, not busy in a fit holding the
    #: GIL: it is restarted; looked at every :attr:`frozen_check` seconds
    #: while searches run (the embedded cluster runs without dask's
    #: worker-ttl, which restarted busy workers as well: cluster.NO_WORKER_TTL)
    frozen_seconds = 300.0
    frozen_check = 30.0

    def _watch_frozen(self) -> None:
        """In the background while searches run: :meth:`_check_frozen`. The
        watch ends as the last search does, and holds the runner only
        weakly (its resident outputs are futures: a runner kept alive kept
        them in worker memory)."""
        with self._reaper_lock:
            if self._frozen_watch:
                return
            self._frozen_watch = True
        ref = weakref.ref(self)
        idle, every = self._frozen_idle, self.frozen_check

        def watch() -> None:
            while True:
                if idle.wait(every):  # no search runs
                    runner = ref()
                    if runner is None:
                        return
                    with runner._reaper_lock:
                        if runner._searching:  # one started meanwhile
                            idle.clear()
                            continue
                        runner._frozen_watch = False
                        return
                runner = ref()
                if runner is None:
                    return
                runner._check_frozen()
                del runner

        threading.Thread(target=watch, name="memogrid-frozen-workers", daemon=True).start()

    def _check_frozen(self) -> list[str]:
        """Restart each worker under a nanny that has been silent, its process
        using under a twentieth of a core, for :attr:`frozen_seconds`;
        return them. A worker that answers again, or uses CPU, starts over."""
        client = self.client
        try:
            silent = client.run_on_scheduler(silent_workers, self.silent_seconds)
            if not silent:
                self._frozen = {}
                return []
            nannies = {
                a
                for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
                if w.get("nanny")
            }
        except Exception as exc:  # noqa: BLE001 - the cluster changed or went: next time
            log.info("could not look for frozen workers: %r", exc)
            return []
        now = time.monotonic()
        watched = {a: v for a, v in self._frozen.items() if a in silent}
        frozen = []
        for addr in (a for a in silent if a in nannies):
            try:
                got = client.run(
                    worker_cpu_seconds, workers=[addr], nanny=True, callback_timeout=10
                )
                used = got.get(addr)
            except Exception:  # noqa: BLE001 - its nanny does not answer either: next time
                continue
            if used is None:
                continue
            since, used_then = watched.get(addr, (now, used))
            if used - used_then > 0.05 * (now - since):
                since, used_then = now, used  # busy: a fit holding the GIL
            watched[addr] = (since, used_then)
            if now - since >= self.frozen_seconds:
                frozen.append(addr)
                del watched[addr]
        self._frozen = watched
        if frozen:
            log.warning(
                "restarting the dask worker(s) %s: silent and using no CPU for %.0f s "
                "(stopped or deadlocked)",
                ", ".join(frozen),
                self.frozen_seconds,
            )
            self._restart(frozen)
        return frozen

    def _restart(self, workers: list[str]) -> None:
        """Have the nannies of ``workers`` start new worker processes."""
        if self.resident is not None:
            try:
                self.resident.let_go_on(self.client, workers)
            except Exception as exc:  # noqa: BLE001 - then dask rebuilds them: slower, not wrong
                log.warning("could not tell which held outputs live on %s: %r", workers, exc)
        try:
            self.client.restart_workers(workers, timeout=60, raise_for_error=False)
        except Exception as exc:  # noqa: BLE001 - logged; looked at again next time
            log.warning("could not restart %s: %r", workers, exc)

    def _watch_cancel(self, cancel: threading.Event | None, futures: list) -> threading.Event:
        """Cancel ``futures`` as soon as ``cancel`` is set; stop when told."""
        stop = threading.Event()
        if cancel is None:
            return stop

        def watch() -> None:
            while not stop.is_set():
                if cancel.wait(0.1):
                    _cancel_own(self.client, futures)
                    return

        threading.Thread(target=watch, name="memogrid-cancel", daemon=True).start()
        return stop

    @staticmethod
    def _count(o: ScoreOutput, seen_steps: set[str], stats: SearchStats) -> None:
        for step, how, _ in o.provenance:
            if step not in seen_steps:
                seen_steps.add(step)
                if how == "hit":
                    stats.step_hits += 1
                elif how == "shared":
                    stats.step_shared += 1
                else:
                    stats.step_fits += 1
        if o.final == "hit":
            stats.score_hits += 1
        elif o.final == "fit":
            stats.final_fits += 1
        elif o.final == "shared":
            stats.final_shared += 1

    def graph(
        self,
        plan: Plan,
        score_keys: list[str],
        ctx: TaskContext,
        scoring: Scoring,
        batch_size: int = 1,
        reuse: Reuse | None = None,
    ) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
        """The dask graph computing ``score_keys`` and the steps they need.

        Folds enter each task as literal index arrays, not as tasks of their
        own: a fold task lives on one worker and drew every step of its fold
        there (measured: one worker idle for the last third of the seed
        search while the other ran a whole fold). Indices cost 8 bytes a row
        per task, a fraction of what any fit on those rows reads. X, y and
        fit params stay on disk and are referenced by :class:`DataRef`
        inside ``ctx``. Scores sharing a fold and parent are run
        ``batch_size`` to a task. Returns the graph and, for each score
        task, the score keys it yields. ``reuse`` receives the steps the
        graph takes from worker memory (see :class:`ResidentOutputs`).
        """
        with gc_paused():
            return self._graph(plan, score_keys, ctx, scoring, batch_size, reuse)

    def _graph(
        self,
        plan: Plan,
        score_keys: list[str],
        ctx: TaskContext,
        scoring: Scoring,
        batch_size: int,
        reuse: Reuse | None,
    ) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
        if reuse is None:
            reuse = Reuse()
        dsk: dict[str, Any] = {}
        groups: dict[tuple[Any, ...], list[Any]] = {}
        for skey in score_keys:
            node = plan.scores[skey]
            self._add_chain(dsk, plan, node.parent, ctx, reuse)
            if node.ttrain is not None:
                self._add_ttrain(dsk, plan, node.ttrain, ctx, reuse)
            groups.setdefault((node.fold, node.parent, node.ttrain), []).append(node)
        outputs: dict[str, tuple[str, ...]] = {}
        for (fold_key, parent, ttrain), nodes in groups.items():
            fold = plan.folds[fold_key]
            for i in range(0, len(nodes), batch_size):
                chunk = tuple(nodes[i : i + batch_size])
                if len(chunk) == 1:
                    task_key = chunk[0].key
                    dsk[task_key] = (run_score, ctx, chunk[0], scoring, fold, parent, ttrain)
                else:
                    task_key = "scores-" + keys.digest(*(n.key for n in chunk))
                    dsk[task_key] = (run_score_batch, ctx, chunk, scoring, fold, parent, ttrain)
                outputs[task_key] = tuple(n.key for n in chunk)
        reuse.finish(dsk)
        return dsk, outputs

    def _add_chain(
        self,
        dsk: dict[str, Any],
        plan: Plan,
        key: str | None,
        ctx: TaskContext,
        reuse: Reuse,
    ) -> None:
        """Add step ``key`` and the ancestors it needs to ``dsk``.

        A step held in worker memory is taken from there (``reuse`` records
        it; :meth:`Reuse.finish` points the graph at it). One in the cache
        is loaded directly: its parents are not run (their outputs are not
        needed), only their small models read.
        """
        while key is not None and key not in dsk:
            if key in reuse.futures or key in reuse.loaded:
                return
            node = plan.steps[key]
            fold = plan.folds[node.fold]
            held = self.resident.get(key) if self.resident is not None else None
            if held is not None:
                reuse.futures[key] = held
                return
            if step_cached(self.cache, key):
                reuse.loaded[key] = LOADED + key
                dsk[LOADED + key] = (run_cached_step, ctx, self._lineage(plan, key), fold)
                return
            dsk[key] = (run_step, ctx, node, fold, node.parent)
            key = node.parent

    @staticmethod
    def _lineage(plan: Plan, key: str) -> tuple[Any, ...]:
        """The step nodes from the fold down to ``key``."""
        chain = []
        k: str | None = key
        while k is not None:
            chain.append(plan.steps[k])
            k = plan.steps[k].parent
        return tuple(reversed(chain))

    def _add_ttrain(
        self,
        dsk: dict,
        plan: Plan,
        key: str | None,
        ctx: TaskContext,
        reuse: Reuse,
    ) -> None:
        while key is not None and key not in dsk:
            node = plan.ttrains[key]
            self._add_chain(dsk, plan, node.step, ctx, reuse)
            dsk[key] = (
                run_train_transform,
                ctx,
                node,
                plan.folds[node.fold],
                node.step,
                node.parent,
            )
            key = node.parent

    def _run_refit(
        self,
        base: Any,
        params: dict[str, Any],
        fold: Fold,
        fp_tokens: dict,
        ctx: TaskContext,
        counter: FitCounter,
        cancel: threading.Event | None = None,
        loadable: LoadCheck | None = None,
    ) -> tuple[tuple[Any, ...], str, int, tuple[Warned, ...]]:
        """Fit (or load) the chain of ``params`` on all rows: models, how, step
        fits, and what the fits warned about."""
        rplan = build_refit_plan(base, params, fold, fp_tokens)
        if self.cache is not None:
            loaded = load_refit(self.cache, rplan.chain, rplan.key)
            if loaded is not None:
                return loaded.models, "hit", 0, loaded.warnings
        if loadable is not None:
            loadable()
        ctx = replace(ctx, blas_threads=self.refit_blas_threads)
        dsk: dict[str, Any] = {}
        shadow = Plan(folds={fold.key: fold}, steps=rplan.steps, scores={}, ttrains={}, grid=[])
        reuse = Reuse()
        self._add_chain(dsk, shadow, rplan.parent, ctx, reuse)
        dsk[rplan.key] = (run_refit, ctx, rplan, fold, rplan.parent)
        reuse.finish(dsk)
        want = [rplan.key]
        parent = rplan.parent if self.resident is not None else None
        if parent is not None and parent not in reuse.futures:
            want.append(reuse.ref(parent))  # kept in worker memory for the next refit
        try:
            with _wanting(self.client, [rplan.key]):
                futs = self.client.get(dsk, want, sync=False)
                try:
                    # cancels only the refit: its steps may be another search's too
                    out: RefitOutput = _result(futs[0], cancel)
                except BaseException:
                    if cancel is not None and cancel.is_set():
                        raise SearchCancelled() from None
                    raise
            if parent is not None and self.resident is not None:
                held = futs[1] if len(futs) > 1 else reuse.futures[parent]
                self.resident.keep([(parent, held, out.parent_nbytes)])
        finally:
            reuse.release()
        final, step_fits = counter.refit(
            rplan.key, out.final, out.fit_time, reuse.provenance(out.provenance)
        )
        return out.models, final, step_fits, out.warnings
