"""``advlab eval TARGET``: evaluate a checkpoint (or a run directory's best/last) and write JSON + table."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

from .. import data
from ..attacks import NORMS
from ..attacks.norms import get_norm
from ..config import KNNConfig
from ..config.renamed import RENAMED_VALUES, renamed_value, upgrade
from ..devices import pick_device
from ..distributed import launch_from_env
from ..errors import AdvlabError, CheckpointError
from ..models import KNN_METRICS, KNN_VOTES, source_syntax
from ..runs import CHECKPOINT_NAMES, load_checkpoint, load_model, resolve_checkpoint, write_atomic
from .cli_model import MODEL_FLAGS, clean_fraction, model_from_flags
from .classifier import CLASSIFIERS, as_classifier, classifier_kind, describe_classifier
from .estimate import estimate_evaluation
from .model_card import model_card
from .model_checks import check_model, check_statuses
from .robustness import DEFAULT_ATTACKS, attack_names, evaluate
from .threat import check_eps, parse_eps
from .suite import AA_REDUCED_VERSIONS, AA_VERSIONS, eval_attack_names, knn_attacks


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate the robustness of a checkpoint, or of any model (--model)",
        description="Clean accuracy and accuracy under each attack (every adversarial example is checked against "
                    "the threat model), the per-sample AND of them, and sanity checks; before attacking, the "
                    "model is checked for the usual pitfalls (train mode, a randomised forward pass, probabilities "
                    "instead of logits, inputs it does not take) and the time it will take is estimated. Writes "
                    "<checkpoint>-eval.json and <checkpoint>-eval.txt next to the checkpoint (or --out). "
                    "Accuracies in the JSON are fractions in [0, 1]. A model advlab did not train: --model NAME "
                    "--weights FILE --dataset D --eps 8/255.",
    )
    p.add_argument("target", metavar="TARGET", nargs="?",
                   help="checkpoint file, or run directory (see --checkpoint); or leave out and give --model")
    p.add_argument("--model", metavar="NAME",
                   help="evaluate a model advlab did not train: a registered model, or from a model source: "
                        f"{', '.join(source_syntax())} (with --dataset and --eps)")
    p.add_argument("--weights", metavar="FILE",
                   help="the --model's weights: a state dict (.pt, .pth, .bin, or one under a state_dict/model key) "
                        "or .safetensors, read without executing code and loaded strictly (prefixes module., "
                        "_orig_mod., model. removed); needed for timm and torchvision models")
    p.add_argument("--normalize", metavar="HOW",
                   help="the --model's input normalisation, put inside it: none (default: it takes pixels in "
                        "[0, 1]), dataset (the dataset's mean and std), or MEAN[,...]:STD[,...] in pixel units")
    p.add_argument("--output", metavar="KEY",
                   help="the key (or index) of the logits in the --model's dict or tuple output")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a keyword argument of the --model's factory (repeat the flag for more), e.g. "
                        "--model-option drop_rate=0.1; the value is read as YAML")
    p.add_argument("--checkpoint", choices=CHECKPOINT_NAMES, default="best",
                   help="which checkpoint of a run directory to evaluate (default: best)")
    p.add_argument("--dataset", help="dataset name (default: the dataset the checkpoint was trained on)")
    p.add_argument("--split", default="test", help="dataset split (default: test)")
    p.add_argument("--data-root", help="folder holding the dataset files (default: advlab's search path)")
    p.add_argument("--n", type=int, default=1000, help="evaluate the first N points of the split (default: 1000)")
    p.add_argument("--eps", help="perturbation radius in pixel units, a number or a fraction: 0.1, 8/255 "
                                 "(default: the checkpoint's eps); linf eps must be in (0, 1]")
    p.add_argument("--norm", choices=list(NORMS), help="threat-model norm (default: the checkpoint's norm)")
    p.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS),
                   help=f"comma-separated attacks among {', '.join(eval_attack_names())} "
                        f"(default: {','.join(DEFAULT_ATTACKS)})")
    p.add_argument("--autoattack-version", default="standard", choices=AA_VERSIONS,
                   help="AutoAttack version (default: standard; reduced: "
                        + ", ".join(f"{k} = {' + '.join(v)}" for k, v in AA_REDUCED_VERSIONS.items()) + ")")
    p.add_argument("--square-queries", type=int, default=1000,
                   help="query budget of the standalone square attack (default: 1000)")
    p.add_argument("--batch-size", type=int, default=256, help="points per attacked batch (default: 256)")
    p.add_argument("--classifier", choices=(*CLASSIFIERS, *RENAMED_VALUES["evaluation.classifier"]),
                   metavar="{" + ",".join(CLASSIFIERS) + "}",
                   help="what to evaluate: linear (the model's own linear head, its logits), knn (k nearest "
                        "neighbours over its "
                        "representation, the bank being the run's training split rebuilt from the checkpoint's "
                        "config: penultimate features of a classifier, the encoder of a projection-head model), "
                        "or auto (knn for a projection head, linear otherwise) (default: the run's "
                        "evaluation.classifier, else auto)")
    p.add_argument("--knn-k", type=int, help="neighbours of the kNN (default: the run's knn.k, else "
                                             f"{KNNConfig.k})")
    p.add_argument("--knn-metric", choices=KNN_METRICS,
                   help=f"similarity of the kNN (default: the run's knn.metric, else {KNNConfig.metric})")
    p.add_argument("--knn-vote", choices=KNN_VOTES, help="hard vote that predicts (default: the run's knn.vote, "
                                                         f"else {KNNConfig.vote})")
    p.add_argument("--knn-temperature", type=float,
                   help="temperature of the soft vote that gives the attacks' gradients (default: the run's "
                        f"knn.temperature, else {KNNConfig.temperature})")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts (default: 0)")
    p.add_argument("--no-sanity", action="store_true",
                   help="skip the sanity checks that cost extra attacks (large-eps, more-steps)")
    p.add_argument("--out", help="JSON output path (default: <checkpoint stem>-eval.json next to the "
                                 "checkpoint, <weights stem>-eval.json next to --weights); the table goes to the "
                                 "same path with .txt")
    p.add_argument("--model-card", action="store_true",
                   help="also write the result as a RobustBench entry (the fields of its model_info files: eps "
                        "as 8/255, clean_acc, autoattack_acc in %%, architecture, ...; link, name, authors, venue and "
                        "reported left to fill; a reduced AutoAttack is no autoattack_acc, the footnote says so; "
                        "advlab's extras under 'advlab') to <out stem>-model-card.json, and print it; needs "
                        "autoattack among --attacks")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def _setting(value: Any, ckpt: dict[str, Any], key: str, flag: str, path: Path, check: Callable[[Any], Any]) -> Any:
    """``check(value)`` of the flag's value, else of the checkpoint's ``key``; one error naming where it came
    from (the flag, or the checkpoint file and its key) otherwise."""
    if value is None and ckpt.get(key) is None:
        raise CheckpointError(f"checkpoint {path} does not record {key!r}; pass {flag}")
    try:
        return check(ckpt[key] if value is None else value)
    except AdvlabError as exc:
        where = flag if value is not None else f"checkpoint {path} records {key} {ckpt[key]!r} (pass {flag})"
        raise AdvlabError(f"{where}: {exc}") from None


def _check_out(out: Path) -> None:
    """AdvlabError unless the report can be written to ``out`` (and ``.txt`` beside it): not a folder, and the
    nearest existing folder above it writable. Checked before the evaluation runs."""
    for path in (out, out.with_suffix(".txt")):
        if path.is_dir():
            raise AdvlabError(f"--out {path} is a folder; give a file path such as {path / 'eval.json'}")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise AdvlabError(f"--out {out}: cannot write there ({parent} is not a writable folder)")


def _load_model(path: Path, device):
    try:
        return load_model(path, device=device)
    except AdvlabError:
        raise
    except ImportError as exc:
        raise AdvlabError(f"cannot build the model: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} does not describe a model advlab can build: "
                              f"{type(exc).__name__}: {exc}") from None


KNN_FLAGS = {"k": "--knn-k", "metric": "--knn-metric", "vote": "--knn-vote", "temperature": "--knn-temperature"}


def _knn_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The --knn-* options given (KNNConfig field -> value), each checked; AdvlabError naming the flag."""
    given = {key: getattr(args, f"knn_{key}") for key in KNN_FLAGS if getattr(args, f"knn_{key}") is not None}
    if "k" in given and given["k"] < 1:
        raise AdvlabError(f"--knn-k must be >= 1, got {given['k']}")
    if "temperature" in given and not 0 < given["temperature"] < math.inf:
        raise AdvlabError(f"--knn-temperature must be a finite number > 0, got {given['temperature']}")
    return given


