"""Drop-in ``GridSearchCV`` and ``RandomizedSearchCV`` that run on a memogrid service.

Replace ``from sklearn.model_selection import GridSearchCV`` with
``from memogrid import GridSearchCV``: the same constructor arguments (plus
``client`` and ``progress``; ``n_jobs`` and ``pre_dispatch`` are accepted
and checked, the service deciding its own parallelism; ``verbose`` prints
what scikit-learn's does, once the search is done), ``fit``
returns self, and afterwards the same attributes and the prediction methods
of the best estimator. They are scikit-learn estimators: ``get_params`` /
``set_params`` / ``clone`` work as usual, and a search over a classifier is
a classifier (its tags are the estimator's, as scikit-learn's are).

Parameters are checked by scikit-learn's own search class before anything
is sent, so they fail as scikit-learn's would (``InvalidParameterError``,
refit against several metrics). The warnings the service recorded while
running the search (failed fits, non-finite scores, n_iter beyond the
grid) are raised again in the caller's process, by class. Interrupting
``fit`` (Ctrl-C) cancels the job on the service.
"""

from __future__ import annotations

import numbers
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from copy import deepcopy
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin
from sklearn.utils import get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from . import errors
from .client import Client, Job
from .spec import GRIDS_MAX, NO_FITS, SpecError, explicit_folds, to_spec


def _all_fits_failed(error: str | None) -> bool:
    """Whether a job ended as scikit-learn's search does when every fit failed."""
    name, _, message = (error or "").partition(":")
    return name == "ValueError" and message.lstrip().startswith("All the ")


def _reemit(
    recorded: list[str],
    counts: dict[str, int] | None = None,
    sources: dict[str, list[Any]] | None = None,
) -> None:
    """Raise the warnings scikit-learn gave on the service here, by class,
    each as often as it came (``counts``: scikit-learn's search raises one
    per fit) and from where it came (``sources``: the module, file and line
    that raised it, so filters naming a module, ``module="sklearn"``, treat
    it as scikit-learn's own). memogrid's own notes (estimators left with
    random_state=None are memoized) stay in ``job_.warnings``:
    scikit-learn gives no such warning, and the drop-in should not either."""
    for text in recorded:
        name, sep, message = text.partition(": ")
        if not (sep and name.isidentifier() and name.endswith("Warning")):
            continue
        category = errors.warning_category(name)
        if category is UserWarning and name != "UserWarning":
            message = text  # a class not raised by name keeps it in the text
        source = _source((sources or {}).get(text))
        for _ in range((counts or {}).get(text, 1)):
            # each in a warnings context of its own, as scikit-learn runs each
            # fit: a "once" filter shows it again for every fit, as there
            with warnings.catch_warnings():
                if source is None:
                    warnings.warn(message, category, stacklevel=3)
                else:
                    module, filename, lineno = source
                    warnings.warn_explicit(message, category, filename, lineno, module=module)


def _source(given: Any) -> tuple[str, str, int] | None:
    """A warning's [module, file, line] from the service as ``warn_explicit``
    takes them, or None if it is not that shape.

    The file shown is this process's own copy of the module where it is
    loaded (never imported for this), else a name no file has
    (``<memogrid:module>``): showing a warning reads its file's line, and a
    path the server names is not one to open here.
    """
    if not (isinstance(given, list) and len(given) == 3):
        return None
    module, _, lineno = given
    if not (isinstance(module, str) and type(lineno) is int and lineno >= 0):
        return None
    here = getattr(sys.modules.get(module), "__file__", None)
    return module, here if isinstance(here, str) else f"<memogrid:{module}>", lineno


def _callers_values(best: Any, estimator: Any, params: dict[str, Any]) -> Any:
    """``best`` (the service's refit, built from JSON) holding the caller's
    own parameter values, as scikit-learn's best estimator holds them.

    JSON brings back an equal value of another type: a grid's numpy scalar
    as a Python number, an array (``RidgeCV(alphas=np.logspace(...))``) as a
    list, numpy dict keys as Python ones. scikit-learn's refit is
    ``clone(estimator).set_params(**best_params_)``: wherever that holds a
    value (no estimator) whose spec is the service's, it is set on ``best``.
    """
    from sklearn.base import clone

    local = clone(estimator).set_params(**clone(params, safe=False))
    theirs = best.get_params(deep=True)
    typed = {}
    for key, value in local.get_params(deep=True).items():
        if key not in theirs or _holds_estimator(value):
            continue
        try:
            same = to_spec(value, path=key) == to_spec(theirs[key], path=key)
        except SpecError:
            same = False
        if same:
            typed[key] = value
    if typed:
        best.set_params(**typed)
    return best


