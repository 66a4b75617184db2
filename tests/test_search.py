"""mtal.search against independent numpy brute-force references (float64)."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
import torch

from mtal import search
from mtal.registry import UnknownNameError

BACKENDS = ["faiss", "torch"]


def ref_nearest(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Euclidean distance to the nearest key, full float64 matrix."""
    q64, k64 = q.astype(np.float64), k.astype(np.float64)
    return np.sqrt(((q64[:, None, :] - k64[None, :, :]) ** 2).sum(-1).min(1))


def ref_k_center(
    x: np.ndarray, mask: np.ndarray, budget: int, seed: int, ties: list[int] | None = None
) -> list[int]:
    """Sener & Savarese greedy, recomputing the full point×centre matrix every step;
    ``ties`` (if given) receives, per step, how many points share the maximum."""
    x64 = np.asarray(x, dtype=np.float32).astype(np.float64)
    centres = [int(i) for i in np.flatnonzero(mask)]
    picks: list[int] = []
    if not centres:
        first = int(np.random.default_rng(seed).integers(len(x64)))
        picks, centres = [first], [first]
    while len(picks) < budget:
        dist = ((x64[:, None, :] - x64[centres][None, :, :]) ** 2).sum(-1).min(1)
        dist[centres] = -np.inf
        j = int(np.argmax(dist))  # lowest index among exact ties
        if ties is not None:
            ties.append(int(np.sum(dist == dist[j])))
        picks.append(j)
        centres.append(j)
    return picks


def random_case(seed: int, n: int = 500, d: int = 16, labelled: int = 25):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(5, d))
    x = (centres[rng.integers(5, size=n)] + rng.normal(size=(n, d))).astype(np.float32)
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=labelled, replace=False)] = True
    return x, mask


