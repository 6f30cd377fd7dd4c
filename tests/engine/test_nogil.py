"""scipy's SVD without the GIL in the engine's worker processes (engine/nogil.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np

# run in a process of its own: installed, it would route this process's
# SVDs too, and the parity tests compare the workers' with this process's
SAME_BITS = textwrap.dedent(
    """
    import numpy as np, scipy.linalg as L
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    cases = []
    for dtype in (np.float64, np.float32):
        for shape in ((300, 40), (40, 300), (64, 64), (1, 7), (7, 1)):
            for order in "CF":
                a = np.asarray(rng.standard_normal(shape), dtype=dtype, order=order)
                for kw in (
                    {},
                    {"full_matrices": False},
                    {"compute_uv": False},
                    {"lapack_driver": "gesvd"},
                ):
                    cases.append((a, kw))
    # flags f2py reads its own way (0.5 as 0, None as its default) or refuses
    a = rng.standard_normal((30, 8))
    for kw in (
        {"full_matrices": 0.5},
        {"full_matrices": None},
        {"full_matrices": np.False_},
        {"compute_uv": 0.5},
        {"compute_uv": np.int64(1)},
        {"overwrite_a": "x"},
    ):
        cases.append((a, kw))
    batch = rng.standard_normal((3, 20, 12))
    X = rng.standard_normal((500, 80))

    def svd(a, **kw):
        try:
            return L.svd(a, **kw)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    def run():
        out = [svd(a, **kw) for a, kw in cases]
        out.append(L.svd(batch, full_matrices=False))
        out.append(L.svdvals(X))
        f = np.asfortranarray(X)  # scipy may overwrite it: both runs alike
        out.append(L.svd(f, overwrite_a=True, full_matrices=False))
        out.append(f.copy())
        pca = PCA(n_components=10, svd_solver="full")
        out.append(pca.fit_transform(X))
        out.append(pca.components_)
        nan = X.copy()
        nan[3, 4] = np.nan
        try:
            L.svd(nan, check_finite=False)
        except ValueError as exc:
            out.append(str(exc))
        return out

    def flat(out):
        for o in out:
            for x in o if isinstance(o, (tuple, list)) else (o,):
                if isinstance(x, str):
                    yield x.encode()
                else:
                    x = np.asarray(x)
                    yield repr((x.shape, x.dtype.str, x.flags.f_contiguous)).encode()
                    yield x.tobytes("A")

    before = list(flat(run()))
    from memogrid_service.engine import nogil

    assert nogil.install()
    import scipy.linalg._decomp_svd as decomp_svd

    routed = decomp_svd.get_lapack_funcs(("gesdd", "gesdd_lwork"), (X,))[0]
    assert type(routed).__name__ == "_Gesdd", routed  # in effect, not only installed
    after = list(flat(run()))
    assert len(before) == len(after), (len(before), len(after))
    assert [i for i, (b, a) in enumerate(zip(before, after)) if b != a] == []
    assert b"A has a NaN entry" in before
    print("same", len(before))
    """
)


def test_scipy_svd_gives_the_same_bits_without_the_gil():
    """Every result of scipy.linalg.svd (and of PCA's full SVD) is the
    same to the last bit, in the same memory order, with the GIL let go:
    tall, wide, square and one-row matrices, float64 and float32, C and F
    input, every job, a batch, an input scipy may overwrite, flags f2py
    reads its own way, and the errors (a NaN, a flag f2py refuses)."""
    out = subprocess.run(
        [sys.executable, "-c", SAME_BITS], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("same"), out.stdout


def big_svd(seconds_wanted: float) -> float:
    """An SVD of about ``seconds_wanted`` in a task (installed as engine tasks
    install it); returns the seconds it took."""
    import scipy.linalg

    from memogrid_service.engine import nogil

    assert nogil.install()
    rng = np.random.default_rng(0)
    rows = 500
    while True:  # grow until one takes a fifth of the time asked
        a = rng.standard_normal((rows, 600))
        start = time.perf_counter()
        scipy.linalg.svd(a, full_matrices=False)
        took = time.perf_counter() - start
        if took > seconds_wanted / 5:
            break
        rows *= 2
    a = rng.standard_normal((int(rows * 5), 600))
    start = time.perf_counter()
    scipy.linalg.svd(a, full_matrices=False)
    return time.perf_counter() - start


def test_a_worker_answers_while_it_runs_an_svd(dask_client):
    """A worker in scipy's SVD answered nothing until it ended (a step
    output another worker needed waited for it). It answers now."""
    import os

    worker = sorted(dask_client.scheduler_info()["workers"])[0]
    fut = dask_client.submit(big_svd, 3.0, workers=[worker], pure=False)
    while not dask_client.processing(workers=[worker])[worker]:
        time.sleep(0.05)
    time.sleep(1.0)  # past the sizing runs: in the big SVD now
    answers = []
    while not fut.done():
        start = time.monotonic()
        dask_client.run(os.getpid, workers=[worker])
        answers.append(time.monotonic() - start)
        time.sleep(0.1)
    took = fut.result()
    assert took > 1.0, took  # the SVD was long enough to tell
    assert answers and max(answers) < 0.5, (answers, took)


def test_the_engines_tasks_install_it(runner, dask_client):
    """Every task of the engine installs it in the process running it."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(n_samples=60, random_state=0)
    runner.search(LogisticRegression(), X, y, param_grid={"C": [0.25, 4.0]}, cv=2)

    def routed():
        import scipy.linalg._decomp_svd as decomp_svd

        from memogrid_service.engine import nogil

        a = np.ones((3, 2))
        f = decomp_svd.get_lapack_funcs(("gesdd", "gesdd_lwork"), (a,))[0]
        return nogil._state["installed"], type(f).__name__

    assert set(dask_client.run(routed).values()) == {(True, "_Gesdd")}