def _classifier(args: argparse.Namespace, ckpt: dict[str, Any], path: Path, model) -> tuple[str, dict[str, Any]]:
    """The classifier to evaluate (linear or knn) and, for knn, its options: --knn-* flags over the checkpoint
    config's ``knn`` section over KNNConfig's defaults. AdvlabError for linear of a projection head, --knn-*
    flags without a kNN, and a kNN of a checkpoint that stores no config (its bank cannot be rebuilt)."""
    config = stored_config(ckpt, path)
    stored = ((config or {}).get("evaluation") or {}).get("classifier")
    given = renamed_value("evaluation.classifier", args.classifier, "--classifier") if args.classifier else None
    choice = given or (stored if stored in CLASSIFIERS else "auto")
    try:
        kind = classifier_kind(choice, model)
    except AdvlabError as exc:
        where = "--classifier" if given else f"checkpoint {path} records evaluation.classifier {choice!r}"
        raise AdvlabError(f"{where}: {exc}") from None
    flags = _knn_flags(args)
    if kind == "linear":
        if flags:
            raise AdvlabError(f"{', '.join(KNN_FLAGS[k] for k in flags)}: options of the kNN classifier, but this "
                              f"evaluation uses the model's linear head (classifier {choice}); pass --classifier knn")
        return kind, {}
    if config is None or not isinstance(config.get("data"), dict) or "seed" not in config:
        raise CheckpointError(f"checkpoint {path} stores no training config, so the kNN's bank (the run's training "
                              "split) cannot be rebuilt; evaluate a checkpoint written by advlab train, pass "
                              "--classifier linear for a classifier, or build the kNN in Python with "
                              "advlab.evaluation.as_classifier(model, 'knn', train_images, train_labels, ...)")
    options = dataclasses.asdict(KNNConfig())
    options.update({k: v for k, v in (config.get("knn") or {}).items() if k in options})
    options.update(flags)
    return kind, options


