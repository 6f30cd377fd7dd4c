"""Job requests: validated JSON in, the engine's arguments out.

:func:`compile_job` is the one place a submitted job becomes Python objects.
The API calls it to refuse a bad job with a 422 before accepting it; the
runner calls it again to build the search it runs. It knows datasets only
by their id and shape (through a lookup function), never HTTP or SQL.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from memogrid.spec import (
    NO_FITS,
    SPECIAL_FLOATS,
    WarningFilter,
    check_sklearn_settings,
    splitter_allowlist,
)

from ..engine.filters import checked_filters
from ..store.datasets import DatasetError
from .build import Allowlist, SpecError, build_estimator, build_grid


@dataclass(frozen=True)
class DatasetShape:
    """What compiling a job needs to know about a dataset."""

    n_rows: int
    kind: str  # "array" | "text" | "frame" | "sparse"
    dtype: str | None = None  # numpy dtype string (arrays)
    ndim: int = 1
    size: int | None = None  # bytes of its stored file, as recorded


@dataclass(frozen=True)
class ExplicitFolds:
    """``cv`` given as its folds: (train, test) row indices, one after the
    other in an uploaded integer array, cut by ``sizes``."""

    dataset_id: str
    sizes: tuple[tuple[int, int], ...]

    def split(self, indices: Any) -> list[tuple[Any, Any]]:
        """The folds out of the loaded array, as scikit-learn's iterable ``cv``."""
        import numpy as np

        out, at = [], 0
        for n_train, n_test in self.sizes:
            train = np.asarray(indices[at : at + n_train])
            test = np.asarray(indices[at + n_train : at + n_train + n_test])
            out.append((train, test))
            at += n_train + n_test
        return out


@dataclass
class CompiledJob:
    """A validated job, as the engine's arguments (datasets still as ids)."""

    kind: str  # "grid" | "random"
    estimator: Any
    search_space: Any  # param_grid or param_distributions
    n_iter: int
    random_state: int | None
    cv: Any
    scoring: Any
    refit: bool | str
    error_score: Any
    return_train_score: bool
    datasets: dict[str, str]  # role -> dataset id: X, y, groups, fit:<name>
    n_candidates: int
    n_splits: int
    #: name -> dataset id, or None for a param passed as None (as scikit-learn passes it)
    fit_params: dict[str, str | None] = field(default_factory=dict)
    #: memory order of the caller's X, for the refit (and a frame's folds);
    #: None: "C" for an array, "F" for a frame
    x_order: str | None = None
    y_order: str | None = None
    #: the caller's scikit-learn settings (``set_config``) the search runs under
    sklearn_config: dict[str, Any] = field(default_factory=dict)
    #: the roles whose string arrays are loaded as ``object`` dtype
    object_arrays: frozenset[str] = frozenset()
    #: the caller's warnings filters that make warnings errors, which the
    #: fits run under (:func:`memogrid.spec.caller_warning_filters`)
    warning_filters: tuple[WarningFilter, ...] = ()

    def data(self, role: str, resolve: Callable[[str, bool], Any]) -> Any:
        """The dataset of ``role`` resolved (None if the job has none), as
        ``resolve(dataset_id, as_object)``."""
        did = self.datasets.get(role)
        return None if did is None else resolve(did, role in self.object_arrays)

    def engine_kwargs(self, resolve: Callable[[str, bool], Any]) -> dict[str, Any]:
        """Keyword arguments for ``SearchRunner.prepare`` but X and y, datasets
        resolved (see :meth:`data`)."""
        cv = self.cv
        if isinstance(cv, ExplicitFolds):
            cv = cv.split(resolve(cv.dataset_id, False).load())
        out: dict[str, Any] = dict(
            cv=cv,
            scoring=self.scoring,
            refit=self.refit,
            error_score=self.error_score,
            return_train_score=self.return_train_score,
            groups=self.data("groups", resolve),
            fit_params={
                k: None if v is None else resolve(v, False) for k, v in self.fit_params.items()
            },
            x_order=self.x_order,
            y_order=self.y_order,
            warning_filters=self.warning_filters,
        )
        if self.kind == "grid":
            out["param_grid"] = self.search_space
        else:
            out.update(
                param_distributions=self.search_space,
                n_iter=self.n_iter,
                random_state=self.random_state,
            )
        return out