def tie_case(seed: int, n: int = 300, d: int = 4):
    """Half-integer lattice points: float32 sums are exact, many exact ties and duplicates."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(-3, 4, size=(n, d)) * 0.5).astype(np.float32)
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=5, replace=False)] = True
    return x, mask


# ---------------------------------------------------------------- nearest_distance


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_nearest_distance_matches_bruteforce(backend: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(300, 16)).astype(np.float32)
    k = rng.normal(size=(70, 16)).astype(np.float32)
    got = search.nearest_distance(q, k, backend=backend)
    assert got.shape == (300,)
    np.testing.assert_allclose(got, ref_nearest(q, k), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nearest_distance_duplicates_tensors_and_empty(backend: str) -> None:
    rng = np.random.default_rng(3)
    k = rng.normal(size=(20, 8)).astype(np.float32)
    q = np.concatenate([k[:5], rng.normal(size=(5, 8)).astype(np.float32)])
    got = search.nearest_distance(torch.from_numpy(q), torch.from_numpy(k), backend=backend)
    np.testing.assert_allclose(got[:5], 0.0, atol=1e-2)  # norm expansion: ~sqrt(d·u)·‖x‖
    np.testing.assert_allclose(got, ref_nearest(q, k), rtol=1e-5, atol=1e-2)
    assert np.all(np.isposinf(search.nearest_distance(q, k[:0], backend=backend)))
    assert search.nearest_distance(q[:0], k, backend=backend).shape == (0,)


def test_nearest_distance_backends_agree_and_errors() -> None:
    rng = np.random.default_rng(4)
    q = rng.normal(size=(200, 32)).astype(np.float32)
    k = rng.normal(size=(50, 32)).astype(np.float32)
    a = search.nearest_distance(q, k, backend="faiss")
    b = search.nearest_distance(q, k, backend="torch")
    np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_allclose(search.nearest_distance(q, k), a, rtol=1e-5)  # auto
    with pytest.raises(ValueError, match="dim 32 but keys have dim 31"):
        search.nearest_distance(q, k[:, :31])
    with pytest.raises(ValueError, match="2-D"):
        search.nearest_distance(q[0], k)
    with pytest.raises(UnknownNameError, match="faiss, torch"):
        search.nearest_distance(q, k, backend="annoy")


# ---------------------------------------------------------------- k_center_greedy


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_center_matches_bruteforce_random(backend: str, seed: int) -> None:
    x, mask = random_case(seed)
    got = search.k_center_greedy(x, mask, 40, backend=backend, seed=seed)
    assert got.tolist() == ref_k_center(x, mask, 40, seed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_center_matches_bruteforce_exact_ties(backend: str, seed: int) -> None:
    x, mask = tie_case(seed)
    budget = 60  # runs past the distinct far points into zero-distance duplicates
    got = search.k_center_greedy(x, mask, budget, backend=backend)
    ties: list[int] = []
    assert got.tolist() == ref_k_center(x, mask, budget, seed, ties)
    assert sum(t > 1 for t in ties) >= 10, "the case must contain exact ties"


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_center_float32_near_tie_resolved_in_float64(backend: str) -> None:
    # |p1 - c|² = 1 and |p2 - c|² = 1 + 2^-40: equal in float32, distinct in float64
    x = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 2.0**-20], [0.25, 0.0]], dtype=np.float32)
    mask = np.array([True, False, False, False])
    assert search.k_center_greedy(x, mask, 1, backend=backend).tolist() == [2]
    assert ref_k_center(x, mask, 1, 0) == [2]


@pytest.mark.parametrize("seed", [5, 6])
def test_k_center_backends_identical_empty_labelled(seed: int) -> None:
    x, _ = random_case(seed, n=400, d=24)
    mask = np.zeros(len(x), dtype=bool)
    picks = {b: search.k_center_greedy(x, mask, 30, backend=b, seed=seed) for b in BACKENDS}
    assert picks["faiss"].tolist() == picks["torch"].tolist() == ref_k_center(x, mask, 30, seed)
    assert picks["torch"][0] == np.random.default_rng(seed).integers(len(x))
    auto = search.k_center_greedy(torch.from_numpy(x), torch.from_numpy(mask), 30, seed=seed)
    assert auto.tolist() == picks["faiss"].tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_center_invariants_and_errors(backend: str) -> None:
    x, mask = tie_case(7, n=50, d=2)
    available = int((~mask).sum())
    picks = search.k_center_greedy(x, mask, available, backend=backend)
    assert picks.dtype == np.int64 and len(picks) == available
    assert len(set(picks.tolist())) == available
    assert not mask[picks].any()
    assert search.k_center_greedy(x, mask, 0, backend=backend).shape == (0,)
    with pytest.raises(ValueError, match=rf"budget {available + 1} .* {available} unlabelled"):
        search.k_center_greedy(x, mask, available + 1, backend=backend)
    with pytest.raises(ValueError, match="budget -1"):
        search.k_center_greedy(x, mask, -1, backend=backend)
    with pytest.raises(ValueError, match="bool array of shape"):
        search.k_center_greedy(x, mask[:-1], 3, backend=backend)
    with pytest.raises(ValueError, match="bool array of shape"):
        search.k_center_greedy(x, mask.astype(int), 3, backend=backend)


def test_resolve_backend() -> None:
    assert search.resolve_backend("k_center_greedy", "torch") == "torch"
    assert search.resolve_backend("nearest_distance") in search.SEARCH_BACKENDS
    with pytest.raises(ValueError, match="unknown operation 'knn'"):
        search.resolve_backend("knn")


# ---------------------------------------------------------------- faiss threads / fork


def _child(q: np.ndarray, k: np.ndarray, out: mp.Queue) -> None:
    import faiss

    d = search.nearest_distance(q, k, backend="faiss")
    out.put((d, faiss.omp_get_max_threads()))


def test_set_faiss_threads_and_fork_child_single_threaded() -> None:
    import faiss

    with pytest.raises(ValueError, match="n must be >= 1"):
        search.set_faiss_threads(0)
    search.set_faiss_threads(2)
    assert faiss.omp_get_max_threads() == 2
    rng = np.random.default_rng(0)
    q = rng.normal(size=(100, 8)).astype(np.float32)
    k = rng.normal(size=(30, 8)).astype(np.float32)
    search.nearest_distance(q, k, backend="faiss")  # parent's OpenMP pool is now live
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    proc = ctx.Process(target=_child, args=(q, k, out))
    proc.start()
    dist, threads = out.get(timeout=30)
    proc.join(timeout=30)
    assert proc.exitcode == 0
    assert threads == 1
    np.testing.assert_allclose(dist, ref_nearest(q, k), rtol=1e-5, atol=1e-4)
    search.set_faiss_threads(1)
    assert faiss.omp_get_max_threads() == 1


# ---------------------------------------------------------------- labelled-set initialisation


def _float64_min(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return ((x64[:, None, :] - x64[centres][None, :, :]) ** 2).sum(-1).min(1)


def offset_case(
    offset: float, n: int, d: int, n_centres: int, seed: int, mid: int
) -> tuple[np.ndarray, np.ndarray]:
    """float32 points around ``|offset|`` (two clusters ``offset`` apart when negative), a
    random centre set, and point ``mid`` placed exactly between the first two centres."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    if offset < 0:
        x[::2, 0] += offset
    x = (abs(offset) + x).astype(np.float32)
    centres = rng.choice(n, size=n_centres, replace=False)
    x[mid] = ((x[centres[0]].astype(np.float64) + x[centres[1]]) / 2).astype(np.float32)
    return x, centres


