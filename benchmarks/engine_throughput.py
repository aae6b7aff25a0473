"""Engine overhead: images/s of PGD-10 adversarial training, advlab's engine against a plain loop.

Both do the same work on the same device: small-cnn (or --model), batch 128, PGD-10 (eps 0.1, step
0.025, uniform start, eval-mode attack, CE), SGD with momentum, uint8 data indexed and converted per
batch, no augmentation. They alternate for --rounds rounds of --batches batches; the ratio of the
median throughputs is reported.

    python benchmarks/engine_throughput.py --batches 20 --rounds 3
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

import advlab
from advlab.config import load_config
from advlab.data import DeviceLoader
from advlab.engine.trainer import Trainer


def plain_loop(model, images, labels, batches, batch_size, eps, steps, lr, device, precision="fp32") -> float:
    """A hand-written PGD-AT loop: what a researcher's 60-line script does."""
    def cast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    alpha = 2.5 * eps / steps
    order = torch.randperm(len(labels), device=device)
    start = time.perf_counter()
    for b in range(batches):
        idx = order[b * batch_size:(b + 1) * batch_size]
        x = images[idx].float().div_(255)
        y = labels[idx]
        ctx = cast()
        ctx.__enter__()
        model.eval()
        delta = torch.empty_like(x).uniform_(-eps, eps)
        x_adv = (x + delta).clamp_(0, 1)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(model(x_adv), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp_(0, 1)
        model.train()
        loss = F.cross_entropy(model(x_adv), y)
        ctx.__exit__(None, None, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - start)


def engine_epoch(trainer: Trainer, batches: int) -> float:
    """The engine's training loop over ``batches`` batches (validation excluded)."""
    trainer.loader.images = trainer.loader.images[: batches * trainer.config.batch_size]
    trainer.loader.labels = trainer.loader.labels[: batches * trainer.config.batch_size]
    stats = trainer.train_epoch(0)
    return stats["images_per_second"]


def flop_utilisation(model, images, labels, batch_size, eps, device, images_per_second, precision) -> dict:
    """FLOPs per training image from one forward pass counted by torch's FLOP counter, and the bf16 peak.

    A PGD-10 training image costs 10 attack steps (forward + backward to the input only, about 2
    forwards each) and one training pass (forward + full backward, about 3 forwards): 23 forwards.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    x = images[:batch_size].float().div(255)
    with torch.no_grad(), counter:
        model(x)
    forward_flops = counter.get_total_flops() / len(x)
    flops_per_image = 23 * forward_flops
    peak = None
    if device.type == "cuda":
        a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
        b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        peak = 10 * 2 * 8192 ** 3 / (time.perf_counter() - start)
    achieved = flops_per_image * images_per_second
    return {"forward_flops_per_image": forward_flops, "flops_per_training_image": flops_per_image, "achieved_flops_per_second": achieved,
            "bf16_matmul_peak_flops_per_second": peak, "mfu": achieved / peak if peak else None}


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison with the command-line arguments ``argv`` (default: sys.argv); print and return the
    result (images/s of each loop per round, their medians and the ratio engine / plain)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--shape", default=None,
                   help="train on random uint8 images of this CxHxW shape (content does not change speed)")
    p.add_argument("--mfu", action="store_true", help="also count FLOPs and measure the bf16 matmul peak")
    args = p.parse_args(argv)

    config = load_config("pgd-at", [f"model.name={args.model}", f"data.name={args.dataset}",
                                    f"batch_size={args.batch_size}", f"device={args.device}",
                                    f"precision={args.precision}", "data.crop_padding=0", "data.flip=false",
                                    "perturbation.steps=10", "validation.n=10"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, tmp, progress=False)
        device = trainer.device
        if args.shape:
            c, h, w = (int(v) for v in args.shape.split("x"))
            n = args.batches * args.batch_size
            g = torch.Generator().manual_seed(0)
            images = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
            labels = torch.randint(0, trainer.num_classes, (n,), generator=g)
            trainer.loader = DeviceLoader(images, labels, args.batch_size, device=device, seed=0)
            trainer.model = advlab.models.create(args.model, num_classes=trainer.num_classes, in_channels=c).to(device)
            trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=config.optimizer.lr, momentum=0.9,
                                                weight_decay=5e-4)
        images, labels = trainer.loader.images, trainer.loader.labels
        plain_model = advlab.models.create(args.model, num_classes=trainer.num_classes,
                                           in_channels=images.shape[1]).to(device)
        full_images, full_labels = images, labels
        plain, engine = [], []
        for _ in range(args.rounds):
            plain.append(plain_loop(plain_model, images, labels, args.batches, args.batch_size, config.eps, 10,
                                    config.optimizer.lr, device, args.precision))
            trainer.loader.images, trainer.loader.labels = full_images, full_labels
            engine.append(engine_epoch(trainer, args.batches))
    result = {
        "model": args.model, "device": str(device), "precision": args.precision, "batch_size": args.batch_size,
        "batches": args.batches, "rounds": args.rounds, "threads": torch.get_num_threads(),
        "plain_images_per_second": statistics.median(plain), "engine_images_per_second": statistics.median(engine),
        "plain_runs": plain, "engine_runs": engine, "torch": torch.__version__, "machine": platform.processor(),
    }
    result["ratio"] = result["engine_images_per_second"] / result["plain_images_per_second"]
    if args.mfu:
        result.update(flop_utilisation(plain_model, images, labels, args.batch_size, config.eps, device,
                                       result["engine_images_per_second"], args.precision))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
