"""Sanity checks of an evaluation (Carlini et al. 2019, Athalye et al. 2018), each passed / failed / not run.

Tolerance for comparing two accuracies: ``max(2 standard errors, 1 point)``, the standard error being the
binomial one of the reference accuracy on the points compared (``tolerance``).

1. ``robust<=clean``: no attack's accuracy exceeds the clean accuracy.
2. ``large-eps``: PGD-20 at a large radius (linf 0.5; l2 0.5 sqrt(d), the L2 ball holding that linf ball)
   brings accuracy to at most chance + 0.1, on the first ``SUBSET`` points. Extra cost.
3. ``more-steps``: PGD-50 with 2 extra restarts is not more accurate than PGD-20 beyond the tolerance,
   on the first ``SUBSET`` points. Extra cost.
4. ``autoattack<=pgd``: AutoAttack's accuracy is not above PGD-20's beyond the tolerance.
5. ``black-box-gap``: the black-box Square attack is not stronger than every white-box gradient attack run
   beyond the tolerance (if it is: likely gradient masking).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..attacks.norms import l2_ball_like_linf
from .result import AttackOutcome, accuracy, standard_error
from .runner import EvalData, run_attack
from .suite import AttackSetup, PGDEval, white_box_attacks

SUBSET = 200
LARGE_EPS_LINF = 0.5
MORE_STEPS, MORE_RESTARTS = 50, 3
def tolerance(acc: float, n: int) -> float:
    """Allowed excess of one accuracy over another: max(2 standard errors, 0.01)."""
    return max(2 * standard_error(acc, n), 0.01)


def _check(name: str, status: str, message: str, **details: Any) -> dict[str, Any]:
    return {"name": name, "status": status, "message": message, "details": details}


def _not_run(name: str, reason: str) -> dict[str, Any]:
    return _check(name, "not run", reason, reason=reason)


def robust_le_clean(clean: AttackOutcome, attacks: dict[str, AttackOutcome]) -> dict[str, Any]:
    """Every attack's accuracy is at most the clean accuracy."""
    details = {}
    bad = []
    for name, o in attacks.items():
        details[name] = {"acc": o.acc, "clean_acc": clean.acc,
                         "correct_only_under_attack": int((o.correct & ~clean.correct).sum())}
        if o.acc > clean.acc:
            bad.append(name)
    if not attacks:
        return _not_run("robust<=clean", "no attack was run")
    if bad:
        return _check("robust<=clean", "failed", f"accuracy above clean accuracy under {', '.join(bad)}", **details)
    return _check("robust<=clean", "passed", "no attack is more accurate than clean", **details)


def large_eps(data: EvalData, setup: AttackSetup) -> dict[str, Any]:
    """PGD-20 at a large radius must bring accuracy down to about chance."""
    sub = data.subset(SUBSET)
    big = LARGE_EPS_LINF if setup.norm == "linf" else l2_ball_like_linf(LARGE_EPS_LINF, sub.images[0].numel())
    big = max(big, setup.eps)
    attack = PGDEval(replace(setup, eps=big, seed=setup.seed + 1), steps=20)
    outcome = run_attack("large-eps", attack, sub, big, setup.norm, atol=1e-6 * (1 + big))
    chance = 1 / setup.num_classes
    threshold = chance + 0.1
    details = dict(eps=big, n=len(sub.labels), acc=outcome.acc, chance=chance, threshold=threshold,
                   attack="pgd20", seconds=outcome.seconds)
    if outcome.acc <= threshold:
        return _check("large-eps", "passed", f"PGD-20 at eps {big:.3g}: {outcome.acc:.1%} <= {threshold:.1%}",
                      **details)
    return _check("large-eps", "failed", f"PGD-20 at eps {big:.3g} leaves {outcome.acc:.1%} > {threshold:.1%}: "
                  "the attack does not work (gradient masking?)", **details)


