"""Fold work: the functions dask runs, each memoized under its Merkle key.

Every task first looks its key up in the persistent cache and returns the
stored value on a hit; on a miss it computes exactly what scikit-learn's
``Pipeline`` and ``_fit_and_score`` would (``fit_transform`` on the training
rows, ``transform`` on the test rows, the final estimator scored by
scikit-learn's own ``_score``) and stores the result.

A step that fails does not raise: it returns a :class:`StepOutput` carrying
the traceback, so each candidate depending on it scores ``error_score``
exactly as scikit-learn's ``_fit_and_score`` would. A fold that fails is a
result too: its score (``error_score``, the traceback, the warnings) is
cached when the failure is the estimator's own and would come again
(:func:`repeatable`), and used only where its traceback would read the same
(:func:`failure_record`, :func:`cached_score`). Failed steps, and failures under
``error_score="raise"``, are not cached.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import sys
import threading
import time
import traceback
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from memogrid.layout import mark_strides
from memogrid.sparse import is_sparse
from memogrid.spec import (
    JOB_SKLEARN_DEFAULTS,
    WarningFilter,
    changed_sklearn_settings,
)

from ..store.cache import ResultCache, approx_nbytes
from ..store.datasets import DataRef, who_runs_this
from . import nogil
from .filters import installed

# -- inputs ---------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """Where a search's data lives: refs the workers resolve from disk."""

    X: DataRef
    y: DataRef | None
    fit_params: tuple[tuple[str, Any], ...] = ()  # name -> DataRef or literal
    score_params: tuple[tuple[str, Any], ...] = ()
    #: the searched estimator if it takes pairwise (kernel) input, else None:
    #: ``_safe_split`` then slices rows and columns
    pairwise_estimator: Any = None

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        refs = [(n, v.key_id if isinstance(v, DataRef) else repr(v)) for n, v in self.fit_params]
        return (
            "DataSpec",
            self.X.key_id,
            self.y.key_id if self.y is not None else None,
            refs,
            [n for n, _ in self.score_params],
            self.pairwise_estimator is not None,
        )


@dataclass(frozen=True)
class TaskContext:
    cache: ResultCache | None
    data: DataSpec
    blas_threads: int | None = 1
    #: the caller's scikit-learn settings that change results, where they
    #: differ from the defaults (:func:`result_settings`): tasks run under them
    sk_config: tuple[tuple[str, Any], ...] = ()
    #: (host, pid) of the process the search runs in: tasks elsewhere record
    #: their warnings for it (:func:`recording_warnings`)
    caller: tuple[str, int] = ("", 0)
    #: the caller's warnings filters that make warnings errors, which tasks
    #: run under in single-threaded worker processes (the engine keeps none
    #: for a cluster of other shapes: see ``SearchRunner.prepare``)
    warning_filters: tuple[WarningFilter, ...] = ()
    #: the library versions the search's keys name (:data:`keys.LIBRARY_VERSIONS`
    #: where it was prepared): a worker running others refuses its tasks
    versions: tuple[tuple[str, str], ...] = ()

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        where = self.cache.directory if self.cache is not None else None
        return (
            "TaskContext",
            where,
            self.data.__dask_tokenize__(),
            self.blas_threads,
            self.sk_config,
            self.warning_filters,
        )


#: scikit-learn settings (``sklearn.set_config``) that change what a fit
#: computes or returns, with their defaults: those a job may carry
#: (:data:`memogrid.spec.JOB_SKLEARN_DEFAULTS`) and array API dispatch. The
#: configuration is per thread, so a worker would not see the caller's: the
#: engine reads it where a search is prepared, runs every task under it and
#: keys folds by it.
RESULT_SETTINGS: dict[str, Any] = {
    **JOB_SKLEARN_DEFAULTS,
    "array_api_dispatch": False,
}


def result_settings() -> tuple[tuple[str, Any], ...]:
    """The calling thread's :data:`RESULT_SETTINGS` that are not the defaults."""
    return tuple(changed_sklearn_settings(RESULT_SETTINGS).items())


_F = TypeVar("_F", bound=Callable[..., Any])


class WorkerVersionsDiffer(RuntimeError):
    """A worker runs other library versions than the search's keys name:
    its results, cached under those keys, would be served as theirs."""


def versions_differ(versions: tuple[tuple[str, str], ...]) -> str | None:
    """How this process's libraries differ from ``versions``, or None."""
    from .keys import LIBRARY_VERSIONS

    if not versions or tuple(versions) == LIBRARY_VERSIONS:
        return None
    here = dict(LIBRARY_VERSIONS)
    diffs = [
        f"{d} {here.get(d) or 'none'} (the search's {v or 'none'})"
        for d, v in versions
        if here.get(d) != v
    ]
    return (
        f"runs {', '.join(diffs)}: its results would be cached as the search's; "
        "run the same versions of these libraries on the service and every worker"
    )


def _configured(fn: _F) -> _F:
    """Run a task function under its context's scikit-learn settings and, in
    a process other than the caller's, the caller's warnings filters."""

    @functools.wraps(fn)
    def run(ctx: TaskContext, *args: Any) -> Any:
        other = versions_differ(ctx.versions)
        if other:
            raise WorkerVersionsDiffer(f"{who_runs_this()} {other}")
        nogil.install()  # once per process: its worker answers during SVDs
        filters = ctx.warning_filters
        if not ctx.sk_config and not filters:
            return fn(ctx, *args)
        import sklearn

        with sklearn.config_context(**dict(ctx.sk_config)), _raising_errors_of(filters):
            return fn(ctx, *args)

    return run  # type: ignore[return-value]


def _resolve(value: Any) -> Any:
    return value.load() if isinstance(value, DataRef) else value


def _as_ndarray(value: Any) -> Any:
    if isinstance(value, np.memmap):
        return value.view(np.ndarray)
    return value