def _grid_size(grid: Any) -> int:
    """Candidates a grid describes, raw JSON or built (a malformed part counts
    0: the builder says why)."""
    grids = grid if isinstance(grid, list) else [grid]
    total = 0
    for g in grids:
        if isinstance(g, Mapping) and all(isinstance(v, list) for v in g.values()):
            total += math.prod(len(v) for v in g.values())
    return total


def _scoring(value: Any) -> Any:
    from sklearn.metrics import get_scorer_names

    from memogrid.spec import build_scorer, is_scorer_spec

    names = set(get_scorer_names())

    def check(name: Any, path: str) -> Any:
        if is_scorer_spec(name):
            return build_scorer(name, path)
        if not isinstance(name, str) or name not in names:
            raise SpecError(
                path, f"unknown scorer {name!r}; see sklearn.metrics.get_scorer_names()"
            )
        return name

    if value is None:
        return None
    if isinstance(value, str) or is_scorer_spec(value):
        return check(value, "scoring")
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise SpecError("scoring", "a list of scorers holds names; use a dict for scorers")
        if not value or len(set(value)) != len(value):
            raise SpecError("scoring", "a list of scorers is non-empty and has no repeats")
        return [check(v, f"scoring[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if not value:
            raise SpecError("scoring", "a dict of scorers is non-empty")
        return {k: check(v, f"scoring.{k}") for k, v in value.items()}
    raise SpecError(
        "scoring", "scoring is null, a scorer name, a scorer spec, or a list or dict of them"
    )


_FOLDS_FORM = 'explicit folds are {"folds": <dataset id>, "sizes": [[n_train, n_test], ...]}'


def _explicit_folds(value: Mapping[str, Any]) -> ExplicitFolds:
    if set(value) != {"folds", "sizes"}:
        raise SpecError("cv", _FOLDS_FORM)
    sizes = value["sizes"]
    if not isinstance(value["folds"], str) or not isinstance(sizes, list) or not sizes:
        raise SpecError("cv", _FOLDS_FORM)
    for i, pair in enumerate(sizes):
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in pair)
        ):
            raise SpecError(f"cv.sizes[{i}]", "a fold's sizes are [n_train, n_test], counts")
    return ExplicitFolds(value["folds"], tuple((a, b) for a, b in sizes))


def _check_folds(
    folds: ExplicitFolds, shape: DatasetShape, n_rows: int, load: Callable[[str], Any]
) -> None:
    """The uploaded indices fit the sizes and index rows of X."""
    import numpy as np

    kind = np.dtype(shape.dtype).kind if shape.kind == "array" and shape.dtype else None
    if kind not in ("i", "u") or shape.ndim != 1:
        raise SpecError("cv.folds", "the folds are a one-dimensional integer array")
    total = sum(a + b for a, b in folds.sizes)
    if shape.n_rows != total:
        raise SpecError(
            "cv.folds", f"the folds array has {shape.n_rows} indices but the sizes add to {total}"
        )
    for i, fold in enumerate(folds.split(load(folds.dataset_id))):
        for part in fold:
            # negative indices count from the end, as numpy's (and scikit-learn's)
            if part.size and (int(part.min()) < -n_rows or int(part.max()) >= n_rows):
                raise SpecError(f"cv.folds[{i}]", f"an index is outside the {n_rows} rows of X")


#: splitter parameters that count (folds, repeats, groups, rows), with their
#: least value; their constructors do not all check them, and they are
#: counted before anything splits
_SPLITTER_COUNTS = {"n_splits": 1, "n_repeats": 1, "n_groups": 1, "gap": 0, "max_train_size": 0}


def _splitter_value(splitter: Any, name: str) -> Any:
    """A splitter's parameter; Repeated(Stratified)KFold keep n_splits in ``cvargs``."""
    value = getattr(splitter, name, None)
    if value is None:
        value = (getattr(splitter, "cvargs", None) or {}).get(name)
    return value


