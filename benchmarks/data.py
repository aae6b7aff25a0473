"""Benchmarks of the data sources and the streaming loader (benchmarks/DATA.md).

    python benchmarks/data.py write-fmnist OUT/fmnist-png            # Fashion-MNIST as an ImageFolder of PNGs
    python benchmarks/data.py accuracy --folder OUT/fmnist-png --out OUT/acc --seeds 0 1
    python benchmarks/data.py throughput --out OUT/tput --workers 1 2
    python benchmarks/data.py memory --out OUT/mem --n 30000 --size 96

- ``accuracy``: pgd-at on the built-in Fashion-MNIST (in memory) and on the same images written as PNG files,
  streamed by worker processes, same seeds and settings; clean and PGD-20 accuracy of the last checkpoint on the
  first 1,000 test images.
- ``throughput``: images per second the streaming loader decodes and augments (an epoch of ``StreamLoader`` on the
  CPU, nothing trained), per worker, for PNG and JPEG files at 32, 64, 96 px (crop and flip) and 224 px (files of
  256 x 320, the random-resized crop to 224 and flip: the ImageNet recipe); the images are Fashion-MNIST's, scaled
  up, tinted per channel, with mild noise. The median of ``--repeats`` epochs, with the rate after the first
  batch and the time to it (the workers start again every epoch).
- ``memory``: one epoch of pgd-at (small-cnn at 96 px, PGD-2, batch 32: the model's activations stay small beside
  the data) from a folder of ``--n`` PNG images, streamed (``--loader stream``) or held in memory (``--loader
  memory``), with the peak resident memory of the training process (VmHWM) and the peak of the proportional set
  size (PSS) summed over it and its worker processes, sampled every 0.2 s; ``--seconds S`` stops the run after S
  seconds (SIGTERM: it writes its mid-epoch checkpoint and exits) and says which batch it reached, for a CPU on
  which the epoch would take hours.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import accuracy, cell, machine, run_one  # noqa: E402

import advlab.data as data  # noqa: E402
from advlab.runs import MID_EPOCH, load_checkpoint  # noqa: E402

ACCURACY = ["epochs=5", "data.train_size=10000", "perturbation.steps=5", "batch_size=128", "validation.n=500",
            "evaluation.n=1000", "evaluation.attacks=[pgd20]", "evaluation.checkpoints=[last]", "device=cpu"]


def write_fmnist(out: Path, limit: int | None = None) -> None:
    """Fashion-MNIST's train and test files as ``out/{train,test}/<label>/<index>.png`` (grayscale PNGs)."""
    from PIL import Image

    for split in ("train", "test"):
        images, labels = data.load("fashion-mnist", "test" if split == "test" else "train", val_per_class=0)
        for i in range(len(labels) if limit is None else limit):
            folder = out / split / str(int(labels[i]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i, 0].numpy()).save(folder / f"{i:05d}.png")


def cmd_accuracy(args: argparse.Namespace) -> None:
    rows = {"built-in, in memory": [], "PNG folder, streamed": []}
    for seed in args.seeds:
        common = ACCURACY + [f"seed={seed}", f"epochs={args.epochs}"]
        rows["built-in, in memory"].append(run_one("pgd-at", args.out / f"builtin-s{seed}", common))
        rows["PNG folder, streamed"].append(run_one("pgd-at", args.out / f"folder-s{seed}", common + [
            "data.dataset=folder", f"data.root={args.folder}", "data.flip=false", "data.crop_padding=0",
            "data.loader=stream", f"data.workers={args.workers}"]))
    print(f"\n{machine('cpu')}, seeds {args.seeds}; {' '.join(ACCURACY)}")
    print("| data | clean % | PGD-20 % | last epoch's train loss |\n|---|---|---|---|")
    for name, summaries in rows.items():
        losses = [s["history_tail"][-1]["train_loss"] for s in summaries]
        print(f"| {name} | {cell([accuracy(s['last'], 'clean') for s in summaries])} | "
              f"{cell([accuracy(s['last'], 'pgd20') for s in summaries])} | {cell(losses, 1, 4)} |")