def stored_config(ckpt: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The training config a checkpoint stores (``config``), in the current format (older checkpoints' keys
    converted with a deprecation line), or None when it stores none."""
    config = ckpt.get("config")
    return upgrade(config, f"checkpoint {path}", version=1) if isinstance(config, dict) else None


def _knn_bank(args: argparse.Namespace, ckpt: dict[str, Any], path: Path):
    """The kNN's bank: the run's training split rebuilt from the checkpoint's config exactly as the trainer
    built it (``advlab.data.run_training_split``; --data-root replaces the stored root), and its classes."""
    config = stored_config(ckpt, path)
    settings = dict(config["data"])
    if args.data_root:
        settings["root"] = args.data_root
    split = data.run_training_split(settings, config["seed"])
    if args.knn_k is not None and args.knn_k > split.num_labelled:
        raise AdvlabError(f"--knn-k {args.knn_k} is above the size of the kNN's bank, the run's "
                          f"{split.num_labelled} training images")
    images, labels = split.labelled()  # the labelled training images (unlabeled ones are not in the bank)
    return images, labels, split.facts.num_classes


def _load_data(name: str, split: str, root: str | None, n: int, ckpt: dict[str, Any] | None, path: Path | None):
    """The first ``n`` images of ``split`` and their preprocessing: with the data settings the
    checkpoint's training config stores when it trained on ``name`` (a folder's root, its image size), else (or
    with no checkpoint: a --model) the dataset's defaults; ``root`` (--data-root) replaces the stored root."""
    config = stored_config(ckpt, path) if ckpt is not None else None
    settings = dict(config["data"]) if config and (config.get("data") or {}).get("dataset") == name else \
        {"dataset": name}
    if root:
        settings["root"] = root
    loaded = data.run_split(settings, split, n)
    return loaded.images, loaded.labels, loaded.preprocessing


def _default_out(args: argparse.Namespace, path: Path | None) -> Path:
    if path is not None:
        return path.with_name(f"{path.stem}-eval.json")
    if args.weights:
        weights = Path(args.weights)
        return weights.with_name(f"{weights.stem}-eval.json")
    return Path(f"{args.model.replace(':', '-').replace('/', '-')}-eval.json")


