"""Sparse X: searched as scikit-learn searches it (the CSR matrix its
``indexable`` makes), to the last bit, and memoized like any other data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.datasets import make_classification
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MaxAbsScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from tests.engine.test_parity import assert_same_search, both


@pytest.fixture(scope="module")
def counts():
    """Word-count-like data: mostly zeros, small integers elsewhere."""
    X, y = make_classification(n_samples=240, n_features=40, n_informative=8, random_state=7)
    rng = np.random.default_rng(7)
    dense = np.where(rng.random(X.shape) < 0.85, 0.0, np.round(np.abs(X) * 3))
    return sparse.csr_matrix(dense), y


def _unsorted(csr):
    """The same matrix with each row's column indices in reverse order (and
    a duplicate entry in row 0): content scikit-learn sees as it is."""
    data, indices = csr.data.copy(), csr.indices.copy()
    for r in range(csr.shape[0]):
        a, b = csr.indptr[r], csr.indptr[r + 1]
        data[a:b], indices[a:b] = data[a:b][::-1], indices[a:b][::-1]
    out = sparse.csr_matrix((data, indices, csr.indptr.copy()), shape=csr.shape)
    assert not out.has_sorted_indices
    return out


def test_text_pipeline_matches_scikit_learn(runner, counts):
    X, y = counts
    pipe = Pipeline(
        [("tfidf", TfidfTransformer()), ("clf", LogisticRegression(solver="liblinear"))]
    )
    grid = {"tfidf__sublinear_tf": [False, True], "clf__C": [0.1, 1.0, 10.0]}
    ours, sk = both(runner, pipe, X, y, param_grid=grid, cv=4, return_train_score=True)
    assert_same_search(ours, sk, X)
    assert ours.stats.step_fits == 2 * 4  # each tf-idf setting once per fold
    assert ours.stats.refit_step_fits == 1


def test_sparse_step_outputs_are_memoized(runner, counts):
    X, y = counts
    pipe = Pipeline([("scale", MaxAbsScaler()), ("clf", LogisticRegression())])
    first = runner.search(pipe, X, y, param_grid={"clf__C": [0.5, 2.0]}, cv=3)
    assert first.stats.step_fits == 3
    again = runner.search(pipe, X.copy(), y, param_grid={"clf__C": [0.5, 2.0, 8.0]}, cv=3)
    assert again.stats.step_fits == 0  # the same content, whatever object holds it
    assert again.stats.final_fits == 3  # only the new C's folds


@pytest.mark.parametrize(
    "convert",
    [sparse.csc_matrix, sparse.coo_matrix, sparse.csr_array, _unsorted],
    ids=["csc", "coo", "csr_array", "unsorted"],
)
def test_any_sparse_form_is_searched_as_scikit_learn_searches_it(runner, counts, convert):
    X, y = counts
    X = convert(X)
    grid = {"max_depth": [2, 4], "min_samples_leaf": [1, 5]}
    ours, sk = both(runner, DecisionTreeClassifier(random_state=0), X, y, param_grid=grid, cv=3)
    assert_same_search(ours, sk, X)
    # the refit saw the class scikit-learn's refit saw
    assert type(ours.best_estimator_.tree_) is type(sk.best_estimator_.tree_)


def test_estimators_that_sort_their_input_in_place(runner, counts):
    """SVC sorts a CSR matrix's indices in place (scikit-learn's refit sorts
    the caller's X so); the stored X is read-only and shared, so every fit
    gets rows of its own and the caller's X is left as it was."""
    X, y = counts
    X = _unsorted(X)
    snapshot = X.indices.copy()
    pipe = Pipeline([("svd", TruncatedSVD(n_components=5, random_state=0)), ("svc", SVC())])
    grid = [{"svd": ["passthrough"], "svc__C": [0.5, 1.0]}, {"svc__C": [1.0]}]
    ours = runner.search(pipe, X, y, param_grid=grid, cv=3)
    assert np.array_equal(X.indices, snapshot)
    again = runner.search(pipe, X, y, param_grid=grid, cv=3)
    assert again.stats.step_fits == again.stats.final_fits == 0
    assert again.stats.refit == "hit"
    sk = GridSearchCV(pipe, grid, cv=3).fit(X, y)
    assert not np.array_equal(X.indices, snapshot)  # scikit-learn's refit sorted them
    assert_same_search(ours, sk, _unsorted(counts[0]))