@pytest.mark.parametrize("offset", [0.0, 1e3, -1e4])
def test_gemm_initial_min_has_the_exact_difference_error_bound(offset: float) -> None:
    # a far-off mean breaks a plain norm expansion (centring must fix it); two clusters
    # ±offset apart keep centred norms large, so the GEMM's nearest centre is often wrong
    # and only the exact re-computation over all near centres gives the bound
    # x[5] exactly between two centres: two candidate nearest centres (the refine branch)
    x, centres = offset_case(offset, n=400, d=24, n_centres=60, seed=0, mid=5)
    got = search._gemm_running_min(x, centres).astype(np.float64)
    ref = _float64_min(x, centres)
    bound = search._direct_rtol(x.shape[1]) * ref + 1e-30
    assert np.all(np.abs(got - ref) <= bound), np.max(np.abs(got - ref) / (ref + 1e-30))
    assert np.all(got[centres] == 0.0)  # exact-difference zeros stay exact


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_center_many_labelled_far_offset_matches_bruteforce(backend: str) -> None:
    rng = np.random.default_rng(7)
    x = (500.0 + rng.normal(size=(600, 12))).astype(np.float32)
    x[300:310] = x[0]  # duplicates of a labelled point
    mask = np.zeros(600, dtype=bool)
    mask[rng.choice(600, size=150, replace=False)] = True
    mask[0] = True
    got = search.k_center_greedy(x, mask, 30, backend=backend)
    assert got.tolist() == ref_k_center(x, mask, 30, 0)