def run(args: argparse.Namespace) -> int:
    if launch_from_env().distributed:  # every process would evaluate everything and write the same --out
        raise AdvlabError("advlab eval runs in one process; start it without torchrun (training under torchrun "
                          "evaluates over all its processes by itself)")
    if args.target is not None and args.model is not None:
        raise AdvlabError("give a checkpoint (TARGET) or --model NAME, not both")
    if args.target is None and args.model is None:
        raise AdvlabError("give a checkpoint or run directory (TARGET), or a model advlab did not train with --model "
                          "NAME --weights FILE --dataset D --eps 8/255")
    if args.model is None:
        given = [f"--{f.replace('_', '-')}" for f in MODEL_FLAGS if getattr(args, f) not in (None, [])]
        if given:
            raise AdvlabError(f"{', '.join(given)} describe a --model; a checkpoint records its model")
    path = resolve_checkpoint(args.target, args.checkpoint) if args.target is not None else None
    if args.n < 1:
        raise AdvlabError(f"--n must be >= 1, got {args.n}")
    if args.batch_size < 1:
        raise AdvlabError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.square_queries < 1:
        raise AdvlabError(f"--square-queries must be >= 1, got {args.square_queries}")
    try:
        given = [name.strip() for name in args.attacks.split(",") if name.strip()]
        attacks = attack_names(renamed_value("evaluation.attacks", given, "--attacks"))
    except AdvlabError as exc:
        raise AdvlabError(f"--attacks: {exc}") from None
    if args.model_card and "autoattack" not in attacks:
        raise AdvlabError("--model-card reports AutoAttack accuracy: add autoattack to --attacks "
                          "(a reduced --autoattack-version such as apgd-ce is named in the card)")
    out = Path(args.out) if args.out else _default_out(args, path)
    _check_out(out)
    device = pick_device(args.device, "--device")
    if path is None:
        if args.classifier not in (None, "linear", "auto") or _knn_flags(args):
            raise AdvlabError("--classifier knn needs the training split of a run advlab trained; a --model is "
                              "evaluated with its own head")
        needs_knn = [name for name in attacks if name in knn_attacks()]
        if needs_knn:
            raise AdvlabError(f"--attacks {needs_knn[0]} attacks a kNN classifier of a run advlab trained")
        model, meta, dataset, eps, norm = model_from_flags(args, device)
        images, labels, preprocessing = _load_data(dataset, args.split, args.data_root, args.n, None, None)
    else:
        ckpt = load_checkpoint(path)  # metadata first: bad settings fail before the model and data are loaded
        norm = _setting(args.norm, ckpt, "norm", "--norm", path, lambda v: get_norm(v).name)
        eps = _setting(args.eps, ckpt, "eps", "--eps", path, lambda v: check_eps(parse_eps(v), norm))
        dataset = _setting(args.dataset, ckpt, "dataset", "--dataset", path, lambda v: data.info(v).name)

        model, ckpt = _load_model(path, device)
        kind, knn = _classifier(args, ckpt, path, model)
        needs_knn = [name for name in attacks if name in knn_attacks()]
        if needs_knn and kind != "knn":
            raise AdvlabError(f"--attacks {needs_knn[0]} attacks a kNN classifier: evaluate with --classifier knn")
        bank = _knn_bank(args, ckpt, path) if kind == "knn" else (None, None, None)
        images, labels, preprocessing = _load_data(dataset, args.split, args.data_root, args.n, ckpt, path)
        if kind == "knn":
            model = as_classifier(model, "knn", bank[0], bank[1], bank[2], knn, batch_size=args.batch_size,
                                  device=device)
        meta = {"checkpoint": str(path), "epoch": ckpt.get("epoch"), "model_spec": ckpt.get("model_spec")}
    num_classes = data.info(dataset).num_classes
    checks = check_model(model, images, num_classes, device)
    check_statuses(checks)
    for check in checks:
        if check["status"] == "flagged":
            print(f"advlab eval: model check {check['name']} flagged: {check['message']}", file=sys.stderr)
    if not args.quiet:
        estimate = estimate_evaluation(model, images[:64], n=len(labels), attacks=attacks, eps=eps, norm=norm,
                                       batch_size=args.batch_size, num_classes=num_classes,
                                       autoattack_version=args.autoattack_version, square_queries=args.square_queries,
                                       sanity=not args.no_sanity, device=device, seed=args.seed,
                                       clean_fraction=clean_fraction(model, images, labels, args.batch_size, device))
        print(f"advlab eval: {len(labels)} points, {', '.join(attacks)}: {estimate.text()}", file=sys.stderr,
              flush=True)
    result = evaluate(model, images, labels, eps, norm, attacks=attacks, batch_size=args.batch_size, device=device,
                      sanity=not args.no_sanity, seed=args.seed, progress=not args.quiet,
                      autoattack_version=args.autoattack_version, square_queries=args.square_queries)
    result.model_checks = checks
    result.meta = {**meta, "dataset": dataset, "split": args.split, "first_n": len(labels), "preprocessing": preprocessing,
                   "classifier": describe_classifier(model)}
    table = result.table()
    try:
        write_atomic(out, result.to_json() + "\n")
        write_atomic(out.with_suffix(".txt"), table + "\n")
    except OSError as exc:
        raise AdvlabError(f"cannot write {out}: {exc}") from None
    print(table)
    print(f"wrote {out} and {out.with_suffix('.txt')}", file=sys.stderr)
    if args.model_card:
        card_path = out.with_name(f"{out.stem}-model-card.json")
        card = json.dumps(model_card(result.to_dict()), indent=2)  # RobustBench's model_info fields + "advlab"
        try:
            write_atomic(card_path, card + "\n")
        except OSError as exc:
            raise AdvlabError(f"cannot write {card_path}: {exc}") from None
        print(card)
        print(f"wrote {card_path}", file=sys.stderr)
    return 0
