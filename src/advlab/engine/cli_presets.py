"""``advlab presets``: list the presets, one line each."""
from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list the training presets",
                       description="List every preset with its parts (labels / perturbation / weighting / "
                                   "objective) and a one-line description.")
    p.add_argument("--show", metavar="NAME", help="print the resolved config of one preset as YAML")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from ..config import PART_KINDS, load_config, preset_names

    if args.show:
        print(yaml.safe_dump(load_config(args.show).to_dict(), sort_keys=False), end="")
        return 0
    rows = []
    for name in preset_names():
        c = load_config(name)
        parts = "/".join(getattr(c, k).name for k in PART_KINDS)
        rows.append((name, parts, c.description))
    name_width = max(len(r[0]) for r in rows)
    parts_width = max(len(r[1]) for r in rows)
    for name, parts, description in rows:
        print(f"{name:<{name_width}}  {parts:<{parts_width}}  {description}")
    return 0