def test_device_cpu_forces_cpu_and_cuda_is_checked() -> None:
    x, mask = random_case(3, n=200)
    picks = search.k_center_greedy(x, mask, 10, device="cpu")
    assert picks.tolist() == ref_k_center(x, mask, 10, 0)
    got = search.nearest_distance(x[:20], x[20:], device="cpu")
    np.testing.assert_allclose(got, ref_nearest(x[:20], x[20:]), rtol=1e-5, atol=1e-3)
    assert search.resolve_backend("k_center_greedy", device="cpu") == "faiss"
    with pytest.raises(ValueError, match="expected one of"):
        search.k_center_greedy(x, mask, 1, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            search.nearest_distance(x, x, device="cuda")


@pytest.mark.parametrize("offset", [0.0, 1e3, -1e4])
def test_gemm_hint_bounds_every_other_centre(offset: float) -> None:
    """``with_hint``: the named centre is the float64 nearest wherever the bound is finite,
    and bound·(1 − rtol) never exceeds the exact distance to any other centre."""
    x, centres = offset_case(offset, n=300, d=16, n_centres=40, seed=1, mid=7)
    value, nearest, others = search._gemm_running_min(x, centres, with_hint=True)
    np.testing.assert_array_equal(value, search._gemm_running_min(x, centres))
    x64 = x.astype(np.float64)
    d = ((x64[:, None, :] - x64[centres][None, :, :]) ** 2).sum(-1)
    bound = others.astype(np.float64) * (1 - search._direct_rtol(16))
    for i in range(len(x)):
        rest = d[i][centres != nearest[i]]
        assert (bound[i] <= rest).all()
        if np.isfinite(bound[i]):
            assert d[i][centres == nearest[i]][0] == d[i].min()
    if offset >= 0:  # one cluster (two far clusters: the GEMM slack exceeds every gap)
        assert np.isfinite(bound).mean() > 0.5  # the hint serves most points
        assert np.isneginf(others[7])  # x[7] sits between two centres: no hint


@pytest.mark.parametrize("state_cls", ["_FaissRunningMin", "_TorchRunningMin"])
def test_k_center_hint_proves_only_what_float64_agrees_with(state_cls: str) -> None:
    """A point whose two nearest centres are equal in float32 (1 vs 1 + 2^-40) gets no
    proof from the running-min hint and is re-scored in float64 (exact value 1, the other
    centre's); a well-separated point is proved with one float64 row."""
    a, c1, c2, f, c3 = 0, 1, 2, 3, 4
    x = np.array([[0, 0], [1, 0], [1, 2.0**-20], [15, 0], [20, 0]], dtype=np.float32)
    state = getattr(search, state_cls)(x, "cpu")
    for c in (c2, c1, c3):  # c2 first: its float32 tie with c1 keeps it as a's centre
        state.update(c)
    assert state.arg[a] == c2
    centres32 = x[[c2, c1, c3]].copy()
    exact = search._ExactScores(x, centres32, state.nearest_hint)
    exact._hinted(np.array([a, f]), 3)
    assert exact.upto[a] == 0  # not proved
    assert exact.upto[f] == 3 and exact.value[f] == 25.0  # proved: c3, one row
    assert exact.score(a, 3) == 1.0  # the float64 re-score finds c1
    plain = search._ExactScores(x, centres32)
    assert [plain.score(i, 3) for i in (a, f)] == [1.0, 25.0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_center_with_mapped_centre_copies_picks_the_same(
    backend: str, tmp_path, monkeypatch
) -> None:
    """``scratch_dir``: the centre copies (GEMM init, near-tie re-scoring) live on
    unnamed mapped files there; the picks are the float64 reference's, with and without
    labelled points, and nothing is left in the folder."""
    mapped: list[tuple[int, ...]] = []
    real = search.float32_buffer

    def spy(shape: tuple[int, ...], folder: str | None = None) -> np.ndarray:
        buf = real(shape, folder)
        if isinstance(buf, np.memmap):
            mapped.append(tuple(shape))
        return buf

    monkeypatch.setattr(search, "float32_buffer", spy)
    for x, mask in (random_case(3), tie_case(2)):
        want = ref_k_center(x, mask, 20, 0)
        got = search.k_center_greedy(x, mask, 20, backend=backend, scratch_dir=str(tmp_path))
        assert got.tolist() == want
        none = np.zeros(len(x), dtype=bool)
        got = search.k_center_greedy(x, none, 5, backend=backend, scratch_dir=str(tmp_path))
        assert got.tolist() == ref_k_center(x, none, 5, 0)
    assert list(tmp_path.iterdir()) == []
    # centres32 (labelled + budget rows) for every call, the GEMM's L×d copy with labels
    assert (25 + 20, 16) in mapped and (25, 16) in mapped and (0 + 5, 4) in mapped