def _holds_estimator(value: Any) -> bool:
    """Whether ``value`` is or holds an estimator (a pipeline's steps)."""
    if hasattr(value, "get_params") and not isinstance(value, type):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_estimator(v) for v in value)
    if isinstance(value, Mapping):
        return any(_holds_estimator(v) for v in value.values())
    return False


def _search_warnings(
    job: Job, refit_without: bool
) -> tuple[list[str], dict[str, int], dict[str, list[Any]]]:
    """A finished job's warnings to raise, how often and where from each;
    ``refit_without``: without the refit's own (raised apart, or by a refit
    done again here)."""
    texts, counts = list(job.warnings), dict(job.stats.get("warning_counts") or {})
    if refit_without:
        for text in job.stats.get("refit_warnings") or ():
            left = counts.get(text, 1) - 1
            if left > 0:
                counts[text] = left
            elif text in texts:
                texts.remove(text)
    return texts, counts, dict(job.stats.get("warning_sources") or {})


def _best_has(attr: str) -> Any:
    """Available when the refit best estimator (or, before fit, the estimator) has ``attr``."""

    def check(self: _ServiceSearch) -> bool:
        _check_refit(self, attr)
        if hasattr(self, "best_estimator_"):
            getattr(self.best_estimator_, attr)
        else:
            getattr(self.estimator, attr)
        return True

    return check


def _check_refit(search: Any, attr: str) -> None:
    if not search.refit:
        raise AttributeError(
            f"This {type(search).__name__} instance was initialized with `refit=False`. "
            f"{attr} is available only after refitting on the best parameters. You can "
            "refit an estimator manually using the `best_params_` attribute"
        )


#: seconds between submissions while the service is at this user's running-jobs cap
SUBMIT_RETRY_MAX = 30.0


def _takes_weight(scorer: Any) -> bool:
    """Whether a scorer takes ``sample_weight`` (scikit-learn's own test)."""
    import inspect

    if hasattr(scorer, "_accept_sample_weight"):
        return bool(scorer._accept_sample_weight())
    return "sample_weight" in inspect.signature(scorer).parameters


def _check_pre_dispatch(pre_dispatch: Any, n_jobs: int) -> None:
    """Refuse ``pre_dispatch`` where scikit-learn's parallel search would:
    an expression joblib does not evaluate, a negative amount, or none at
    all (nothing is dispatched, and scikit-learn finds no fits)."""
    import itertools

    from joblib.parallel import eval_expr

    if pre_dispatch == "all":
        return
    if hasattr(pre_dispatch, "endswith"):
        pre_dispatch = eval_expr(pre_dispatch.replace("n_jobs", str(n_jobs)))
    amount = int(pre_dispatch)
    itertools.islice((), amount)  # a negative amount: islice's own ValueError
    if amount == 0:
        raise ValueError(NO_FITS)