_fold_rows: OrderedDict[tuple[str, str, str], tuple[Any, Any]] = OrderedDict()
_fold_rows_lock = threading.Lock()


def fold_rows(ctx: TaskContext, fold: Any, which: str) -> tuple[Any, Any]:
    """X and y rows of ``fold``'s ``which`` side ("train" or "test").

    Sliced as ``_fit_and_score`` slices them (``_safe_split``, so pairwise
    estimators get their kernel rows and columns); the last few slices are
    kept per process, since every task of a fold needs the same rows.
    """
    from sklearn.utils import _safe_indexing
    from sklearn.utils.metaestimators import _safe_split

    memo = (fold.key, which, ctx.data.X.key_id)
    with _fold_rows_lock:
        hit = _fold_rows.get(memo)
        if hit is not None:
            _fold_rows.move_to_end(memo)
            return hit
    X = ctx.data.X.load()
    y = ctx.data.y.load() if ctx.data.y is not None else None
    est = ctx.data.pairwise_estimator
    rows_of = fold.train if which == "train" else fold.test
    if fold.whole and isinstance(X, np.ndarray):
        # scikit-learn refits on X itself: same rows, same memory order (a
        # copy, as a row selection would be: the stored X is read-only)
        Xs, ys = np.array(X, order=fold.order), y
    elif fold.whole and is_sparse(X):
        # X itself, its index dtypes kept (a row selection makes int64
        # indices int32): every use takes a copy (private)
        Xs, ys = X, y
    elif est is None:  # what _safe_split does for estimators without pairwise input
        Xs = _safe_indexing(X, rows_of)
        ys = _safe_indexing(y, rows_of) if y is not None else None
    elif which == "train":
        Xs, ys = _safe_split(est, X, y, fold.train)
    else:
        Xs, ys = _safe_split(est, X, y, fold.test, fold.train)
    if fold.whole:
        ys = _y_itself(ys, fold)
    rows = (freeze(_as_ndarray(Xs)), freeze(_as_ndarray(ys)))
    if isinstance(rows[0], np.ndarray) or is_sparse(rows[0]):
        with _fold_rows_lock:
            _fold_rows[memo] = rows
            while len(_fold_rows) > 4:
                _fold_rows.popitem(last=False)
    return rows


def freeze(value: Any) -> Any:
    """Make an array shared between tasks read-only.

    One fold slice or step output feeds many tasks in a worker; a
    ``copy=False`` estimator must not alter it for the others. scikit-learn
    estimators that write in place copy read-only input (``force_writeable``).
    A sparse matrix cannot be shared so (KMeans and PolynomialFeatures refuse
    read-only sparse arrays; SVC and trees sort indices in place): each
    estimator gets a copy of its own instead (:func:`private`).
    """
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    return value


def private(value: Any) -> Any:
    """A shared value as an estimator may be handed it: a sparse matrix as a
    copy of its own (as a row selection in scikit-learn's search is one),
    with its index dtypes; anything else as itself (arrays are frozen)."""
    if not is_sparse(value):
        return value
    own = value.copy()
    for name in ("indices", "indptr"):  # copy() lets scipy narrow them to int32
        kept = getattr(value, name, None)
        if kept is not None and getattr(own, name).dtype != kept.dtype:
            setattr(own, name, kept.copy())
    return own


def compact(value: Any) -> Any:
    """``value`` as a contiguous array of its own when it is a view that
    pins a much larger array or is not contiguous.

    PCA's ``fit_transform`` with a full SVD returns the first columns of
    ``U``: a view that keeps all of ``U`` alive (16,000 rows x 1,000 features
    at 20 components: 128 MB held for a 2.5 MB output, which is all dask's
    ``sizeof`` and the resident budget see). ``copy(order="K")`` keeps the
    view's memory order. That matters: scikit-learn feeds the next step the
    view itself, and the last bits of some estimators depend on whether
    their input is C- or F-ordered (Ridge, StandardScaler), not on the
    memory around it. A non-contiguous array is copied too, so that sending
    it to another worker or through the cache (which store a non-contiguous
    array in C order) cannot turn an F-ordered output into a C-ordered one.
    """
    if not isinstance(value, np.ndarray):
        return value
    if not (value.flags.c_contiguous or value.flags.f_contiguous):
        return value.copy(order="K")
    root = value
    while isinstance(root.base, np.ndarray):
        root = root.base
    if root is not value and root.nbytes > 2 * value.nbytes:
        return value.copy(order="K")
    return value


def sliced_params(ctx: TaskContext, params: tuple[tuple[str, Any], ...], rows: Any) -> dict:
    from sklearn.utils.validation import _check_method_params

    if not params:
        return {}
    X = ctx.data.X.load()
    full = {name: _as_ndarray(_resolve(value)) for name, value in params}
    out = _check_method_params(X, params=full, indices=rows)
    # a param passed whole (not one value per sample) is the store's
    # read-only map: each fit gets its own copy of the caller's value, as
    # estimators may write into it (SGD trains its coef_init in place)
    return {
        name: np.array(v) if isinstance(v, np.ndarray) and v is full[name] else v
        for name, v in out.items()
    }


def routed_params(ctx: TaskContext, routing: dict[str, str], rows: Any) -> dict:
    """A link's own fit params (``own name -> search name``), sliced to ``rows``."""
    search_params = dict(ctx.data.fit_params)
    return sliced_params(
        ctx, tuple((own, search_params[src]) for own, src in routing.items()), rows
    )


def _y_itself(y: Any, fold: Any) -> Any:
    """A whole fold's y: y itself, a 2-D one as laid out by the caller."""
    if isinstance(y, np.ndarray) and y.ndim == 2:
        return np.array(y, order=fold.y_order)
    return y