def _check_splitter_counts(splitter: Any) -> None:
    for name, least in _SPLITTER_COUNTS.items():
        value = _splitter_value(splitter, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise SpecError(
                f"cv.params.{name}", f"{name} is an integer of at least {least}, not {value!r}"
            )


def _cv(value: Any, allow: Allowlist) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, Mapping)):
        raise SpecError("cv", "cv is null, a number of folds, a splitter spec, or explicit folds")
    if isinstance(value, Mapping) and "folds" in value:
        return _explicit_folds(value)
    if isinstance(value, int):
        if value < 2:
            raise SpecError("cv", f"cv must be at least 2 folds, got {value}")
        return value
    splitter = build_estimator(value, allow, "cv")
    _check_splitter_counts(splitter)
    seed = getattr(splitter, "random_state", None)
    if seed is not None:
        from sklearn.utils import check_random_state

        try:  # what the splitter would refuse only once it splits
            check_random_state(seed)
        except (ValueError, TypeError) as exc:
            raise SpecError("cv.params.random_state", str(exc)) from None
    return splitter


#: the longest parameter name a grid or distributions set (results are
#: stored, and queried, by it in a column of this many characters)
PARAM_KEY_MAX = 255


def compile_job(
    request: Mapping[str, Any],
    allow: Allowlist,
    lookup: Callable[[str], DatasetShape | None],
    load: Callable[[str], Any],
    *,
    grid_max_fits: int,
) -> CompiledJob:
    """Validate a job request and build its objects; raise :class:`SpecError`.

    ``lookup(dataset_id)`` answers a dataset's shape, or ``None`` when the
    id is unknown (to the asking user); ``load(dataset_id)`` its content
    (read only for explicit folds, to check their indices, and for groups
    a splitter counts), kept by nobody (:meth:`DatasetStore.values`).
    """
    from memogrid.spec import DISTRIBUTIONS_MAX, GRIDS_MAX, build_distributions

    estimator = build_estimator(request["estimator"], allow, "estimator")
    grid, dists = request.get("param_grid"), request.get("param_distributions")
    if (grid is None) == (dists is None):
        raise SpecError("param_grid", "give exactly one of param_grid and param_distributions")
    n_iter = int(request.get("n_iter") or 10)
    # refuse an oversized grid from its JSON, before building anything; a
    # list of grids or distributions is bounded too (each costs its building),
    # and so are the parameter names (stored in columns of PARAM_KEY_MAX)
    for name, value, most in (
        ("param_grid", grid, GRIDS_MAX),
        ("param_distributions", dists, DISTRIBUTIONS_MAX),
    ):
        if isinstance(value, list) and len(value) > most:
            raise SpecError(name, f"{name} is a list of at most {most} dicts, not {len(value)}")
        for i, one in enumerate(value if isinstance(value, list) else [value]):
            where = f"{name}[{i}]" if isinstance(value, list) else name
            for key in one if isinstance(one, Mapping) else ():
                if isinstance(key, str) and len(key) > PARAM_KEY_MAX:
                    raise SpecError(
                        f"{where}.{key[:40]}...",
                        f"a parameter name is at most {PARAM_KEY_MAX} characters "
                        f"(the service stores it so), not {len(key)}",
                    )

    def at_most_half_the_fits(n: int, path: str) -> None:
        # every fold of every candidate is a fit, and there are two folds at least
        if n * 2 > grid_max_fits:
            raise SpecError(
                path,
                f"the search has {_count(n)} candidates, at least {_count(n * 2)} fits, above "
                f"the limit of {grid_max_fits}",
            )

    if grid is not None:
        at_most_half_the_fits(_grid_size(grid), "param_grid")  # before building anything
        kind, space = "grid", build_grid(estimator, grid, allow, "param_grid")
        n_candidates = _grid_size(space)
    else:
        kind, space = "random", build_distributions(estimator, dists, allow)
        all_lists = all(
            isinstance(v, list)
            for g in (space if isinstance(space, list) else [space])
            for v in g.values()
        )
        # lists only: scikit-learn draws each point once, n_iter at most
        n_candidates = min(n_iter, _grid_size(space)) if all_lists else n_iter
        at_most_half_the_fits(n_candidates, "n_iter")
    if n_candidates == 0:  # an empty list of grids (a {} is the estimator as it is)
        raise SpecError(
            "param_grid" if grid is not None else "param_distributions",
            f"the search has no candidates: {NO_FITS}",
        )

    datasets: dict[str, str] = {}
    shapes: dict[str, DatasetShape] = {}

    def dataset(role: str, did: Any, path: str) -> None:
        if not isinstance(did, str):
            raise SpecError(path, "a dataset is given by its id (a string)")
        shape = lookup(did)
        if shape is None:
            raise SpecError(path, f"unknown dataset {did!r}; upload it first")
        if shape.kind == "sparse" and role != "X":
            raise SpecError(path, "a sparse matrix is accepted as X only")
        datasets[role], shapes[role] = did, shape

    dataset("X", request.get("X"), "X")
    for role in ("y", "groups"):
        if request.get(role) is not None:
            dataset(role, request[role], role)
    if "y" not in datasets:
        from sklearn.utils import get_tags

        try:
            needs_y = get_tags(estimator).target_tags.required
        except Exception:  # an estimator whose tags cannot be read: let fit decide
            needs_y = False
        if needs_y:
            raise SpecError("y", f"{type(estimator).__name__} is supervised: y is required")
    fit_params: dict[str, str | None] = {}
    for name, did in (request.get("fit_params") or {}).items():
        if did is not None:
            dataset(f"fit:{name}", did, f"fit_params.{name}")
        fit_params[name] = did
    if fit_params:
        from ..engine.plan import check_fit_param_names

        try:  # a name no step takes would be dropped, or fail every fit
            check_fit_param_names(estimator, list(fit_params))
        except ValueError as exc:
            raise SpecError("fit_params", str(exc)) from None
    n_rows = shapes["X"].n_rows
    for role, shape in shapes.items():
        # a fit param of another length goes to every fit whole, as
        # scikit-learn's search passes it (SGD's coef_init, say)
        if shape.n_rows == n_rows or role.startswith("fit:"):
            continue
        # scikit-learn's words, as its search or splitter says them
        lengths = [s.n_rows for r, s in shapes.items() if r in ("X", "y", "groups")]
        raise SpecError(
            role,
            f"{role} has {shape.n_rows} rows but X has {n_rows}: Found input variables "
            f"with inconsistent numbers of samples: {lengths}",
        )
    if shapes["X"].kind != "frame" and _uses_column_names(request["estimator"]):
        raise SpecError("X", "columns are selected by name, so X must be a DataFrame")

    def capped(n_splits: int) -> None:
        if n_candidates * n_splits > grid_max_fits:
            raise SpecError(
                "param_grid" if grid is not None else "n_iter",
                f"the search has {n_candidates} candidates x {_count(n_splits)} folds = "
                f"{_count(n_candidates * n_splits) if n_splits <= _EXACT else _count(n_splits)} "
                f"fits, above the limit of {grid_max_fits}",
            )

    raw_cv = request.get("cv")
    if isinstance(raw_cv, Mapping) and isinstance(raw_cv.get("sizes"), list):
        capped(len(raw_cv["sizes"]))  # before each explicit fold is checked
    cv = _cv(raw_cv, splitter_allowlist())
    if isinstance(cv, ExplicitFolds):
        found = lookup(cv.dataset_id)
        if found is None:
            raise SpecError("cv.folds", f"unknown dataset {cv.dataset_id!r}; upload it first")
        _check_folds(cv, found, n_rows, load)
        datasets["cv"] = cv.dataset_id  # read by the job, as X is
    n_splits = _n_splits(cv, datasets, n_rows, load)
    capped(n_splits)
    refit = request.get("refit", True)
    scoring = _scoring(request.get("scoring"))
    # one metric: any string refits (scikit-learn checks names only among several)
    several = isinstance(scoring, (list, dict))
    if isinstance(refit, str) and several and refit not in scoring:
        raise SpecError("refit", f"refit={refit!r} must name one of the scorers in scoring")
    if refit is True and several:
        raise SpecError(
            "refit",
            "with several metrics in scoring, refit must name the one to pick the best "
            "candidate by (or be false), as in scikit-learn",
        )
    x_order, y_order = request.get("x_order"), request.get("y_order")
    for name, order in (("x_order", x_order), ("y_order", y_order)):
        if order not in (None, "C", "F"):
            raise SpecError(name, f'{name} is "C" or "F", not {order!r}')
    sklearn_config = check_sklearn_settings(request.get("sklearn_config") or {})
    warning_filters = checked_filters(request.get("warning_filters") or [])
    object_arrays = frozenset(request.get("object_arrays") or ())
    for role in sorted(object_arrays):
        if role not in shapes:
            raise SpecError("object_arrays", f"{role!r} names no dataset of this job")
        found = shapes[role]
        import numpy as np

        held = np.dtype(found.dtype).kind if found.kind == "array" and found.dtype else None
        if not (held in tuple("Ubiuf") or found.kind == "text"):
            raise SpecError(
                "object_arrays",
                f"{role} is not an array of strings or numbers: only those load as object",
            )
    error_score = request.get("error_score", "nan")
    if error_score is None or error_score in SPECIAL_FLOATS:
        # JSON (and so the stored request) has no NaN or infinity: named
        error_score = SPECIAL_FLOATS[error_score or "nan"]
    elif error_score != "raise" and not isinstance(error_score, (int, float)):
        raise SpecError("error_score", 'error_score is "raise", "nan", "inf", "-inf" or a number')
    elif isinstance(error_score, float) and math.isinf(error_score):
        # JSON's Infinity extension: stored, it would come back as null (NaN)
        raise SpecError(
            "error_score", 'error_score must be finite, "nan", "inf", "-inf" or "raise"'
        )
    elif isinstance(error_score, int) and abs(error_score) > _FLOAT_MAX:
        # scikit-learn's search would fail too, putting it in cv_results_
        raise SpecError(
            "error_score",
            f"error_score is a number beyond a float's range ({_count(abs(error_score))})",
        )
    return CompiledJob(
        kind=kind,
        estimator=estimator,
        search_space=space,
        n_iter=n_iter,
        random_state=request.get("random_state"),
        cv=cv,
        scoring=scoring,
        refit=refit,
        error_score=error_score,
        return_train_score=bool(request.get("return_train_score", False)),
        datasets=datasets,
        n_candidates=n_candidates,
        n_splits=n_splits,
        fit_params=fit_params,
        x_order=x_order,
        y_order=y_order,
        sklearn_config=sklearn_config,
        warning_filters=warning_filters,
        object_arrays=object_arrays,
    )