class _ServiceSearch(MetaEstimatorMixin, BaseEstimator):
    """What the grid and randomized searches share: fitting through a service."""

    client: Client | None
    refit: bool | str
    _sklearn_name: str  # the scikit-learn search this one stands in for
    best_index_: Any
    best_params_: dict[str, Any]
    _base: Any  # the estimator as the search fits it (see fit)

    def __sklearn_tags__(self) -> Any:
        # what scikit-learn's searches take from the searched estimator: a
        # search over a classifier is a classifier (cross_val_score stratifies,
        # VotingClassifier accepts it)
        tags = super().__sklearn_tags__()
        sub = get_tags(self.estimator)
        tags.estimator_type = sub.estimator_type
        tags.classifier_tags = deepcopy(sub.classifier_tags)
        tags.regressor_tags = deepcopy(sub.regressor_tags)
        tags.input_tags.pairwise = sub.input_tags.pairwise
        tags.input_tags.sparse = sub.input_tags.sparse
        tags.array_api_support = sub.array_api_support
        return tags

    def set_callbacks(self, *callbacks: Any) -> Any:
        """scikit-learn's callbacks (``ProgressBar``) follow fits in this
        process; this search's fits run on the service: refused, saying so."""
        raise NotImplementedError(
            "memogrid's searches fit on the service, where scikit-learn's callbacks "
            "cannot follow them: progress=True shows a progress bar of the job"
        )

    def _get_doc_link(self) -> str:
        """The notebook repr's link: scikit-learn's page of the search this
        one stands in for (the same parameters)."""
        return str(self._sklearn_search()._get_doc_link())

    def _client(self) -> tuple[Client, bool]:
        if self.client is not None:
            return self.client, False
        return Client(), True

    def _submit(
        self, client: Client, X: Any, y: Any, groups: Any, cv: Any, fit_params: dict, refit: bool
    ) -> Job:
        """Submit this search (``refit`` false: refit nothing, whatever ``self.refit`` says)."""
        raise NotImplementedError

    def _sklearn_search(self) -> Any:
        """scikit-learn's own search of the same name with these settings (for its checks)."""
        from sklearn import model_selection

        params = self.get_params(deep=False)
        for name in ("client", "progress"):  # memogrid's own
            params.pop(name)
        return getattr(model_selection, self._sklearn_name)(**params)

    def _candidates(self) -> list[dict[str, Any]] | None:
        """The candidates as scikit-learn draws them here, once the checks
        have passed (a generator is advanced by drawing), or None if they
        cannot be drawn here (a randomized search without a seed)."""
        raise NotImplementedError

    def _no_candidates(self, candidates: list[dict[str, Any]] | None) -> bool:
        """Whether the search has no candidate (``param_grid=[]``), warning as
        scikit-learn's drawing them would."""
        return candidates == []

    def _submit_grid(
        self,
        client: Client,
        grid: Any,
        X: Any,
        y: Any,
        groups: Any,
        cv: Any,
        fit_params: dict,
        refit: bool | str,
    ) -> Job:
        """A job searching ``grid`` with this search's other settings."""
        return client.submit(
            self._base,
            grid,
            X,
            y,
            groups=groups,
            cv=cv,
            scoring=self.scoring,
            refit=refit,
            error_score=self.error_score,
            return_train_score=self.return_train_score,
            **fit_params,
        )

    def _check(self) -> None:
        """scikit-learn's checks of the search's own parameters, before
        anything is sent."""
        sk = self._sklearn_search()
        sk._validate_params()
        sk._get_scorers()  # refit against several metrics, unknown scorer names

    def _routed(self, groups: Any, fit_params: dict[str, Any]) -> dict[str, Any]:
        """The fit params to send: with scikit-learn's metadata routing on,
        routed as its search routes them (its errors for requests left
        unset; params given as None dropped, as it drops them), and refused
        where the service cannot do the same.

        The service routes as scikit-learn does without routing: every
        param to the estimator's ``fit``, and ``sample_weight`` to each
        scorer that takes it. Under routing that is the same only when the
        requests route exactly so, to a plain estimator (a Pipeline routes
        by its steps' requests, not ``step__param``); ``groups`` goes to the
        splitter alike.
        """
        from sklearn.utils.metadata_routing import (
            MetadataRequest,
            _routing_enabled,
            get_routing_for_object,
            process_routing,
        )

        params = dict(fit_params, **({} if groups is None else {"groups": groups}))
        if not _routing_enabled() or not params:
            return fit_params
        sk = self._sklearn_search()
        routed = process_routing(sk, "fit", **params)
        scorers = sk._get_scorers()[0]
        if routed.scorer.score and hasattr(scorers, "_scorers"):
            # several scorers route apart: their errors for a request left
            # unset, as scikit-learn's fit meets them when it scores
            process_routing(scorers, "score", **routed.scorer.score)
        given = {k: v for k, v in fit_params.items() if v is not None}
        to_fit = set(routed.estimator.fit)
        plain = isinstance(get_routing_for_object(self.estimator), MetadataRequest)
        scored_apart = []  # scorers the requests give other weights than the service
        if given.get("sample_weight") is not None or routed.scorer.score:
            named = getattr(scorers, "_scorers", {"score": scorers})
            for name, scorer in named.items():
                asked = get_routing_for_object(scorer).consumes("score", ["sample_weight"])
                if bool(asked) != ("sample_weight" in given and _takes_weight(scorer)):
                    scored_apart.append(name)
        if to_fit != set(given) or scored_apart or (to_fit and not plain):
            routes = [f"{sorted(to_fit) or 'nothing'} to the estimator's fit"]
            if scored_apart:
                routes.append(f"sample_weight otherwise to the scorers {scored_apart}")
            raise SpecError(
                "fit_params",
                "with enable_metadata_routing=True scikit-learn's search routes "
                + " and ".join(routes)
                + " by their requests; memogrid routes fit params as scikit-learn does "
                "without routing (each to the estimator's fit, `step__param` for a "
                "Pipeline's step, sample_weight to every scorer that takes it): "
                "turn routing off, or request them so",
            )
        return given

    def get_metadata_routing(self) -> Any:
        """scikit-learn's search's routing: a router to the estimator, the
        splitter and the scorers (a consumer's request made from ``fit``'s
        signature refused the metadata a pipeline or cross_validate routes
        to a search whose estimator asks for it)."""
        return self._sklearn_search().get_metadata_routing()

    def fit(self, X: Any, y: Any = None, **params: Any) -> Any:
        """Run the search on the service and wait for it; returns self.
        ``params``: ``groups`` for the splitter, the rest fit params, as
        scikit-learn's search takes them."""
        import joblib
        from sklearn.utils.validation import check_consistent_length

        groups = params.pop("groups", None)
        fit_params = params

        self._check()
        if not isinstance(X, str) and y is not None and not isinstance(y, str):
            check_consistent_length(X, y)  # as scikit-learn's indexable(X, y)
        fit_params = self._routed(groups, fit_params)
        if y is not None and (self.cv is None or isinstance(self.cv, numbers.Integral)):
            from sklearn.base import is_classifier
            from sklearn.model_selection import check_cv

            # the target's type decides the folds: judged here, failing and
            # warning as scikit-learn's search does (labels with None among
            # strings, NaN labels) before anything is sent
            check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        # folds given as an iterable are read first, as check_cv reads them;
        # then the estimator as the search fits it is copied, before the
        # candidates are drawn and a splitter splits, as scikit-learn's search
        # copies it (a RandomState it shares with them is read as it is here)
        from sklearn.base import clone

        given_cv = self.cv
        if (
            isinstance(given_cv, Iterable)
            and not isinstance(given_cv, (str, bytes, Mapping))
            and not hasattr(given_cv, "split")
        ):
            given_cv = list(given_cv)
        self._base = clone(self.estimator)
        # in scikit-learn's order: n_jobs=0 (refused as joblib's pool is
        # entered), the candidates drawn, pre_dispatch (read as joblib's
        # parallel loop starts, only for one), then no fits to make
        n_jobs = joblib.effective_n_jobs(self.n_jobs)
        candidates = self._candidates()  # a grid or distributions scikit-learn would refuse
        empty = self._no_candidates(candidates)
        if n_jobs != 1:
            _check_pre_dispatch(self.pre_dispatch, n_jobs)
        if empty:
            raise ValueError(NO_FITS)
        client, owned = self._client()
        # a callable refit runs here, on the results: the service searches
        # without refitting, then refits the candidate it picks (whose fold
        # results the first job left in the cache) as a one-candidate search
        chosen = callable(self.refit)
        # folds given as an iterator, or by a splitter of the user's own, are
        # drawn once, for every job of this fit (an unseeded splitter would
        # give the refit job other folds)
        try:
            cv = explicit_folds(given_cv, X, y, groups, n_rows=lambda: client._n_rows(X))
            job = self._run_job(
                client,
                lambda: self._submit(client, X, y, groups, cv, fit_params, not chosen),
                announce=True,
            )
            refit_here = bool(self.refit) and not chosen and not job.results()["has_estimator"]
            # the folds' warnings before the results are set, the refit's
            # after, as scikit-learn raises them (one made an error stops it there)
            texts, counts, sources = _search_warnings(job, refit_without=True)
            _reemit(texts, counts, sources)
            self.job_ = job
            self._adopt(job, candidates)
            self.scorer_ = self._scorer()
            if not refit_here:
                _reemit(job.stats.get("refit_warnings") or [], sources=sources)
            self._report(job)
            if self.refit and not chosen:
                self._take_best(job, X, y, fit_params)
            if chosen:
                grid = {key: [value] for key, value in self.best_params_.items()}
                try:
                    refit_job = self._run_job(
                        client,
                        lambda: self._submit_one(client, grid, X, y, groups, cv, fit_params),
                        reemit=False,
                    )
                except errors.JobFailed as exc:
                    if not _all_fits_failed(exc.error):
                        # what it warned about before failing is the chosen
                        # candidate's folds (the search raised those) and
                        # the search's own: nothing new to raise
                        raise
                    # every fold of the chosen candidate failed, so its search
                    # ends before a refit: refit here, failing (or not) as
                    # scikit-learn's refit does
                    self._refit_here(X, y, fit_params)
                    self.refit_job_ = None
                else:
                    # the refit's own (unless it is done again here): the rest
                    # (the folds' warnings, replayed from the cache, the
                    # splitter's) were raised with the search
                    if refit_job.results()["has_estimator"]:
                        _reemit(
                            refit_job.stats.get("refit_warnings", refit_job.warnings),
                            sources=refit_job.stats.get("warning_sources"),
                        )
                    self._take_best(refit_job, X, y, fit_params)
                    self.refit_job_ = refit_job
        finally:
            if owned:  # its connections closed; job_ and refit_job_ keep it
                client._let_go()
        return self

    def _run_job(
        self, client: Client, submit: Any, reemit: bool = True, announce: bool = False
    ) -> Job:
        """Submit (retrying while this user's running-jobs cap is reached:
        several searches fitted at once, by ``cross_val_score(n_jobs=...)``
        say) and wait for the job to end (a failure raised after the
        warnings before it, unless ``reemit`` is off). ``announce``: say
        what the search fits, as scikit-learn's says it before its fits."""
        delay = 1.0
        while True:
            try:
                job = submit()
                break
            except errors.RateLimited as exc:
                # never less than the backoff: a submit makes several
                # requests, and the rate's advice is the time to one more
                time.sleep(min(max(exc.retry_after or 0.0, delay), SUBMIT_RETRY_MAX))
                delay = min(delay * 2, SUBMIT_RETRY_MAX)
        try:
            if announce and (self.verbose or 0) > 0:
                st = job.status()
                n, n_splits = st["n_candidates"], st["n_splits"]
                print(
                    f"Fitting {n_splits} folds for each of {n} candidates, totalling "
                    f"{n * n_splits} fits"
                )
            job.wait(progress=self.progress)
        except errors.JobFailed as exc:
            # raised before the error, as scikit-learn's were
            if reemit:
                _reemit(exc.warnings, exc.warning_counts, exc.warning_sources)
            raise
        except KeyboardInterrupt as interrupt:
            # the user stopped waiting: stop the job too, or it would keep
            # the service's workers busy for nobody
            try:
                job.cancel()
            except errors.Conflict:
                pass  # it ended meanwhile
            except errors.MemogridError as exc:  # said with the interrupt's traceback
                interrupt.add_note(
                    f"memogrid job {job.id} could not be cancelled ({exc}): it may still be "
                    f"running; cancel it with Client().job({job.id!r}).cancel()"
                )
            raise
        return job

    def _submit_one(
        self,
        client: Client,
        grid: dict[str, list[Any]],
        X: Any,
        y: Any,
        groups: Any,
        cv: Any,
        fit_params: dict,
    ) -> Job:
        """The refit of one chosen candidate, as a search of it alone with
        this search's settings (so its folds are the cache's)."""
        # several metrics: refit must name one (any: there is one candidate)
        several = isinstance(self.scoring, (dict, list, tuple, set))
        refit: bool | str = next(iter(self.scoring)) if several else True
        return self._submit_grid(client, grid, X, y, groups, cv, fit_params, refit)

    def _adopt(self, job: Job, candidates: list[dict[str, Any]] | None) -> None:
        """Take scikit-learn's attributes from a finished job (``candidates``
        as drawn here, if they could be)."""
        if candidates is not None:
            job._use_candidates(candidates)
        results = job.cv_results_
        self.cv_results_ = results
        self.n_splits_ = job.n_splits_
        self.multimetric_ = job.multimetric_
        if callable(self.refit):
            # scikit-learn's own choice and checks; no best_score_, as there
            from sklearn.model_selection._search import BaseSearchCV

            self.best_index_ = BaseSearchCV._select_best_index(self.refit, None, results)
            self.best_params_ = results["params"][self.best_index_]
        elif job.results().get("best_index") is not None:
            # as scikit-learn sets them: a numpy integer, the refit metric's
            # mean score of that row, and that row's params
            metric = self.refit if self.multimetric_ else "score"
            self.best_index_ = np.intp(job.best_index_)
            self.best_score_ = results[f"mean_test_{metric}"][self.best_index_]
            self.best_params_ = results["params"][self.best_index_]

    def _take_best(self, job: Job, X: Any, y: Any, fit_params: dict) -> None:
        """The refit best estimator the job made, or, where the service could
        not store it (skops holds not every model), the same refit done here."""
        if job.results()["has_estimator"]:
            self.best_estimator_ = _callers_values(
                job.best_estimator_, self._base, self.best_params_
            )
            self.refit_time_ = float(job.stats.get("refit_time", np.nan))
            self._adopt_features()
        else:
            self._refit_here(X, y, fit_params)

    def _refit_here(self, X: Any, y: Any, fit_params: dict) -> None:
        """The refit of the chosen candidate, done in this process as
        scikit-learn's search does it."""
        from sklearn.base import clone
        from sklearn.utils.validation import indexable

        best = clone(self._base).set_params(**clone(self.best_params_, safe=False))
        X, y = indexable(X, y)  # as scikit-learn's search refits (a sparse X as CSR)
        start = time.time()
        if y is not None:
            best.fit(X, y, **fit_params)
        else:
            best.fit(X, **fit_params)
        self.best_estimator_, self.refit_time_ = best, time.time() - start
        self._adopt_features()

    def _report(self, job: Job) -> None:
        """scikit-learn's ``verbose`` printout of the fits, once the search is
        done (the count of fits came as it was submitted): a line per fit
        (``verbose > 1``), with its scores (``> 2``) and its candidate
        (``> 9``), as ``_fit_and_score`` prints them, in candidate then split
        order."""
        verbose = self.verbose or 0
        if verbose <= 1:
            return
        n_splits, params = self.n_splits_, self.cv_results_["params"]
        n = len(params)
        from joblib.logger import short_format_time

        for row in job.splits():
            candidate, split = row["candidate"], row["split"]
            given = params[candidate]
            said = ", ".join(f"{k}={given[k]}" for k in sorted(given))
            where = ""
            if verbose > 2:
                where = f" {split + 1}/{n_splits}"
                if verbose > 9:
                    where += f"; {candidate + 1}/{n}"
                    start = f"[CV{where}] START {said}"
                    print(f"{start}{(80 - len(start)) * '.'}")
            end = f"[CV{where}] END "
            result = said + (";" if said else "")
            if verbose > 2:
                test, train = row["test_scores"], row["train_scores"]
                if self.multimetric_:
                    for name in sorted(test):
                        result += f" {name}: ("
                        if train is not None:
                            result += f"train={train[name]:.3f}, "
                        result += f"test={test[name]:.3f})"
                elif train is not None:
                    result += f", score=(train={train['score']:.3f}, test={test['score']:.3f})"
                else:
                    result += f", score={test['score']:.3f}"
            result += f" total time={short_format_time(row['fit_time'] + row['score_time'])}"
            print(end + "." * (80 - len(end) - len(result)) + result)

    def _adopt_features(self) -> None:
        if hasattr(self.best_estimator_, "feature_names_in_"):
            self.feature_names_in_ = self.best_estimator_.feature_names_in_

    def _scorer(self) -> Any:
        from sklearn.metrics import check_scoring
        from sklearn.metrics._scorer import _check_multimetric_scoring

        if isinstance(self.scoring, (list, tuple, set, dict)):
            return _check_multimetric_scoring(self.estimator, self.scoring)
        return check_scoring(self.estimator, self.scoring)

    # -- delegated to the best estimator ----------------------------------
    @available_if(_best_has("predict"))
    def predict(self, X: Any) -> Any:
        check_is_fitted(self)
        return self.best_estimator_.predict(X)

    @available_if(_best_has("predict_proba"))
    def predict_proba(self, X: Any) -> Any:
        check_is_fitted(self)
        return self.best_estimator_.predict_proba(X)

    @available_if(_best_has("predict_log_proba"))
    def predict_log_proba(self, X: Any) -> Any:
        check_is_fitted(self)
        return self.best_estimator_.predict_log_proba(X)

    @available_if(_best_has("decision_function"))
    def decision_function(self, X: Any) -> Any:
        check_is_fitted(self)
        return self.best_estimator_.decision_function(X)

    @available_if(_best_has("transform"))
    def transform(self, X: Any) -> Any:
        check_is_fitted(self)
        return self.best_estimator_.transform(X)

    @available_if(_best_has("inverse_transform"))
    def inverse_transform(self, X: Any) -> Any:
        check_is_fitted(self)
        return self.best_estimator_.inverse_transform(X)

    @available_if(_best_has("score_samples"))
    def score_samples(self, X: Any) -> Any:
        check_is_fitted(self)
        return self.best_estimator_.score_samples(X)

    def score(self, X: Any, y: Any = None, **params: Any) -> Any:
        """The refit metric's score of the best estimator, as scikit-learn
        computes it (of the type the scorer gives: ``estimator.score`` may
        give a numpy float)."""
        from sklearn.utils.metadata_routing import (
            _raise_for_params,
            _routing_enabled,
            process_routing,
        )

        _check_refit(self, "score")
        check_is_fitted(self)
        # params only under routing, routed by the requests, as scikit-learn's
        _raise_for_params(params, self, "score")
        if _routing_enabled():
            params = process_routing(self._sklearn_search(), "score", **params).scorer["score"]
        scorer = self.scorer_[self.refit] if self.multimetric_ else self.scorer_
        return scorer(self.best_estimator_, X, y, **params)

    @property
    def classes_(self) -> Any:
        _best_has("classes_")(self)
        return self.best_estimator_.classes_

    @property
    def n_features_in_(self) -> int:
        try:
            check_is_fitted(self)
        except Exception as exc:  # NotFittedError: hasattr() must say False
            raise AttributeError(
                f"{type(self).__name__} object has no n_features_in_ attribute."
            ) from exc
        return self.best_estimator_.n_features_in_


