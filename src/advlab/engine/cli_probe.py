"""``advlab probe``: linear evaluation of a pre-trained run (SLF, ALF, AFF), written as a new run."""
from __future__ import annotations

import argparse

from ..distributed import is_main_process
from .probe import PROBE_MODES, probe


def add_parser(sub: argparse._SubParsersAction) -> None:
    modes = "; ".join(f"{name}: {PROBE_MODES.get(name).title} (preset {PROBE_MODES.get(name).preset})"
                      for name in PROBE_MODES.names())
    p = sub.add_parser(
        "probe", help="linear evaluation of a pre-trained run (SLF, ALF, AFF)",
        description="Train a new linear head on the encoder of RUN's best checkpoint (a self-supervised run with "
                    "a projection head, or a supervised run: its features before the last linear layer), by one "
                    f"of the robust self-supervised benchmark's protocols. Modes: {modes}. The new run takes "
                    "RUN's data, model, eps, norm and seed, records RUN in init.from, is evaluated with its "
                    "linear head and resumes with `advlab train --resume`. Any config key can be overridden as "
                    "key=value, e.g. optimizer.lr=0.1. See docs/methods/ssat.md.",
    )
    p.add_argument("source", metavar="RUN", help="the pre-trained run directory (it must hold config.yaml and best.pt)")
    p.add_argument("--mode", required=True, choices=PROBE_MODES.names(),
                   help=f"the protocol: {', '.join(PROBE_MODES.names())} (required)")
    p.add_argument("--out", metavar="DIR", help="the new run's directory (default: <RUN>-probe-<mode>, next to RUN)")
    epochs = ", ".join(f"{name} {PROBE_MODES.get(name).base()['epochs']}" for name in PROBE_MODES.names())
    p.add_argument("--epochs", type=int, metavar="N", help=f"number of epochs (default: {epochs}; config key epochs)")
    p.add_argument("--device", help="auto (default: cuda if available, else cpu), cpu, cuda or cuda:N "
                                    "(config key device)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory (once the new "
                                                            "run is checked)")
    p.add_argument("--no-eval", action="store_true", help="skip the final test-set evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides of the new run, dotted keys, applied last (as in advlab train)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    overrides = ([f"device={args.device}"] if args.device is not None else []) + list(args.overrides)
    summary = probe(args.source, args.mode, args.out, overrides, epochs=args.epochs, overwrite=args.overwrite,
                    progress=not args.quiet, evaluate=not args.no_eval)
    if is_main_process():
        print(f"run written to {summary['run_dir']}")
    return 0
