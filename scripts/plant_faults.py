"""Plant named faults one at a time in a scratch copy of the repository and check that the tests catch each.

Each fault of :data:`FAULTS` names a file, an exact piece of its text, what to put there instead (a wrong
method: a missing factor, a reversed divergence, the wrong split...), and the tests that should notice. For
each fault the script copies the repository to a scratch folder (once), writes the fault into the copy,
runs ``pytest -x -q`` there on the fault's tests (or on the whole suite with ``--full``) with
``PYTHONPATH=<scratch>/src``, restores the file, and reports ``caught`` (a test failed), ``missed`` (every test
passed), ``timeout`` or ``error`` (pytest could not run the tests). A fault whose text is not found exactly once
in the current tree is refused (the table must stay true as the code changes). The working tree is never
touched. Ends with "N planted, M caught"; exit status 0 only when every planted fault was caught.

    python scripts/plant_faults.py                # every fault, its own tests
    python scripts/plant_faults.py --full         # every fault, the whole suite each time (slow)
    python scripts/plant_faults.py --only mart-no-confidence-factor trades-kl-reversed
    python scripts/plant_faults.py --list         # the table
    python scripts/plant_faults.py --check        # only check that every fault's text is found exactly once
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_ANYWHERE = {".git", ".venv", "__pycache__", ".pytest_cache"}
SKIP_AT_ROOT = {"runs"}  # the top-level run folder (src/advlab/runs is code)


def _ignore(folder: str, names: list[str]) -> set[str]:
    at_root = Path(folder).resolve() == ROOT
    return {n for n in names if n in SKIP_ANYWHERE or (at_root and n in SKIP_AT_ROOT)}


@dataclass(frozen=True)
class Fault:
    """One planted fault: replace ``old`` (found exactly once in ``file``) by ``new``; ``tests`` should fail."""

    name: str
    file: str  # relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments: files, node ids or "-k" expressions
    what: str


FAULTS: tuple[Fault, ...] = (
    # ---- recipes: objectives
    Fault("mart-no-confidence-factor", "src/advlab/recipes/objectives/mart.py",
          '"boundary": kl * (1.0000001 - true_prob)}', '"boundary": kl}',
          ("tests/test_objectives.py", "tests/test_step.py"), "MART's KL term without its (1 - p_y(x)) factor"),
    Fault("mart-no-boosting", "src/advlab/recipes/objectives/mart.py",
          "reduction=\"none\") - torch.log(\n            1.0001 - p_adv.gather(1, wrong[:, None]).squeeze(1) + 1e-12)",
          "reduction=\"none\") - 0 * torch.log(\n            1.0001 - p_adv.gather(1, wrong[:, None]).squeeze(1) + 1e-12)",
          ("tests/test_objectives.py", "tests/test_step.py"), "MART's boosted CE without the -log(1 - max wrong p) margin"),
    Fault("trades-kl-reversed", "src/advlab/recipes/objectives/trades.py",
          "return (log_p.exp() * (log_p - log_q)).sum(1)", "return (log_q.exp() * (log_q - log_p)).sum(1)",
          ("tests/test_objectives.py", "tests/test_step.py"), "TRADES' KL reversed: KL(p_adv || p_clean)"),
    Fault("trades-beta-ignored", "src/advlab/recipes/objectives/trades.py",
          'return {"natural": 1.0, "boundary": self.options.beta}', 'return {"natural": 1.0, "boundary": 1.0}',
          ("tests/test_objectives.py", "tests/test_step.py"), "TRADES' boundary term not multiplied by beta"),
    # ---- recipes: perturbation
    Fault("pgd-default-step-tenth", "src/advlab/recipes/perturbation/pgd.py",
          "else 2.5 * self.env.eps / o.steps", "else 0.25 * self.env.eps / o.steps",
          ("tests/test_objectives.py", "tests/test_step.py"), "the training PGD's default step ten times smaller"),
    Fault("fat-tau-off-by-one", "src/advlab/recipes/perturbation/fat.py",
          "    def early_stop(self) -> int | None:\n        return self.tau()",
          "    def early_stop(self) -> int | None:\n        return self.tau() + 1",
          ("tests/test_gair.py", "tests/test_attacks.py"), "FAT stops tau + 1 steps after the first miss"),
    # ---- recipes: labels and weighting
    Fault("gair-not-normalised", "src/advlab/recipes/weighting/gair.py",
          "return log_w.softmax(0) * len(log_w)", "return log_w.exp()",
          ("tests/test_gair.py",), "GAIR weights not normalised to mean 1"),
    Fault("noilin-never-raises", "src/advlab/recipes/labels/noilin.py",
          'raised = o.schedule == "auto" and robust_acc < self.window[slot]',
          'raised = o.schedule == "auto" and robust_acc < self.window[slot] and False',
          ("tests/test_noilin.py",), "NoiLIn never raises the noise rate"),
    Fault("sglr-shares-swapped", "src/advlab/recipes/labels/sglr.py",
          "q = o.clean_share * p_clean + (1.0 - o.clean_share) * p_adv",
          "q = o.clean_share * p_adv + (1.0 - o.clean_share) * p_clean",
          ("tests/test_sglr.py",), "SGLR's clean and adversarial shares swapped"),
    Fault("self-adaptive-weights-wrong-term", "src/advlab/recipes/weighting/self_adaptive.py",
          "return [s.name for s in specs if s.supervised]", "return [s.name for s in specs if not s.supervised]",
          ("tests/test_sglr.py",), "self-adaptive weights on the unsupervised terms"),
    # ---- attacks
    Fault("l2-projection-missing", "src/advlab/attacks/norms.py",
          "        return delta * _view(factor.to(delta.dtype), delta)\n",
          "        return delta\n",
          ("tests/test_attacks.py",), "L2 PGD never projects back onto the ball"),
    Fault("linf-random-start-outside", "src/advlab/attacks/norms.py",
          "return (2 * _rand(x.shape, x, generator, normal=False) - 1) * _view(eps, x)",
          "return (2 * _rand(x.shape, x, generator, normal=False) - 1) * 2 * _view(eps, x)",
          ("tests/test_attack_oracles.py", "tests/test_attacks.py"), "the uniform random start drawn from a ball of twice the radius"),
    Fault("linf-step-without-sign", "src/advlab/attacks/norms.py",
          "return _view(size, grad) * grad.sign()", "return _view(size, grad) * grad",
          ("tests/test_attacks.py",), "L-inf PGD steps along the raw gradient instead of its sign"),
    Fault("cw-margin-reversed", "src/advlab/attacks/losses.py",
          "m = margin(output, _labels(y, \"cw\"))", "m = -margin(output, _labels(y, \"cw\"))",
          ("tests/test_attacks.py",), "the CW loss climbs toward the true class"),
    # ---- evaluation
    Fault("evaluate-without-eval-mode", "src/advlab/evaluation/robustness.py",
          "    with eval_mode(model):\n        try:", "    with __import__(\"contextlib\").nullcontext(model):\n        try:",
          ("tests/test_eval_oracles.py", "tests/test_evaluation.py"), "evaluate runs the model in training mode"),
    Fault("robust-or-instead-of-and", "src/advlab/evaluation/result.py",
          "            flags &= outcome.correct", "            flags |= outcome.correct",
          ("tests/test_eval_oracles.py", "tests/test_evaluation.py"), "robust accuracy is the OR over attacks, not the AND"),
    # ---- data
    Fault("validation-from-test-files", "src/advlab/data/loading.py",
          'part = open_part(name, {"val": "train"}.get(split, split), root, download, options)',
          'part = open_part(name, {"val": "test"}.get(split, split), root, download, options)',
          ("tests/test_data.py", "tests/test_training_split.py"), "the validation split carved from the test files"),
    # ---- engine
    Fault("best-always-last", "src/advlab/engine/loop.py",
          'return (val["val_robust"], val["val_clean"]) > (best["val_robust"], best["val_clean"])',
          "return True",
          ("tests/test_engine_oracles.py", "-k", "best"), "best.pt is always the last epoch"),
    Fault("resume-without-rng", "src/advlab/engine/state.py",
          '    set_rng_state(checkpoint["rng"])\n', "",
          ("tests/test_train.py", "-k", "resumed_run_matches"), "a resumed run does not restore the checkpoint's RNG state"),
    Fault("label-noise-on-validation", "src/advlab/engine/run.py",
          "val_labels=val.labels,",
          "val_labels=(datasets.label_noise(val.labels, c.data.label_noise.rate, split.facts.num_classes, "
          "c.data.label_noise.kind, c.seed)[0] if c.data.label_noise.rate > 0 else val.labels),",
          ("tests/test_engine_oracles.py", "-k", "label_noise"), "label noise applied to the validation labels"),
    Fault("one-cycle-no-warmup", "src/advlab/engine/schedule.py",
          "            return lr * t / peak", "            return lr",
          ("tests/test_engine_oracles.py", "-k", "one_cycle"), "the one-cycle schedule starts at its peak rate"),
    Fault("stale-best-after-kill", "src/advlab/engine/loop.py",
          '            if improved:  # best first: last.pt is the epoch\'s commit point, so a kill between the two '
          'writes\n                run_dir.save_checkpoint("best", payload)  # redoes the epoch and never leaves a '
          'stale best.pt\n            run_dir.save_checkpoint("last", payload)\n',
          '            run_dir.save_checkpoint("last", payload)\n            if improved:\n'
          '                run_dir.save_checkpoint("best", payload)\n',
          ("tests/test_kill_resume.py", "-k", "best_pt"),
          "last.pt written before best.pt: a kill between them leaves a stale best.pt"),
    Fault("killed-write-left-behind", "src/advlab/engine/train.py",
          "            directory.remove_partial_writes()\n", "",
          ("tests/test_kill_resume.py", "-k", "writing-last"),
          "a resumed run keeps the temporary file of a killed checkpoint write"),
    Fault("attack-precision-ignored", "src/advlab/recipes/step.py",
          '    if attack_precision == "same":\n', "    if True:\n",
          ("tests/test_acceleration.py", "-k", "attack_precision"),
          "attack_precision=fp32 leaves the attack under the step's bf16 autocast"),
    Fault("attack-trains-weight-gradients", "src/advlab/attacks/pgd.py",
          "with _model_mode(model, model_mode), no_param_grad(model):", "with _model_mode(model, model_mode):",
          ("tests/test_acceleration.py", "-k", "frozen"),
          "the attack's backward computes every weight gradient (a compiled model's graph does)"),
    Fault("compile-check-tolerates-zero-gradient", "src/advlab/engine/acceleration.py",
          '    if not found["input_gradient_cosine"] >= min_cosine:\n',
          '    if not found["input_gradient_cosine"] >= -1:\n',
          ("tests/test_acceleration.py", "-k", "check_compiled"),
          "a compiled model with a zero input gradient trains silently"),
    # ---- linear evaluation (advlab probe)
    Fault("probe-encoder-not-frozen", "src/advlab/models/representation.py",
          "p.requires_grad_(id(p) in head_params)", "p.requires_grad_(True)",
          ("tests/test_probe.py", "-k", "frozen_encoder or linear_modes"),
          "SLF/ALF train the encoder's weights too (FrozenEncoder leaves their gradients on)"),
    Fault("probe-bn-statistics-updated", "src/advlab/models/representation.py",
          "        self.model.eval()\n", "        self.model.train(mode)\n",
          ("tests/test_probe.py", "-k", "frozen_encoder or linear_modes"),
          "SLF/ALF run the frozen encoder's batch norm in train mode, so its running statistics move"),
    Fault("probe-init-skipped", "src/advlab/runs/warm_start.py",
          'load_encoder_state(model, encoder_state_dict(source_model), f"init.from {source}")',
          "encoder_state_dict(source_model)",
          ("tests/test_probe.py", "-k", "starts_from or linear_modes"),
          "init.part encoder loads nothing: the probe trains a head on a random encoder"),
    Fault("ddp-remainder-dropped", "src/advlab/distributed.py",
          "    return start, start + base + (1 if rank < extra else 0)\n", "    return rank * base, rank * base + base\n",
          ("tests/test_distributed.py", "-k", "shard"), "the remainder of a global batch is dropped from the shards"),
    # ---- self-supervised adversarial training (SSAT)
    Fault("ssat-keeps-unfooled-pairs", "src/advlab/recipes/objectives/ssat.py",
          'keep = fooled if o.keep == "fooled" else torch.ones_like(fooled)', "keep = torch.ones_like(fooled)",
          ("tests/test_ssat.py",), "SSAT's MI term uses every (x, x') pair, not only those that fool the kNN"),
    Fault("ssat-bank-rows-stale", "src/advlab/recipes/perturbation/pgd_knn.py",
          "            self.bank[step.index.to(self.bank.device)] = ", "            _ = ",
          ("tests/test_ssat.py",), "the kNN bank keeps stale features of the batch's samples between full refreshes"),
    # ---- the kNN classifier and its evaluation
    Fault("knn-soft-vote-detached", "src/advlab/models/knn.py",
          "weights = torch.softmax(sims / self.temperature, dim=1)",
          "weights = torch.softmax(sims.detach() / self.temperature, dim=1)",
          ("tests/test_knn.py",), "the kNN's soft vote cut from the graph: no input gradient"),
    Fault("knn-wrong-neighbours", "src/advlab/models/knn.py",
          "index = sims.detach().topk(self.k, dim=1).indices",
          "index = sims.detach().topk(self.k, dim=1, largest=self.metric != \"l2\").indices",
          ("tests/test_knn.py",), "the L2 kNN takes the k farthest bank rows instead of the nearest"),
    Fault("knn-majority-rounding", "src/advlab/models/knn.py",
          "return (counts + 0.5 * soft) / self.k", "return (counts + soft) / self.k",
          ("tests/test_knn.py",), "majority scores counts + p: a soft vote near 1 ties a class one vote ahead"),
    Fault("knn-guide-guides-of-own-class", "src/advlab/models/knn.py",
          '        mean.scatter_(1, y[:, None], float("-inf"))\n', "",
          ("tests/test_knn.py",), "knn-guide may take the point's own class as its target"),
    Fault("dsr-over-all-points", "src/advlab/evaluation/result.py",
          "return int((clean & flags).sum()) / n if n else None",
          "return int((clean & flags).sum()) / len(clean) if n else None",
          ("tests/test_knn.py",), "the defence success rate divided by all points, not the correct clean ones"),
    Fault("knn-bank-without-scenarios", "src/advlab/evaluation/cli.py",
          'split = data.run_training_split(settings, config["seed"])',
          'split = data.training_split(settings["name"], root=settings["root"], train_size=settings["train_size"], '
          'seed=config["seed"])',
          ("tests/test_knn_eval.py",), "advlab eval's kNN bank ignores the run's meta split, imbalance and label noise"),
    Fault("ddp-lookahead-local-gradient", "src/advlab/recipes/weighting/lookahead.py",
          "    if not collective.distributed:\n        return grads\n", "    return grads\n",
          ("tests/test_distributed.py", "-k", "look_ahead or caat_meta_step"),
          "under torchrun CAAT's look-ahead steps with the local shard's gradient, not the global batch's"),
    Fault("ddp-meta-gradient-not-summed", "src/advlab/recipes/weighting/caat.py",
          "*summed, loss_sum = all_reduce_sum_list(self.env.collective, [*used, meta_loss.detach()])",
          "*summed, loss_sum = [*used, meta_loss.detach()]",
          ("tests/test_distributed.py", "-k", "caat_meta_step"),
          "under torchrun each rank steps CAAT's meta-net with its own share of the meta-gradient"),
    Fault("ddp-frl-counts-not-summed", "src/advlab/recipes/weighting/frl.py",
          "    counts = comm.all_reduce_sum(counts)", "    counts = counts.clone()",
          ("tests/test_distributed.py", "-k", "meta_split_errors"),
          "under torchrun FRL's duals come from each rank's share of the meta split only"),
    Fault("ddp-frl-weights-per-shard", "src/advlab/recipes/weighting/frl.py",
          "frl = self.frl_term_weights(*self.global_labels(step.y))", "frl = self.frl_term_weights(step.y)",
          ("tests/test_distributed.py", "-k", "frl_on_2_processes"),
          "under torchrun FRL's class weights are normalised over each rank's shard, not the global batch"),
    # ---- data: layouts and loaders
    Fault("stl10-row-major", "src/advlab/data/stl10.py", "transpose=True), labels", "transpose=False), labels",
          ("tests/test_sources.py", "-k", "stl10_reads"), "STL-10's column-major images read row-major (transposed)"),
    Fault("imagenet-devkit-ids-as-sorted-labels", "src/advlab/data/imagenet.py",
          "            out.append(to_wnid[int(text)])", "            out.append(sorted(to_wnid.values())[int(text) - 1])",
          ("tests/test_sources.py", "-k", "devkit_ids"),
          "the devkit's ILSVRC2012_IDs taken as positions in the sorted wnids, not mapped through meta.mat"),
    Fault("tiny-imagenet-wnids-file-order", "src/advlab/data/tiny_imagenet.py", "    return sorted(wnids)",
          "    return wnids", ("tests/test_sources.py", "-k", "tiny_imagenet_classes"),
          "Tiny-ImageNet's classes in wnids.txt's order, not ImageFolder's sorted order"),
    Fault("stream-crop-offsets-swapped", "src/advlab/data/transforms.py", "    dy, dx = divmod(choice // 2, k)",
          "    dx, dy = divmod(choice // 2, k)", ("tests/test_loaders.py", "-k", "same_batches"),
          "the streaming loader's crop shifts rows where the in-memory loader shifts columns"),
    Fault("stream-start-at-ignored", "src/advlab/data/stream_loader.py", "range(self._start, len(self))",
          "range(0, len(self))", ("tests/test_loaders.py", "-k", "start_at"),
          "a streamed epoch resumed mid-way restarts from its first batch"),
    Fault("stream-loader-draws-global-rng", "src/advlab/data/stream_loader.py",
          "                            generator=torch.Generator())  # its base seed",
          "                            generator=None)  # its base seed",
          ("tests/test_data_runs.py", "-k", "same_metrics"),
          "the streaming loader's DataLoader draws its base seed from the global RNG (the attacks' random starts move)"),
    Fault("knn-bank-with-unlabeled-images", "src/advlab/engine/run.py",
          "        images, labels = self.data.split.labelled()  # the kNN's bank",
          "        images, labels = self.data.split.images, self.data.split.labels  # the kNN's bank",
          ("tests/test_data_runs.py", "-k", "simclr_on_stl10"),
          "the kNN's bank holds the unlabeled images (label -1) beside the training images"),
)


def check_table(root: Path = ROOT, faults: tuple[Fault, ...] = FAULTS) -> list[str]:
    """The problems of the table against the tree at ``root``: duplicate names, missing files, a fault's
    text found other than exactly once, a fault that changes nothing. Empty when the table is true."""
    problems, seen = [], set()
    for f in faults:
        if f.name in seen:
            problems.append(f"{f.name}: duplicate name")
        seen.add(f.name)
        path = root / f.file
        if not path.is_file():
            problems.append(f"{f.name}: no file {f.file}")
            continue
        count = path.read_text().count(f.old)
        if count != 1:
            problems.append(f"{f.name}: its text is found {count} times in {f.file}, not exactly once")
        if f.old == f.new:
            problems.append(f"{f.name}: the new text equals the old")
    return problems


def run_tests(tests: tuple[str, ...], scratch: Path, timeout: float, python: str) -> tuple[str, float, str]:
    """``pytest -x -q tests`` in ``scratch``: (caught | missed | timeout | error, seconds, the first failure)."""
    env = {**os.environ, "PYTHONPATH": str(scratch / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
        status = {0: "missed", 1: "caught"}.get(done.returncode, "error")
        lines = (done.stdout + done.stderr).strip().splitlines()
        last = next((line for line in reversed(lines) if line.strip()), "")
        if status == "caught":
            failed = [line for line in lines if line.startswith("FAILED") or line.startswith("ERROR")]
            last = (failed[0] if failed else last)[:160]
    except subprocess.TimeoutExpired:
        status, last = "timeout", f"no result in {timeout:.0f} s"
    return status, time.perf_counter() - start, last


def run_fault(fault: Fault, scratch: Path, full: bool, timeout: float, python: str) -> tuple[str, float, str]:
    """Plant ``fault`` in ``scratch``, run its tests, restore the file; (status, seconds, first failure)."""
    path = scratch / fault.file
    original = path.read_text()
    if original.count(fault.old) != 1:
        return "refused", 0.0, f"text found {original.count(fault.old)} times"
    path.write_text(original.replace(fault.old, fault.new))
    try:
        return run_tests(() if full else fault.tests, scratch, timeout, python)
    finally:
        path.write_text(original)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="NAME", help="plant only these faults")
    p.add_argument("--full", action="store_true", help="run the whole suite for every fault, not its own tests")
    p.add_argument("--timeout", type=float, default=600, help="seconds per fault (default 600)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the first run of each test selection without a fault (it must pass, or a failure "
                        "would count as a caught fault)")
    p.add_argument("--keep", action="store_true", help="keep the scratch copy (its path is printed)")
    p.add_argument("--list", action="store_true", help="print the table and exit")
    p.add_argument("--check", action="store_true", help="only check the table against the tree")
    args = p.parse_args(argv)

    faults = FAULTS
    if args.only:
        unknown = sorted(set(args.only) - {f.name for f in FAULTS})
        if unknown:
            p.error(f"unknown fault(s): {', '.join(unknown)}; see --list")
        faults = tuple(f for f in FAULTS if f.name in args.only)
    if args.list:
        for f in faults:
            print(f"{f.name:34s} {f.file:48s} {f.what}  [{' '.join(f.tests)}]")
        return 0
    problems = check_table(ROOT, faults)
    if problems:
        print("the fault table does not match the tree:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.check:
        print(f"{len(faults)} faults, each text found exactly once")
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="advlab-faults-")) / "repo"
    shutil.copytree(ROOT, scratch, ignore=_ignore)
    print(f"scratch copy: {scratch}", flush=True)
    caught, start = 0, time.perf_counter()
    try:
        if not args.no_baseline:
            selections = [()] if args.full else list(dict.fromkeys(f.tests for f in faults))
            for tests in selections:
                status, seconds, last = run_tests(tests, scratch, args.timeout, sys.executable)
                shown = "passed" if status == "missed" else status
                print(f"baseline {shown:8s} {' '.join(tests) or 'the whole suite'}  {seconds:.1f} s", flush=True)
                if status != "missed":
                    print(f"the tests fail without any fault planted: {last}", file=sys.stderr)
                    return 2
        for f in faults:
            status, seconds, last = run_fault(f, scratch, args.full, args.timeout, sys.executable)
            caught += status == "caught"
            print(f"{status:8s} {f.name:34s} {seconds:6.1f} s  {last}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch.parent, ignore_errors=True)
    print(f"{len(faults)} planted, {caught} caught ({time.perf_counter() - start:.0f} s)")
    return 0 if caught == len(faults) else 1


if __name__ == "__main__":
    sys.exit(main())
