"""The paper profile's steps at ImageNet scale, each against the limit of the same machine in the same run.

    python bench/paper_scale.py --device cpu --tiny            # 2-core CPU: a tiny folder, under 3 minutes
    python bench/paper_scale.py --device cuda                   # a GPU: 10,000 train / 2,000 val JPEGs
    python bench/paper_scale.py --device cuda --root /data/imagenet --model alexnet
    python bench/paper_scale.py --device cuda --decode device   # JPEGs decoded on the GPU (nvJPEG)
    python bench/paper_scale.py --device cpu --tiny --world 2   # and 01/03/05 on 2 ranks against one process

It makes an ImageNet-like folder of JPEGs (``train/`` and ``val/`` class
folders, 500 x 375 like ImageNet's typical photo) unless ``--root`` gives one,
builds the paper profile on it with ``--model`` (random weights by default:
``torchvision:alexnet:none`` goes through torchvision's own builder), and runs
each step as its notebook does, printing per step its rate, the limit it is
measured against in this run and the ratio:

=====================  ==========================================  =========================================
step                   rate                                        limit (same machine, same run)
=====================  ==========================================  =========================================
load                   images/s out of ``Batches`` (decode,        the bare forward pass at the same batch
                       resize, crop, normalise)                    (is the input pipeline the bound?)
decode alone           images/s of decoding only, same workers     —
01 sample              images/s                                    the bare forward pass
02 moments             rows/s of ``StreamingMoments`` (device)     a plain ``X.T @ X`` on the device
03 index               images/s                                    the bare forward pass
04 search              queries/s of the index's search             brute-force kNN in torch on the device
04 grids               grids/s                                     —
05 sweep               setting-images/s of ``sweep_layer``          full forward images/s at the same stack
=====================  ==========================================  =========================================

then the projection of the whole paper profile (1,281,167 train images, 50,000
val images, the dense count grid) from those rates. ``--world N`` adds the
speed-up of N ranks (``torch.distributed``, :mod:`helpers.pipeline.distributed`)
for 01, 03 and 05, end to end, and checks that their files equal one process's.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import ablation, bases, explorer, grids, models, sampling, search  # noqa: E402
from helpers.images.batches import Batches  # noqa: E402
from helpers.models import running  # noqa: E402
from helpers.pipeline import provenance  # noqa: E402
from helpers.pipeline.settings import load_profile  # noqa: E402

PAPER = {"train": 1_281_167, "val": 50_000}


def _jpegs(args):
    folder, names, size, seed = args
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in names:
        small = rng.integers(0, 256, (size[1] // 25, size[0] // 25, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize(size, Image.BICUBIC)  # smooth, photo-like entropy
        image.save(folder / name, quality=90)
    return len(names)


def make_folder(root: Path, classes: int, train: int, val: int, size=(500, 375), workers: int = 8) -> Path:
    """``root/{train,val}/n0000000k/*.JPEG``: ``train`` and ``val`` JPEGs spread over ``classes`` folders."""
    jobs = []
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            names = [f"{split}_{c}_{i}.JPEG" for i in range(c, n, classes)]
            for j in range(0, len(names), 64):
                seed = (int(split == "val"), c, j)  # per chunk, not hash(): the same folder in every run
                jobs.append((folder, names[j:j + 64], size, seed))
    with ProcessPoolExecutor(max(1, workers)) as pool:
        made = sum(pool.map(_jpegs, jobs))
    print(f"made {made:,} JPEGs of {size[0]}x{size[1]} in {root}")
    return root


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeat: int = 1) -> float:
    """Seconds of the fastest of ``repeat`` runs of ``fn`` (device work included)."""
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


@torch.no_grad()
def forward_rate(net, shape, batch: int, device, mode: str, seconds: float = 2.0) -> float:
    """Images/s of ``net`` on random input of ``batch`` images (the bare forward pass)."""
    x = torch.randn(batch, *shape, device=device).contiguous(memory_format=running.memory_format(device))
    with running.precision(mode, device):
        net(x)  # warm-up: kernels chosen, memory allocated
        n, t0 = 0, time.perf_counter()
        while True:
            net(x)
            n += 1
            sync(device)
            if time.perf_counter() - t0 > seconds:
                break
    return n * batch / (time.perf_counter() - t0)


def decode_rate(dataset, n: int, workers: int) -> float:
    """Images/s of decoding the JPEGs alone (PIL, fully loaded, no resize), in ``workers`` processes."""
    from PIL import Image
    from torch.utils.data import DataLoader

    paths = [dataset.describe(i) for i in range(min(n, len(dataset)))]

    class Decode(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            with Image.open(paths[i]) as im:
                return np.asarray(im.convert("RGB")).shape[0]

    loader = DataLoader(Decode(), batch_size=64, num_workers=workers)
    t = time.perf_counter()
    for _ in loader:
        pass
    return len(paths) / (time.perf_counter() - t)


def load_rate(dataset, indices, batch: int, workers: int, device) -> float:
    t = time.perf_counter()
    for x, _, _ in Batches(dataset, indices, batch, workers, device):
        x.to(device, non_blocking=True)
    sync(device)
    return len(indices) / (time.perf_counter() - t)


def gram_rate(d: int, rows: int, device) -> float:
    """Rows/s of a plain float64 ``X.T @ X`` of ``rows x d`` already on the device (the moments' limit)."""
    X = torch.randn(rows, d, device=device, dtype=torch.float64)
    s = timed(lambda: X.T @ X, device, repeat=3)
    return rows / s


def moments_rate(X, device, chunk: int) -> tuple[float, float]:
    """Rows/s of ``StreamingMoments.partial_fit`` streaming the memory map ``X`` (read, upload, sums; the
    one-off ``covariance_`` left out): on ``device`` when it is a GPU (float64 there), and numpy's host path."""
    rates = []
    for dev in ([device, None] if torch.device(device).type == "cuda" else [None]):
        def run():
            m = bases.StreamingMoments(device=dev)
            for s in range(0, len(X), chunk):
                m.partial_fit(X[s:s + chunk])
        rates.append(len(X) / timed(run, device, repeat=2))
    return rates[0], rates[-1]


def eigh_seconds(d: int) -> float:
    """Seconds of one ``numpy.linalg.eigh`` of a ``d x d`` covariance (what PCA solves once its moments are in)."""
    A = np.random.default_rng(0).standard_normal((d, d))
    A = A @ A.T
    t = time.perf_counter()
    np.linalg.eigh(A)
    return time.perf_counter() - t


def knn_limit(X: np.ndarray, Q: np.ndarray, k: int, device) -> float:
    """Queries/s of brute-force kNN in torch on the device (one matmul, one topk)."""
    Xt = torch.as_tensor(X, device=device)
    Qt = torch.as_tensor(Q, device=device)
    sq = (Xt * Xt).sum(1)
    def run():
        d = sq[None, :] - 2 * Qt @ Xt.T
        d.topk(k, dim=1, largest=False)
    return len(Q) / timed(run, device, repeat=3)


def table(rows) -> None:
    w = max(len(r[0]) for r in rows)
    print(f"\n{'step':{w}s}  {'rate':>14s}  {'limit':>14s}  {'ratio':>6s}  unit / limit")
    for name, rate, limit, unit, what in rows:
        ratio = f"{rate / limit:6.2f}" if limit else "     —"
        lim = f"{limit:14,.0f}" if limit else f"{'—':>14s}"
        print(f"{name:{w}s}  {rate:14,.0f}  {lim}  {ratio}  {unit} / {what}")


def ranked(p, net, info, layer: str, counts, world: int, device) -> None:
    """01, 03 and 05 (one layer) on one process and on ``world`` ranks, timed end to end (launch included),
    each pair of artifacts compared byte for byte."""
    import filecmp
    import dataclasses

    from helpers.pipeline import distributed

    train_set, train_idx = models.selection(p, "sample")
    val_set, val_idx = models.selection(p, "eval")
    ab_set, ab_idx = models.selection(p, "ablation")
    means = {k: bases.load_basis(p.artifact("bases"), k, key=provenance.expected(p, "bases")).mean_ for k in p.layers}
    fitted = {layer: bases.layer_bases(p.artifact("bases"), layer, p.bases, provenance.expected(p, "bases"))}
    steps = {
        "01 sample": lambda folder, r: sampling.sample_activations(
            net, train_set, p.layers, folder, sampling.sample_key(p), indices=train_idx, seed=p.seed,
            batch_size=p.batch_size, num_workers=p.num_workers, device=device, profile=p.name, ranks=r),
        "03 index": lambda folder, r: search.index_activations(
            net, val_set, p.layers, means, folder, search.index_key(p), indices=val_idx, cap=p.index_cap,
            kind=p.index_kind, seed=p.seed, batch_size=p.batch_size, num_workers=p.num_workers, device=device,
            profile=p.name, ranks=r),
        f"05 sweep ({layer})": lambda folder, r: ablation.sweep(
            net, ab_set, [layer], fitted, folder, ablation.ablation_key(p), counts={layer: counts}, indices=ab_idx,
            batch_size=p.batch_size, num_workers=p.num_workers, device=device, profile=p.name,
            precision=p.precision, ranks=r),
    }
    many = distributed.ranks(dataclasses.replace(p, nproc=world))
    print(f"\n{world} torch.distributed ranks ({'NCCL' if device.type == 'cuda' else 'gloo'}) against one process, "
          "end to end (the ranks' start-up included):")
    for name, run in steps.items():
        seconds = []
        for tag, r in (("one", None), ("ranks", many)):
            folder = p.data_path / f"bench-{name.split()[0]}-{tag}"
            t = time.perf_counter()
            run(folder, r)
            seconds.append(time.perf_counter() - t)
        one, ranks_ = (p.data_path / f"bench-{name.split()[0]}-{tag}" for tag in ("one", "ranks"))
        same = all(filecmp.cmp(f, ranks_ / f.name, shallow=False) for f in one.iterdir() if f.name != "meta.json")
        print(f"  {name:22s} one process {seconds[0]:7.1f} s   {world} ranks {seconds[1]:7.1f} s   "
              f"speed-up {seconds[0] / seconds[1]:5.2f}x   files identical: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="torchvision:alexnet:none", help="any name of helpers/models/registry.py")
    ap.add_argument("--root", help="an ImageNet-like folder (train/, val/); default: made in a temporary folder")
    ap.add_argument("--tiny", action="store_true", help="a size for a 2-core CPU (under 3 minutes)")
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--train", type=int, default=10_000)
    ap.add_argument("--val", type=int, default=2_000)
    ap.add_argument("--sweep-images", type=int, default=500, help="val images of the sweep")
    ap.add_argument("--sweep-layer", default=None, help="default: the model's first layer (the longest suffix)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--precision", default="fp32", choices=running.PRECISIONS)
    ap.add_argument("--decode", default="pil", choices=("pil", "device"))
    ap.add_argument("--world", type=int, default=1,
                    help="also run 01, 03 and 05 on this many torch.distributed ranks and print the speed-up")
    ap.add_argument("--keep", action="store_true", help="keep the made folder and artifacts")
    args = ap.parse_args()
    if args.tiny:  # the sizes not given explicitly
        for name, tiny in (("classes", 4), ("train", 320), ("val", 160), ("sweep_images", 32)):
            if getattr(args, name) == ap.get_default(name):
                setattr(args, name, tiny)
        args.batch = min(args.batch, 32)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    for name in ("helpers.search", "helpers.ablation.accuracy"):
        logging.getLogger(name).setLevel(logging.INFO)
    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="paper_scale_"))
    root = Path(args.root) if args.root else make_folder(work / "imagenet", args.classes, args.train, args.val,
                                                          workers=args.workers)
    p = load_profile("paper", data_root=str(root), model=args.model, data_dir=str(work / "data"),
                     figures_dir=str(work / "figures"), device=str(device), batch_size=args.batch,
                     num_workers=args.workers, n_sample=args.train, n_eval=args.val, index_kind="flat",
                     precision=args.precision, decode=args.decode, ablation_eval=min(args.sweep_images, args.val))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}; model {p.model}; precision {p.precision}; "
          f"decode {p.decode}; batch {p.batch_size}; {p.num_workers} loader workers")
    net, info = models.load_model(p, device=device, train=False)
    net = running.place(net, device)
    train_set, train_idx = models.selection(p, "sample")
    val_set, val_idx = models.selection(p, "eval")
    shape = tuple(train_set.input_shape)
    rows = []

    # each step is called as its notebook calls it (the same keys), so 04 reads what 01-03 made
    fwd = forward_rate(net, shape, p.batch_size, device, p.precision)
    rows.append(("bare forward", fwd, None, "img/s", f"batch {p.batch_size}"))
    n_load = min(len(train_idx), 4 * p.batch_size * max(1, p.num_workers))
    rows.append(("load (Batches)", load_rate(train_set, train_idx[:n_load], p.batch_size, p.num_workers, device),
                 fwd, "img/s", "bare forward"))
    rows.append(("decode alone", decode_rate(train_set, n_load, p.num_workers), None, "img/s", "PIL, same workers"))

    t = time.perf_counter()
    meta = sampling.sample_activations(net, train_set, p.layers, p.artifact("sample"), sampling.sample_key(p),
                                       indices=train_idx, seed=p.seed, skip_bad=p.skip_bad_images,
                                       batch_size=p.batch_size, num_workers=p.num_workers, device=device,
                                       profile=p.name)
    r01 = len(train_idx) / (time.perf_counter() - t)
    rows.append(("01 sample", r01, fwd, "img/s", "bare forward"))

    widths = {k: v[0] for k, v in meta["shapes"].items()}
    big = max(widths, key=widths.get)
    X, _ = sampling.open_sample(p.artifact("sample"), big)
    r02, r02_cpu = moments_rate(X, device, p.pca_chunk)
    rows.append((f"02 moments ({big}, d={widths[big]})", r02, gram_rate(widths[big], min(len(X), p.pca_chunk), device),
                 "rows/s", "X.T @ X float64 on device"))
    if device.type == "cuda":
        rows.append(("02 moments, numpy on the host", r02_cpu, r02, "rows/s", "the device path"))
    t = time.perf_counter()
    bases.fit_layer_bases(p.artifact("sample"), p.artifact("bases"), p.layers, bases.bases_key(p),
                          chunk_size=p.pca_chunk, profile=p.name, kinds=p.bases, settings=bases.learned_settings(p),
                          device=device)
    t02 = time.perf_counter() - t
    # 02 = a part per image (streaming the moments, before and after the ReLU: cost ~ d**2 per row, scaled
    # from the widest layer's measured rate) + a fixed part (eigensolves, covariances, saving): the rest
    per_image = sum(2 * (d / widths[big]) ** 2 for d in widths.values()) / r02
    t02_fixed = max(0.0, t02 - per_image * len(train_idx))
    eigh = 2 * eigh_seconds(widths[big]) * list(widths.values()).count(widths[big])
    rows.append(("02 bases (whole step)", len(train_idx) / t02, None, "img/s",
                 f"{t02:.1f} s: {t02_fixed:.1f} s fixed ({eigh:.1f} s eigensolves of the widest)"))

    means = {layer: bases.load_basis(p.artifact("bases"), layer, key=provenance.expected(p, "bases")).mean_
             for layer in p.layers}
    t = time.perf_counter()
    index_meta = search.index_activations(
        net, val_set, p.layers, means, p.artifact("index"), search.index_key(p), indices=val_idx, cap=p.index_cap,
        kind=p.index_kind, nlist=p.nlist, seed=p.seed, batch_size=p.batch_size, num_workers=p.num_workers,
        device=device, skip_bad=p.skip_bad_images, profile=p.name)
    r03 = len(val_idx) / (time.perf_counter() - t)
    rows.append(("03 index", r03, fwd, "img/s", "bare forward"))

    most = max(p.layers, key=lambda k: index_meta["vectors"][k] * widths[k])  # the costliest search
    index, loc = search.load_index(p.artifact("index"), most, device=device)
    vectors = np.asarray(index.reconstruct_n(0, min(index.ntotal, 2_000_000)), np.float32)
    Q = vectors[np.random.default_rng(0).choice(len(vectors), min(1000, len(vectors)), replace=False)] * 0.9
    s04 = timed(lambda: search.search(index, Q, p.n_neighbours), device, repeat=3)
    rows.append((f"04 search ({most}, {index.ntotal:,} x {widths[most]})", len(Q) / s04,
                 knn_limit(vectors, Q, p.n_neighbours, device), "queries/s", "brute-force torch kNN"))
    vis = explorer.visualizer_for(p)
    t = time.perf_counter()
    made = grids.write_grids(vis, p.artifact("grids"), provenance.expected(p, "grids"), max(p.n_show, p.n_study),
                             profile=p.name)
    t04 = time.perf_counter() - t
    n_grids = sum(1 for f in made["files"] if str(f).endswith(".png"))
    rows.append(("04 grids (whole step)", n_grids / t04, None, "grids/s", f"{n_grids} grids in {t04:.1f} s"))

    layer = args.sweep_layer or p.layers[0]
    fitted_all = {k: bases.layer_bases(p.artifact("bases"), k, p.bases, provenance.expected(p, "bases"))
                  for k in p.layers}
    fitted = fitted_all[layer]
    counts = ablation.layer_counts({layer: fitted}, dense=not args.tiny)[layer]  # tiny: the sparse grid
    ab_set, ab_idx = models.selection(p, "ablation")
    n_settings = len(ablation.settings(fitted, counts))
    mean = next(iter(fitted.values())).mean_
    t = time.perf_counter()
    ablation.sweep_layer(net, ab_set, layer, fitted, mean, counts, indices=ab_idx, batch_size=p.batch_size,
                         num_workers=p.num_workers, device=device, precision=p.precision)
    r05 = n_settings * len(ab_idx) / (time.perf_counter() - t)
    # the limit: the full forward pass at the stack the sweep used (on CUDA it is sized from memory; the
    # forward rate has flattened out by a few thousand images)
    stack = ablation.stack_rows(device) if device.type != "cuda" else 2048
    fwd_stack = forward_rate(net, shape, stack, device, p.precision)
    rows.append((f"05 sweep ({layer}, {n_settings} settings x {len(ab_idx)})", r05, fwd_stack, "setting-img/s",
                 f"full forward, stack {stack}"))
    table(rows)
    if args.world > 1:
        ranked(p, net, info, layer, counts, args.world, device)

    # the projection of the whole paper profile on this machine
    counts_all = ablation.layer_counts(fitted_all, dense=True)
    settings_all = sum(len(ablation.settings(fitted_all[k], c)) for k, c in counts_all.items())
    proj = {"01 sample": PAPER["train"] / r01,
            "02 bases (fixed part + moments per image)": t02_fixed + per_image * PAPER["train"],
            "03 index": PAPER["val"] / r03,
            "04 grids (as measured: the index is capped)": t04,
            f"05 sweep (every layer at {layer}'s rate)": settings_all * PAPER["val"] / r05}
    print(f"\nprojection of the paper profile on this machine ({PAPER['train']:,} train, {PAPER['val']:,} val; "
          f"05: {settings_all:,} settings, dense grid; an upper bound, the first layer's suffix is the longest):")
    for k, v in proj.items():
        print(f"  {k:52s} {v / 3600:8.2f} h")
    print(f"  {'total':52s} {sum(proj.values()) / 3600:8.2f} h")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}")


if __name__ == "__main__":
    main()
