"""Nearest-neighbour distances and k-center greedy (Sener & Savarese, ICLR 2018).

Two backends live in :data:`SEARCH_BACKENDS`: ``"faiss"`` and ``"torch"``. Both use the
GPU by themselves when one is present (``faiss.get_num_gpus() > 0`` /
``torch.cuda.is_available()``); ``backend="auto"`` picks one by the rule measured in
``benchmarks/bench_search.py`` (see :func:`resolve_backend`).

Precision contract: every backend works on the features cast to float32 (network
embeddings are float32 anyway). k-center picks are *exactly* those of a brute-force
float64 reference on those float32 values, lowest index first among exact ties (see
:func:`k_center_greedy`).

Threads: faiss runs OpenMP; an OpenMP pool inherited through ``fork`` (DataLoader
workers) can hang. faiss is imported lazily (torch is always imported first), and a
forked child that has not called :func:`set_faiss_threads` itself runs faiss with one
thread. Call ``set_faiss_threads(1)`` in a ``worker_init_fn`` to make it explicit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mtal.buffers import float32_buffer
from mtal.registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = [
    "SEARCH_BACKENDS",
    "SearchBackend",
    "k_center_greedy",
    "nearest_distance",
    "resolve_backend",
    "set_faiss_threads",
]

#: unit round-off of float32
_U32 = float(np.finfo(np.float32).eps) / 2
#: rows per chunk of the CPU torch running-min update: keeps the rows×d temporary in
#: cache (512 measured 1.7× faster than one N×d pass at N=20k, d=512); CUDA: one pass
_TORCH_UPDATE_ROWS_CPU = 512
#: float elements per chunk of a query×key distance block (64 MiB of float32)
_BLOCK_ELEMS = 1 << 24
#: elements of one point×centre block of the labelled-set GEMM initialisation (8 MiB f64)
_GEMM_BLOCK_ELEMS = 1 << 20


# --------------------------------------------------------------------------- faiss


@dataclass
class _FaissState:
    """Process-local faiss bookkeeping (fork detection, explicit thread setting)."""

    pid: int = -1
    threads_set_in: int = -1  # pid of the process that last called set_faiss_threads
    gpu_resources: Any = None


_FAISS_STATE = _FaissState()


def _faiss() -> Any:
    """Import faiss lazily (after torch) and apply the after-fork thread rule."""
    import torch  # noqa: F401  (torch must be loaded before faiss: shared OpenMP/MKL)

    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss-cpu is a hard dependency
        raise ImportError(
            "mtal.search backend 'faiss' needs the faiss package; install faiss-cpu "
            "(or faiss-gpu-cu12), or pass backend='torch'"
        ) from err
    pid = os.getpid()
    if _FAISS_STATE.pid == -1:
        _FAISS_STATE.pid = pid
    elif _FAISS_STATE.pid != pid:
        # first faiss call in a forked child: the parent's OpenMP pool is unusable here
        _FAISS_STATE.pid = pid
        _FAISS_STATE.gpu_resources = None
        if _FAISS_STATE.threads_set_in != pid:
            faiss.omp_set_num_threads(1)
    return faiss


def set_faiss_threads(n: int) -> None:
    """Set faiss's OpenMP thread count for this process (use 1 in DataLoader workers).

    A forked child that never calls this runs faiss single-threaded, which avoids the
    known OpenMP-after-fork hang.
    """
    if int(n) < 1:
        raise ValueError(f"set_faiss_threads: n must be >= 1, got {n}")
    faiss = _faiss()
    faiss.omp_set_num_threads(int(n))
    _FAISS_STATE.threads_set_in = os.getpid()


def _faiss_gpu_resources(faiss: Any, device: str = "auto") -> Any | None:
    """One cached ``StandardGpuResources`` when faiss sees a GPU (and ``device`` is not
    'cpu'), else None."""
    if device == "cpu" or not hasattr(faiss, "StandardGpuResources"):
        return None
    if faiss.get_num_gpus() < 1:
        return None
    if _FAISS_STATE.gpu_resources is None:
        _FAISS_STATE.gpu_resources = faiss.StandardGpuResources()
    return _FAISS_STATE.gpu_resources


# --------------------------------------------------------------------------- inputs


def _to_numpy32(x: Any, name: str) -> np.ndarray:
    """A C-contiguous float32 2-D numpy copy/view of an array or tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.ascontiguousarray(np.asarray(x), dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(
            f"mtal.search: {name} must be a 2-D [count, dim] array, got shape {arr.shape}"
        )
    return arr


#: the devices a search may be asked to run on ('auto': the GPU when one is present)
DEVICES = ("auto", "cpu", "cuda")


def _check_device(device: str) -> str:
    """``device`` validated: one of :data:`DEVICES`, 'cuda' only where CUDA is available."""
    if device not in DEVICES:
        raise ValueError(f"mtal.search: device={device!r}; expected one of {list(DEVICES)}")
    if device == "cuda" and not _has_cuda():
        raise ValueError(
            "mtal.search: device='cuda' but torch sees no CUDA GPU; use device='auto' or 'cpu'"
        )
    return device


def _torch_device(device: str = "auto") -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --------------------------------------------------------------------------- k-center kernels


class _RunningMin(Protocol):
    """Running minimum squared distance of every point to the chosen centres."""

    def update(self, j: int) -> None:
        """min-in-place with the squared distances of all points to point ``j``."""

    def init(self, centres: np.ndarray, folder: str | None = None) -> None:
        """min-in-place with the distances to every point of ``centres`` (labelled set);
        ``folder``: where a CPU GEMM's centred copy of the centre rows is mapped (None:
        memory)."""

    def exclude(self, idx: np.ndarray) -> None:
        """Mark points as centres: they can never be picked again."""

    def candidates(self) -> tuple[float, np.ndarray]:
        """(max running min, sorted indices whose exact value may equal the exact max)."""


def _tolerance(m: float, rtol: float, atol: float) -> float:
    return rtol * m + atol


def _direct_rtol(dim: int) -> float:
    """Rigorous relative slack for a float32 ``Σ (x_i − c_i)²`` (any summation order).

    Each computed distance (and so each running min) is within δ = γ_{d+2} ≈ (d+2)·u of
    the exact one (the subtraction and square are relatively exact, a sum of d
    non-negative terms errs by ≤ (d−1)·u). The exact argmax i* then satisfies
    r[i*] ≥ max(r)·(1 − δ)/(1 + δ) ≥ max(r)·(1 − 2δ); 2.1·(d+3)·u covers that.
    """
    return 2.1 * (dim + 3) * _U32


class _TorchRunningMin:
    """Running min on the torch device, exact-difference formulation ``Σ (x − c)²``."""

    def __init__(self, x: np.ndarray, device: str = "auto") -> None:
        import torch

        self._torch = torch
        self.x = torch.from_numpy(x).to(_torch_device(device))
        self.rmin = torch.full(
            (x.shape[0],), float("inf"), dtype=torch.float32, device=self.x.device
        )
        self.rtol = _direct_rtol(x.shape[1])
        n = max(1, x.shape[0])
        self.rows = n if self.x.is_cuda else _TORCH_UPDATE_ROWS_CPU
        # per point: its running-min centre and a bound on every other centre (as faiss's)
        self.arg = torch.full((x.shape[0],), -1, dtype=torch.int64, device=self.x.device)
        self.others = torch.full_like(self.rmin, float("inf"))
        self.buf = torch.empty_like(self.rmin)

    def update(self, j: int) -> None:
        c = self.x[j]
        for s in range(0, self.x.shape[0], self.rows):  # distances chunk by chunk, in cache
            sq = (self.x[s : s + self.rows] - c).square_()
            self._torch.sum(sq, dim=1, out=self.buf[s : s + self.rows])
        self._merge(slice(None), self.buf, j, None)  # one merge over all points

    def _merge(self, rows: slice, value: Any, arg: Any, others: Any) -> None:
        """Running min of ``rows`` with exact-difference ``value`` (centre ``arg``); the
        losing centre and ``others`` join the others' bound (see ``_FaissRunningMin``)."""
        torch = self._torch
        rmin, bound, centre = self.rmin[rows], self.others[rows], self.arg[rows]
        torch.minimum(bound, torch.maximum(rmin, value), out=bound)
        if others is not None:
            torch.minimum(bound, others, out=bound)
        closer = value < rmin
        if isinstance(arg, int):
            centre.masked_fill_(closer, arg)
        else:
            centre.copy_(torch.where(closer, arg, centre))
        torch.minimum(rmin, value, out=rmin)

    def init(self, centres: np.ndarray, folder: str | None = None) -> None:
        if not self.x.is_cuda and len(centres):  # CPU: one float32 GEMM, then exact refinement
            value, arg, others = _gemm_running_min(
                self.x.numpy(), centres, with_hint=True, folder=folder
            )
            t = self._torch.from_numpy
            self._merge(slice(None), t(value), t(arg), t(others))
            return
        for c in centres:  # CUDA: one bandwidth-bound pass per centre on the device
            self.update(int(c))

    def nearest_hint(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`_FaissRunningMin.nearest_hint` (exact-difference values on any device)."""
        at = self._torch.as_tensor(idx, device=self.rmin.device)
        bound = self.others[at].cpu().numpy().astype(np.float64) * (1.0 - self.rtol)
        return self.arg[at].cpu().numpy(), bound

    def exclude(self, idx: np.ndarray) -> None:
        self.rmin[self._torch.as_tensor(idx, device=self.rmin.device)] = float("-inf")

    def candidates(self) -> tuple[float, np.ndarray]:
        top, arg = self._torch.topk(self.rmin, min(2, self.rmin.shape[0]))
        top_h = top.cpu().numpy()
        m = float(top_h[0])
        thr = m - _tolerance(m, self.rtol, 0.0)
        if len(top_h) == 1 or top_h[1] < thr:  # unique maximum: the usual, cheap case
            return m, arg[:1].cpu().numpy()
        if m == 0.0:  # exact-difference zeros are exact: every candidate ties at 0
            return m, self._torch.nonzero(self.rmin >= thr)[:1].flatten().cpu().numpy()
        return m, self._torch.nonzero(self.rmin >= thr).flatten().cpu().numpy()


class _FaissRunningMin:
    """Running min in numpy; per-step distances by faiss (CPU: ``fvec_L2sqr_ny``,
    exact difference; GPU: ``pairwise_distance_gpu``, norm expansion → absolute slack)."""

    def __init__(self, x: np.ndarray, device: str = "auto") -> None:
        self.faiss = _faiss()
        self.x = x
        self.rmin = np.full(x.shape[0], np.inf, dtype=np.float32)
        self.buf = np.empty(x.shape[0], dtype=np.float32)
        self.res = _faiss_gpu_resources(self.faiss, device)
        self.rtol = _direct_rtol(x.shape[1])
        self.atol = 0.0
        # CPU: per point, the centre of its running min and a lower bound (in float32-value
        # units, see nearest_hint) on its distance to every other centre
        self.arg = np.full(x.shape[0], -1, dtype=np.int64)
        self.others = np.full(x.shape[0], np.inf, dtype=np.float32)
        self.closer = np.empty(x.shape[0], dtype=bool)
        if self.res is not None:
            # ||x||² − 2x·c + ||c||² errs by ≈ (d+3)·u·(||x||² + ||c||²) absolute
            self.atol = (
                8.0 * (x.shape[1] + 3) * _U32 * float((x.astype(np.float64) ** 2).sum(1).max())
            )

    def update(self, j: int) -> None:
        if self.res is None:
            sp = self.faiss.swig_ptr
            self.faiss.fvec_L2sqr_ny(
                sp(self.buf), sp(self.x[j]), sp(self.x), self.x.shape[1], self.x.shape[0]
            )
            self._merge(self.buf, j, None)
            return
        self.buf[:] = np.maximum(
            self.faiss.pairwise_distance_gpu(self.res, self.x[j : j + 1], self.x)[0], 0
        )
        np.minimum(self.rmin, self.buf, out=self.rmin)

    def _merge(self, value: np.ndarray, arg: int | np.ndarray, others: np.ndarray | None) -> None:
        """Running min with new exact-difference values (centre ``arg``): the centre that
        loses (old or new) joins the others' bound, as do ``others`` (the new batch's)."""
        np.less(value, self.rmin, out=self.closer)
        np.minimum(self.others, np.maximum(self.rmin, value), out=self.others)
        if others is not None:
            np.minimum(self.others, others, out=self.others)
        if isinstance(arg, np.ndarray):
            np.copyto(self.arg, arg, where=self.closer)
        else:
            np.putmask(self.arg, self.closer, arg)
        np.minimum(self.rmin, value, out=self.rmin)

    def init(self, centres: np.ndarray, folder: str | None = None) -> None:
        if self.res is None and len(centres):  # CPU: one float32 GEMM, then exact refinement
            value, arg, others = _gemm_running_min(self.x, centres, with_hint=True, folder=folder)
            self._merge(value, arg, others)
            return
        for c in centres:
            self.update(int(c))

    def nearest_hint(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Per point of ``idx``: the point index of its running-min centre (−1: none yet)
        and a lower bound on its exact squared distance to every other centre; None on the
        GPU (norm-expansion distances carry no relative bound). Every stored value v is a
        float32 exact-difference distance or bound with exact ≥ v·(1 − rtol)."""
        if self.res is not None:
            return None
        return self.arg[idx], self.others[idx].astype(np.float64) * (1.0 - self.rtol)

    def exclude(self, idx: np.ndarray) -> None:
        self.rmin[idx] = -np.inf

    def candidates(self) -> tuple[float, np.ndarray]:
        m = float(self.rmin.max())
        thr = m - _tolerance(m, self.rtol, self.atol)
        cand = np.flatnonzero(self.rmin >= thr)
        return m, cand[:1] if m == 0.0 and self.atol == 0.0 else cand


def _direct_sq(faiss: Any, q: np.ndarray, keys: np.ndarray, out: np.ndarray) -> np.ndarray:
    """float32 exact-difference ``Σ (q − k)²`` of one point to every row of ``keys``
    (relative error ≤ (d+2)·u, faiss's SIMD ``fvec_L2sqr_ny``) into ``out[:len(keys)]``."""
    sp = faiss.swig_ptr
    buf = out[: keys.shape[0]]
    faiss.fvec_L2sqr_ny(sp(buf), sp(q), sp(keys), keys.shape[1], keys.shape[0])
    return buf


def _gemm_running_min(
    x: np.ndarray, centres: np.ndarray, *, with_hint: bool = False, folder: str | None = None
) -> Any:
    """float32 min squared distance of every point to the rows ``centres`` of ``x``, with
    the relative error of the exact-difference form (≤ (d+2)·u), at GEMM speed.

    The labelled set's initial running min is one float32 GEMM on mean-centred features
    (``‖x‖² + ‖c‖² − 2x·c``, far faster than one pass per centre) whose absolute error is
    bounded by ``a_i = 2(d+8)·u·(‖x_i‖² + max‖c‖²)`` (dot product γ_d, centring and the
    combination); every centre within ``2·a_i`` of a point's GEMM minimum may be its true
    nearest, so the point's value is re-computed by exact differences to those centres
    (usually one). The result therefore carries the same guarantee as per-centre passes.
    ``with_hint`` returns ``(min, nearest, others)`` instead: per point also the point index
    of its nearest centre and a float32 v with exact ≥ v·(1 − rtol) for every other centre
    ((second GEMM value − a_i), rounded down; −inf where several centres were near).
    ``folder``: the centred copy of the centre rows is mapped on an unnamed file there.
    """
    faiss = _faiss()
    dim = x.shape[1]
    mu = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    # the one L×d copy (in memory, or mapped in ``folder``): centred in place, rows
    # gathered from x below
    cc = float32_buffer((len(centres), dim), folder)
    np.take(x, centres, axis=0, out=cc)
    cc -= mu
    nc = np.einsum("ij,ij->i", cc, cc, dtype=np.float64)
    ncmax = float(nc.max())
    out = np.empty(x.shape[0], dtype=np.float32)
    scratch = np.empty(len(centres), dtype=np.float32)
    nearest = np.empty(x.shape[0], dtype=np.int64) if with_hint else None
    others = np.empty(x.shape[0], dtype=np.float64) if with_hint else None
    # rows per block: the rows×L distance block stays ≤ 8 MiB (float64) whatever N and L
    rows = max(1, min(x.shape[0], _GEMM_BLOCK_ELEMS // max(1, len(centres))))
    for s in range(0, x.shape[0], rows):
        xb = x[s : s + rows]
        xc = xb - mu
        nx = np.einsum("ij,ij->i", xc, xc, dtype=np.float64)
        dist = (xc @ cc.T).astype(np.float64)
        dist *= -2.0
        dist += nx[:, None]
        dist += nc[None, :]
        arg = dist.argmin(axis=1)
        low = dist[np.arange(len(xb)), arg]
        slack = 4.0 * (dim + 8) * _U32 * (nx + ncmax)  # 2·a_i
        diff = xb - x[centres[arg]]
        out[s : s + len(xb)] = np.einsum("ij,ij->i", diff, diff)  # float32, exact differences
        near_counts = (dist <= (low + slack)[:, None]).sum(axis=1)
        several = np.flatnonzero(near_counts > 1)
        for r in several:  # several centres may be the nearest
            near = np.flatnonzero(dist[r] <= low[r] + slack[r])
            out[s + r] = _direct_sq(faiss, xb[r], x[centres[near]], scratch).min()
        if nearest is not None and others is not None:
            nearest[s : s + len(xb)] = centres[arg]
            dist[np.arange(len(xb)), arg] = np.inf
            others[s : s + len(xb)] = dist.min(axis=1) - slack / 2  # exact ≥ GEMM − a_i
            others[s + several] = -np.inf
    if nearest is None or others is None:
        return out
    # the units of nearest_hint: v·(1 − rtol) ≤ exact, v rounded towards −inf
    v64 = others / (1.0 - _direct_rtol(dim))
    v32 = v64.astype(np.float32)
    up = v32.astype(np.float64) > v64
    v32[up] = np.nextafter(v32[up], np.float32(-np.inf))
    return out, nearest, v32


class _ExactScores:
    """float64 distance of points to their nearest centre, as the float64 reference
    computes it, cached per point with the number of centres it covers: a point that is a
    near-tie candidate again after more picks is re-scored against the new centres only."""

    def __init__(
        self,
        x: np.ndarray,
        centres32: np.ndarray,
        hint: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray] | None] | None = None,
    ) -> None:
        self.x = x
        self.centres32 = centres32
        self.hint = hint
        # cdist's float64 Σ(x − c)² errs by ≤ (d+2)·2^-53 relative: a hint's bound must
        # clear the hinted distance by that much
        self.margin64 = 2.1 * (x.shape[1] + 3) * 2.0**-53
        self.value = np.full(x.shape[0], np.inf)
        self.upto = np.zeros(x.shape[0], dtype=np.int64)
        self.rtol = _direct_rtol(x.shape[1])
        self.scratch = np.empty(centres32.shape[0], dtype=np.float32)

    def score(self, j: int, count: int) -> float:
        """Exact float64 min over the first ``count`` centres of point ``j``'s distance."""
        from scipy.spatial.distance import cdist  # float64 direct differences (the reference's)

        start = int(self.upto[j])
        if start < count:
            q64 = self.x[j : j + 1].astype(np.float64)
            rows = np.arange(start, count)
            if count - start > 8:  # float32 pass finds the few centres that may be nearest
                faiss = _faiss()
                d32 = _direct_sq(faiss, self.x[j], self.centres32[start:count], self.scratch)
                rows = start + np.flatnonzero(d32 <= float(d32.min()) * (1.0 + self.rtol))
            # float32 → float64 is exact: the rows cast on demand equal a float64 copy of the
            # centres, which k-center would otherwise hold (L + budget rows × d × 8 bytes)
            new = cdist(q64, self.centres32[rows].astype(np.float64), "sqeuclidean").min()
            self.value[j] = min(self.value[j], float(new))
            self.upto[j] = count
        return float(self.value[j])

    def pick(self, cand: np.ndarray, count: int) -> int:
        """The candidate farthest from its nearest centre; lowest index among exact ties."""
        self._hinted(cand[self.upto[cand] < count], count)
        best = np.array([self.score(int(j), count) for j in cand])
        return int(cand[int(np.argmax(best))])  # argmax: first (lowest-index) maximum

    def _hinted(self, idx: np.ndarray, count: int) -> None:
        """Exact values of the points ``idx`` whose running-min centre is provably their
        nearest (the state's bound on every other centre clears its float64 distance): one
        float64 row each, all in one ``cdist`` call; the rest stay for :meth:`score`."""
        hint = self.hint(idx) if self.hint is not None and len(idx) else None
        if hint is None:
            return
        from scipy.spatial.distance import cdist  # float64 direct differences (the reference's)

        centre, bound = hint
        keep = centre >= 0
        idx, centre, bound = idx[keep], centre[keep], bound[keep]
        if not len(idx):
            return
        # the diagonal of one k×k call: each entry is the same per-pair loop as a 1×1 call
        new = np.diagonal(
            cdist(self.x[idx].astype(np.float64), self.x[centre].astype(np.float64), "sqeuclidean")
        )
        proved = bound * (1.0 - self.margin64) >= new
        self.value[idx[proved]] = np.minimum(self.value[idx[proved]], new[proved])
        self.upto[idx[proved]] = count


# --------------------------------------------------------------------------- backends


class SearchBackend(Protocol):
    """A distance engine: nearest squared distances and a k-center running min."""

    def nearest_sq(self, queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """float32 [N] squared distance of each query to its nearest key (M ≥ 1)."""

    def running_min(self, x: np.ndarray) -> _RunningMin:
        """A k-center running-min state over the points ``x`` (all at +inf)."""


SEARCH_BACKENDS: Registry[SearchBackend] = Registry("search backend")


@SEARCH_BACKENDS.register("faiss")
class FaissBackend:
    """Exact faiss search: ``faiss.knn`` on the CPU (the flat index's own brute-force
    kernel, without copying the keys into an index); a GPU ``IndexFlatL2`` when faiss
    sees a GPU, unless ``device='cpu'``."""

    def __init__(self, device: str = "auto") -> None:
        self.device = device
        if device == "cuda" and not _faiss_has_gpu():
            raise ValueError(
                "mtal.search: backend 'faiss' with device='cuda' needs a GPU build of faiss "
                "(pip install 'mtal[gpu]', i.e. faiss-gpu-cu12); or use backend='torch'"
            )

    def nearest_sq(self, queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
        faiss = _faiss()
        res = _faiss_gpu_resources(faiss, self.device)
        if res is None:  # CPU: the brute-force kernel reads ``keys`` in place (no index copy)
            dist, _ = faiss.knn(queries, keys, 1)
            return np.maximum(dist[:, 0], 0.0)
        index = faiss.index_cpu_to_gpu(res, 0, faiss.IndexFlatL2(keys.shape[1]))
        index.add(keys)
        dist, _ = index.search(queries, 1)
        return np.maximum(dist[:, 0], 0.0)

    def running_min(self, x: np.ndarray) -> _RunningMin:
        return _FaissRunningMin(x, self.device)


@SEARCH_BACKENDS.register("torch")
class TorchBackend:
    """Chunked ``torch.cdist`` (matmul form) + min, on CUDA when available (unless
    ``device='cpu'``)."""

    def __init__(self, device: str = "auto") -> None:
        self.device = device

    def nearest_sq(self, queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
        import torch

        dev = _torch_device(self.device)
        k = torch.from_numpy(keys).to(dev)
        out = np.empty(queries.shape[0], dtype=np.float32)
        step = max(1, _BLOCK_ELEMS // keys.shape[0])
        for s in range(0, queries.shape[0], step):
            q = torch.from_numpy(queries[s : s + step]).to(dev)
            out[s : s + step] = torch.cdist(q, k).min(dim=1).values.cpu().numpy()
        return out**2

    def running_min(self, x: np.ndarray) -> _RunningMin:
        return _TorchRunningMin(x, self.device)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _faiss_has_gpu() -> bool:
    faiss = _faiss()
    return _faiss_gpu_resources(faiss) is not None


#: What backend "auto" resolves to, per operation and device. Measured by
#: benchmarks/bench_search.py (CPU, 1 thread, N=20k, d=512, loaded host): k-center faiss
#: 5.4 CPU-s vs torch 12.4 CPU-s (float64 reference 25.8 CPU-s); nearest faiss 0.43 vs torch
#: 0.63 CPU-s; so faiss on CPU. On a GPU (benchmarks/gpu_check.py; not yet run here): torch
#: for k-center (the running min stays on the device; faiss's per-step GPU call copies
#: the points from the host each step) and faiss-GPU for nearest_distance when faiss sees
#: the GPU, else torch-CUDA.
_AUTO_RULES: dict[str, Any] = {
    "nearest_distance": lambda gpu: "faiss" if not gpu or _faiss_has_gpu() else "torch",
    "k_center_greedy": lambda gpu: "torch" if gpu else "faiss",
}


def resolve_backend(operation: str, backend: str = "auto", device: str = "auto") -> str:
    """The backend name ``backend`` means for ``operation`` ('nearest_distance' or
    'k_center_greedy') on ``device`` ('auto': the GPU when present, 'cpu', 'cuda');
    'auto' applies the benchmarked rule in ``_AUTO_RULES``."""
    if operation not in _AUTO_RULES:
        raise ValueError(
            f"mtal.search.resolve_backend: unknown operation {operation!r}; "
            f"expected one of {sorted(_AUTO_RULES)}"
        )
    device = _check_device(device)
    gpu = device == "cuda" or (device == "auto" and _has_cuda())
    name = _AUTO_RULES[operation](gpu) if backend == "auto" else backend
    SEARCH_BACKENDS.get(name)  # unknown names raise, listing the known ones
    return name


# --------------------------------------------------------------------------- public API


def nearest_distance(
    queries: Any, keys: Any, *, backend: str = "auto", device: str = "auto"
) -> np.ndarray:
    """Euclidean (not squared) float32 distance ``[N]`` of each query to its nearest key.

    ``keys`` with M = 0 rows gives ``+inf`` for every query (nothing is near). Both
    backends are exact searches in float32 (faiss ``knn`` / torch ``cdist``;
    both use the norm expansion, so tiny distances carry ~sqrt(d·u)·‖x‖ absolute error).
    'auto': faiss on CPU hosts (measured faster, benchmarks/README.md) and when faiss
    sees a GPU; torch when only torch sees a GPU. ``device='cpu'`` keeps the search on
    the CPU even where a GPU is present ('cuda' insists on the GPU).
    """
    q = _to_numpy32(queries, "queries")
    k = _to_numpy32(keys, "keys")
    if q.shape[1] != k.shape[1]:
        raise ValueError(
            f"mtal.search.nearest_distance: queries have dim {q.shape[1]} but keys have dim "
            f"{k.shape[1]}; embed both with the same model/layer"
        )
    name = resolve_backend("nearest_distance", backend, device)
    if k.shape[0] == 0:
        return np.full(q.shape[0], np.inf, dtype=np.float32)
    if q.shape[0] == 0:
        return np.empty(0, dtype=np.float32)
    return np.sqrt(SEARCH_BACKENDS.get(name)(device).nearest_sq(q, k))


def k_center_greedy(
    features: Any,
    labelled_mask: Any,
    budget: int,
    *,
    backend: str = "auto",
    seed: int = 0,
    device: str = "auto",
    scratch_dir: str | None = None,
) -> np.ndarray:
    """Sener & Savarese k-center greedy: ``budget`` indices, each the unlabelled point
    farthest from its nearest centre (labelled points + earlier picks), in pick order.

    Each step costs one N×d distance pass: a float32 running min of the exact-difference
    ``Σ (x − c)²`` (relative error ≤ (d+3)·u, unlike ``‖x‖² − 2x·c + ‖c‖²`` whose error
    scales with ‖x‖² and reorders near-ties). Points whose float32 value is within that
    bound of the max are re-scored in float64 against all centres, so picks equal the
    float64 brute force, lowest index among exact ties; a candidate whose running-min
    centre is provably its nearest (a kept lower bound on every other centre clears its
    float64 distance) is re-scored with that one row. With no labelled point the first
    centre is ``np.random.default_rng(seed).integers(N)`` (``seed`` is unused otherwise).
    'auto': faiss on CPU (measured faster), torch when CUDA is available; ``device``
    as in :func:`nearest_distance`. The labelled set's initial minimum is one GEMM on CPU.
    ``scratch_dir``: the copies of the centre rows (L + budget rows) are memory-mapped on
    unnamed files there instead of held in memory (``loop.summary_store: disk``).
    """
    x = _to_numpy32(features, "features")
    if hasattr(labelled_mask, "detach"):
        labelled_mask = labelled_mask.detach().cpu().numpy()
    mask = np.asarray(labelled_mask)
    n = x.shape[0]
    if mask.dtype != np.bool_ or mask.shape != (n,):
        raise ValueError(
            f"mtal.search.k_center_greedy: labelled_mask must be a bool array of shape ({n},) "
            f"matching features, got dtype {mask.dtype} shape {mask.shape}"
        )
    budget = int(budget)
    available = n - int(mask.sum())
    if budget < 0 or budget > available:
        raise ValueError(
            f"mtal.search.k_center_greedy: budget {budget} must be between 0 and the "
            f"{available} unlabelled points available (of {n}); lower the budget"
        )
    name = resolve_backend("k_center_greedy", backend, device)
    if budget == 0:
        return np.empty(0, dtype=np.int64)

    state = SEARCH_BACKENDS.get(name)(device).running_min(x)
    centres = np.flatnonzero(mask)
    # contiguous float32 copies of the centre rows, grown as picks are made (near-tie
    # re-scoring casts the few rows it needs to float64)
    centres32 = float32_buffer((len(centres) + budget, x.shape[1]), scratch_dir)
    centres32[: len(centres)] = x[centres]
    count = len(centres)
    picks: list[int] = []
    exact = _ExactScores(x, centres32, getattr(state, "nearest_hint", None))

    def take(j: int) -> None:
        nonlocal count
        picks.append(j)
        centres32[count] = x[j]
        count += 1
        state.update(j)
        state.exclude(np.array([j]))

    if count == 0:
        take(int(np.random.default_rng(seed).integers(n)))
    else:
        state.init(centres, scratch_dir)
        state.exclude(centres)
    while len(picks) < budget:
        _, cand = state.candidates()
        if len(cand) == 1:
            take(int(cand[0]))
        else:
            take(exact.pick(cand, count))
    return np.asarray(picks, dtype=np.int64)
