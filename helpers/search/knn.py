"""Nearest neighbours for step 3: FAISS indexes (built on the CPU, moved to a GPU for search when faiss has
one) and :class:`TorchFlat`, an exact kNN in torch where this faiss has no GPU.
"""
from __future__ import annotations

import logging

import faiss
import numpy as np
import torch

log = logging.getLogger(__name__)


def as_float32(X, d: int | None = None, name: str = "X") -> np.ndarray:
    """``X`` as a C-contiguous float32 matrix, checking its width against ``d``."""
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d); got shape {X.shape}.")
    if d is not None and X.shape[1] != d:
        raise ValueError(f"{name} has {X.shape[1]} dimensions but the index has {d}; use the same layer.")
    return X


def new_index(d: int, kind: str = "flat", nlist: int = 1024, train=None, seed: int = 0):
    """An empty CPU index: ``"flat"`` (exact L2) or ``"ivf"`` trained on ``train`` (n, d)."""
    if kind == "flat":
        return faiss.IndexFlatL2(d)
    if kind != "ivf":
        raise ValueError(f"index kind={kind!r} is unknown; use 'flat' (exact) or 'ivf'.")
    if train is None or len(train) < nlist:
        raise ValueError(f"an IVF index with nlist={nlist} needs at least {nlist} training vectors; "
                         "lower nlist or use kind='flat'.")
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(train), size=min(len(train), 256 * nlist), replace=False))
    index.cp.seed = seed
    index.train(as_float32(train[rows], d, "train"))
    return index


class TorchFlat:
    """Exact squared-L2 kNN in torch on a device, answering like ``faiss.IndexFlatL2``.

    For a GPU when this faiss has none (:func:`to_device`). Distances are
    ``||x||² - 2 q·x + ||q||²`` in float32, clipped at 0, over blocks of
    ``block_size`` database rows and ``query_block`` queries, keeping a running
    top ``k`` on the device; ties go to the smaller id and a ``k`` over
    ``ntotal`` pads with id ``-1`` and the float32 maximum, as faiss does.

    Parameters
    ----------
    d : int
        The vectors' dimension.
    device : str or torch.device
        Where the vectors live and the search runs, e.g. ``"cuda"``.

    Notes
    -----
    Memory on the device: the vectors (``ntotal * d * 4`` bytes) and their
    norms, plus about ``5 * query_block * block_size`` bytes while searching
    (one block's distances and a mask; 320 MiB by default); ``add`` copies
    what is stored once more.
    """

    def __init__(self, d: int, device, block_size: int = 65536, query_block: int = 1024):
        if block_size < 1 or query_block < 1:
            raise ValueError(f"block_size={block_size} and query_block={query_block} must be >= 1; "
                             "use the defaults (65536, 1024).")
        self.d, self.device = int(d), torch.device(device)
        self.block_size, self.query_block = int(block_size), int(query_block)
        self._x = torch.empty((0, self.d), dtype=torch.float32, device=self.device)
        self._sq = torch.empty(0, dtype=torch.float32, device=self.device)

    @property
    def ntotal(self) -> int:
        return len(self._x)

    def add(self, X) -> None:
        """Append the rows of ``X`` (float32 ndarray of shape (n, d)); ids continue from ``ntotal``."""
        x = torch.from_numpy(as_float32(X, self.d)).to(self.device)
        self._x, self._sq = torch.cat([self._x, x]), torch.cat([self._sq, (x * x).sum(1)])

    def reconstruct_n(self, start: int, n: int) -> np.ndarray:
        """The stored vectors ``start`` to ``start + n``: float32 ndarray of shape (n, d)."""
        if not (0 <= start and n >= 0 and start + n <= self.ntotal):
            raise ValueError(f"rows start={start}, n={n} are outside the {self.ntotal} stored vectors; "
                             f"ask within 0..{self.ntotal}.")
        return self._x[start:start + n].cpu().numpy()

    def reconstruct(self, i: int) -> np.ndarray:
        """The stored vector ``i``: float32 ndarray of shape (d,)."""
        return self.reconstruct_n(int(i), 1)[0]

    def search(self, queries, k: int):
        """``(distances, ids)``: float32 and int64 arrays of shape (q, k), nearest first (squared L2)."""
        if k < 1:
            raise ValueError(f"k={k} must be >= 1; ask for at least one neighbour.")
        q = torch.from_numpy(as_float32(queries, self.d, "queries")).to(self.device)
        parts = [self._search(q[i:i + self.query_block], k) for i in range(0, len(q), self.query_block)]
        D = torch.cat([p[0] for p in parts]) if parts else torch.empty((0, k))
        ids = torch.cat([p[1] for p in parts]) if parts else torch.empty((0, k), dtype=torch.int64)
        D = torch.where(ids < 0, torch.finfo(torch.float32).max, D)
        return D.cpu().numpy(), ids.cpu().numpy()

    def _search(self, q, k: int):
        best = torch.full((len(q), k), float("inf"), device=self.device)
        best_ids = torch.full((len(q), k), -1, dtype=torch.int64, device=self.device)
        q_sq = (q * q).sum(1, keepdim=True)
        for start in range(0, self.ntotal, self.block_size):
            x, sq = self._x[start:start + self.block_size], self._sq[start:start + self.block_size]
            dist = torch.addmm(sq[None, :], q, x.T, alpha=-2).add_(q_sq).clamp_min_(0)
            d, i = _smallest(dist, min(k, len(x)))
            # [best, block]: ids in the first part are all smaller, so a stable sort keeps ties by id
            d, order = torch.cat([best, d], 1).sort(dim=1, stable=True)
            best, best_ids = d[:, :k], torch.cat([best_ids, i + start], 1).gather(1, order[:, :k])
        return best, best_ids