def more_steps(data: EvalData, setup: AttackSetup, pgd20: AttackOutcome | None) -> dict[str, Any]:
    """PGD-50 with restarts must not be more accurate than PGD-20 beyond the noise."""
    sub = data.subset(SUBSET)
    n = len(sub.labels)
    if pgd20 is not None:
        base = pgd20.correct[:n]
    else:
        base = run_attack("pgd20", PGDEval(setup, steps=20), sub, setup.eps, setup.norm).correct
    attack = PGDEval(replace(setup, seed=setup.seed + 2), steps=MORE_STEPS, restarts=MORE_RESTARTS)
    outcome = run_attack("more-steps", attack, sub, setup.eps, setup.norm)
    acc20, acc50 = accuracy(base), outcome.acc
    tol = tolerance(acc20, n)
    details = dict(n=n, pgd20_acc=acc20, acc=acc50, steps=MORE_STEPS, restarts=MORE_RESTARTS,
                   step_size=attack.step_size, tolerance=tol, seconds=outcome.seconds)
    if acc50 <= acc20 + tol:
        return _check("more-steps", "passed",
                      f"PGD-{MORE_STEPS}x{MORE_RESTARTS} {acc50:.1%} vs PGD-20 {acc20:.1%} (tol {tol:.1%})", **details)
    return _check("more-steps", "failed", f"PGD-{MORE_STEPS}x{MORE_RESTARTS} is more accurate than PGD-20 "
                  f"({acc50:.1%} > {acc20:.1%} + {tol:.1%}): the attack is unstable", **details)


def autoattack_le_pgd(attacks: dict[str, AttackOutcome]) -> dict[str, Any]:
    """AutoAttack must not be well above PGD-20."""
    if "autoattack" not in attacks or "pgd20" not in attacks:
        return _not_run("autoattack<=pgd", "needs both autoattack and pgd20")
    aa, pgd = attacks["autoattack"].acc, attacks["pgd20"].acc
    tol = tolerance(pgd, len(attacks["pgd20"].correct))
    details = dict(autoattack_acc=aa, pgd20_acc=pgd, tolerance=tol)
    if aa <= pgd + tol:
        return _check("autoattack<=pgd", "passed", f"AutoAttack {aa:.1%} vs PGD-20 {pgd:.1%}", **details)
    return _check("autoattack<=pgd", "failed", f"AutoAttack {aa:.1%} is above PGD-20 {pgd:.1%} + {tol:.1%}",
                  **details)


def black_box_gap(attacks: dict[str, AttackOutcome]) -> dict[str, Any]:
    """A black-box attack stronger than the white-box ones points to gradient masking."""
    white_box = white_box_attacks()
    white = {k: attacks[k].acc for k in white_box if k in attacks}
    if "square" not in attacks or not white:
        return _not_run("black-box-gap", f"needs square and a white-box attack ({', '.join(white_box)})")
    square = attacks["square"].acc
    best = min(white.values())
    tol = tolerance(best, len(attacks["square"].correct))
    details = dict(square_acc=square, white_box_acc=white, tolerance=tol)
    if square < best - tol:
        return _check("black-box-gap", "failed", f"likely gradient masking: Square {square:.1%} is below the "
                      f"white-box {best:.1%} - {tol:.1%}", **details)
    return _check("black-box-gap", "passed", f"Square {square:.1%} vs white-box {best:.1%}", **details)


def run_sanity(data: EvalData, setup: AttackSetup, clean: AttackOutcome, attacks: dict[str, AttackOutcome],
               extra: bool) -> list[dict[str, Any]]:
    """All checks, in order; ``extra=False`` reports the ones that cost attacks (2, 3) as not run."""
    skipped = "skipped (sanity=False)"
    return [
        robust_le_clean(clean, attacks),
        large_eps(data, setup) if extra else _not_run("large-eps", skipped),
        more_steps(data, setup, attacks.get("pgd20")) if extra else _not_run("more-steps", skipped),
        autoattack_le_pgd(attacks),
        black_box_gap(attacks),
    ]
