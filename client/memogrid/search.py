"""Drop-in ``GridSearchCV`` and ``RandomizedSearchCV`` that run on a memogrid service.

Replace ``from sklearn.model_selection import GridSearchCV`` with
``from memogrid import GridSearchCV``: the same constructor arguments (plus
``client``), ``fit`` returns self, and afterwards the same attributes and
the prediction methods of the best estimator. They are scikit-learn
estimators: ``get_params`` / ``set_params`` / ``clone`` work as usual.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin
from sklearn.utils.metaestimators import available_if

from .client import Client, Job


def _best_has(attr: str) -> Any:
    """Available when the refit best estimator (or, before fit, the estimator) has ``attr``."""

    def check(self: _ServiceSearch) -> bool:
        if not self.refit:
            raise AttributeError(f"this search ran with refit=False: no {attr}")
        if hasattr(self, "best_estimator_"):
            getattr(self.best_estimator_, attr)
        else:
            getattr(self.estimator, attr)
        return True

    return check


class _ServiceSearch(MetaEstimatorMixin, BaseEstimator):
    """What the grid and randomized searches share: fitting through a service."""

    client: Client | None
    refit: bool | str

    def _client(self) -> tuple[Client, bool]:
        if self.client is not None:
            return self.client, False
        return Client(), True

    def _submit(self, client: Client, X: Any, y: Any, groups: Any, fit_params: dict) -> Job:
        raise NotImplementedError

    def fit(self, X: Any, y: Any = None, *, groups: Any = None, **fit_params: Any) -> Any:
        """Run the search on the service and wait for it; returns self."""
        client, owned = self._client()
        try:
            job = self._submit(client, X, y, groups, fit_params)
            job.wait(progress=self.progress)
            self.job_ = job
            self.cv_results_ = job.cv_results_
            self.n_splits_ = job.n_splits_
            self.multimetric_ = job.multimetric_
            if job.results().get("best_index") is not None:
                self.best_index_ = job.best_index_
                self.best_params_ = job.best_params_
                self.best_score_ = job.best_score_
            if self.refit:
                self.best_estimator_ = job.best_estimator_
                self.refit_time_ = float(job.stats.get("refit_time", np.nan))
            self.scorer_ = self._scorer()
        finally:
            if owned:
                client.close()
        return self

    def _scorer(self) -> Any:
        from sklearn.metrics import check_scoring
        from sklearn.metrics._scorer import _check_multimetric_scoring

        if isinstance(self.scoring, (list, tuple, set, dict)):
            return _check_multimetric_scoring(self.estimator, self.scoring)
        return check_scoring(self.estimator, self.scoring)

    # -- delegated to the best estimator ----------------------------------
    @available_if(_best_has("predict"))
    def predict(self, X: Any) -> Any:
        return self.best_estimator_.predict(X)

    @available_if(_best_has("predict_proba"))
    def predict_proba(self, X: Any) -> Any:
        return self.best_estimator_.predict_proba(X)

    @available_if(_best_has("predict_log_proba"))
    def predict_log_proba(self, X: Any) -> Any:
        return self.best_estimator_.predict_log_proba(X)

    @available_if(_best_has("decision_function"))
    def decision_function(self, X: Any) -> Any:
        return self.best_estimator_.decision_function(X)

    @available_if(_best_has("transform"))
    def transform(self, X: Any) -> Any:
        return self.best_estimator_.transform(X)

    @available_if(_best_has("inverse_transform"))
    def inverse_transform(self, X: Any) -> Any:
        return self.best_estimator_.inverse_transform(X)

    def score(self, X: Any, y: Any = None, **params: Any) -> float:
        """The refit metric's score of the best estimator, as scikit-learn computes it."""
        if not hasattr(self, "best_estimator_"):
            raise AttributeError("score needs a refit best estimator (refit=True, after fit)")
        scorer = self.scorer_[self.refit] if self.multimetric_ else self.scorer_
        return float(scorer(self.best_estimator_, X, y, **params))

    @property
    def classes_(self) -> Any:
        return self.best_estimator_.classes_

    @property
    def n_features_in_(self) -> int:
        return int(self.best_estimator_.n_features_in_)


class GridSearchCV(_ServiceSearch):
    """scikit-learn's ``GridSearchCV``, run (and remembered) by a memogrid service."""

    def __init__(
        self,
        estimator: Any,
        param_grid: Any,
        *,
        scoring: Any = None,
        refit: bool | str = True,
        cv: Any = None,
        error_score: Any = np.nan,
        return_train_score: bool = False,
        client: Client | None = None,
        progress: bool = True,
    ):
        self.estimator = estimator
        self.param_grid = param_grid
        self.scoring = scoring
        self.refit = refit
        self.cv = cv
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.client = client
        self.progress = progress

    def _submit(self, client: Client, X: Any, y: Any, groups: Any, fit_params: dict) -> Job:
        return client.submit(
            self.estimator,
            self.param_grid,
            X,
            y,
            groups=groups,
            cv=self.cv,
            scoring=self.scoring,
            refit=self.refit,
            error_score=self.error_score,
            return_train_score=self.return_train_score,
            **fit_params,
        )


class RandomizedSearchCV(_ServiceSearch):
    """scikit-learn's ``RandomizedSearchCV``, run by a memogrid service.

    ``random_state`` must be an int or None (the service draws the same
    candidates scikit-learn would with it).
    """

    def __init__(
        self,
        estimator: Any,
        param_distributions: Any,
        *,
        n_iter: int = 10,
        scoring: Any = None,
        refit: bool | str = True,
        cv: Any = None,
        random_state: int | None = None,
        error_score: Any = np.nan,
        return_train_score: bool = False,
        client: Client | None = None,
        progress: bool = True,
    ):
        self.estimator = estimator
        self.param_distributions = param_distributions
        self.n_iter = n_iter
        self.scoring = scoring
        self.refit = refit
        self.cv = cv
        self.random_state = random_state
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.client = client
        self.progress = progress

    def _submit(self, client: Client, X: Any, y: Any, groups: Any, fit_params: dict) -> Job:
        return client.submit_random(
            self.estimator,
            self.param_distributions,
            X,
            y,
            n_iter=self.n_iter,
            random_state=self.random_state,
            groups=groups,
            cv=self.cv,
            scoring=self.scoring,
            refit=self.refit,
            error_score=self.error_score,
            return_train_score=self.return_train_score,
            **fit_params,
        )
