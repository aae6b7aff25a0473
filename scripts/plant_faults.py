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
    Fault("n-fgsm-projected", "src/advlab/recipes/perturbation/nfgsm.py",
          "return o.projection if o.projection is not None else math.inf",
          "return o.projection if o.projection is not None else self.env.eps",
          ("tests/test_single_step.py",), "N-FGSM projects its perturbation back onto the eps ball"),
    Fault("n-fgsm-noise-eps", "src/advlab/recipes/perturbation/nfgsm.py",
          "NOISE_TIMES_EPS = 2.0", "NOISE_TIMES_EPS = 1.0",
          ("tests/test_single_step.py",), "N-FGSM's noise drawn in [-eps, eps] instead of [-2 eps, 2 eps]"),
    Fault("n-fgsm-step-125-eps", "src/advlab/recipes/perturbation/nfgsm.py",
          "STEP_TIMES_EPS = 1.0", "STEP_TIMES_EPS = 1.25",
          ("tests/test_single_step.py",), "N-FGSM's step 1.25 eps (fast AT's) instead of the paper's eps"),
    Fault("start-eps-ignored", "src/advlab/attacks/pgd.py",
          "x_adv = _start(x, start_t, geometry, random_start, generator)",
          "x_adv = _start(x, eps_t, geometry, random_start, generator)",
          ("tests/test_attacks.py", "-k", "start_eps"), "the engine draws its random start in the eps ball, not start_eps's"),
    # ---- recipes: objectives (GradAlign)
    Fault("grad-align-cosine-sign", "src/advlab/recipes/objectives/grad_align.py",
          '"align": 1.0 - cos}', '"align": 1.0 + cos}',
          ("tests/test_single_step.py",), "GradAlign's term rewards misaligned gradients: 1 + cos"),
    Fault("grad-align-lambda-ignored", "src/advlab/recipes/objectives/grad_align.py",
          'return {"adversarial": 1.0, "align": self.options.align_weight}',
          'return {"adversarial": 1.0, "align": 1.0}',
          ("tests/test_single_step.py",), "GradAlign's term not multiplied by lambda"),
    Fault("grad-align-clean-gradient-trained", "src/advlab/recipes/objectives/grad_align.py",
          "g_clean = loss_input_gradient(model, x, target, create_graph=False)",
          "g_clean = loss_input_gradient(model, x, target, create_graph=True)",
          ("tests/test_single_step.py",), "GradAlign differentiates g(x) too (the official code detaches it)"),
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
    Fault("ce-gradient-underflows", "src/advlab/attacks/pgd.py",
          "    loss_fn = ascent_form(get_loss(loss))", "    loss_fn = get_loss(loss)",
          ("tests/test_attack_edges.py", "-k", "scaled or saturated"),
          "the attack differentiates the cross-entropy itself: its gradient is 0 where the softmax saturates"),
    Fault("ce-margin-over-every-class", "src/advlab/attacks/losses.py",
          'torch.logsumexp(z.masked_fill(true, float("-inf")), dim=1) - z_y', "torch.logsumexp(z, dim=1) - z_y",
          ("tests/test_attack_edges.py", "-k", "scaled or saturated"),
          "the soft margin's logsumexp includes the true class: the cross-entropy again, underflow included"),
    Fault("box-no-tolerance", "src/advlab/attacks/box.py",
          "    return max(BOX_TOLERANCE, torch.finfo(dtype).eps)", "    return 0.0",
          ("tests/test_attack_edges.py", "-k", "tolerance or rounding"),
          "images a rounding error outside [0, 1] (-3e-8) are refused"),
    Fault("box-no-limit", "src/advlab/attacks/box.py",
          "    if lo < -tol or hi > 1 + tol:", "    if False:",
          ("tests/test_attack_edges.py", "-k", "beyond"),
          "images far outside [0, 1] (normalised ones) are clamped silently instead of refused"),
    Fault("pgd-attacks-the-unclamped-input", "src/advlab/attacks/pgd.py",
          "        x = x.clamp(0, 1)\n", "",
          ("tests/test_attack_edges.py", "-k", "engine_clamps"),
          "pgd counts the values outside [0, 1] but attacks (and projects around) the unclamped images"),
    # ---- evaluation
    Fault("evaluate-clamps-without-counting", "src/advlab/evaluation/robustness.py",
          "                      seconds=time.perf_counter() - start, clamped=clamped,",
          "                      seconds=time.perf_counter() - start, clamped=0,",
          ("tests/test_attack_edges.py", "-k", "evaluate_clamps"),
          "evaluate clamps images a rounding error outside [0, 1] without saying so in its result"),
    Fault("autoattack-dlr-needs-4-classes", "src/advlab/evaluation/autoattack.py",
          '"apgd-dlr": 3, "apgd-t": 4', '"apgd-dlr": 4, "apgd-t": 4',
          ("tests/test_autoattack_classes.py",),
          "advlab refuses APGD-DLR with 3 classes (versions apgd and rand), which pyautoattack runs"),
    Fault("autoattack-width-unchecked", "src/advlab/evaluation/autoattack.py",
          "        problem = autoattack_class_problem(self.aa.attacks_to_run, out.shape[1], self.version)\n",
          "        problem = None\n",
          ("tests/test_autoattack_classes.py",),
          "AutoAttack runs on a model with fewer logits than its declared classes and dies in pyautoattack"),
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
    Fault("collapse-guard-never-stops", "src/advlab/engine/loop.py",
          "            if state.stopped:\n                break\n", "",
          ("tests/test_collapse.py",), "a run whose robustness collapsed keeps training despite stop_on_collapse"),
    Fault("collapse-without-rising-training-accuracy", "src/advlab/engine/collapse.py",
          ' and last["train_acc"] > previous["train_acc"]', "",
          ("tests/test_collapse.py",), "a plain drop of validation robustness is called catastrophic overfitting"),
    Fault("speedrun-chosen-with-a-seed-missing", "benchmarks/time_to_robust.py",
          'if all(c.reached["reached"] for c in runs)', 'if any(c.reached["reached"] for c in runs)',
          ("tests/test_speedrun.py", "-k", "choose"), "a recipe one of whose seeds missed the target can be the speedrun"),
    Fault("speedrun-chosen-on-the-test-points", "benchmarks/time_to_robust.py",
          'statistics.mean(c.reached["train_seconds"] for c in runs)',
          '-statistics.mean(c.reached.get("test_autoattack", 0) for c in runs)',
          ("tests/test_speedrun.py", "-k", "choose"), "the speedrun chosen by test accuracy, not validation time"),
    Fault("speedrun-from-any-contestant", "benchmarks/time_to_robust.py",
          "if c.key in ADVLAB_KEYS and c.reached is not None", "if c.reached is not None",
          ("tests/test_speedrun.py", "-k", "choose"), "the plain loop or ART can be named advlab's speedrun"),
    Fault("speedrun-preset-not-the-choice", "src/advlab/configs/speedrun.yaml",
          "perturbation: {name: pgd, steps: 2, step_size: 0.05}", "perturbation: {name: pgd, steps: 2, step_size: 0.06}",
          ("tests/test_speedrun.py",), "the speedrun preset drifts from the recipe the race chose"),
    Fault("speedrun-raced-at-the-flag-epochs", "benchmarks/time_to_robust.py",
          '"speedrun", epochs=load_config("speedrun").epochs)}', '"speedrun")}',
          ("tests/test_benchmarks.py", "-k", "time_to_robust"), "the race trains the speedrun for --epochs, not its preset's"),
    Fault("fast-defaults-choice-unrecorded", "src/advlab/engine/train.py",
          "            run_dir.write_config(run.config)  # with what precision / channels_last: auto chose",
          "            run_dir.write_config(config)  # with what precision / channels_last: auto chose",
          ("tests/test_fast_defaults.py",), "config.yaml keeps precision: auto, not what it chose (a resume may choose again)"),
    Fault("fast-defaults-bf16-without-kernels", "src/advlab/engine/fast_defaults.py",
          'if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16_kernels():',
          'if precision == "bf16" and device.type == "cpu" and False:',
          ("tests/test_fast_defaults.py",), "precision: auto takes bf16 on a CPU without bf16 kernels"),
    Fault("one-cycle-no-warmup", "src/advlab/engine/schedule.py",
          "            return lr * t / peak", "            return lr",
          ("tests/test_engine_oracles.py", "-k", "one_cycle"), "the one-cycle schedule starts at its peak rate"),
    Fault("stale-best-after-kill", "src/advlab/engine/loop.py",
          '                if improved:  # best first: last.pt is the epoch\'s commit point, so a kill between the two '
          'writes\n                    run_dir.save_checkpoint("best", payload)  # redoes the epoch and never leaves a '
          'stale best.pt\n                run_dir.save_checkpoint("last", payload)\n',
          '                run_dir.save_checkpoint("last", payload)\n                if improved:\n'
          '                    run_dir.save_checkpoint("best", payload)\n',
          ("tests/test_kill_resume.py", "-k", "best_pt"),
          "last.pt written before best.pt: a kill between them leaves a stale best.pt"),
    # ---- long epochs: mid-epoch checkpoints, signals, the run's time
    Fault("mid-epoch-resume-restarts-the-epoch", "src/advlab/engine/loop.py",
          "    loader.start_at(progress.batch)", "    loader.start_at(0)",
          ("tests/test_mid_epoch.py", "-k", "stopped_mid_epoch"),
          "a run resumed mid-epoch trains the epoch's batches from the first again (with the sums so far)"),
    Fault("loader-start-at-ignored", "src/advlab/data/device_loader.py",
          "        for i in range(first, len(self)):", "        for i in range(0, len(self)):",
          ("tests/test_mid_epoch.py", "-k", "start_at"), "DeviceLoader.start_at does not skip the batches done"),
    Fault("mid-epoch-rng-reseeded", "src/advlab/engine/state.py",
          "    if same:\n        set_rng_state(mine[\"rng\"])",
          "    if same:\n        seed_rank_stream(run.config.seed, epoch, comm.rank, batch)",
          ("tests/test_mid_epoch.py", "-k", "stopped_mid_epoch"),
          "a mid-epoch resume reseeds the RNG instead of restoring the state it had at that step"),
    Fault("on-epoch-start-twice", "src/advlab/engine/loop.py",
          "    if progress is None:\n        for _, part in run.recipe.parts():\n            part.on_epoch_start(epoch)\n",
          "    for _, part in run.recipe.parts():\n        part.on_epoch_start(epoch)\n    if progress is None:\n",
          ("tests/test_mid_epoch.py", "-k", "stopped_mid_epoch and (noilin or sglr or frl)"),
          "a mid-epoch resume calls the parts' on_epoch_start again (counts reset, FRL's duals updated twice)"),
    Fault("noilin-epoch-state-missing", "src/advlab/recipes/labels/noilin.py",
          '        return {"epoch_rate": self.epoch_rate, "flipped": self.flipped.detach().clone(), "seen": self.seen}',
          "        return {}",
          ("tests/test_part_contracts.py", "-k", "noilin"),
          "NoiLIn's counts of the epoch in progress are not in its mid-epoch state"),
    Fault("stale-mid-epoch-used", "src/advlab/runs/directory.py",
          'if int(mid["epoch"]) == (int(last["epoch"]) if last is not None else 0) and mid.get("mid_epoch"):',
          'if mid.get("mid_epoch"):',
          ("tests/test_kill_resume.py", "-k", "between"),
          "a resume continues a mid-epoch checkpoint of an epoch that has since finished (retrains it)"),
    Fault("no-checkpoint-on-signal", "src/advlab/engine/mid_epoch.py",
          "        if due or timed or stop:", "        if due or timed:",
          ("tests/test_kill_resume.py", "-k", "ctrl_c"), "a run stopped by Ctrl-C writes no mid-epoch checkpoint"),
    Fault("signal-in-validation-not-stopping", "src/advlab/engine/mid_epoch.py",
          "        if stop:\n            raise RunStopped(f\"stopped by {self._signal_name()} after epoch",
          "        if False:\n            raise RunStopped(f\"stopped by {self._signal_name()} after epoch",
          ("tests/test_kill_resume.py", "-k", "during_validation"),
          "a signal during validation is acted on only after the next epoch's first step"),
    Fault("ranks-stop-alone", "src/advlab/engine/mid_epoch.py",
          "        if comm.distributed:\n            if b % AGREE_EVERY == 0 or b == n:",
          "        if False:\n            if b % AGREE_EVERY == 0 or b == n:",
          ("tests/test_distributed.py", "-k", "signal_on_one_rank"),
          "under torchrun each rank stops on its own signal: the others wait for it"),
    Fault("run-clock-counts-validation-as-steps", "src/advlab/engine/run_clock.py",
          "max(self.now() - self._timed_from - self._untimed, 0.0)", "max(self.now() - self._timed_from, 0.0)",
          ("tests/test_mid_epoch.py", "-k", "run_clock"), "the run's time estimate counts validation as step time"),
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
    # ---- config and reports
    Fault("empty-mapping-config-runs-defaults", "src/advlab/config/reading.py",
          "    if data is None or data == {}:\n", "    if data is None:\n",
          ("tests/test_malformed_inputs.py", "-k", "yaml"),
          "a config file holding only {} starts a run with every default"),
    Fault("compare-averages-unlike-runs", "src/advlab/reports/compare.py",
          "    differ = [k for k in keys if len({e.get(k, NOT_SET) for e in known}) > 1]\n",
          "    differ = []\n",
          ("tests/test_reports.py", "-k", "compare"),
          "advlab compare averages runs that differ in more than their seed (label noise, activation) as seeds"),
    Fault("compare-robust-across-attacks", "src/advlab/reports/compare.py",
          '        return {**how, "attacks": attacks}\n', "        return how\n",
          ("tests/test_reports.py", "-k", "compare"),
          "advlab compare ranks robust accuracy (AND) of runs attacked with different sets of attacks"),
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
          'split = data.training_split(settings["dataset"], root=settings["root"], train_size=settings["train_size"], '
          'seed=config["seed"])',
          ("tests/test_knn_eval.py",), "advlab eval's kNN bank ignores the run's meta split, imbalance and label noise"),
    # ---- CAAT and FRL against the official code (tests/test_official_oracles.py)
    Fault("caat-meta-loss-no-anti", "src/advlab/recipes/weighting/caat.py",
          "                       self.combined_weights(None, y_m, names, dtype=dtype))",
          "                       {**self.combined_weights(None, y_m, names, dtype=dtype), "
          "\"anti\": torch.zeros(len(y_m))})",
          ("tests/test_official_oracles.py", "-k", "meta_gradient"),
          "CAAT's meta loss without its anti-adversarial term"),
    Fault("caat-meta-views-current-model", "src/advlab/recipes/weighting/caat.py",
          "frozen = LookAhead(model, {n: p.detach() for n, p in new.items()})",
          "frozen = LookAhead(model, {n: p.detach() for n, p in params.items()})",
          ("tests/test_official_oracles.py", "-k", "meta_gradient"),
          "CAAT's meta views made against the current model instead of the looked-ahead one"),
    Fault("caat-warmup-anti-weight-one", "src/advlab/recipes/weighting/caat.py",
          'weights["anti"] = torch.zeros(len(step.y), device=step.y.device)',
          'weights["anti"] = torch.ones(len(step.y), device=step.y.device)',
          ("tests/test_official_oracles.py", "-k", "warm_up"),
          "CAAT's warm-up epochs weight the anti-adversarial view 1 instead of 0"),
    Fault("caat-meta-features-detached", "src/advlab/recipes/weighting/caat.py",
          'if self.options.meta_features == "attached":', "if False:",
          ("tests/test_official_oracles.py", "-k", "meta_gradient"),
          "CAAT's look-ahead with the meta-net's features detached from the weights whatever the option says"),
    Fault("caat-lookahead-frozen-parameters", "src/advlab/recipes/weighting/caat.py",
          "trainable = {n: p for n, p in params.items() if p.requires_grad}", "trainable = dict(params)",
          ("tests/test_caat.py", "-k", "frozen_encoder"),
          "CAAT's look-ahead differentiates every parameter, frozen ones included (model.freeze=encoder)"),
    Fault("caat-meta-batches-redrawn", "src/advlab/recipes/weighting/caat.py",
          "if self.meta_order is None or self.meta_cursor + size > len(self.meta_order):", "if True:",
          ("tests/test_official_oracles.py", "-k", "meta_batches"),
          "CAAT's meta batches drawn afresh each time (with replacement across batches), not the code's loader"),
    Fault("frl-halving-zero-indexed", "src/advlab/recipes/weighting/frl.py",
          "r1 = o.rate0 * 0.5 ** ((epoch + 1) // o.rate0_halving)", "r1 = o.rate0 * 0.5 ** (epoch // o.rate0_halving)",
          ("tests/test_official_oracles.py", "-k", "r1_halves"),
          "FRL halves r1 one epoch later than the code (0-indexed epoch against its 1-indexed one)"),
    Fault("frl-boundary-first-miss", "src/advlab/recipes/weighting/frl.py",
          "steps=steps, norm=norm, early_stop=None,", "steps=steps, norm=norm, early_stop=0,",
          ("tests/test_official_oracles.py", "-k", "frl_errors"),
          "FRL's boundary error from the first misclassified PGD iterate, not the code's last iterate"),
    Fault("frl-boundary-clean-and-not-adv", "src/advlab/recipes/weighting/frl.py",
          "clean_ok.double().cpu() - adv_ok.double().cpu())", "(clean_ok & ~adv_ok).double().cpu())",
          ("tests/test_official_oracles.py", "-k", "frl_errors"),
          "FRL's boundary error counts clean-and-not-adv points, not the code's acc - acc_adv"),
    Fault("knn-attack-no-early-stop", "src/advlab/evaluation/knn_attack.py",
          'random_start="uniform", early_stop=0,', 'random_start="uniform", early_stop=None,',
          ("tests/test_official_oracles.py", "-k", "pgd_knn"),
          "knn-guide goes on after the first iterate the kNN's hard vote gets wrong"),
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
    # ---- models from elsewhere, weights, model checks, the estimate (docs/MODELS.md)
    Fault('source-run-module-not-recorded', 'src/advlab/engine/run.py',
          '    if origin:  # a model registered',
          '    if False:  # a model registered',
          ("tests/test_model_sources.py", "-k", 'test_a_run_of_a_registered_model'), 'a run of a model registered with register_model does not record its module'),
    Fault('source-dict-output-passed', 'src/advlab/models/external.py',
          '    if output is None:\n        if torch.is_tensor(out):\n            return out',
          '    if output is None:\n        if True:\n            return out',
          ("tests/test_model_sources.py", "-k", 'test_a_dict_output_needs'), 'a dict output reaches the attacks without model.output'),
    Fault('weights-prefix-kept', 'src/advlab/runs/weights.py',
          '            if hits > best:',
          '            if False:',
          ("tests/test_model_sources.py", "-k", 'test_advlab_eval_of_a_plain_state_dict'), "DataParallel's module. prefix is not removed"),
    Fault('weights-reshaped-not-strict', 'src/advlab/runs/weights.py',
          '    if strict and (missing or unexpected or reshaped):',
          '    if strict and (missing or unexpected):',
          ("tests/test_model_sources.py", "-k", 'test_init_from_a_plain_state_dict'), 'a strict load ignores keys of another shape'),
    Fault('checks-probabilities-unflagged', 'src/advlab/evaluation/model_checks.py',
          '    if in_unit and bool(((sums - 1).abs() <= PROBABILITY_ATOL).all()):',
          '    if False:',
          ("tests/test_model_sources.py", "-k", 'test_probabilities_a_randomised'), 'probability outputs are not flagged'),
    Fault('checks-one-pass-twice', 'src/advlab/evaluation/model_checks.py',
          '        checks.append(_determinism(first.float(), second.float()))',
          '        checks.append(_determinism(first.float(), first.float()))',
          ("tests/test_model_sources.py", "-k", 'test_probabilities_a_randomised'), 'the determinism check compares a pass with itself'),
    Fault('checks-train-mode-unflagged', 'src/advlab/evaluation/model_checks.py',
          '        elif handed:',
          '        elif False:',
          ("tests/test_model_sources.py", "-k", 'test_probabilities_a_randomised'), 'a model handed in train mode is not flagged'),
    Fault('eps-no-hint', 'src/advlab/evaluation/threat.py',
          'raise AdvlabError(f"eps is in pixel units in [0, 1] (linf: in (0, 1]), got {eps:g}: {eps_hint(eps)}")',
          'raise AdvlabError(f"eps must be in (0, 1] for linf, got {eps}")',
          ("tests/test_model_sources.py", "-k", 'test_eps_above_one'), 'eps 8 is refused without the 8/255 hint'),
    Fault('autoattack-fab-t-miscounted', 'src/advlab/evaluation/autoattack.py',
          '(2 * aa.fab.n_iter + 3) + 2',
          '(2 * aa.fab.n_iter + 2) + 2',
          ("tests/test_model_sources.py", "-k", 'test_autoattacks_counted'), "FAB-T's passes counted one short per target"),
    Fault('autoattack-progress-hidden', 'src/advlab/evaluation/autoattack.py',
          '    def _show(self) -> None:\n        if self._current is None:',
          '    def _show(self) -> None:\n        if True:',
          ("tests/test_model_sources.py", "-k", 'test_autoattack_shows'), "AutoAttack's sub-attack, restart and points left are not shown"),
    Fault('estimate-backward-overcharged', 'src/advlab/evaluation/estimate.py',
          '        return count * (forwards * f + backwards * max(g - f, 0.0))',
          '        return count * (forwards * f + backwards * g)',
          ("tests/test_model_sources.py", "-k", 'test_the_estimate_is'), 'a backward pass charged as a whole forward + backward'),
    Fault('weights-unsafe-load', 'src/advlab/runs/checkpoint.py',
          'payload = torch.load(path, map_location=map_location, weights_only=True)',
          'payload = torch.load(path, map_location=map_location, weights_only=False)',
          ("tests/test_model_sources.py", "-k", 'test_weights_that_would_run_code'), 'weights read with weights_only=False (code in the file runs)'),
    Fault('source-main-registration-unexplained', 'src/advlab/models/factory.py',
          '    if module == "__main__":',
          '    if module == "never":',
          ("tests/test_model_sources.py", "-k", 'test_a_run_of_a_registered_model'), 'a model registered by __main__ fails without saying why'),
    Fault('source-normalize-unrecorded', 'src/advlab/config/schema.py',
          '        if isinstance(normalize, dict):  # default values',
          '        if False:  # default values',
          ("tests/test_model_sources.py", "-k", 'test_a_model_from_the_users_file'), 'model.normalize is left out of the model spec'),
    Fault('start-line-no-smaller-choice', 'src/advlab/engine/train.py',
          '    if "autoattack" in e.attacks and e.autoattack_version not in AA_REDUCED_VERSIONS:',
          '    if False:',
          ("tests/test_model_sources.py", "-k", 'test_advlab_train_says'), 'the start line offers no smaller evaluation'),
    Fault('timm-pretrained', 'src/advlab/models/sources.py',
          'return timm.create_model(name, pretrained=False,',
          'return timm.create_model(name, pretrained=True,',
          ("tests/test_model_sources.py", "-k", 'timm_is_asked'), 'timm is asked for pretrained (downloaded) weights'),
    Fault('strip-head-declared-ignored', 'src/advlab/models/representation.py',
          '    declared = _declared_classifier(model)\n',
          '    declared = None\n',
          ("tests/test_model_sources.py", "-k", 'declares'), "strip_head ignores the classifier a network declares (timm's get_classifier)"),
    Fault('probe-drops-normalize', 'src/advlab/engine/probe.py',
          'RUN_MODEL_KEYS = ("name", "activation", "options", "normalize", "output")',
          'RUN_MODEL_KEYS = ("name", "activation", "options")',
          ("tests/test_model_sources.py", "-k", 'probe'), "a probe rebuilds the run's model without its normalisation"),
    Fault("model-card-reduced-autoattack-acc", "src/advlab/evaluation/model_card.py",
          "    if aa and version in AUTOATTACK_ACC_VERSIONS:", "    if aa:",
          ("tests/test_reports.py", "-k", "model_card"), "a reduced AutoAttack is called autoattack_acc"),
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
          "range(0, len(self))", ("tests/test_loaders.py", "tests/test_data_runs.py", "-k", "start_at or stopped_mid_epoch"),
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
