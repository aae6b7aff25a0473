"""The measured effect of each difference advlab keeps from the official CAAT, FRL, TRADES-AFF and DkNN code.

docs/methods/caat.md and docs/methods/ssat.md list where advlab departs from the papers' code; every difference
they keep (rather than align) is written beside a number from this script, on a trained run's checkpoint:

    python benchmarks/fidelity.py start RUN       # the 0.001 Gaussian start clamped to [0, 1] (CAAT, TRADES/AFF)
    python benchmarks/fidelity.py frl-eps RUN     # FRL's duals from PGD-20 at the run's eps vs the code's 0.8 eps
    python benchmarks/fidelity.py knn-ties RUN    # kNN count ties: the soft vote (advlab) vs the smallest class (DkNN)
    python benchmarks/fidelity.py meta-steps RUN...  # bi-level steps per epoch: advlab's counter vs the code's
    python benchmarks/fidelity.py meta-gradient RUN  # the meta-gradient with the features attached vs detached

RUN is a run directory (its best checkpoint and stored config are read). Each prints a markdown table and the
command that made it. The official code's forms are written out here (xiaolingzhou98/CAAT utils.py,
yaodongyu/TRADES trades.py, chawins/knn-defense lib/dknn.py), never advlab's attack engine, so both sides of
each difference are computed the same way except for the difference itself.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from advlab.config import read_config
from advlab.data import load, run_training_split
from advlab.models import KNNClassifier
from advlab.models.knn import encode
from advlab.models.representation import feature_extractor
from advlab.recipes.recipe import part_class
from advlab.recipes.weighting.frl import FRLDuals, FRLOptions, class_errors
from advlab.runs import load_model


def _code_views(model, x, y, eps, step_size, steps, noise, clamp_start, anti=True):
    """CAAT's ``caat_adv`` (utils.py lines 242-280; TRADES' KL attack, trades.py lines 31-41, is its adversarial
    half): the adversarial view by KL ascent and the anti-adversarial view by CE descent, from x + 0.001 noise,
    as the code does (``clamp_start=False``) or clamped to [0, 1] first (advlab's engine)."""
    p_clean = F.softmax(model(x), dim=1).detach()
    views = []
    for direction, start_noise in ((1, noise[0]), (-1, noise[1])) if anti else ((1, noise[0]),):
        xa = x + 0.001 * start_noise
        if clamp_start:
            xa = xa.clamp(0, 1)
        for _ in range(steps):
            xa = xa.detach().requires_grad_(True)
            logits = model(xa)
            loss = (F.kl_div(F.log_softmax(logits, dim=1), p_clean, reduction="sum") if direction == 1
                    else F.cross_entropy(logits, y))
            grad = torch.autograd.grad(loss, [xa])[0]
            xa = torch.min(torch.max(xa.detach() + direction * step_size * grad.sign(), x - eps), x + eps).clamp(0, 1)
        views.append(xa.detach())
    return views


def start(run: Path, n: int, seed: int) -> str:
    """The views and loss terms from the code's unclamped start and from advlab's clamped one, same noise."""
    config = read_config(run / "config.yaml")
    model, _ = load_model(run, "best")
    images, labels = load(config.data.dataset, "test")
    x, y = images[:n].float().div(255), labels[:n]
    eps = config.eps
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((2, *x.shape), generator=g)
    outside = float(((x + 0.001 * noise[0] < 0) | (x + 0.001 * noise[0] > 1)).float().mean())
    rows = []
    for name, steps, step, anti in (("CAAT views (10 steps of 0.2 eps)", 10, 0.2 * eps, True),
                                    ("TRADES / AFF KL attack (10 steps of eps/4)", 10, eps / 4, False)):
        code = _code_views(model, x, y, eps, step, steps, noise, clamp_start=False, anti=anti)
        ours = _code_views(model, x, y, eps, step, steps, noise, clamp_start=True, anti=anti)
        with torch.no_grad():
            logits = model(x)
            kl = [F.kl_div(F.log_softmax(model(v[0]), 1), F.softmax(logits, 1), reduction="none").sum(1).mean()
                  for v in (code, ours)]
            cells = [f"{float(kl[0]):.5f}", f"{float(kl[1]):.5f}"]
            if anti:
                ce = [F.cross_entropy(model(v[1]), y) for v in (code, ours)]
                cells += [f"{float(ce[0]):.5f}", f"{float(ce[1]):.5f}"]
            else:
                cells += ["–", "–"]
        moved = [float((a - b).abs().max()) for a, b in zip(code, ours)]
        differ = [float(((a - b).abs() > 1e-6).float().mean()) for a, b in zip(code, ours)]
        rows.append(f"| {name} | {100 * outside:.1f}% | " + " / ".join(f"{100 * d:.2f}%" for d in differ)
                    + " | " + " / ".join(f"{m:.4f}" for m in moved) + " | " + " | ".join(cells) + " |")
    head = ["| attack | start pixels outside [0, 1] | view pixels that differ (adv / anti) | largest difference "
            "(adv / anti) | KL(p(x) ‖ p(x_adv)) code | advlab | CE(x_anti) code | advlab |",
            "|---|---|---|---|---|---|---|---|"]
    return "\n".join([f"`{run}` best checkpoint, first {n} test images, eps {eps}, the same N(0, I) draws "
                      f"(seed {seed}):", "", *head, *rows])


def frl_eps(run: Path, seed: int) -> str:
    """FRL's per-class errors on the run's meta split at eps and at 0.8 eps (the code's 8/255 evaluation of a
    10/255 training run), and the class weights one dual update gives from zero duals."""
    config = read_config(run / "config.yaml")
    model, _ = load_model(run, "best")
    split = run_training_split(config.data, config.seed)
    c = int(split.meta_labels.max()) + 1
    name, options = config.recipe_spec()["weighting"]
    frl = FRLOptions(**{k: v for k, v in vars(part_class("weighting", name).Options(**options)).items()
                        if k in FRLOptions.__dataclass_fields__})  # the run's FRL options, defaults where not set
    out = {}
    for scale in (1.0, 0.8):
        clean, boundary = class_errors(model, split.meta_images, split.meta_labels, c, scale * config.eps,
                                       config.norm, frl.attack_steps, frl.batch_size, torch.device("cpu"),
                                       torch.Generator().manual_seed(seed))
        duals = FRLDuals(c, frl)
        duals.update(0, clean, boundary)
        out[scale] = (boundary, duals)
    b1, d1 = out[1.0]
    b08, d08 = out[0.8]
    fmt = lambda t: "[" + ", ".join(f"{v:.3f}" for v in t.tolist()) + "]"  # noqa: E731
    lines = [f"`{run}` best checkpoint, its meta split ({len(split.meta_labels)} images), PGD-{frl.attack_steps} "
             f"step eps/4 (the run's FRL evaluation), start seed {seed}:", "",
             "| eval eps | boundary error per class | mean | w1 (boundary weights) after one update | w2 (bound multipliers) |",
             "|---|---|---|---|---|",
             f"| {config.eps} (advlab: the run's eps) | {fmt(b1)} | {float(b1.mean()):.3f} | {fmt(d1.boundary_weights)} | "
             f"{fmt(d1.bound_multipliers)} |",
             f"| {0.8 * config.eps:.3f} (the code's 8/10 of it) | {fmt(b08)} | {float(b08.mean()):.3f} | "
             f"{fmt(d08.boundary_weights)} | {fmt(d08.bound_multipliers)} |", "",
             f"largest difference: w1 {float((d1.boundary_weights - d08.boundary_weights).abs().max()):.4f}, "
             f"w2 {float((d1.bound_multipliers - d08.bound_multipliers).abs().max()):.4f}"]
    return "\n".join(lines)


def knn_ties(run: Path, n: int, k: int) -> str:
    """Share of test points whose kNN count ties, and the clean accuracy under each tie rule."""
    config = read_config(run / "config.yaml")
    model, _ = load_model(run, "best")
    split = run_training_split(config.data, config.seed)
    encoder = feature_extractor(model)
    c = int(split.labels.max()) + 1
    knn = KNNClassifier(encoder, encode(encoder, split.images), split.labels, c, k=k, metric="cosine")
    images, labels = load(config.data.dataset, "test")
    x, y = images[:n].float().div(255), labels[:n]
    with torch.no_grad():
        counts, soft = knn.votes(encode(encoder, x))
    top = counts.max(1).values
    tied = (counts == top[:, None]).sum(1) > 1
    ours = (counts + 0.5 * soft).argmax(1)  # advlab: ties of the count to the larger soft vote
    dknn = counts.argmax(1)  # DkNN (lib/dknn.py classify, numpy argmax): the first, smallest class
    return "\n".join([
        f"`{run}` best checkpoint ({'projection head: encoder' if config.model.head == 'projection' else 'penultimate features'}), "
        f"kNN k={k} cosine majority over its training split ({len(split.labels)} images), first {n} test images:", "",
        "| points with a count tie | predictions that differ | clean accuracy, advlab (soft vote) | DkNN (smallest class) |",
        "|---|---|---|---|",
        f"| {100 * float(tied.float().mean()):.1f}% | {100 * float((ours != dknn).float().mean()):.1f}% | "
        f"{100 * float((ours == y).float().mean()):.1f}% | {100 * float((dknn == y).float().mean()):.1f}% |"])


def meta_steps(runs: list[Path]) -> str:
    """Bi-level steps per epoch of each run (``caat_meta_steps``) beside what the code's per-epoch counter gives
    (``(batch_idx + 1) % meta_every == 0`` over the epoch's full batches, utils.py line 297; its training loader
    drops the last partial batch, NLT_CIFAR.py line 115)."""
    lines = ["| run | meta_every | steps per epoch | advlab: meta steps per epoch | the code's counter |", "|---|---|---|---|---|"]
    for run in runs:
        config = read_config(run / "config.yaml")
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        n = len(run_training_split(config.data, config.seed).labels)
        name, options = config.recipe_spec()["weighting"]
        weighting = part_class("weighting", name).Options(**options)  # the part's defaults where not set
        every, warm, batch = weighting.meta_every, weighting.warmup_epochs, config.batch_size
        full = n // batch
        code = [0 if e < warm else full // every for e in range(len(rows))]
        lines.append(f"| `{run}` | {every} | {-(-n // batch)} (full: {full}) | "
                     f"{[r['caat_meta_steps'] for r in rows]} | {code} |")
    return "\n".join(lines)


def meta_gradient(run: Path, seed: int, temperatures: tuple[float, ...] = (1.0, 0.05, 0.001)) -> str:
    """CAAT's meta-gradient on the run's best model, the first 128 images of its training split and its meta
    split, with the meta-net's features attached (the official form) and detached (advlab's former form): its
    largest entry in each form and the cosine between the two, at several temperatures (the meta-net freshly
    initialised as the part does; the optimiser the run's, without momentum buffers)."""
    from advlab.engine.optimizers import create_optimizer
    from advlab.recipes import RecipeEnv, create_recipe, compute_loss

    config = read_config(run / "config.yaml")
    split = run_training_split(config.data, config.seed)
    c = int(split.labels.max()) + 1
    x, y = split.images[:128].float().div(255), split.labels[:128]
    lines = [f"`{run}` best checkpoint, a batch of its first 128 training images, the meta batch from its meta split "
             f"({len(split.meta_labels)} images), views from seed {seed}:", "",
             "| temperature | largest entry, attached (official) | detached | cosine(attached, detached) |",
             "|---|---|---|---|"]
    for temperature in temperatures:
        grads = {}
        for form in ("attached", "detached"):
            model, _ = load_model(run, "best")
            optimizer = create_optimizer(model.parameters(), config.optimizer)
            env = RecipeEnv(num_train=len(split.labels), num_classes=c, epochs=config.epochs, eps=config.eps,
                            norm=config.norm, device=torch.device("cpu"), seed=config.seed,
                            class_counts=torch.bincount(split.labels, minlength=c).tolist(),
                            meta_images=split.meta_images, meta_labels=split.meta_labels, model=model,
                            optimizer=optimizer)
            parts = config.recipe_spec()
            name, options = parts["weighting"]
            parts["weighting"] = (name, {**options, "meta_features": form, "temperature": temperature,
                                         "meta_every": 10 ** 6})
            recipe = create_recipe(parts, env)
            torch.manual_seed(seed)
            step = compute_loss(model.train(), x, y, torch.arange(len(y)), 0, recipe)
            w = recipe.weighting
            torch.manual_seed(seed + 1)
            loss = w.meta_step_loss(step, w.features(step.outputs["clean"].detach(), y))
            grads[form] = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(w.meta_net.parameters()))])
        a, d = grads["attached"], grads["detached"]
        cosine = float(F.cosine_similarity(a[None], d[None]))
        lines.append(f"| {temperature:g} | {float(a.abs().max()):.3g} | {float(d.abs().max()):.3g} | {cosine:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["start", "frl-eps", "knn-ties", "meta-steps", "meta-gradient"])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--n", type=int, default=1000, help="first N test images")
    p.add_argument("--k", type=int, default=75, help="kNN neighbours (knn-ties)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print("command: python benchmarks/fidelity.py " + " ".join(sys.argv[1:] if argv is None else argv))
    if args.what == "meta-steps":
        print(meta_steps(args.runs))
        return
    for run in args.runs:
        if args.what == "start":
            print(start(run, args.n, args.seed))
        elif args.what == "frl-eps":
            print(frl_eps(run, args.seed))
        elif args.what == "meta-gradient":
            print(meta_gradient(run, args.seed))
        else:
            print(knn_ties(run, args.n, args.k))


if __name__ == "__main__":
    main()