_SELECTOR = "sklearn.compose.make_column_selector"


def _listed(value: Any) -> Any:
    """The entries of a spec's ``{"tuple": [...]}``; anything else as it is."""
    if isinstance(value, Mapping) and set(value) == {"tuple"}:
        return value["tuple"]
    return value


def _uses_column_names(spec: Any) -> bool:
    """Whether a ColumnTransformer in the spec selects columns by name."""
    if isinstance(spec, Mapping):
        if spec.get("class") == "sklearn.compose.ColumnTransformer":
            for entry in _listed((spec.get("params") or {}).get("transformers")) or []:
                entry = _listed(entry)
                if isinstance(entry, list) and len(entry) == 3:
                    cols = _listed(entry[2])
                    if isinstance(cols, str) or (
                        isinstance(cols, list) and any(isinstance(c, str) for c in cols)
                    ):
                        return True
                    if isinstance(cols, Mapping) and cols.get("class") == _SELECTOR:
                        return True  # it selects by dtype or by name
        return any(_uses_column_names(v) for v in spec.values())
    if isinstance(spec, list):
        return any(_uses_column_names(v) for v in spec)
    return False


#: splitters that split by the values of ``groups``
_GROUP_SPLITTERS = frozenset(
    {
        "GroupKFold",
        "StratifiedGroupKFold",
        "GroupShuffleSplit",
        "LeaveOneGroupOut",
        "LeavePGroupsOut",
    }
)