def _y_rows(ctx: TaskContext, fold: Any, rows: Any) -> Any:
    """y of ``rows`` of ``fold`` (y itself for the refit's whole fold)."""
    if ctx.data.y is None:
        return None
    from sklearn.utils import _safe_indexing

    y = ctx.data.y.load()
    return _as_ndarray(_y_itself(y, fold) if fold.whole else _safe_indexing(y, rows))


#: ``TaskContext.blas_threads`` for "as many threads as BLAS and OpenMP use
#: in a process that sets no limit": one per core this worker may run on
ALL_CORES = 0


def _all_cores() -> int:
    """What ``ALL_CORES`` means in this process.

    The limit is process-wide: in a worker running several task threads,
    raising it for one task would change the bits of the fold fits running
    beside it, so such workers stay at one thread.
    """
    try:
        from distributed import get_worker

        if get_worker().state.nthreads > 1:
            return 1
    except ValueError:  # not in a dask worker
        pass
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


class _Blas:
    """Hold BLAS/OpenMP to ``n`` threads in this worker process.

    The limit is process-wide (as BLAS's own setting is) and kept until a
    task asks for another: fold fits run at one thread, a refit at every
    core (``ALL_CORES``), each as scikit-learn's GridSearchCV(n_jobs=-1)
    runs them.
    """

    _applied: int | None = None
    _lock = threading.Lock()

    @classmethod
    def apply(cls, n: int | None) -> None:
        if n == ALL_CORES:
            n = _all_cores()
        if n is not None and cls._applied != n:
            with cls._lock:
                if cls._applied != n:
                    from threadpoolctl import threadpool_limits

                    threadpool_limits(limits=n)
                    cls._applied = n


@contextmanager
def one_thread_per_fit() -> Iterator[None]:
    """joblib runs sequentially in here, whatever ``n_jobs`` an estimator
    names: a worker is one core's, and ``RandomForestClassifier(n_jobs=10**5)``
    started that many threads in it (results do not depend on ``n_jobs``)."""
    from joblib import parallel_config

    with parallel_config(backend="sequential"):
        yield


# -- warnings -------------------------------------------------------------

#: a warning a fit gave in a worker: (category name, message, file, line,
#: module); tuples cached before the module was kept have four items
Warned = tuple[Any, ...]