def synthetic(size: tuple[int, int], n: int) -> np.ndarray:
    """``n`` RGB images (N x H x W x 3): Fashion-MNIST scaled up (bilinear), tinted per channel, mild noise."""
    from PIL import Image

    images, _ = data.load("fashion-mnist", "test")
    rng = np.random.default_rng(0)
    out = np.empty((n, size[0], size[1], 3), dtype=np.uint8)
    for i in range(n):
        gray = np.asarray(Image.fromarray(images[i % len(images), 0].numpy()).resize(size[::-1], Image.BILINEAR))
        tint = rng.uniform(0.5, 1.0, 3)
        noisy = gray[:, :, None] * tint + rng.normal(0, 6, (size[0], size[1], 3))
        out[i] = np.clip(noisy, 0, 255).astype(np.uint8)
    return out


def write_images(folder: Path, images: np.ndarray, ext: str) -> None:
    from PIL import Image

    for i, image in enumerate(images):
        sub = folder / "train" / f"c{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(sub / f"{i:06d}.{ext}", **({"quality": 90} if ext == "jpg" else {}))


def cmd_throughput(args: argparse.Namespace) -> None:
    results = []
    for size in args.sizes:
        stored = (256, 320) if size == 224 else (size, size)
        pixels = None
        for fmt in args.formats:
            ext = "jpg" if fmt == "jpeg" else "png"
            folder = args.out / f"{fmt}-{size}-{args.n}"  # n in the name: a folder of another --n is not reused
            if not folder.exists():
                pixels = synthetic(stored, args.n) if pixels is None else pixels
                write_images(folder, pixels, ext)
            split = data.training_split("folder", root=folder, val_per_class=0, lazy=True,
                                        options=data.OpenOptions(image_size=size if size == 224 else None,
                                                                 test_fraction=0.01))
            aug = data.Augmentation("resized-crop", 0, True, size) if size == 224 else \
                data.Augmentation("crop", size // 8, True)
            for workers in args.workers:
                loader = data.StreamLoader(split.images, split.labels, 256, workers=workers, augmentation=aug)
                rates, steady, firsts = [], [], []
                for epoch in range(args.repeats):  # the median of a few epochs: one short epoch is noisy
                    loader.set_epoch(epoch)
                    start = time.perf_counter()
                    n, first = 0, None
                    for b in loader:
                        n += len(b.y)
                        if first is None:
                            first, n_first = time.perf_counter(), n
                    end = time.perf_counter()
                    rates.append(n / (end - start))  # the whole epoch, the workers' start included
                    steady.append((n - n_first) / (end - first))  # from the first batch on
                    firsts.append(first - start)
                rate = float(np.median(rates))
                results.append({"size": size, "format": fmt, "workers": workers, "images": n, "epochs": args.repeats,
                                "images_per_s": rate, "per_worker": rate / max(1, workers),
                                "steady_per_s": float(np.median(steady)), "first_batch_s": float(np.median(firsts)),
                                "load": os.getloadavg()})
                print(json.dumps(results[-1]), flush=True)
    (args.out / "throughput.json").write_text(json.dumps(results, indent=1))
    print(f"\n{machine('cpu')}")
    print("| size | format | workers | images/s | per worker | images/s after the first batch | first batch (s) | "
          "load average (1, 5, 15 min) |\n|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['size']} | {r['format']} | {r['workers']} | {r['images_per_s']:,.0f} | {r['per_worker']:,.0f} | "
              f"{r['steady_per_s']:,.0f} | {r['first_batch_s']:.2f} | {', '.join(f'{v:.1f}' for v in r['load'])} |")


def _pss(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1]) << 10
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/*/stat)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        todo += kids
    return found


def cmd_memory(args: argparse.Namespace) -> None:
    folder = args.out / f"png-{args.size}-{args.n}"
    if not folder.exists():
        for start in range(0, args.n, 2000):  # in pieces: the pixels of 30,000 images need not be held at once
            pixels = synthetic((args.size, args.size), min(2000, args.n - start))
            from PIL import Image

            for k, image in enumerate(pixels):
                i = start + k
                sub = folder / "train" / f"c{i % 10}"
                sub.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(sub / f"{i:06d}.png")
    overrides = ["data.dataset=folder", f"data.root={folder}", "model.name=small-cnn",
                 f"model.options.image_size={args.size}", "epochs=1", "perturbation.steps=2", f"batch_size={args.batch_size}",
                 "validation.n=200", "evaluation.n=200", "evaluation.attacks=[pgd20]", "evaluation.sanity=false",
                 "device=cpu", f"data.loader={args.loader}", f"data.workers={args.workers}"]
    command = [sys.executable, "-m", "advlab", "train", "--preset", "pgd-at", "--quiet", "--overwrite", "--out",
               str(args.out / f"run-{args.loader}"), *overrides]
    proc = subprocess.Popen(command)
    peak_pss, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak_pss[0] = max(peak_pss[0], sum(_pss(p) for p in _tree(proc.pid)))
            time.sleep(0.2)

    start = time.perf_counter()
    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    hwm, timeline, stopped, gib = 0, [], False, 1 << 30
    while proc.poll() is None:
        try:
            hwm = max(hwm, int(next(l for l in open(f"/proc/{proc.pid}/status") if l.startswith("VmHWM")).split()[1]))
        except (OSError, StopIteration):
            pass
        elapsed = time.perf_counter() - start
        if elapsed >= 15 * len(timeline):  # the peaks so far, every 15 s
            timeline.append([round(elapsed), round((hwm << 10) / gib, 3), round(peak_pss[0] / gib, 3)])
        if args.seconds is not None and elapsed > args.seconds and not stopped:
            proc.terminate()  # SIGTERM: the run stops after this step and writes its mid-epoch checkpoint
            stopped = True
        time.sleep(0.2)
    stop.set()
    watcher.join()
    reached = None
    if stopped and (args.out / f"run-{args.loader}" / MID_EPOCH).exists():
        mid = load_checkpoint(args.out / f"run-{args.loader}" / MID_EPOCH)  # advlab's reader: no code runs
        reached = f"batch {mid['mid_epoch']['batch']} of {mid['mid_epoch']['batches']}"
    print(json.dumps({"loader": args.loader, "images": args.n, "size": args.size, "returncode": proc.returncode,
                      "stopped_at": reached or "the end", "main_peak_rss_gib": round((hwm << 10) / gib, 3),
                      "tree_peak_pss_gib": round(peak_pss[0] / gib, 3), "seconds": round(time.perf_counter() - start, 1),
                      "load": os.getloadavg(), "timeline_s_rss_pss_gib": timeline}))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write-fmnist")
    w.add_argument("out", type=Path)
    a = sub.add_parser("accuracy")
    a.add_argument("--folder", type=Path, required=True)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    a.add_argument("--epochs", type=int, default=5)
    a.add_argument("--workers", type=int, default=1)
    t = sub.add_parser("throughput")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96, 224])
    t.add_argument("--formats", nargs="+", default=["png", "jpeg"])
    t.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    t.add_argument("--n", type=int, default=3000)
    t.add_argument("--repeats", type=int, default=3, help="epochs timed per setting; the median is reported")
    m = sub.add_parser("memory")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--n", type=int, default=30000)
    m.add_argument("--size", type=int, default=96)
    m.add_argument("--loader", default="stream")
    m.add_argument("--workers", type=int, default=2)
    m.add_argument("--batch-size", type=int, default=32)
    m.add_argument("--seconds", type=float, default=None,
                   help="stop the run (SIGTERM, its mid-epoch checkpoint written) after this long; default: the whole run")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.command == "write-fmnist":
        write_fmnist(args.out)
    elif args.command == "accuracy":
        cmd_accuracy(args)
    elif args.command == "throughput":
        args.out.mkdir(parents=True, exist_ok=True)
        cmd_throughput(args)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        cmd_memory(args)


if __name__ == "__main__":
    main()