class GridSearchCV(_ServiceSearch):
    """scikit-learn's ``GridSearchCV``, run (and remembered) by a memogrid service."""

    _sklearn_name = "GridSearchCV"

    def __init__(
        self,
        estimator: Any,
        param_grid: Any,
        *,
        scoring: Any = None,
        refit: bool | str = True,
        cv: Any = None,
        n_jobs: int | None = None,
        verbose: int = 0,
        pre_dispatch: Any = "2*n_jobs",
        error_score: Any = np.nan,
        return_train_score: bool = False,
        client: Client | None = None,
        progress: bool = True,
    ):
        self.estimator = estimator
        self.param_grid = param_grid
        self.scoring = scoring
        self.n_jobs = n_jobs
        self.refit = refit
        self.cv = cv
        self.verbose = verbose
        self.pre_dispatch = pre_dispatch
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.client = client
        self.progress = progress

    def _candidates(self) -> list[dict[str, Any]] | None:
        from sklearn.model_selection import ParameterGrid

        return list(ParameterGrid(self.param_grid))

    def _submit(
        self, client: Client, X: Any, y: Any, groups: Any, cv: Any, fit_params: dict, refit: bool
    ) -> Job:
        refit_by = self.refit if refit else False
        return self._submit_grid(client, self.param_grid, X, y, groups, cv, fit_params, refit_by)