_FLOAT_MAX = int(sys.float_info.max)


#: counts given exactly in messages up to this
_EXACT = 10**15


def _count(n: int) -> str:
    """``n`` in a message: exact while it reads as a number, its order of
    magnitude past that (Python refuses to print an int of over 4300 digits,
    and a grid of many keys counts far more candidates)."""
    if n <= _EXACT:
        return str(n)
    if n == _EXACT + 1:  # what a count stopped at _EXACT stands for
        return f"more than {_EXACT}"
    return f"about 10^{int((n.bit_length() - 1) * math.log10(2))}"


def _bounded_comb(n: int, k: int, bound: int) -> int:
    """``comb(n, k)``, or ``bound + 1`` as soon as it is known to pass ``bound``
    (the exact count of many groups' combinations takes seconds to compute)."""
    k = min(k, n - k)
    out = 1
    for i in range(1, k + 1):
        out = out * (n - k + i) // i  # comb(n - k + i, i): exact, and growing
        if out > bound:
            return bound + 1
    return out


def _too_many_splits(n_splits: int, n_rows: int) -> str:
    """scikit-learn's words for more folds than rows (its splitters' ValueError)."""
    return (
        f"Cannot have number of splits n_splits={_count(n_splits)} greater than the number of "
        f"samples: n_samples={n_rows}."
    )