def test_keys_follow_every_part_of_a_sparse_matrix(store, counts):
    X, _ = counts
    base = store.put(X).dataset_id
    variants = {
        "a value": X.copy(),
        "an index": _unsorted(X),
        "the class": sparse.csr_array(X),
        "the dtype": X.astype(np.float32),
        "the index dtype": X.copy(),
        "a column more": sparse.hstack([X, sparse.csr_matrix((X.shape[0], 1))]).tocsr(),
    }
    variants["a value"].data[0] += 1.0
    wide = variants["the index dtype"]
    wide.indices, wide.indptr = wide.indices.astype(np.int64), wide.indptr.astype(np.int64)
    ids = {name: store.put(m).dataset_id for name, m in variants.items()}
    assert base not in ids.values()
    assert len(set(ids.values())) == len(ids)
    assert store.put(X.copy()).dataset_id == base
    assert store.put(X.tocsc()).dataset_id == base  # as indexable makes it: CSR
    loaded = store.load(base)
    assert type(loaded) is sparse.csr_matrix
    assert (loaded != X).nnz == 0 and loaded.indices.dtype == X.indices.dtype
    assert not loaded.data.flags.writeable


def test_a_step_writing_in_place_leaves_shared_sparse_outputs_alone(runner):
    """A one-hot encoder's sparse output feeds every candidate of its fold;
    a later ``copy=False`` step must not rescale it for the others (in
    scikit-learn each candidate has an output of its own)."""
    from sklearn.preprocessing import Normalizer, OneHotEncoder

    rng = np.random.default_rng(5)
    X = rng.integers(0, 6, size=(200, 4))
    y = (X[:, 0] + rng.integers(0, 3, 200) > 3).astype(int)
    pipe = Pipeline(
        [
            ("ohe", OneHotEncoder()),
            ("scale", Normalizer(copy=False)),
            ("clf", LogisticRegression(C=0.3)),
        ]
    )
    grid = {"scale": ["passthrough", Normalizer(copy=False)], "clf__C": [0.3, 3.0]}
    ours, sk = both(runner, pipe, X, y, param_grid=grid, cv=3)
    assert_same_search(ours, sk, X)


def test_shared_unsorted_rows_reach_each_fit_as_scikit_learn_gives_them(runner, counts):
    """An estimator that sorts its input in place (SVC) and one that reads
    it as it is (liblinear) share a fold's unsorted rows in one task."""
    from sklearn.svm import LinearSVC

    X, y = counts
    X = _unsorted(X)
    pipe = Pipeline([("clf", SVC())])
    grid = {"clf": [SVC(C=1.0), LinearSVC(C=0.01), SVC(C=2.0), LinearSVC(C=0.02)]}
    ours, sk = both(runner, pipe, X, y, param_grid=grid, cv=3)
    assert_same_search(ours, sk, _unsorted(counts[0]))


def test_the_refit_sees_x_itself_with_its_index_dtypes(runner, counts):
    """Fold rows of a CSR matrix with int64 indices have int32 ones (scipy's
    row selection), X itself keeps int64: liblinear refuses it in
    scikit-learn's refit, and so in the engine's."""
    from sklearn.svm import LinearSVC

    X, y = counts
    X = X.copy()
    X.indices, X.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    grid = {"C": [0.1, 1.0]}
    with pytest.raises(ValueError, match="32-bit integer indices") as theirs:
        GridSearchCV(LinearSVC(), grid, cv=3).fit(X, y)
    with pytest.raises(ValueError, match="32-bit integer indices") as ours:
        runner.search(LinearSVC(), X, y, param_grid=grid, cv=3)
    assert str(ours.value) == str(theirs.value)
    # without the refit, the folds search as scikit-learn's do
    ours, sk = both(runner, LinearSVC(), X, y, param_grid=grid, cv=3, refit=False)
    assert_same_search(ours, sk)


def test_memory_accounting_sees_sparse_values(counts):
    """The resident budget and dask's memory accounting count a sparse step
    output and a model holding sparse rows at their size (dask alone sees a
    csr_array as a few dozen bytes)."""
    from dask.sizeof import sizeof
    from sklearn.neighbors import KNeighborsTransformer

    from memogrid_service.engine.tasks import _model_nbytes

    X, _ = counts
    size = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    assert sizeof(sparse.csr_array(X)) >= size
    assert _model_nbytes(KNeighborsTransformer().fit(X)) >= size