class RandomizedSearchCV(_ServiceSearch):
    """scikit-learn's ``RandomizedSearchCV``, run by a memogrid service.

    ``random_state`` an int: the service draws the same candidates
    scikit-learn would with it; a ``RandomState`` or None (numpy's global
    one, which ``np.random.seed`` sets): the candidates are drawn here from
    it (advancing it as scikit-learn's search does) and searched as those
    points.
    """

    _sklearn_name = "RandomizedSearchCV"

    def __init__(
        self,
        estimator: Any,
        param_distributions: Any,
        *,
        n_iter: int = 10,
        scoring: Any = None,
        refit: bool | str = True,
        cv: Any = None,
        n_jobs: int | None = None,
        verbose: int = 0,
        pre_dispatch: Any = "2*n_jobs",
        random_state: int | np.random.RandomState | None = None,
        error_score: Any = np.nan,
        return_train_score: bool = False,
        client: Client | None = None,
        progress: bool = True,
    ):
        self.estimator = estimator
        self.param_distributions = param_distributions
        self.n_iter = n_iter
        self.scoring = scoring
        self.n_jobs = n_jobs
        self.refit = refit
        self.cv = cv
        self.verbose = verbose
        self.pre_dispatch = pre_dispatch
        self.random_state = random_state
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.client = client
        self.progress = progress

    def _draws_here(self) -> bool:
        """Whether the candidates come from a generator of this process: a
        RandomState, or numpy's global one (``random_state=None``, which a
        notebook seeds with ``np.random.seed``)."""
        return self.random_state is None or isinstance(self.random_state, np.random.RandomState)

    def _candidates(self) -> list[dict[str, Any]] | None:
        from sklearn.model_selection import ParameterSampler

        if self._draws_here():
            # once per fit, advancing it as scikit-learn's search does, its
            # warnings with it; searched as those points (_submit)
            self._drawn = list(
                ParameterSampler(
                    self.param_distributions, self.n_iter, random_state=self.random_state
                )
            )
            return self._drawn
        with warnings.catch_warnings():  # the service's run reports n_iter warnings
            warnings.simplefilter("ignore", UserWarning)
            return list(
                ParameterSampler(
                    self.param_distributions, self.n_iter, random_state=self.random_state
                )
            )

    def _no_candidates(self, candidates: list[dict[str, Any]] | None) -> bool:
        from sklearn.model_selection import ParameterSampler

        if self._draws_here():
            return candidates == []  # drawn here, its warnings with it
        sampler = ParameterSampler(self.param_distributions, self.n_iter, random_state=0)
        if len(sampler):
            return False
        list(sampler)  # scikit-learn's warning: fewer candidates than n_iter
        return True

    def _submit(
        self, client: Client, X: Any, y: Any, groups: Any, cv: Any, fit_params: dict, refit: bool
    ) -> Job:
        if self._draws_here():
            # a generator's state cannot be sent: the points drawn from it
            # are, as a grid of one-point entries (the same candidates, in order)
            points = [{key: [value] for key, value in p.items()} for p in self._drawn]
            if len(points) > GRIDS_MAX:
                raise SpecError(
                    "n_iter",
                    f"this search drew {len(points)} candidates here (random_state is "
                    f"{'None' if self.random_state is None else 'a RandomState'}) and would send "
                    f"them as a list of points, of which the service takes {GRIDS_MAX} at most: "
                    "an int random_state has the service draw them, up to its fits limit",
                )
            refit_by = self.refit if refit else False
            return self._submit_grid(client, points, X, y, groups, cv, fit_params, refit_by)
        seed = self.random_state
        assert isinstance(seed, (int, np.integer))  # any other is drawn here
        return client.submit_random(
            self._base,
            self.param_distributions,
            X,
            y,
            n_iter=self.n_iter,
            random_state=int(seed),
            groups=groups,
            cv=cv,
            scoring=self.scoring,
            refit=self.refit if refit else False,
            error_score=self.error_score,
            return_train_score=self.return_train_score,
            **fit_params,
        )
