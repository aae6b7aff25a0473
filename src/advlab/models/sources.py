"""Model sources: architectures from beside advlab's registry, named ``<source>:<name>``.

``model.name`` (and ``create_model``'s name) is either a registered model (``small-cnn``, see
``list_models()``), or ``<source>:<name>`` with a source of :data:`SOURCES`:

- ``timm:<architecture>``: ``timm.create_model(name, pretrained=False, num_classes=K, in_chans=C, **options)``
  (the optional ``timm`` package; weights are never downloaded: load a local file with ``init.from`` or
  ``advlab eval --weights``);
- ``torchvision:<architecture>``: ``torchvision.models.get_model(name, weights=None, num_classes=K, **options)``
  (the optional ``torchvision`` package; 3-channel images only);
- any other prefix is a Python module, ``<module>:<factory>``: the user's own code, e.g. ``mynets:build`` calls
  ``mynets.build(num_classes=K, in_channels=C, **options)`` (each of the two passed when the factory takes it).
  The module is imported by name, with the current folder on the search path (as ``python -m`` does), so a
  checkpoint names the module, never holds its code.

Every source returns the bare network; ``create_model`` wraps it in :class:`~advlab.models.external.ExternalModel`
(normalisation inside, logits out). A new source is one :func:`register_source` call: a builder and a line for
the help.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

from torch import nn

from ..errors import AdvlabError
from ..registry import Registry
from .checks import check_call

Builder = Callable[[str, int, int, dict[str, Any]], nn.Module]

WEIGHT_OPTIONS = ("pretrained", "weights", "checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay")
"""Options that would download or read weights inside a library: refused, weights come from ``init.from`` /
``--weights`` (read without executing code)."""


@dataclass(frozen=True)
class ModelSource:
    """One source of models. ``build(name, num_classes, in_channels, options)`` returns the bare network (an
    ``nn.Module`` whose output holds the logits), raising AdvlabError with one line for a missing package, an
    unknown name or bad options. ``syntax``: how a name of this source is written, for help texts.
    ``random_weights``: the network starts from random weights (so ``advlab eval`` needs ``--weights``); a
    user's factory may load its own."""

    name: str
    syntax: str
    build: Builder
    random_weights: bool = True


SOURCES: Registry[ModelSource] = Registry("model source")


def register_source(source: ModelSource, *, overwrite: bool = False) -> ModelSource:
    """Add a model source under its prefix ``source.name``."""
    SOURCES.register(source.name, source, overwrite=overwrite)
    return source


def _first_line(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def import_package(package: str, what: str) -> ModuleType:
    """The optional ``package``; AdvlabError saying how to install it (or why it does not import)."""
    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as exc:
        if exc.name == package:
            raise AdvlabError(f"{what} needs the {package} package, which is not installed: see docs/MODELS.md for "
                              f"installing it without replacing your torch build") from None
        raise AdvlabError(f"{what}: the {package} package is installed but cannot be imported ({_first_line(exc)}); "
                          "see docs/MODELS.md") from None
    except Exception as exc:  # e.g. torchvision built for another torch: "operator torchvision::nms does not exist"
        raise AdvlabError(f"{what}: the {package} package is installed but cannot be imported ({_first_line(exc)}); "
                          "it was probably built for another torch: see docs/MODELS.md") from None


def _refuse_weight_options(options: dict[str, Any], what: str) -> None:
    found = [k for k in WEIGHT_OPTIONS if k in options]
    if found:
        raise AdvlabError(f"model.options.{found[0]} ({what}): advlab never downloads or reads weights inside a "
                          "library; load a local file with init.from=FILE (training) or --weights FILE (advlab eval)")


def _unknown(kind: str, name: str, known: list[str]) -> AdvlabError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; close: {', '.join(close)}" if close else ""
    return AdvlabError(f"unknown {kind} model {name!r}{hint} ({len(known)} known)")


def _build_timm(name: str, num_classes: int, in_channels: int, options: dict[str, Any]) -> nn.Module:
    """timm's ``create_model(name, pretrained=False, num_classes=, in_chans=, **options)``
    (huggingface/pytorch-image-models, timm/models/_factory.py)."""
    what = f"model.name timm:{name}"
    timm = import_package("timm", what)
    _refuse_weight_options(options, what)
    if not timm.is_model(name):
        raise _unknown("timm", name, timm.list_models())
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **options)
    except TypeError as exc:
        raise AdvlabError(f"bad model.options for timm:{name}: {_first_line(exc)}") from None