class _WarningRouter:
    """This process's ``warnings.showwarning``: a warning raised in a thread
    that is recording (:func:`recording_warnings`) goes to that thread's
    list; any other goes where it went before."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.original = warnings.showwarning

    def show(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        sink = getattr(self.local, "sink", None)
        if sink is None:
            self.original(message, category, filename, lineno, file, line)
        else:
            sink.append((category.__name__, str(message), filename, lineno, module_of(filename)))


_modules: dict[str, str | None] = {}


def module_of(filename: str) -> str | None:
    """The name of the module loaded from ``filename`` (as ``warnings.warn``
    gives it to filters that name a module), or None."""
    if filename not in _modules:
        import sys

        _modules.update(
            (getattr(m, "__file__", None) or "", name) for name, m in list(sys.modules.items())
        )
        _modules.setdefault(filename, None)
    return _modules[filename]


_router: _WarningRouter | None = None
_router_lock = threading.Lock()


def caller_identity() -> tuple[str, int]:
    """Where a search is prepared: the process its warnings are raised in."""
    import socket

    return socket.gethostname(), os.getpid()


def unwanted_work(ours: tuple[str, ...], dask_worker: Any = None) -> tuple[list[str], list[str]]:
    """What restarting this worker would stop: the engine's tasks (keys
    starting with ``ours``) it is still executing though the scheduler let
    them go (no search wants them: a cancelled one's), and what a restart
    would cost anyone: a task executing that is wanted, and any task or
    data of another dask client's. The engine's own queued tasks and kept
    step outputs are not counted: they are sent elsewhere or read from the
    cache again."""
    unwanted, others = [], []
    for ts in list(dask_worker.state.tasks.values()):
        key = str(ts.key)
        mine = key.startswith(ours)
        if ts.state == "cancelled" and ts.previous == "executing" and mine:
            unwanted.append(key)
        elif ts.state in ("executing", "long-running") or (
            not mine and ts.state not in ("released", "forgotten")
        ):
            others.append(key)
    return unwanted, others


def silent_worker_idle(addr: str, ours: tuple[str, ...], dask_scheduler: Any = None) -> bool:
    """On the scheduler, for a worker that does not answer (a task holding
    its GIL): whether what keeps it busy is work let go (a cancelled
    search's), so that restarting it costs nobody anything. Not if it said,
    when last heard, that it executes a task still wanted (a long fit of a
    running search); not if it is given another client's task, or holds
    another client's data. The engine's tasks queued on it go elsewhere."""
    ws = dask_scheduler.workers.get(addr)
    if ws is None:
        return False
    tasks = dask_scheduler.tasks
    if any(tasks.get(ts.key) is ts and ts.processing_on is ws for ts in list(ws.executing)):
        return False
    if any(not str(ts.key).startswith(ours) for ts in list(ws.processing)):
        return False
    return not any(ts.who_wants and not str(ts.key).startswith(ours) for ts in list(ws.has_what))


def silent_workers(seconds: float, dask_scheduler: Any = None) -> list[str]:
    """On the scheduler: the workers it has not heard from for ``seconds``,
    or for three of their heartbeat intervals if longer (dask spaces
    heartbeats out on large clusters). A task holding the GIL (scipy's
    lstsq holds it throughout) keeps its worker from answering anything,
    heartbeats included, until it ends; so does a stopped process."""
    from distributed.metrics import time as now
    from distributed.scheduler import heartbeat_interval

    workers = list(dask_scheduler.workers.items())
    limit = max(seconds, 3 * heartbeat_interval(len(workers)))
    t = now()
    return [a for a, ws in workers if t - ws.last_seen > limit]


def worker_cpu_seconds(dask_worker: Any = None) -> float | None:
    """On a nanny: the CPU seconds its worker process has used so far, or
    None without one. Answered by the nanny's own process, so it answers
    for a worker that cannot (a fit holding its GIL, or stopped)."""
    import psutil

    pid = getattr(getattr(getattr(dask_worker, "process", None), "process", None), "pid", None)
    if pid is None:
        return None
    try:
        used = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(used.user + used.system)


def cannot_load(exc: BaseException) -> str:
    """What a worker that cannot load a search's objects says of itself."""
    return (
        f"cannot load this search's estimators or scorers ({type(exc).__name__}: {exc}): "
        "install what it names where the workers run"
    )


def loads_here(blob: bytes) -> str | None:
    """What stops this process running a search's tasks, or None, said of
    itself (after "the dask worker at ..."): objects the caller pickled it
    cannot load (a class from a module not installed here, say), or library
    versions other than the search's keys name. Asked of every worker
    before a search sends its first tasks (:class:`search.LoadCheck`)."""
    import pickle

    try:
        objects = pickle.loads(blob)
    except Exception as exc:  # noqa: BLE001 - whatever it is, the caller is told
        return cannot_load(exc)
    for obj in objects if isinstance(objects, tuple) else ():
        if isinstance(obj, TaskContext) and (other := versions_differ(obj.versions)):
            return other
    return None


def _installed_router() -> _WarningRouter:
    """This process's warning router, installed (with its filters: every
    warning shown to it) if it is not."""
    global _router
    with _router_lock:
        if _router is None:
            _router = _WarningRouter()
        # installed once per process; again only if something put another
        # handler in its place (bound methods compare equal, never identical)
        if warnings.showwarning != _router.show:
            _router.original = warnings.showwarning
            warnings.showwarning = _router.show
            warnings.simplefilter("always")
            _ignore_engine_notes()
        return _router


@contextmanager
def _raising_errors_of(filters: tuple[WarningFilter, ...]) -> Iterator[None]:
    """Run under the caller's warnings filters (their patterns matched by
    RE2: :mod:`service.engine.filters`), the engine's own notes filtered
    out before them."""
    if not filters:
        yield
        return
    _installed_router()  # first: the caller's filters go before its own
    with installed(filters):
        _ignore_engine_notes()
        yield


def _ignore_engine_notes() -> None:
    """Filter out, first of all, what only where the engine runs fits says:
    joblib's note that an estimator's n_jobs runs as 1 in a dask worker's
    daemon process. Where the fits run is the engine's choice, not the
    caller's to be warned about (n_jobs does not change scikit-learn's
    results), nor to fail under the caller's "error" filters."""
    warnings.filterwarnings(
        "ignore", message="Inside a Dask worker with daemon=True", category=UserWarning
    )


@contextmanager
def recording_warnings(ctx: TaskContext) -> Iterator[list[Warned]]:
    """Collect the warnings the calling thread raises, for the engine to
    raise again in the caller's process, where scikit-learn's own search
    would have shown them.

    Only in a process other than the caller's: there every warning is
    recorded (the process would show each only once, so it shows them
    "always", each to the thread that raised it). Tasks run as threads of
    the caller's own process need nothing: their warnings reach the caller
    as they are raised.
    """
    sink: list[Warned] = []
    if ctx.caller == caller_identity():
        yield sink
        return
    router = _installed_router()
    prev = getattr(router.local, "sink", None)
    router.local.sink = sink
    try:
        yield sink
    finally:
        router.local.sink = prev


# -- outputs --------------------------------------------------------------


@dataclass
class StepOutput:
    """A fitted step and its fold outputs, as held in worker memory."""

    key: str
    models: tuple[Any, ...] = ()  # fitted links from the first step to this one
    Xt_train: Any = None  # fit_transform output on the training rows
    Xt_test: Any = None  # transform output on the test rows
    #: (key, "fit" | "hit", seconds) of every step up to this one
    provenance: tuple[tuple[str, str, float], ...] = ()
    error: str | None = None  # traceback of the failing step
    exception: BaseException | None = None
    #: what a cached failure must find unchanged (:func:`failure_record`),
    #: or None not to cache it; decided where it was raised: pickling to
    #: another worker may drop an exception's chain and traceback
    record: dict[str, Any] | None = None
    failed_label: str | None = None
    #: what fitting the steps up to this one warned about
    warnings: tuple[Warned, ...] = ()


@dataclass
class ScoreOutput:
    """One (candidate, split) result in ``_fit_and_score``'s shape."""

    result: dict[str, Any]
    provenance: tuple[tuple[str, str, float], ...] = ()
    final: str = "fit"  # "fit", "hit", or "skipped" after an upstream failure
    exception: BaseException | None = None
    #: bytes of the step output the final estimator was fitted on (0 for
    #: none): what keeping that output in worker memory would cost
    parent_nbytes: int = 0


def _sizeof_step(out: StepOutput) -> int:
    """Bytes a step output holds: its fold outputs and fitted models."""
    from dask.sizeof import sizeof

    models = sum(_model_nbytes(m) for m in out.models)
    return int(sizeof(out.Xt_train) + sizeof(out.Xt_test) + models)


def _model_nbytes(model: Any) -> int:
    """Roughly the memory of a fitted estimator: its array attributes.

    Some transformers keep their training rows (KNeighborsTransformer,
    Nystroem's components), so a fixed guess would undercount them badly.
    """
    from dask.sizeof import sizeof

    attrs = getattr(model, "__dict__", {})
    return 1000 + sum(sizeof(v) for v in attrs.values() if hasattr(v, "nbytes") or is_sparse(v))


def _register_sizeof() -> None:
    # dask's default guess (sys.getsizeof) sees a few hundred bytes; the
    # workers' memory accounting and the runner's resident set need the real size
    from dask.sizeof import sizeof
    from scipy.sparse import sparray

    sizeof.register(StepOutput)(_sizeof_step)
    # dask knows scipy's sparse matrices but not its sparse arrays (csr_array)
    sizeof.register(sparray)(approx_nbytes)


_register_sizeof()


def _model_key(key: str) -> str:
    return key + "/model"


def _data_key(key: str) -> str:
    return key + "/data"


@_configured
def run_step(ctx: TaskContext, node: Any, fold: Any, parent: StepOutput | None) -> StepOutput:
    """Fit one intermediate step on a fold (or load it from the cache)."""
    prior = parent.provenance if parent is not None else ()
    models = parent.models if parent is not None else ()
    prior_warned = parent.warnings if parent is not None else ()
    if parent is not None and parent.error is not None:
        return parent  # propagate the upstream failure unchanged
    cache = ctx.cache
    if cache is not None:
        hit = _load_step(cache, node.key, models, prior, prior_warned)
        if hit is not None:
            return hit

    if parent is None:
        X_train, y_train = fold_rows(ctx, fold, "train")
        X_test = fold_rows(ctx, fold, "test")[0] if len(fold.test) else None
    else:
        X_train, X_test = parent.Xt_train, parent.Xt_test
        y_train = _y_rows(ctx, fold, fold.train)
    X_train, X_test = private(X_train), private(X_test)
    params = routed_params(ctx, node.fit_params, fold.train)
    transformer = node.link.build()
    start = time.perf_counter()
    with recording_warnings(ctx) as warned, one_thread_per_fit():
        try:
            _Blas.apply(ctx.blas_threads)
            if hasattr(transformer, "fit_transform"):
                Xt_train = transformer.fit_transform(X_train, y_train, **params)
            else:
                Xt_train = transformer.fit(X_train, y_train, **params).transform(X_train)
            fit_time = time.perf_counter() - start
        except Exception as exc:
            # a failed fit is a fit: counted, its time in the fold's fit_time
            tried = (node.key, "fit", time.perf_counter() - start)
            return StepOutput(
                node.key,
                provenance=(*prior, tried),
                error=traceback.format_exc(),
                exception=exc,
                record=failure_record(exc),
                failed_label=node.link.label,
                warnings=(*prior_warned, *warned),
            )
        fitted_warned = len(warned)
        try:
            Xt_test = transformer.transform(X_test) if X_test is not None else None
        except Exception:
            # the fit stands: scikit-learn meets this only when it scores the
            # pipeline on the test rows. Xt_test stays None, and the score
            # task scores the fitted chain on raw test rows, failing (and
            # warning) there as scikit-learn does; this attempt's warnings
            # would come again then
            Xt_test = None
            del warned[fitted_warned:]
        else:
            warned[fitted_warned:] = [(*w, TEST_PHASE) for w in warned[fitted_warned:]]
    Xt_train, Xt_test = compact(Xt_train), compact(Xt_test)
    freeze(Xt_train), freeze(Xt_test)  # before queuing: the writer reads them later
    # pickling (to the cache, to the caller) lays strided views out anew:
    # their strides go along, for the refit's model (memogrid.layout)
    mark_strides(transformer)
    if cache is not None:
        # the step's own warnings are kept with it, to be raised on every hit
        cache.set_later(_model_key(node.key), _pack_model(transformer, fit_time, warned))
        cache.set_later(_data_key(node.key), (Xt_train, Xt_test))
    return StepOutput(
        node.key,
        (*models, transformer),
        Xt_train,
        Xt_test,
        (*prior, (node.key, "fit", fit_time)),
        warnings=(*prior_warned, *warned),
    )


#: the tag that ends a :data:`Warned` a step raised as it transformed the
#: test rows: scikit-learn raises those only when it scores the fitted
#: pipeline, after the final fit (see :func:`_in_order`)
TEST_PHASE = "test rows"


def _in_order(
    chain: tuple[Warned, ...], final: list[Warned], n_fit: int | None, rescored: bool
) -> tuple[Warned, ...]:
    """A fold's warnings in the order scikit-learn raises them.

    ``chain`` is what the steps raised, ``final`` what the final estimator's
    fit (its first ``n_fit``) and the scoring raised. The steps' fits come
    first, then the final fit, then, only if the fit succeeded (``n_fit`` is
    not None), the steps' test-row transforms (unless the scoring ran the
    whole chain on raw rows again, ``rescored``, which raised them anew),
    then the scoring.
    """
    fits = tuple(w for w in chain if w[5:] != (TEST_PHASE,))
    if n_fit is None:
        return (*fits, *final)
    tests = () if rescored else tuple(w for w in chain if w[5:] == (TEST_PHASE,))
    return (*fits, *final[:n_fit], *tests, *final[n_fit:])


def _load_step(
    cache: ResultCache,
    key: str,
    models: tuple[Any, ...],
    prior: tuple[Any, ...],
    prior_warned: tuple[Warned, ...] = (),
) -> StepOutput | None:
    """A step's cached model and fold outputs after ``models``, or None if absent."""
    stored_model = cache.get(_model_key(key))
    stored_data = cache.get(_data_key(key)) if stored_model is not None else None
    if stored_data is None:
        return None
    model, fit_time, own = _unpack_model(stored_model)
    return StepOutput(
        key,
        (*models, model),
        freeze(stored_data[0]),
        freeze(stored_data[1]),
        (*prior, (key, "hit", fit_time)),
        warnings=(*prior_warned, *own),
    )


def _pack_model(model: Any, fit_time: float, warned: list[Warned]) -> tuple[Any, ...]:
    """A fitted model as cached: with its own warnings, if it gave any."""
    return (model, fit_time, tuple(warned)) if warned else (model, fit_time)


def _unpack_model(stored: tuple[Any, ...]) -> tuple[Any, float, tuple[Warned, ...]]:
    """(model, fit time, its warnings) of a cached fit; older entries have no warnings."""
    return stored[0], stored[1], tuple(stored[2]) if len(stored) > 2 else ()


def step_cached(cache: ResultCache | None, key: str) -> bool:
    """Whether a step's fitted model and fold outputs are both in the cache."""
    return cache is not None and _model_key(key) in cache and _data_key(key) in cache


@_configured
def run_cached_step(ctx: TaskContext, chain: tuple[Any, ...], fold: Any) -> StepOutput:
    """Load the last step of ``chain`` from the cache without running its parents.

    Only the ancestors' fitted models are read (they are small); their fold
    outputs are not needed. If an entry vanished since planning (evicted,
    corrupt), the chain is recomputed here, each step still memoized.
    """
    cache = ctx.cache
    if cache is not None:
        loaded = _load_models(cache, [node.key for node in chain[:-1]])
        if loaded is not None:
            hit = _load_step(cache, chain[-1].key, loaded[0], (), loaded[1])
            if hit is not None:
                return hit
    out: StepOutput | None = None
    for node in chain:
        out = run_step(ctx, node, fold, out)
    assert out is not None
    return out


@_configured
def run_train_transform(
    ctx: TaskContext, node: Any, fold: Any, step: StepOutput, parent: Any
) -> Any:
    """``transform`` of the training rows, as a pipeline's train score sees them."""
    if step.error is not None:
        return None
    cache = ctx.cache
    if cache is not None:
        hit = cache.get(node.key)
        if hit is not None:
            return freeze(hit)
    X_train = private(fold_rows(ctx, fold, "train")[0] if parent is None else parent)
    if X_train is None:
        return None
    try:
        _Blas.apply(ctx.blas_threads)
        with one_thread_per_fit():
            out = step.models[-1].transform(X_train)
    except Exception:
        return None  # the score task reports it through _score's error path
    out = compact(out)
    freeze(out)
    if cache is not None:
        cache.set_later(node.key, out)
    return out


def _error_scores(scorer: Any, error_score: Any, return_train_score: bool) -> dict:
    from sklearn.metrics._scorer import _MultimetricScorer

    if isinstance(scorer, _MultimetricScorer):
        test: Any = {name: error_score for name in scorer._scorers}
    else:
        test = error_score
    out = {"test_scores": test}
    if return_train_score:
        out["train_scores"] = test.copy() if isinstance(test, dict) else test
    return out


@_configured
def run_score(
    ctx: TaskContext,
    node: Any,
    scoring: Any,
    fold: Any,
    parent: StepOutput | None,
    ttrain: Any,
) -> ScoreOutput:
    """Fit the final estimator on a fold and score it (or load the scores)."""
    from sklearn.model_selection._validation import _score

    scorer, error_score, return_train_score = scoring
    prior = parent.provenance if parent is not None else ()
    prior_warned = parent.warnings if parent is not None else ()
    nbytes = _sizeof_step(parent) if parent is not None else 0
    cache = ctx.cache
    if cache is not None:
        hit = cached_score(cache, node.key)
        if hit is not None:
            return ScoreOutput(hit, prior, "hit", parent_nbytes=nbytes)
    n_test = len(fold.test)
    if parent is not None and parent.error is not None:
        failed = _error_scores(scorer, error_score, return_train_score)
        fit_time = sum(t for _, _, t in prior)
        failed.update(
            n_test_samples=n_test,
            fit_time=fit_time,
            score_time=0.0,
            fit_error=parent.error,
        )
        failed = _warned(failed, _in_order(prior_warned, [], None, False))
        _keep_failure(cache, node.key, failed, error_score, parent.record)
        return ScoreOutput(failed, prior, "skipped", parent.exception)
    # a step could not transform the test rows (see run_step), or there are
    # none: the scorer meets the chain and the raw rows, as scikit-learn's does
    rescored = parent is not None and parent.Xt_test is None
    if parent is None:
        X_train, y_train = fold_rows(ctx, fold, "train")
        X_test, y_test = fold_rows(ctx, fold, "test")
        X_train = X_train_scored = private(X_train)  # one object, as scikit-learn's
    else:
        X_train, X_test = private(parent.Xt_train), parent.Xt_test
        y_train = _y_rows(ctx, fold, fold.train)
        y_test = _y_rows(ctx, fold, fold.test)
        X_train_scored = private(ttrain)
    X_test = private(X_test)
    params = routed_params(ctx, node.fit_params, fold.train)
    score_test = sliced_params(ctx, ctx.data.score_params, fold.test)
    score_train = sliced_params(ctx, ctx.data.score_params, fold.train)
    estimator = node.link.build()
    upstream = sum(t for _, _, t in prior)
    _Blas.apply(ctx.blas_threads)
    result: dict[str, Any] = {}
    # every return in here carries the warnings that led to its result
    with recording_warnings(ctx) as warned, one_thread_per_fit():
        start = time.perf_counter()
        try:
            _fit_final(node, estimator, X_train, y_train, params)
        except Exception as exc:
            fit_time = time.perf_counter() - start
            result = _error_scores(scorer, error_score, return_train_score)
            result.update(
                fit_error=traceback.format_exc(),
                n_test_samples=n_test,
                fit_time=upstream + fit_time,
                score_time=0.0,
            )
            result = _warned(result, _in_order(prior_warned, warned, None, False))
            _keep_failure(cache, node.key, result, error_score, failure_record(exc))
            return ScoreOutput(result, prior, "fit", exc, nbytes)
        fit_time = time.perf_counter() - start
        n_fit = len(warned)
        result["fit_error"] = None
        try:
            tested, X_tested = _scored(ctx, node, fold, "test", parent, estimator, X_test)
            result["test_scores"] = _score(
                tested, X_tested, y_test, scorer, score_test, error_score
            )
            score_time = time.perf_counter() - start - fit_time
            if return_train_score:
                scored, X_scored = _scored(
                    ctx, node, fold, "train", parent, estimator, X_train_scored
                )
                result["train_scores"] = _score(
                    scored, X_scored, y_train, scorer, score_train, error_score
                )
        except Exception as exc:  # error_score="raise" in _score
            failed = {"fit_error": traceback.format_exc()}
            failed = _warned(failed, _in_order(prior_warned, warned, n_fit, rescored))
            return ScoreOutput(failed, prior, "fit", exc, nbytes)
    result.update(n_test_samples=n_test, fit_time=upstream + fit_time, score_time=score_time)
    result = _warned(result, _in_order(prior_warned, warned, n_fit, rescored))
    if cache is not None:  # with every warning that led to it, replayed on hits
        cache.set_later(node.key, result)
    return ScoreOutput(result, prior, "fit", parent_nbytes=nbytes)


#: failures that are the estimator's own: a parameter or the data refused,
#: a computation that cannot go on (LinAlgError is a ValueError)
_REPEATABLE = (ValueError, TypeError, LookupError, AttributeError, ArithmeticError)
#: ... except those that depend on process state (numpy's error settings)
_TRANSIENT = (FloatingPointError,)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or while handling, each once."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def repeatable(exc: BaseException | None) -> bool:
    """Whether a fit's failure would come again on the same key anywhere.

    Only failures of the estimator's own kind (a refused parameter or
    input, a singular matrix) qualify, and only when nothing in their
    chain (``raise ... from``, or raised while handling) is of another
    kind: a missing optional library may be installed later, memory or a
    file may be there next time, and a warning raised as an error depends
    on the filters of the process that fitted it.
    """
    chain = list(_chain(exc))
    return bool(chain) and all(
        isinstance(e, _REPEATABLE) and not isinstance(e, (Warning, *_TRANSIENT)) for e in chain
    )


#: the key under which a cached failure keeps its :func:`failure_record`
ENV_KEY = "_env"

#: where installed code lives: its lines change only with its version
_INSTALLED = tuple(
    os.path.join(p, "") for p in dict.fromkeys((sys.prefix, sys.base_prefix, sys.exec_prefix))
)


def failure_record(exc: BaseException | None) -> dict[str, Any] | None:
    """What a cached failure must find unchanged to be used again, or None
    not to cache it (:func:`repeatable` says no, or its traceback names a
    file that cannot be read back, such as a notebook cell's pseudo-file).

    A failure's traceback is part of its result (scikit-learn's
    FitFailedWarning groups failures by its text): it names this
    installation's files, and the user's own code by file and line, which
    can move without changing a key (a key holds code, not its place).
    The record holds this installation and a digest of every other file
    the traceback names.
    """
    if not repeatable(exc):
        return None
    files: dict[str, str] = {}
    for raised in _chain(exc):
        for frame, _ in traceback.walk_tb(raised.__traceback__):
            path = frame.f_code.co_filename
            if path in files or _installed(path):
                continue
            digest = _file_digest(path)
            if digest is None:
                return None
            files[path] = digest
    return {"installation": _installation(), "files": files}


def _installed(path: str) -> bool:
    """Whether a traceback's file is installed code, whose lines change only
    with its version: under this environment's prefixes, a frozen module
    (``<frozen importlib._bootstrap>``), or a compiled extension's source,
    which it names by a relative path (``sklearn/svm/_libsvm.pyx``). Other
    ``<...>`` names are code that cannot be read back (``<dynamic-code>``:
    a class sent by value, ``<string>``, a notebook's ``<ipython-input-1>``)."""
    if path.startswith("<"):
        return path.startswith("<frozen ")
    return path.startswith(_INSTALLED) or not os.path.isabs(path)


def _holds(record: Any) -> bool:
    """Whether a :func:`failure_record` still holds in this process (a
    malformed one does not)."""
    if not isinstance(record, dict) or record.get("installation") != _installation():
        return False
    files = record.get("files")
    return isinstance(files, dict) and all(
        isinstance(path, str) and os.path.isabs(path) and _file_digest(path) == digest
        for path, digest in files.items()
    )


_file_digests: dict[tuple[str, int, int], str] = {}


#: a source file larger than this is not read back: its failures stay uncached
_SOURCE_MAX = 16 << 20


def _file_digest(path: str) -> str | None:
    """A digest of a source file's bytes (None if it cannot be read, or is
    no regular file of a source file's size), kept per process while its
    size and modification time stay."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _SOURCE_MAX:
            return None
        memo = (path, st.st_mtime_ns, st.st_size)
        found = _file_digests.get(memo)
        if found is None:
            with open(path, "rb") as f:
                found = hashlib.blake2b(f.read(), digest_size=16).hexdigest()
            _file_digests[memo] = found
        return found
    except OSError:
        return None


@functools.cache
def _installation() -> str:
    """What a traceback from this process names: the interpreter, its
    prefix, where scikit-learn and this module are, and this module's
    code (its line numbers are in every fit's traceback)."""
    import sklearn

    h = hashlib.blake2b(digest_size=16)
    for part in (sys.version, sys.prefix, os.path.dirname(sklearn.__file__), __file__):
        h.update(part.encode() + b"\0")
    with open(__file__, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def _keep_failure(
    cache: ResultCache | None,
    key: str,
    result: dict[str, Any],
    error_score: Any,
    record: dict[str, Any] | None,
) -> None:
    """Cache a failed fold's result with its :func:`failure_record`, when it
    has one and the search goes on past it (not under ``error_score="raise"``)."""
    if cache is None or isinstance(error_score, str) or record is None:
        return
    cache.set_later(key, {**result, ENV_KEY: record})


def cached_score(cache: ResultCache, key: str) -> dict[str, Any] | None:
    """A fold's cached score result, or None to compute it.

    A cached failure whose record no longer holds (another installation,
    the user's code edited or moved) is not used: its traceback would read
    otherwise than a fresh one's.
    """
    hit = cache.get(key)
    if hit is None:
        return None
    hit = dict(hit)
    record = hit.pop(ENV_KEY, None)
    if hit.get("fit_error") is not None and not _holds(record):
        return None
    return hit


#: the key under which a score result carries its chain's warnings
#: (:data:`Warned` tuples); the search removes it before formatting results
WARNINGS_KEY = "_warnings"


def _warned(result: dict[str, Any], warned: tuple[Warned, ...]) -> dict[str, Any]:
    if warned:
        result[WARNINGS_KEY] = warned
    return result


@_configured
def run_score_batch(
    ctx: TaskContext,
    nodes: tuple[Any, ...],
    scoring: Any,
    fold: Any,
    parent: StepOutput | None,
    ttrain: Any,
) -> list[ScoreOutput]:
    """Several final estimators on one fold and parent output, as one task.

    Each is still looked up and stored under its own score key; batching
    only spares the scheduler a task per cheap fit.
    """
    return [run_score(ctx, node, scoring, fold, parent, ttrain) for node in nodes]


def _scored(
    ctx: TaskContext,
    node: Any,
    fold: Any,
    which: str,
    parent: StepOutput | None,
    estimator: Any,
    X: Any,
) -> tuple[Any, Any]:
    """What the scorer meets on a fold's ``which`` rows, as scikit-learn's.

    A pipeline's final estimator is met as a pipeline (its errors name the
    Pipeline) on the steps' output ``X``; where that output is missing (a
    step could not transform those rows, or there are none) the whole
    fitted chain is met on the raw rows, failing and warning as
    scikit-learn's does.
    """
    if parent is not None and X is None:
        return _as_pipeline(parent.models, estimator), private(fold_rows(ctx, fold, which)[0])
    return (_as_pipeline((), estimator) if node.link.path else estimator), X


def _fit_final(node: Any, estimator: Any, X: Any, y: Any, params: dict[str, Any]) -> None:
    """Fit a chain's final estimator as scikit-learn's search would.

    A bare estimator without y gets ``fit(X)``; a pipeline's last step always
    gets y, None included (``Pipeline.fit`` passes it on), so a supervised
    one says it needs y instead of failing on a missing argument.
    """
    if y is None and not node.link.path:
        estimator.fit(X, **params)
    else:
        estimator.fit(X, y, **params)


def _as_pipeline(models: tuple[Any, ...], final: Any) -> Any:
    from sklearn.pipeline import Pipeline

    return Pipeline([(f"step{i}", m) for i, m in enumerate((*models, final))])


@dataclass
class RefitOutput:
    """The fitted chain of a refit on all rows, and how it came about."""

    models: tuple[Any, ...]  # every fitted step, the final estimator last
    final: str  # "fit" or "hit": how the final estimator was obtained
    fit_time: float
    #: the parent step output's provenance: which steps were fitted for it
    provenance: tuple[tuple[str, str, float], ...] = ()
    parent_nbytes: int = 0
    #: what fitting the chain warned about (replayed from the cache on a hit)
    warnings: tuple[Warned, ...] = ()


@_configured
def run_refit(ctx: TaskContext, node: Any, fold: Any, parent: StepOutput | None) -> RefitOutput:
    """Fit the final estimator on all rows; return the fitted chain."""

    if parent is not None and parent.error is not None:
        raise parent.exception or RuntimeError(parent.error)
    models = parent.models if parent is not None else ()
    prior = parent.provenance if parent is not None else ()
    prior_warned = parent.warnings if parent is not None else ()
    nbytes = _sizeof_step(parent) if parent is not None else 0
    cache = ctx.cache
    if cache is not None:
        hit = cache.get(node.key)
        if hit is not None:
            model, fit_time, own = _unpack_model(hit)
            return RefitOutput(
                (*models, model), "hit", fit_time, prior, nbytes, (*prior_warned, *own)
            )
    if parent is None:
        X, y = fold_rows(ctx, fold, "train")
    else:
        X = parent.Xt_train
        y = _y_rows(ctx, fold, fold.train)
    X = private(X)
    params = routed_params(ctx, node.fit_params, fold.train)
    estimator = node.link.build()
    start = time.perf_counter()
    _Blas.apply(ctx.blas_threads)
    with recording_warnings(ctx) as warned, one_thread_per_fit():
        _fit_final(node, estimator, X, y, params)
    fit_time = time.perf_counter() - start
    mark_strides(estimator)  # as run_step's models
    if cache is not None:
        cache.set_later(node.key, _pack_model(estimator, fit_time, warned))
    return RefitOutput(
        (*models, estimator), "fit", fit_time, prior, nbytes, (*prior_warned, *warned)
    )


def _load_models(
    cache: ResultCache, step_keys: Any
) -> tuple[tuple[Any, ...], tuple[Warned, ...]] | None:
    """The cached fitted models of ``step_keys`` and what fitting them warned
    about, or None if any is missing."""
    models = []
    warned: list[Warned] = []
    for skey in step_keys:
        stored = cache.get(_model_key(skey))
        if stored is None:
            return None
        model, _, own = _unpack_model(stored)
        models.append(model)
        warned.extend(own)
    return tuple(models), tuple(warned)


def load_refit(cache: ResultCache, step_keys: tuple[str, ...], key: str) -> RefitOutput | None:
    """The fitted chain of a cached refit, without touching any fold data."""
    loaded = _load_models(cache, step_keys)
    if loaded is None:
        return None
    final = cache.get(key)
    if final is None:
        return None
    model, fit_time, own = _unpack_model(final)
    return RefitOutput((*loaded[0], model), "hit", fit_time, warnings=(*loaded[1], *own))
