"""Pure search planning: candidates × folds → a deduplicated task plan.

Nothing here touches a cluster, a cache or a file. Given the configured
estimator of every candidate and the folds, :func:`build_plan` decomposes
each estimator into the chain ``Pipeline`` itself would run (nested
pipelines flattened, ``None`` / ``"passthrough"`` steps dropped), names every
(prefix, fold) by its Merkle key (:mod:`.keys`) and keeps one node per key.
A grid of 3 PCA settings × 6 classifier settings × 5 folds therefore plans
15 PCA nodes, not 90.
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


def _skipped(step: Any) -> bool:
    return step is None or (isinstance(step, str) and step == "passthrough")


@dataclass(frozen=True)
class ChainLink:
    """One fitted-in-sequence element of a flattened pipeline."""

    path: tuple[str, ...]  # step names from the outermost pipeline down
    estimator: Any


def flatten(estimator: Any, _prefix: tuple[str, ...] = ()) -> list[ChainLink]:
    """The sequence of estimators ``estimator.fit`` would fit, in order.

    The last link is the final estimator; every earlier one is a transformer
    fitted with ``fit_transform`` on the training rows.
    """
    if not _is_pipeline(estimator):
        return [ChainLink(_prefix, estimator)]
    links: list[ChainLink] = []
    for name, step in estimator.steps:
        if _skipped(step):
            continue
        links.extend(flatten(step, (*_prefix, name)))
    if not links or _skipped(estimator.steps[-1][1]):
        raise ValueError(
            "the final step of a searched Pipeline must be an estimator, "
            f"not {estimator.steps[-1][1]!r}"
        )
    return links


def assemble(configured: Any, fitted: Sequence[Any]) -> Any:
    """Put fitted chain estimators back into the configured estimator tree."""
    fitted_iter = iter(fitted)

    def fill(est: Any) -> Any:
        if not _is_pipeline(est):
            return next(fitted_iter)
        est.steps = [
            (name, step if _skipped(step) else fill(step)) for name, step in est.steps
        ]
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
    """Refuse fit params that ``estimator.fit`` would refuse, as Pipeline does."""
    if not _is_pipeline(estimator):
        return
    for name in names:
        if "__" not in name:
            raise ValueError(
                f"Pipeline.fit does not accept the {name} parameter. You can pass "
                "parameters to specific steps of your pipeline using the "
                "stepname__parameter format, e.g. `Pipeline.fit(X, y, "
                "logisticregression__sample_weight=sample_weight)`."
            )


@dataclass(frozen=True)
class Fold:
    """The literal fold data shared by every task of that fold."""

    key: str
    train: np.ndarray
    test: np.ndarray


@dataclass
class StepNode:
    key: str
    fold: str
    parent: str | None  # None: the first step, reading the fold's rows
    estimator: Any
    fit_params: dict[str, str]  # own name -> search fit-param name
    label: str  # e.g. "pca" or "pre__scale", for messages


@dataclass
class ScoreNode:
    key: str
    fold: str
    parent: str | None  # last step key, None for a bare estimator
    chain: tuple[str, ...]  # every step key from the fold down
    estimator: Any
    fit_params: dict[str, str]
    ttrain: str | None = None  # train-transform key feeding train scores


@dataclass
class TrainTransformNode:
    key: str
    fold: str
    step: str
    parent: str | None  # parent ttrain key; None reads the fold's raw rows


@dataclass
class Plan:
    """Everything a search must compute, one node per distinct key."""

    folds: dict[str, Fold]
    steps: dict[str, StepNode]
    scores: dict[str, ScoreNode]
    ttrains: dict[str, TrainTransformNode]
    #: score key for each (candidate, split), candidate-major like sklearn
    grid: list[list[str]]
    #: estimators left with ``random_state=None``, by chain label
    unseeded: list[str] = field(default_factory=list)


def _token_cache() -> dict[int, Any]:
    return {}


def link_token(link: ChainLink, memo: dict[int, Any] | None = None) -> Any:
    if memo is not None:
        tok = memo.get(id(link.estimator))
        if tok is not None:
            return tok
    tok = keys.estimator_token(link.estimator)
    if memo is not None:
        memo[id(link.estimator)] = tok
    return tok


def _unseeded(est: Any, label: str, out: set[str]) -> None:
    params = est.get_params(deep=False) if hasattr(est, "get_params") else {}
    if "random_state" in params and params["random_state"] is None:
        out.add(f"{label or type(est).__name__} ({type(est).__name__})")
    for name, value in params.items():
        if hasattr(value, "get_params") and not isinstance(value, type):
            _unseeded(value, f"{label}__{name}" if label else name, out)
        elif isinstance(value, (list, tuple)):
            for item in value:
                if (
                    isinstance(item, tuple)
                    and len(item) >= 2
                    and hasattr(item[1], "get_params")
                ):
                    sub = f"{label}__{item[0]}" if label else str(item[0])
                    _unseeded(item[1], sub, out)


def chain_keys(
    links: Sequence[ChainLink],
    fold: str,
    fit_param_tokens: Mapping[str, Any],
    memo: dict[int, Any] | None = None,
) -> tuple[list[str], list[dict[str, str]], Any, dict[str, str]]:
    """Keys of every transformer link on ``fold``; plus the final's token and params."""
    parent = fold
    step_keys: list[str] = []
    routed_all: list[dict[str, str]] = []
    names = list(fit_param_tokens)
    for link in links[:-1]:
        routed = route_fit_params(link.path, names)
        fp = sorted((own, fit_param_tokens[src]) for own, src in routed.items())
        parent = keys.step_key(link_token(link, memo), parent, fp)
        step_keys.append(parent)
        routed_all.append(routed)
    final = links[-1]
    return (
        step_keys,
        routed_all,
        link_token(final, memo),
        route_fit_params(final.path, names),
    )