def _n_splits(cv: Any, datasets: dict[str, str], n_rows: int, load: Callable[[str], Any]) -> int:
    """The number of folds, loading groups only where the splitter counts them
    (any count past :data:`_EXACT` as ``_EXACT + 1``)."""
    if isinstance(cv, ExplicitFolds):
        return len(cv.sizes)
    if cv is None or isinstance(cv, int):
        folds = 5 if cv is None else cv
        if folds > n_rows:
            said = "the default cv of 5" if cv is None else f"cv={cv}"
            raise SpecError("cv", f"{said}: {_too_many_splits(folds, n_rows)}")
        return folds
    name = type(cv).__name__
    if name in _GROUP_SPLITTERS and "groups" not in datasets:
        # scikit-learn's words, as its splitter raises them
        raise SpecError(
            "groups", f"{name} needs groups: The 'groups' parameter should not be None."
        )
    n = _splitter_value(cv, "n_splits")
    if name.endswith("KFold") and isinstance(n, int) and n > n_rows:
        raise SpecError("cv", f"{name}: {_too_many_splits(n, n_rows)}")
    if name in ("LeaveOneGroupOut", "LeavePGroupsOut", "LeaveOneOut", "PredefinedSplit"):
        if name == "LeaveOneOut":
            return n_rows
        # these count the distinct groups (or test_fold values): the
        # splitter's own count, over the uploaded groups
        try:
            groups = load(datasets["groups"]) if "groups" in datasets else None
        except DatasetError as exc:
            raise SpecError("groups", str(exc)) from None
        try:
            if name != "LeavePGroupsOut":
                return int(cv.get_n_splits(None, None, groups))
            # its own count is the exact comb() of the distinct groups, which
            # takes minutes for many: counted here only as far as messages
            # give counts exactly, over LeaveOneGroupOut's count of them
            from sklearn.model_selection import LeaveOneGroupOut

            distinct = int(LeaveOneGroupOut().get_n_splits(None, None, groups))
        except Exception:  # groups it cannot count: the split will say why
            return 1
        if cv.n_groups >= distinct:  # scikit-learn's words, as its split raises them
            raise SpecError(
                "cv.params.n_groups",
                f"The groups parameter contains fewer than (or equal to) n_groups "
                f"({cv.n_groups}) numbers of unique groups ({distinct} of them). "
                f"LeavePGroupsOut expects that at least n_groups + 1 ({cv.n_groups + 1}) "
                "unique groups be present",
            )
        return _bounded_comb(distinct, cv.n_groups, _EXACT)
    if name in _CHECKED_BY_SPLITTING:
        _first_split(cv, name, datasets, n_rows, load)
    repeats = getattr(cv, "n_repeats", 1)
    return int(n or 5) * int(repeats or 1)


#: splitters whose settings can refuse the rows (sizes, or folds, beyond
#: them) only when they split: their first split is made at submission
_CHECKED_BY_SPLITTING = ("TimeSeriesSplit", "ShuffleSplit", "StratifiedShuffleSplit")


def _first_split(
    cv: Any, name: str, datasets: dict[str, str], n_rows: int, load: Callable[[str], Any]
) -> None:
    """Refuse, in scikit-learn's words, a splitter that cannot split the rows
    (``TimeSeriesSplit(100)`` on 60, ``ShuffleSplit(test_size=5.0)``): the
    job was accepted and failed at its first fold."""
    import numpy as np

    y = None
    if name.startswith("Stratified"):
        if "y" not in datasets:
            return  # the search says what it lacks
        try:
            y = load(datasets["y"])
        except DatasetError as exc:
            raise SpecError("y", str(exc)) from None
    try:
        next(iter(cv.split(np.zeros((n_rows, 0)), y)))
    except ValueError as exc:
        raise SpecError("cv", f"{name}: {exc}") from None