def _build_torchvision(name: str, num_classes: int, in_channels: int, options: dict[str, Any]) -> nn.Module:
    """torchvision's ``models.get_model(name, weights=None, num_classes=, **options)`` (pytorch/vision,
    torchvision/models/_api.py); its models take 3-channel images."""
    what = f"model.name torchvision:{name}"
    torchvision = import_package("torchvision", what)
    _refuse_weight_options(options, what)
    known = torchvision.models.list_models()
    if name not in known:
        raise _unknown("torchvision", name, known)
    if in_channels != 3:
        raise AdvlabError(f"torchvision:{name} takes 3-channel images and this dataset has {in_channels}: use "
                          f"timm:{name} (it takes in_chans) or your own factory (<module>:<factory>)")
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
    except TypeError as exc:
        raise AdvlabError(f"bad model.options for torchvision:{name}: {_first_line(exc)}") from None


def import_user_module(module: str, what: str) -> ModuleType:
    """Import the user's ``module`` by name, with the current folder on the search path (appended, as ``python -m``
    and uvicorn's ``--app-dir .`` make it importable).

    Raises:
        AdvlabError: the name is not a dotted Python name; no such module (saying how to make it importable);
            importing it raised (its first line).
    """
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise AdvlabError(f"{what}: {module!r} is not a Python module name (write <module>:<factory>, e.g. "
                          "mynets:build or my_pkg.nets:build)")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            file = module.replace(".", os.sep) + ".py"
            raise AdvlabError(f"{what}: cannot import module {module!r}: it is not on the Python path (the current "
                              f"folder {cwd} and sys.path); run from the folder that holds {file}, set "
                              "PYTHONPATH to that folder, or pip install the package that holds it") from None
        raise AdvlabError(f"{what}: importing module {module!r} failed: {_first_line(exc)}") from None
    except Exception as exc:
        raise AdvlabError(f"{what}: importing module {module!r} failed: {_first_line(exc)}") from None


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == name or p.kind == p.VAR_KEYWORD for p in params)


def _build_module(name: str, num_classes: int, in_channels: int, options: dict[str, Any]) -> nn.Module:
    """``<module>:<factory>``: ``factory(num_classes=K, in_channels=C, **options)``, each of the first two passed
    when the factory's signature takes it (or ``**kwargs``)."""
    what = f"model.name {name}"
    module_name, _, attr = name.partition(":")
    module = import_user_module(module_name, what)
    factory: Any = module
    for part in attr.split("."):
        if not part.isidentifier() or not hasattr(factory, part):
            where = getattr(module, "__file__", None) or module_name
            public = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
            raise AdvlabError(f"{what}: module {module_name!r} ({where}) has no {attr!r}; its callables: "
                              f"{', '.join(public) or 'none'}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise AdvlabError(f"{what}: {attr!r} of module {module_name!r} is a {type(factory).__name__}, not a factory")
    args = dict(options)
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if _accepts(factory, key):
            args[key] = value
    check_call(factory, args, f"model {name!r}", fixed=("num_classes", "in_channels"))
    network = factory(**args)
    if not isinstance(network, nn.Module):
        raise AdvlabError(f"{what}: the factory returned a {type(network).__name__}, not an nn.Module")
    return network


MODULE_SOURCE = ModelSource("module", "<module>:<factory>", _build_module, random_weights=False)
"""Any prefix that is not a registered source names a Python module: the user's own code."""

register_source(ModelSource("timm", "timm:<name>", _build_timm))
register_source(ModelSource("torchvision", "torchvision:<name>", _build_torchvision))


def model_source(name: str) -> tuple[ModelSource, str] | None:
    """``(source, what that source builds)`` for a ``<source>:<name>`` model name, None for a registry name.
    For a module source the second item is the whole ``<module>:<factory>``. AdvlabError for an empty part."""
    if not isinstance(name, str) or ":" not in name:
        return None
    prefix, _, rest = name.partition(":")
    if not prefix or not rest:
        raise AdvlabError(f"model name {name!r}: write <source>:<name> with both parts, e.g. timm:resnet18 or "
                          "mynets:build")
    if prefix in SOURCES:
        return SOURCES.get(prefix), rest
    return MODULE_SOURCE, name


def source_syntax() -> list[str]:
    """How a model from each source is named: ``timm:<name>``, ``torchvision:<name>``, ``<module>:<factory>``."""
    return [SOURCES.get(n).syntax for n in SOURCES.names()] + [MODULE_SOURCE.syntax]


def build_source_model(name: str, num_classes: int, in_channels: int, options: dict[str, Any]) -> nn.Module:
    """The bare network of the ``<source>:<name>`` model ``name`` (not wrapped)."""
    found = model_source(name)
    if found is None:
        raise AdvlabError(f"model name {name!r} has no source prefix (<source>:<name>)")
    source, target = found
    network = source.build(target, num_classes, in_channels, dict(options))
    if not isinstance(network, nn.Module):
        raise AdvlabError(f"model {name!r} is a {type(network).__name__}, not an nn.Module")
    return network