def _smallest(dist, k: int):
    """The ``k`` smallest of each row of ``dist`` ordered by (distance, column): ``(values, columns)``."""
    d, i = dist.topk(k, 1, largest=False)
    kth = d.max(1, keepdim=True).values
    tied = (dist <= kth).sum(1) > k  # more candidates at the k-th distance than topk kept: which is arbitrary
    if tied.any():
        rows = tied.nonzero()[:, 0]
        d[rows], i[rows] = (t[:, :k] for t in dist[rows].sort(dim=1, stable=True))
    i, order = i.sort(1)  # by column, then stably by distance
    d, order2 = d.gather(1, order).sort(dim=1, stable=True)
    return d, i.gather(1, order2)


def _is_flat_l2(index) -> bool:
    return isinstance(index, faiss.IndexFlat) and index.metric_type == faiss.METRIC_L2


def to_device(index, device=None):
    """The index where it is searched fastest: GPU 0 when faiss has a GPU and ``device`` allows (``None``:
    a GPU when there is one); else, for a GPU ``device`` and an exact index, a :class:`TorchFlat` there.
    An IVF index stays on the CPU when faiss has no GPU. Logs the backend."""
    want_gpu = device is None or torch.device(device).type == "cuda"
    if want_gpu and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        res = faiss.StandardGpuResources()
        gpu = faiss.index_cpu_to_gpu(res, 0, index)
        gpu.referenced_resources = res
        log.info("faiss: %s on GPU", type(index).__name__)
        return gpu
    cuda = want_gpu and torch.cuda.is_available()
    if cuda and _is_flat_l2(index):
        device = torch.device("cuda" if device is None else device)
        flat = TorchFlat(index.d, device)
        flat.add(index.reconstruct_n(0, index.ntotal))
        log.info("faiss: exact kNN in torch on %s (this faiss has no GPU)", device.type)
        return flat
    if cuda:
        log.info("faiss: %s on CPU (%d threads): this faiss has no GPU, and only an exact index can go to "
                 "torch", type(index).__name__, faiss.omp_get_max_threads())
        return index
    log.info("faiss: %s on CPU (%d threads)", type(index).__name__, faiss.omp_get_max_threads())
    return index


def search(index, queries, k: int):
    """``(distances, ids)`` of the ``k`` nearest indexed vectors to each query (squared L2)."""
    return index.search(as_float32(queries, index.d, "queries"), k)