def build_plan(
    configured: Sequence[Any],
    folds: Sequence[Fold],
    *,
    scorers_token: Any,
    return_train_score: bool,
    fit_param_tokens: Mapping[str, Any] | None = None,
    score_param_tokens: Any = None,
) -> Plan:
    """Plan the tasks for every configured candidate on every fold."""
    fit_param_tokens = dict(fit_param_tokens or {})
    plan = Plan(
        folds={f.key: f for f in folds}, steps={}, scores={}, ttrains={}, grid=[]
    )
    unseeded: set[str] = set()
    for est in configured:
        links = flatten(est)
        memo: dict[int, Any] = {}
        for link in links:
            _unseeded(link.estimator, "__".join(link.path), unseeded)
        row: list[str] = []
        for fold in folds:
            step_keys, routed, final_tok, final_routed = chain_keys(
                links, fold.key, fit_param_tokens, memo
            )
            parent: str | None = None
            ttrain_parent: str | None = None
            for link, skey, r in zip(links[:-1], step_keys, routed, strict=True):
                if skey not in plan.steps:
                    plan.steps[skey] = StepNode(
                        key=skey,
                        fold=fold.key,
                        parent=parent,
                        estimator=link.estimator,
                        fit_params=r,
                        label="__".join(link.path),
                    )
                if return_train_score:
                    tkey = keys.train_transform_key(skey)
                    if tkey not in plan.ttrains:
                        plan.ttrains[tkey] = TrainTransformNode(
                            key=tkey, fold=fold.key, step=skey, parent=ttrain_parent
                        )
                    ttrain_parent = tkey
                parent = skey
            fp = sorted(
                (own, fit_param_tokens[src]) for own, src in final_routed.items()
            )
            skey = keys.score_key(
                final_tok,
                parent or fold.key,
                scorers_token,
                return_train_score,
                fp,
                score_param_tokens,
            )
            if skey not in plan.scores:
                plan.scores[skey] = ScoreNode(
                    key=skey,
                    fold=fold.key,
                    parent=parent,
                    chain=tuple(step_keys),
                    estimator=links[-1].estimator,
                    fit_params=final_routed,
                    ttrain=ttrain_parent,
                )
            row.append(skey)
        plan.grid.append(row)
    plan.unseeded = sorted(unseeded)
    return plan


@dataclass
class RefitPlan:
    """The refit on all rows: the same step keys with an all-rows fold."""

    fold: Fold
    steps: dict[str, StepNode]
    key: str  # refit key of the final estimator
    parent: str | None
    estimator: Any
    fit_params: dict[str, str]
    chain: tuple[str, ...]


def build_refit_plan(
    configured: Any, fold: Fold, fit_param_tokens: Mapping[str, Any] | None = None
) -> RefitPlan:
    """Plan the refit of ``configured`` on ``fold`` (all rows, no test rows)."""
    fit_param_tokens = dict(fit_param_tokens or {})
    links = flatten(configured)
    step_keys, routed, final_tok, final_routed = chain_keys(
        links, fold.key, fit_param_tokens
    )
    steps: dict[str, StepNode] = {}
    parent: str | None = None
    for link, skey, r in zip(links[:-1], step_keys, routed, strict=True):
        steps[skey] = StepNode(
            skey, fold.key, parent, link.estimator, r, "__".join(link.path)
        )
        parent = skey
    fp = sorted((own, fit_param_tokens[src]) for own, src in final_routed.items())
    rkey = keys.refit_key(final_tok, parent or fold.key, fp)
    return RefitPlan(
        fold, steps, rkey, parent, links[-1].estimator, final_routed, tuple(step_keys)
    )
