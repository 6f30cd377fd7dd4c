"""Pure search planning: candidates × folds → a deduplicated task plan.

Nothing here touches a cluster, a cache or a file. For every candidate,
:func:`resolve_chain` works out the chain ``Pipeline`` itself would fit
(nested pipelines flattened, ``None`` / ``"passthrough"`` steps dropped,
steps swapped by the grid replaced first and their nested params applied
after, as ``Pipeline.set_params`` does) without building the candidate: each
link is a :class:`LinkSpec`, an unfitted base estimator plus the params to
set on a clone of it, keyed by content. :func:`build_plan` then names every
(prefix, fold) by its Merkle key (:mod:`.keys`) and keeps one node per key,
so a grid of 3 PCA settings × 6 classifier settings × 5 folds plans 15 PCA
nodes, not 90.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import keys


def _is_pipeline(est: Any) -> bool:
    from sklearn.pipeline import Pipeline

    return isinstance(est, Pipeline)


def routing_enabled() -> bool:
    """Whether scikit-learn's metadata routing is on (in this thread)."""
    from sklearn import get_config

    return bool(get_config().get("enable_metadata_routing"))


def _identity(value: Any) -> Any:
    """A memo key part for a parameter value: literals by value (and type),
    anything else by the object itself (kept alive by the caller)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return (type(value).__name__, value)
    return ("id", id(value))


def _skipped(step: Any) -> bool:
    return step is None or (isinstance(step, str) and step == "passthrough")


def _fits_nothing(est: Any) -> bool:
    """A step that fits nothing: passthrough, None, or a pipeline of such."""
    return _skipped(est) or (_is_pipeline(est) and all(_fits_nothing(s) for _, s in est.steps))


def _without_final(steps: Sequence[tuple[str, Any]]) -> bool:
    """Whether a searched pipeline of ``steps`` has no final estimator to fit
    and score alone: its last step passthrough or None, or no step fitting
    anything. It is planned as one link, the pipeline itself."""
    return not steps or _skipped(steps[-1][1]) or all(_fits_nothing(s) for _, s in steps)


class _Keyed:
    """Nodes are named by their Merkle key; dask tokenizes them by it too."""

    key: str

    def __dask_tokenize__(self) -> tuple[str, str]:
        return (type(self).__name__, self.key)


@dataclass(frozen=True)
class LinkSpec:
    """One link of a candidate's chain: ``clone(base).set_params(**overrides)``.

    Built only where a task runs (:meth:`build`); its ``token`` is the hash
    (:func:`keys.token_id`) of the content encoding of the estimator it builds.
    """

    path: tuple[str, ...]  # step names from the outermost pipeline down
    base: Any
    overrides: tuple[tuple[str, Any], ...]
    token: Any

    @property
    def label(self) -> str:
        return "__".join(self.path) or type(self.base).__name__

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("LinkSpec", self.path, self.token)

    def build(self) -> Any:
        from sklearn.base import clone

        est = clone(self.base)
        if self.overrides:
            est.set_params(**clone(dict(self.overrides), safe=False))
        return est


def _plain_set_params(est: Any) -> bool:
    """True if ``set_params`` on ``est`` only sets attributes (BaseEstimator's)."""
    from sklearn.base import BaseEstimator

    return type(est).set_params is BaseEstimator.set_params


class ChainResolver:
    """Resolves candidates into link chains, memoizing tokens across candidates."""

    def __init__(self) -> None:
        self._links: dict[tuple[Any, ...], LinkSpec] = {}
        self._params: dict[int, dict[str, Any]] = {}
        self._canon: dict[int, dict[str, Any]] = {}  # canonical(_params), per value
        #: per estimator: its token's JSON for each param, encoded once
        self._fragments: dict[int, dict[str, str]] = {}
        self._keep: list[Any] = []  # objects whose id() is memoized stay alive
        #: whether a pipeline with some of its own parameters set would fit
        self._accepted: dict[tuple[Any, ...], bool] = {}
        #: labels of resolved estimators left with ``random_state=None``
        self.unseeded: set[str] = set()

    def _shallow_params(self, est: Any) -> dict[str, Any]:
        p = self._params.get(id(est))
        if p is None:
            keys.refuse_kept_state(est)  # as keys.estimator_token does
            p = self._params[id(est)] = est.get_params(deep=False)
            self._canon[id(est)] = {k: keys.canonical(v) for k, v in p.items()}
            self._keep.append(est)
        return p

    def _param_fragments(self, est: Any) -> dict[str, str]:
        f = self._fragments.get(id(est))
        if f is None:
            f = self._fragments[id(est)] = {
                k: keys.encode([k, c]) for k, c in self._canon[id(est)].items()
            }
            cfg = keys.output_config(est)
            if cfg is not None:  # as keys.estimator_token adds it
                f[keys.OUTPUT_CONFIG] = keys.encode([keys.OUTPUT_CONFIG, keys.canonical(cfg)])
        return f

    def link(self, path: tuple[str, ...], base: Any, overrides: Mapping[str, Any]) -> LinkSpec:
        """The spec (and content token) of ``clone(base).set_params(**overrides)``."""
        ov_frags = {k: keys.encode([k, keys.canonical(v)]) for k, v in overrides.items()}
        enc = ",".join(ov_frags[k] for k in sorted(ov_frags))
        memo_key = (path, id(base), enc)
        spec = self._links.get(memo_key)
        if spec is not None:
            return spec
        self._keep.append(base)
        params = self._shallow_params(base)
        fast = (
            _plain_set_params(base)
            and all("__" not in k and k in params for k in overrides)
            and not any(hasattr(v, "get_params") for v in overrides.values())
        )
        if fast:
            merged = dict(params)
            merged.update(overrides)
            frags = dict(self._param_fragments(base))
            frags.update(ov_frags)
            # the JSON of keys.params_token(type(base), merged), with the
            # base's values encoded once rather than per candidate
            name = keys.encode(keys.named(type(base)))
            body = ",".join(frags[k] for k in sorted(frags))
            token = keys.token_id_encoded(f'["est",{name},[{body}]]')
            spec = LinkSpec(path, base, tuple(overrides.items()), token)
        else:
            # meta-estimators and nested params: configure for real
            built = LinkSpec(path, base, tuple(overrides.items()), None).build()
            merged = built.get_params(deep=False)
            spec = LinkSpec(path, built, (), keys.token_id(keys.estimator_token(built)))
        _unseeded(type(base).__name__, merged, spec.label, self.unseeded)
        self._links[memo_key] = spec
        return spec

    def _fits_as_pipeline(self, est: Any, own: Mapping[str, Any]) -> bool:
        """Whether ``clone(est).set_params(**own)`` passes the checks
        ``Pipeline.fit`` makes before fitting a step: its own parameters and
        its steps. Memoized by the objects given (grids reuse them)."""
        memo = (id(est), tuple(sorted((k, _identity(v)) for k, v in own.items())))
        ok = self._accepted.get(memo)
        if ok is None:
            from sklearn.base import clone

            self._keep.extend((est, *own.values()))
            try:
                configured = clone(est).set_params(**clone(dict(own), safe=False))
                configured._validate_params()
                configured._validate_steps()
            except Exception:
                ok = False
            else:
                # transform_input is for metadata routing, which Pipeline.fit
                # requires for it (the engine refuses routing's fit params)
                ok = configured.transform_input is None or routing_enabled()
            self._accepted[memo] = ok
        return ok

    def resolve(
        self, est: Any, params: Mapping[str, Any], path: tuple[str, ...] = ()
    ) -> list[LinkSpec]:
        """The chain ``clone(est).set_params(**params).fit`` would run."""
        if not _is_pipeline(est):
            return [self.link(path, est, params)]
        names = [name for name, _ in est.steps]
        own = {k: v for k, v in params.items() if "__" not in k}
        if not self._fits_as_pipeline(est, own):
            # Pipeline.fit would refuse it (a parameter of its own out of
            # range, a step that is no estimator): one link, the pipeline
            # itself, whose fit fails each fold as scikit-learn's does
            return [self.link(path, est, params)]
        if any(k not in names for k in own):
            # the pipeline's own params (steps, memory, ...): configure it
            from sklearn.base import clone

            configured = clone(est).set_params(**clone(dict(params), safe=False))
            self._keep.append(configured)
            self._accepted[(id(configured), ())] = True  # checked just above
            return self.resolve(configured, {}, path)
        links: list[LinkSpec] = []
        steps = [(name, own.get(name, step)) for name, step in est.steps]
        for name, step in steps:
            if _skipped(step):
                continue
            prefix = name + "__"
            sub = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
            links.extend(self.resolve(step, sub, (*path, name)))
        # a nested pipeline ending in "passthrough" is a transformer, as in
        # scikit-learn; the searched one then has no final estimator to fit
        # and score alone: one link, the pipeline itself, which fits and
        # fails to score as scikit-learn's does (error_score, "Scoring failed")
        if not path and (not links or _without_final(steps)):
            return [self.link(path, est, params)]
        return links


def assemble(configured: Any, fitted: Sequence[Any]) -> Any:
    """Put fitted chain estimators back into the configured estimator tree."""
    if _is_pipeline(configured) and _without_final(configured.steps):
        (whole,) = fitted  # planned as one link, itself (ChainResolver.resolve)
        return whole
    fitted_iter = iter(fitted)

    def fill(est: Any) -> Any:
        if not _is_pipeline(est):
            return next(fitted_iter)
        est.steps = [(name, step if _skipped(step) else fill(step)) for name, step in est.steps]
        return est

    return fill(configured)


def route_fit_params(path: tuple[str, ...], names: Sequence[str]) -> dict[str, str]:
    """Map the search's fit-param names to this link's own parameter names.

    ``pre__pca__sample_weight`` reaches the link at path ``("pre", "pca")``
    as ``sample_weight``; a plain estimator (empty path) receives every name.
    """
    routed: dict[str, str] = {}
    for name in names:
        parts = name.split("__")
        if not path:
            routed[name] = name
        elif len(parts) == len(path) + 1 and tuple(parts[:-1]) == path:
            routed[parts[-1]] = name
    return routed


def check_fit_param_names(estimator: Any, names: Sequence[str]) -> None:
    """Refuse fit params that ``estimator.fit`` would refuse, as Pipeline does:
    a name that reaches a Pipeline without a ``step__`` prefix, or whose
    prefix names no step of it (nested pipelines checked level by level).
    Left alone, such a param would match no step and be silently dropped."""
    for name in names:
        _check_fit_param(estimator, name, name)


def _check_fit_param(est: Any, name: str, full: str) -> None:
    if not _is_pipeline(est):
        return
    if "__" not in name:
        raise ValueError(
            f"Pipeline.fit does not accept the {name} parameter. You can pass "
            "parameters to specific steps of your pipeline using the "
            "stepname__parameter format, e.g. `Pipeline.fit(X, y, "
            "logisticregression__sample_weight=sample_weight)`."
        )
    step, rest = name.split("__", 1)
    steps = dict(est.steps)
    if step not in steps:
        raise ValueError(
            f"fit parameter {full!r} names no step of the Pipeline: its steps are "
            f"{', '.join(repr(n) for n in steps)}"
        )
    _check_fit_param(steps[step], rest, full)


@dataclass(frozen=True)
class Fold(_Keyed):
    """The literal fold data shared by every task of that fold."""

    key: str
    train: np.ndarray
    test: np.ndarray
    #: the refit's fold: its rows are X as the caller gave it, in the memory
    #: order ``order`` ("C" or "F"), not a row selection (which numpy always
    #: returns C-ordered)
    whole: bool = False
    order: str = "C"
    #: the refit's y in the caller's memory order too (a 2-D y)
    y_order: str = "C"


@dataclass
class StepNode(_Keyed):
    key: str
    fold: str
    parent: str | None  # None: the first step, reading the fold's rows
    link: LinkSpec
    fit_params: dict[str, str]  # own name -> search fit-param name


@dataclass
class ScoreNode(_Keyed):
    key: str
    fold: str
    parent: str | None  # last step key, None for a bare estimator
    link: LinkSpec
    fit_params: dict[str, str]
    ttrain: str | None = None  # train-transform key feeding train scores


@dataclass
class TrainTransformNode(_Keyed):
    key: str
    fold: str
    step: str
    parent: str | None  # parent ttrain key; None reads the fold's raw rows


@dataclass
class Plan:
    """Everything a search must compute, one node per distinct key."""

    folds: dict[str, Fold]
    steps: dict[str, StepNode] = field(default_factory=dict)
    scores: dict[str, ScoreNode] = field(default_factory=dict)
    ttrains: dict[str, TrainTransformNode] = field(default_factory=dict)
    #: score key for each (candidate, split), candidate-major like sklearn
    grid: list[list[str]] = field(default_factory=list)
    #: estimators left with ``random_state=None``, by chain label
    unseeded: list[str] = field(default_factory=list)


def _unseeded(cls_name: str, params: Mapping[str, Any], label: str, out: set[str]) -> None:
    """Add ``label`` (and nested estimators' labels) if ``random_state`` is None."""
    if "random_state" in params and params["random_state"] is None:
        out.add(f"{label} ({cls_name})")
    for name, value in params.items():
        if _unseeded_splitter(value):  # CalibratedClassifierCV(cv=KFold(shuffle=True))
            out.add(f"{label}__{name} ({type(value).__name__})")
        nested: list[tuple[str, Any]] = []
        if hasattr(value, "get_params") and not isinstance(value, type):
            nested.append((name, value))
        elif isinstance(value, (list, tuple)):
            nested.extend(
                (str(item[0]), item[1])
                for item in value
                if isinstance(item, tuple) and len(item) >= 2 and hasattr(item[1], "get_params")
            )
        for sub, est in nested:
            sub_params = est.get_params(deep=False)
            _unseeded(type(est).__name__, sub_params, f"{label}__{sub}", out)


def _unseeded_splitter(value: Any) -> bool:
    """A splitter that draws its folds at random with no seed (a shuffled
    KFold, a ShuffleSplit left with ``random_state=None``)."""
    return (
        not hasattr(value, "get_params")
        and callable(getattr(value, "split", None))
        and getattr(value, "random_state", 0) is None
        and getattr(value, "shuffle", True) is not False
    )


def _routed_tokens(routed: Mapping[str, str], tokens: Mapping[str, Any]) -> str | None:
    """One id for the fit params a link receives (None when it gets none)."""
    if not routed:
        return None
    return keys.token_id(sorted([own, tokens[src]] for own, src in routed.items()))


def build_plan(
    base: Any,
    candidates: Sequence[Mapping[str, Any]],
    folds: Sequence[Fold],
    *,
    scorers_token: Any,
    return_train_score: bool,
    fit_param_tokens: Mapping[str, Any] | None = None,
    score_param_tokens: Any = None,
) -> Plan:
    """Plan the tasks for every candidate of ``base`` on every fold."""
    tokens = dict(fit_param_tokens or {})
    names = list(tokens)
    plan = Plan(folds={f.key: f for f in folds})
    resolver = ChainResolver()
    routes: dict[tuple[str, ...], tuple[dict[str, str], str | None]] = {}
    scorers_id = keys.token_id(scorers_token)
    step_memo: dict[tuple[str, str, str | None], str] = {}
    score_params_id = keys.token_id(score_param_tokens)

    def route(path: tuple[str, ...]) -> tuple[dict[str, str], str | None]:
        r = routes.get(path)
        if r is None:
            routed = route_fit_params(path, names)
            r = routes[path] = (routed, _routed_tokens(routed, tokens))
        return r

    for params in candidates:
        *transformers, final = resolver.resolve(base, params)
        final_route, final_fp = route(final.path)
        row: list[str] = []
        for fold in folds:
            parent: str | None = None
            ttrain: str | None = None
            for link in transformers:
                routed, fp = route(link.path)
                memo_key = (link.token, parent or fold.key, fp)
                skey = step_memo.get(memo_key)  # shared prefixes recur per candidate
                if skey is None:
                    skey = step_memo[memo_key] = keys.step_key(*memo_key)
                if skey not in plan.steps:
                    plan.steps[skey] = StepNode(skey, fold.key, parent, link, routed)
                if return_train_score:
                    tkey = keys.train_transform_key(skey)
                    if tkey not in plan.ttrains:
                        plan.ttrains[tkey] = TrainTransformNode(tkey, fold.key, skey, ttrain)
                    ttrain = tkey
                parent = skey
            score = keys.score_key(
                final.token,
                parent or fold.key,
                scorers_id,
                return_train_score,
                final_fp,
                score_params_id,
            )
            if score not in plan.scores:
                plan.scores[score] = ScoreNode(score, fold.key, parent, final, final_route, ttrain)
            row.append(score)
        plan.grid.append(row)
    plan.unseeded = sorted(resolver.unseeded)
    return plan


@dataclass
class RefitPlan(_Keyed):
    """The refit on all rows: the same step keys with an all-rows fold."""

    fold: Fold
    steps: dict[str, StepNode]
    key: str  # refit key of the final estimator
    parent: str | None
    link: LinkSpec
    fit_params: dict[str, str]
    chain: tuple[str, ...]


def build_refit_plan(
    base: Any,
    params: Mapping[str, Any],
    fold: Fold,
    fit_param_tokens: Mapping[str, Any] | None = None,
) -> RefitPlan:
    """Plan the refit of candidate ``params`` on ``fold`` (all rows, no test rows)."""
    tokens = dict(fit_param_tokens or {})
    *transformers, final = ChainResolver().resolve(base, params)
    steps: dict[str, StepNode] = {}
    parent: str | None = None
    for link in transformers:
        r = route_fit_params(link.path, list(tokens))
        skey = keys.step_key(link.token, parent or fold.key, _routed_tokens(r, tokens))
        steps[skey] = StepNode(skey, fold.key, parent, link, r)
        parent = skey
    r = route_fit_params(final.path, list(tokens))
    rkey = keys.refit_key(final.token, parent or fold.key, _routed_tokens(r, tokens))
    return RefitPlan(fold, steps, rkey, parent, final, r, tuple(steps))
