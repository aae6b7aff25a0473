"""Every malformed input gets one clear error, and nothing is written half-way.

Each input below is its own test. A CLI input must end with exit code 2 and exactly one stderr line
``advlab <command>: error: ...`` that names the key, flag or file (no traceback, nothing on stdout); an API
input must raise an AdvlabError of one line naming the argument or file. In both cases no file is created,
changed or removed in the test's folder, and no code from a file runs (the malicious files would create a
marker file). Data files are written in their real formats into the test's folder (as in
tests/test_data_formats.py) and found through ``root`` / ``--data-root`` / ``data.root`` / ``$ADVLAB_DATA``.
Nothing here trains: every input is refused before a run starts.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

import advlab
import advlab.data as data
from advlab.cli import main
from advlab.data import paths
from advlab.errors import AdvlabError, CheckpointError, ConfigError, DataError
from advlab.models import create_model
from advlab.runs import save_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src"
MARKER = "pwned"  # what every malicious file would create in the test's folder if its code ran
SPEC = {"name": "small-cnn", "num_classes": 10, "in_channels": 1, "activation": "relu"}
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """HOME (and so ~/.cache/advlab) and the working folder inside tmp_path, $ADVLAB_DATA unset."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    data.clear_cache()

    def reached(what):
        def fail(*args, **kwargs):
            raise AssertionError(f"a malformed input got through to {what}")
        return fail

    # a refused input never gets this far: fail fast instead of training or evaluating
    import advlab.evaluation.cli
    from advlab.runs import RunDir
    monkeypatch.setattr(RunDir, "create", classmethod(lambda cls, *a, **k: reached("RunDir.create")()))
    monkeypatch.setattr(advlab.evaluation.cli, "evaluate", reached("the evaluation"))
    yield
    data.clear_cache()


def snapshot(folder: Path) -> dict[str, tuple[int, int] | None]:
    """Every file and folder under ``folder``: relative path -> (size, mtime) for files, None for folders."""
    out: dict[str, tuple[int, int] | None] = {}
    for p in sorted(folder.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(folder))] = None if p.is_dir() else (st.st_size, st.st_mtime_ns)
    return out


class _Evil:
    """Unpickling this runs ``touch pwned`` in the working folder."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


# ------------------------------------------------------------------------------------------------ files
def _idx(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = (0x0800 | array.ndim) if magic is None else magic
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()


def write_mnist(folder: Path, gz: bool = True, size: int = 28, n: int = 20) -> Path:
    """The four MNIST IDX files in ``folder/mnist``; returns that folder."""
    out = folder / "mnist"
    out.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        x = RNG.integers(0, 256, (n, size, size), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        for kind, a in (("images-idx3", x), ("labels-idx1", y)):
            raw = _idx(a)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (out / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (out / name).write_bytes(raw)
    return out


def write_cifar(folder: Path) -> Path:
    """CIFAR-10's extracted batch folder with tiny batches; returns the batch folder."""
    out = folder / "cifar10" / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": RNG.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(range(10)) * 2}
        (out / name).write_bytes(pickle.dumps(batch, protocol=4))
    return out


def write_svhn(folder: Path, **test_part: Any) -> Path:
    """SVHN's two .mat files (tiny); ``test_part`` replaces variables of test_32x32.mat."""
    import scipy.io

    out = folder / "svhn"
    out.mkdir(parents=True, exist_ok=True)
    for part in ("train", "test"):
        mat = {"X": RNG.integers(0, 256, (32, 32, 3, 20), dtype=np.uint8),
               "y": (np.arange(20) % 10 + 1).reshape(20, 1).astype(np.uint8)}
        if part == "test":
            mat.update(test_part)
        scipy.io.savemat(str(out / f"{part}_32x32.mat"), mat)
    return out


def _cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _replace_tar(folder: Path, members: Callable[[tarfile.TarFile], None]) -> None:
    archive = folder / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        members(tar)


def _escaping_member(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("cifar-10-batches-py/../../escaped")
    info.size = 2
    tar.addfile(info, io.BytesIO(b"no"))


def _truncated_archive(folder: Path) -> None:
    batches = write_cifar(folder / "src")
    _replace_tar(folder, lambda tar: tar.add(batches, arcname="cifar-10-batches-py"))
    _cut(folder / "cifar10" / "cifar-10-python.tar.gz", 3000)


def _cifar_batch(folder: Path, batch: Any, raw: bytes | None = None) -> None:
    out = write_cifar(folder)
    (out / "test_batch").write_bytes(raw if raw is not None else pickle.dumps(batch))


# (id, dataset, split, write(folder), words the one-line error must hold)
DATA_FILES = [
    ("idx-truncated-gzip", "mnist", "test",
     lambda f: _cut(write_mnist(f) / "t10k-images-idx3-ubyte.gz", 300), ["t10k-images-idx3-ubyte.gz", "gzip"]),
    ("idx-garbage", "mnist", "test",
     lambda f: (write_mnist(f, gz=False) / "t10k-images-idx3-ubyte").write_bytes(b"garbage!" * 40),
     ["t10k-images-idx3-ubyte", "magic number"]),
    ("idx-empty-file", "mnist", "test",
     lambda f: (write_mnist(f, gz=False) / "t10k-labels-idx1-ubyte").write_bytes(b""),
     ["t10k-labels-idx1-ubyte", "truncated"]),
    ("idx-truncated-payload", "mnist", "test",
     lambda f: _cut(write_mnist(f, gz=False) / "t10k-images-idx3-ubyte", 1000), ["t10k-images-idx3-ubyte", "truncated"]),
    ("idx-too-long", "mnist", "test",
     lambda f: (write_mnist(f, gz=False) / "t10k-labels-idx1-ubyte").open("ab").write(b"extra"),
     ["t10k-labels-idx1-ubyte", "too long"]),
    ("idx-wrong-magic", "mnist", "test",
     lambda f: (write_mnist(f, gz=False) / "t10k-labels-idx1-ubyte").write_bytes(
         _idx(np.zeros(20, np.uint8), magic=0x0803)), ["t10k-labels-idx1-ubyte", "magic number"]),
    ("idx-count-mismatch", "mnist", "test",
     lambda f: (write_mnist(f, gz=False) / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.zeros(19, np.uint8))),
     ["20 images", "19 labels"]),
    ("idx-wrong-image-size", "mnist", "test", lambda f: write_mnist(f, size=32), ["expected 1x28x28"]),
    ("idx-labels-out-of-range", "mnist", "test",
     lambda f: (write_mnist(f, gz=False) / "t10k-labels-idx1-ubyte").write_bytes(
         _idx(np.full(20, 12, np.uint8))), ["t10k-labels-idx1-ubyte", "expected 0..9"]),
    ("idx-gz-name-not-gzip", "mnist", "test",
     lambda f: (write_mnist(f) / "t10k-images-idx3-ubyte.gz").write_bytes(b"plain bytes"), ["not gzip-compressed"]),
    ("idx-missing", "mnist", "test", lambda f: f.mkdir(exist_ok=True), ["not found", "folders searched"]),
    ("cifar-truncated-pickle", "cifar10", "test",
     lambda f: _cifar_batch(f, None, pickle.dumps({b"data": np.zeros((20, 3072), np.uint8)})[:100]),
     ["test_batch", "not a valid CIFAR batch pickle"]),
    ("cifar-pickle-runs-code", "cifar10", "test", lambda f: _cifar_batch(f, {b"data": _Evil()}),
     ["test_batch", "refused to load global"]),
    ("cifar-not-a-dict", "cifar10", "test", lambda f: _cifar_batch(f, [1, 2, 3]), ["test_batch", "not the dict"]),
    ("cifar-no-data-key", "cifar10", "test", lambda f: _cifar_batch(f, {b"labels": [1]}), ["test_batch", "'data'"]),
    ("cifar-data-wrong-shape", "cifar10", "test",
     lambda f: _cifar_batch(f, {b"data": np.zeros((20, 100), np.uint8), b"labels": [0] * 20}), ["N x 3072 uint8"]),
    ("cifar-label-count", "cifar10", "test",
     lambda f: _cifar_batch(f, {b"data": np.zeros((20, 3072), np.uint8), b"labels": [0] * 19}), ["20 images"]),
    ("cifar-truncated-archive", "cifar10", "test", _truncated_archive, ["cifar-10-python.tar.gz", "truncated"]),
    ("cifar-archive-escapes", "cifar10", "train", lambda f: _replace_tar(f, _escaping_member),
     ["refusing to extract", "outside the target folder"]),
    ("svhn-garbage-mat", "svhn", "test",
     lambda f: (write_svhn(f) / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, not really" * 8),
     ["test_32x32.mat", "not a readable MATLAB file"]),
    ("svhn-truncated-mat", "svhn", "test", lambda f: _cut(write_svhn(f) / "test_32x32.mat", 200), ["test_32x32.mat"]),
    ("svhn-wrong-image-shape", "svhn", "test",
     lambda f: write_svhn(f, X=np.zeros((28, 28, 1, 20), np.uint8)), ["test_32x32.mat", "32 x 32 x 3 x N"]),
    ("svhn-labels-out-of-range", "svhn", "test",
     lambda f: write_svhn(f, y=np.full((20, 1), 11, np.uint8)), ["test_32x32.mat", "labels 1..10"]),
]


def _one_line_error(exc_info: pytest.ExceptionInfo, kind: type = AdvlabError) -> str:
    err = exc_info.value
    assert isinstance(err, kind), f"{type(err).__name__} is not a {kind.__name__}"
    text = str(err)
    assert text and "\n" not in text, f"not one line: {text!r}"
    assert "Traceback" not in text
    return text


@pytest.mark.parametrize("name, split, write, words", [c[1:] for c in DATA_FILES], ids=[c[0] for c in DATA_FILES])
def test_malformed_data_file_via_root(tmp_path, name, split, write, words):
    folder = tmp_path / "data"
    folder.mkdir()
    write(folder)
    before = snapshot(tmp_path)
    with pytest.raises(Exception) as info:
        data.load(name, split, root=folder, val_per_class=1)
    text = _one_line_error(info, DataError)
    for w in words:
        assert w in text, text
    assert snapshot(tmp_path) == before  # nothing extracted, cached or half-written on disk
    assert not (tmp_path / MARKER).exists()


def test_malformed_data_file_via_advlab_data(tmp_path, monkeypatch):
    """The same refusal when the files are found through $ADVLAB_DATA, by the CLI: one line, exit 2."""
    folder = tmp_path / "data"
    _cut(write_mnist(folder) / "t10k-images-idx3-ubyte.gz", 300)
    ckpt = tmp_path / "c.pt"
    save_checkpoint(ckpt, {"model": create_model(**SPEC).state_dict(), "model_spec": SPEC, "data": "mnist",
                           "eps": 0.1, "norm": "linf", "epoch": 1})
    monkeypatch.setenv(paths.ENV_VAR, str(folder))
    before = snapshot(tmp_path)
    err = run_cli(["eval", str(ckpt), "--device", "cpu"], "eval")
    assert "t10k-images-idx3-ubyte.gz" in err and "gzip" in err
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------------ CLI
def run_cli(argv: list[str], command: str | None) -> str:
    """Run ``advlab argv`` in-process; assert exit 2 and one stderr line ``advlab <command>: error: ...``
    (``advlab: error: ...`` without a command) and nothing on stdout; return that line."""
    code: Any
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = _CAPSYS.readouterr()
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {err!r}"
    prefix = f"advlab {command}: error: " if command else "advlab: error: "
    assert lines[0].startswith(prefix), lines[0]
    assert "Traceback" not in err and out == ""
    return lines[0]


_CAPSYS: Any = None  # the running test's capsys, for run_cli


@pytest.fixture(autouse=True)
def _capsys_for_cli(capsys):
    global _CAPSYS
    _CAPSYS = capsys
    yield
    _CAPSYS = None


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """The malformed configs, checkpoints and folders the CLI cases point at."""
    f: dict[str, Path] = {}

    def text(name: str, content: str) -> None:
        f[name] = tmp_path / name
        f[name].write_text(content)

    text("bad.yaml", "epochs: [1, 2\n")
    text("list.yaml", "- 1\n- 2\n")
    text("tab.yaml", "epochs:\t3\n")
    text("code.yaml", f"epochs: !!python/object/apply:os.system ['touch {MARKER}']\n")
    text("loop_a.yaml", f"inherits: {tmp_path / 'loop_b.yaml'}\n")
    text("loop_b.yaml", f"inherits: {tmp_path / 'loop_a.yaml'}\n")
    text("inherits_int.yaml", "inherits: 3\n")
    text("unknown_key.yaml", "inherits: pgd-at\nepochz: 3\n")
    text("empty.yaml", "")
    text("comments.yaml", "# pgd-at with 5 steps\n   # perturbation: {steps: 5}\n\n")
    text("braces.yaml", "{}  # nothing\n")
    text("inherits_empty.yaml", f"inherits: {tmp_path / 'comments.yaml'}\nepochs: 2\n")
    f["binary.yaml"] = tmp_path / "binary.yaml"
    f["binary.yaml"].write_bytes(b"\xff\xfe\x00\x01garbage")
    (tmp_path / "folder.yaml").mkdir()
    f["folder.yaml"] = tmp_path / "folder.yaml"

    model = create_model(**SPEC)
    good = {"model": model.state_dict(), "model_spec": SPEC, "data": "fashion-mnist", "eps": 0.1, "norm": "linf",
            "epoch": 1}
    f["good.pt"] = tmp_path / "good.pt"
    save_checkpoint(f["good.pt"], good)
    f["truncated.pt"] = tmp_path / "truncated.pt"
    f["truncated.pt"].write_bytes(f["good.pt"].read_bytes()[:400])
    f["text.pt"] = tmp_path / "text.pt"
    f["text.pt"].write_text("not a checkpoint at all")
    f["evil.pt"] = tmp_path / "evil.pt"
    f["evil.pt"].write_bytes(pickle.dumps({"format": "advlab-checkpoint-1", "model": _Evil()}))
    buffer = io.BytesIO()
    torch.save({"format": "advlab-checkpoint-1", "model": _Evil()}, buffer)
    f["evil_torch.pt"] = tmp_path / "evil_torch.pt"
    f["evil_torch.pt"].write_bytes(buffer.getvalue())
    f["foreign.pt"] = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, f["foreign.pt"])
    f["wrong_arch.pt"] = tmp_path / "wrong_arch.pt"
    save_checkpoint(f["wrong_arch.pt"], dict(good, model=create_model(**dict(SPEC, in_channels=3)).state_dict()))
    f["bad_spec.pt"] = tmp_path / "bad_spec.pt"
    save_checkpoint(f["bad_spec.pt"], dict(good, model_spec="small-cnn"))
    f["bad_eps.pt"] = tmp_path / "bad_eps.pt"
    save_checkpoint(f["bad_eps.pt"], dict(good, eps=3.0))
    f["no_norm.pt"] = tmp_path / "no_norm.pt"
    save_checkpoint(f["no_norm.pt"], {k: v for k, v in good.items() if k != "norm"})

    f["run_no_ckpt"] = tmp_path / "run_no_ckpt"
    f["run_no_ckpt"].mkdir()
    (f["run_no_ckpt"] / "config.yaml").write_text("epochs: 1\n")
    f["run_bad_config"] = tmp_path / "run_bad_config"
    f["run_bad_config"].mkdir()
    (f["run_bad_config"] / "config.yaml").write_text("epochs: 0\n")
    f["run_garbage_config"] = tmp_path / "run_garbage_config"
    f["run_garbage_config"].mkdir()
    (f["run_garbage_config"] / "config.yaml").write_bytes(b"\x00\x01: [\n")
    f["empty"] = tmp_path / "empty"
    f["empty"].mkdir()
    f["existing_run"] = tmp_path / "existing_run"
    f["existing_run"].mkdir()
    (f["existing_run"] / "metrics.jsonl").write_text("{}\n")
    return f


OUT = ["--out", "{tmp}/run"]  # must never be created
# (id, argv with {tmp} and {file} placeholders, words the one-line error must hold)
CLI_TRAIN = [
    ("negative-lr", ["--preset", "pgd-at", "optimizer.lr=-0.1"], ["optimizer.lr", "> 0"]),
    ("train-size-0", ["--preset", "pgd-at", "data.train_size=0"], ["data.train_size", ">= 1"]),
    ("epochs-0", ["--epochs", "0"], ["epochs", ">= 1"]),
    ("epochs-not-int", ["epochs=2.5"], ["epochs", "integer"]),
    ("epochs-flag-not-int", ["--epochs", "x"], ["--epochs", "invalid int"]),
    ("lr-infinite", ["optimizer.lr=1e400"], ["optimizer.lr", "finite"]),
    ("lr-nan", ["optimizer.lr=.nan"], ["optimizer.lr"]),
    ("momentum-above-1", ["optimizer.momentum=1.5"], ["optimizer.momentum", "[0, 1]"]),
    ("eps-above-1-linf", ["eps=2"], ["eps", "(0, 1]"]),
    ("eps-text", ["eps=abc"], ["eps", "number"]),
    ("eps-infinite-l2", ["norm=l2", "eps=.inf"], ["eps"]),
    ("unknown-top-key", ["epochz=3"], ["unknown key epochz", "allowed keys"]),
    ("unknown-nested-key", ["optimizer.lrate=0.1"], ["optimizer.lrate", "allowed keys in optimizer"]),
    ("unknown-part-option", ["perturbation.nope=1"], ["perturbation.nope", "allowed keys in perturbation"]),
    ("option-of-optionless-part", ["objective.beta=1"], ["objective.beta", "takes no keys"]),
    ("empty-override-key", ["=3"], ["empty key"]),
    ("override-without-value", ["epochs"], ["key=value"]),
    ("section-not-mapping", ["data=3"], ["data", "mapping"]),
    ("model-options-not-mapping", ["model.options=3"], ["model.options", "mapping"]),
    ("model-option-unknown", ["model.options={depth: 3}"], ["model", "depth"]),
    ("model-option-out-of-range", ["model.options={dropout: 2.0}"], ["model", "dropout"]),
    ("unknown-model", ["--model", "wrn-28-10"], ["model.name", "allowed"]),
    ("unknown-dataset", ["--dataset", "imagenet-21k"], ["data.dataset", "allowed"]),
    ("unknown-activation", ["model.activation=swish2"], ["model.activation", "allowed"]),
    ("unknown-part", ["labels.name=noisy"], ["labels.name", "allowed"]),
    ("part-name-not-string", ["labels.name=3"], ["labels.name", "string"]),
    ("bad-part-combination", ["weighting.name=gair", "perturbation.name=none"], ["weighting 'gair'", "perturbation 'none'"]),
    ("soft-weighting-hard-labels", ["weighting.name=self-adaptive"], ["weighting 'self-adaptive'", "labels 'hard'"]),
    ("weighting-unknown-term", ["weighting.name=gair", "weighting.term=nope"], ["term 'nope'"]),
    ("literal-option", ["perturbation.random_start=gauss"], ["perturbation.random_start", "allowed"]),
    ("part-option-range", ["labels.name=noilin", "labels.rate=2"], ["labels.rate", "[0, 1]"]),
    ("unknown-attack", ["evaluation.attacks=[pgd20, pgd1000]"], ["evaluation.attacks", "pgd1000"]),
    ("unknown-aa-version", ["evaluation.autoattack_version=fastest"], ["evaluation.autoattack_version"]),
    ("unknown-checkpoint-name", ["evaluation.checkpoints=[middle]"], ["evaluation.checkpoints"]),
    ("bool-not-bool", ["data.flip=maybe"], ["data.flip", "true or false"]),
    ("noise-kind", ["data.label_noise.kind=random"], ["data.label_noise.kind", "allowed"]),
    ("imbalance-below-1", ["data.imbalance.ratio=0.5"], ["data.imbalance.ratio", ">= 1"]),
    ("fp16-on-cpu", ["precision=fp16", "device=cpu"], ["precision", "CUDA"]),
    ("unknown-device", ["--device", "tpu"], ["device", "allowed"]),
    ("milestones-not-list", ["schedule.milestones=abc"], ["schedule.milestones", "list"]),
    ("negative-train-size-flag", ["--train-size", "-5"], ["data.train_size", ">= 1"]),
    ("unknown-preset", ["--preset", "pgd-att"], ["unknown preset 'pgd-att'", "pgd-at"]),
    ("missing-yaml-file", ["--preset", "{tmp}/missing.yaml"], ["missing.yaml", "no such config file"]),
    ("yaml-syntax", ["--preset", "{bad.yaml}"], ["bad.yaml", "not valid YAML", "line"]),
    ("yaml-tab", ["--preset", "{tab.yaml}"], ["tab.yaml", "not valid YAML"]),
    ("yaml-list-top", ["--preset", "{list.yaml}"], ["list.yaml", "mapping"]),
    ("yaml-binary", ["--preset", "{binary.yaml}"], ["binary.yaml", "UTF-8"]),
    ("yaml-is-folder", ["--preset", "{folder.yaml}"], ["folder.yaml", "cannot be read"]),
    ("yaml-would-run-code", ["--preset", "{code.yaml}"], ["code.yaml", "not valid YAML"]),
    ("yaml-unknown-key", ["--preset", "{unknown_key.yaml}"], ["epochz"]),
    ("yaml-empty", ["--preset", "{empty.yaml}"], ["empty.yaml", "no settings"]),
    ("yaml-only-comments", ["--preset", "{comments.yaml}"], ["comments.yaml", "no settings"]),
    ("yaml-empty-mapping", ["--preset", "{braces.yaml}"], ["braces.yaml", "no settings"]),
    ("yaml-inherits-empty", ["--preset", "{inherits_empty.yaml}"], ["comments.yaml", "no settings"]),
    ("inherits-loop", ["--preset", "{loop_a.yaml}"], ["loop_a.yaml", "loop_b.yaml", "inherits from itself"]),
    ("inherits-not-a-name", ["--preset", "{inherits_int.yaml}"], ["inherits_int.yaml", "inherits"]),
    ("unknown-flag", ["--epoks", "3"], ["--epoks"]),
    ("out-is-a-file", ["--out", "{good.pt}"], ["good.pt", "is a file"]),
    ("out-not-empty", ["--out", "{existing_run}"], ["existing_run", "not empty", "--overwrite"]),
    ("resume-not-a-run", ["--resume", "{empty}"], ["empty", "not an advlab run directory"]),
    ("resume-with-overrides", ["--resume", "{run_no_ckpt}", "epochs=3"], ["--resume", "overrides"]),
    ("resume-bad-saved-config", ["--resume", "{run_bad_config}"], ["epochs", ">= 1"]),
    ("data-root-without-files", ["data.dataset=mnist", "data.root={empty}"], ["mnist", "not found", "empty"]),
    ("resume-garbage-saved-config", ["--resume", "{run_garbage_config}"], ["config.yaml"]),
]
# data-dependent checks: they need the real training split, found through advlab's search path
CLI_TRAIN_DATA = [
    ("train-size-above-data", ["data.train_size=1000000"], ["train_size", "1000000"]),
    ("meta-split-above-data", ["data.meta_size=100000"], ["meta_size"]),
]


def _format(argv: list[str], tmp_path: Path, files: dict[str, Path]) -> list[str]:
    values = {"tmp": tmp_path, **files}
    out = []
    for a in argv:  # only the known placeholders: YAML flow mappings ({depth: 3}) stay as they are
        for name, value in values.items():
            a = a.replace("{" + name + "}", str(value))
        out.append(a)
    return out


def _check_train(argv, words, tmp_path, files):
    argv = _format(argv, tmp_path, files)
    out = [] if any(a in ("--out", "--resume") for a in argv) else _format(OUT, tmp_path, files)
    before = snapshot(tmp_path)
    line = run_cli(["train", *argv, *out], "train")
    for w in words:
        assert w in line, line
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("argv, words", [c[1:] for c in CLI_TRAIN], ids=[c[0] for c in CLI_TRAIN])
def test_malformed_train_input(tmp_path, files, argv, words):
    _check_train(argv, words, tmp_path, files)


@pytest.mark.parametrize("argv, words", [c[1:] for c in CLI_TRAIN_DATA], ids=[c[0] for c in CLI_TRAIN_DATA])
def test_malformed_train_input_checked_on_the_data(tmp_path, files, argv, words, monkeypatch, fashion_mnist):
    monkeypatch.setenv(paths.ENV_VAR, str(fashion_mnist))  # where advlab's own search path found it
    _check_train(argv, words, tmp_path, files)


CLI_EVAL = [
    ("missing-target", ["{tmp}/nothing.pt"], ["nothing.pt"]),
    ("no-target", [], ["TARGET"]),
    ("truncated-checkpoint", ["{truncated.pt}"], ["truncated.pt", "cannot read checkpoint"]),
    ("text-checkpoint", ["{text.pt}"], ["text.pt", "cannot read checkpoint"]),
    ("checkpoint-runs-code", ["{evil.pt}"], ["evil.pt", "cannot read checkpoint"]),
    ("torch-checkpoint-runs-code", ["{evil_torch.pt}"], ["evil_torch.pt", "could run code"]),
    ("foreign-checkpoint", ["{foreign.pt}"], ["foreign.pt", "not an advlab checkpoint"]),
    ("wrong-architecture", ["{wrong_arch.pt}"], ["wrong_arch.pt", "does not match", "size mismatch"]),
    ("model-spec-not-mapping", ["{bad_spec.pt}"], ["bad_spec.pt", "model_spec"]),
    ("checkpoint-eps-out-of-range", ["{bad_eps.pt}"], ["bad_eps.pt", "eps", "--eps"]),
    ("checkpoint-without-norm", ["{no_norm.pt}"], ["no_norm.pt", "norm", "--norm"]),
    ("run-dir-without-best", ["{run_no_ckpt}"], ["run_no_ckpt", "best.pt"]),
    ("n-0", ["{good.pt}", "--n", "0"], ["--n", ">= 1"]),
    ("n-not-int", ["{good.pt}", "--n", "ten"], ["--n", "invalid int"]),
    ("eps-flag-above-1", ["{good.pt}", "--eps", "2"], ["--eps", "(0, 1]"]),
    ("eps-flag-nan", ["{good.pt}", "--eps", "nan"], ["--eps"]),
    ("norm-flag", ["{good.pt}", "--norm", "l3"], ["--norm", "invalid choice"]),
    ("attacks-flag", ["{good.pt}", "--attacks", "pgd20,pgd1000"], ["--attacks", "pgd1000", "allowed"]),
    ("aa-version-flag", ["{good.pt}", "--autoattack-version", "fastest"], ["--autoattack-version"]),
    ("square-queries-0", ["{good.pt}", "--square-queries", "0"], ["--square-queries", ">= 1"]),
    ("batch-size-0", ["{good.pt}", "--batch-size", "0"], ["--batch-size", ">= 1"]),
    ("device-flag", ["{good.pt}", "--device", "tpu"], ["--device", "allowed"]),
    ("checkpoint-flag", ["{good.pt}", "--checkpoint", "middle"], ["--checkpoint", "invalid choice"]),
    ("dataset-flag", ["{good.pt}", "--dataset", "imagenet-21k"], ["--dataset", "imagenet-21k", "allowed"]),
    ("split-flag", ["{good.pt}", "--split", "validation"], ["validation", "allowed: train, val, test"]),
    ("data-root-without-files", ["{good.pt}", "--dataset", "mnist", "--data-root", "{empty}"], ["mnist", "not found"]),
    ("out-is-a-folder", ["{good.pt}", "--out", "{empty}"], ["--out", "folder"]),
    ("out-under-a-file", ["{good.pt}", "--out", "{good.pt}/eval.json"], ["--out", "cannot write"]),
]


@pytest.mark.parametrize("argv, words", [c[1:] for c in CLI_EVAL], ids=[c[0] for c in CLI_EVAL])
def test_malformed_eval_input(tmp_path, files, argv, words):
    argv = _format(argv, tmp_path, files)
    before = snapshot(tmp_path)
    line = run_cli(["eval", *argv, "--quiet"], "eval")
    for w in words:
        assert w in line, line
    assert snapshot(tmp_path) == before  # no report, no half-written JSON
    assert not (tmp_path / MARKER).exists()


CLI_OTHER = [
    ("presets-unknown-show", ["presets", "--show", "nope"], "presets", ["unknown preset 'nope'"]),
    ("presets-bad-flag", ["presets", "--all"], "presets", ["--all"]),
    ("unknown-command", ["trian"], None, ["trian", "invalid choice"]),
]


@pytest.mark.parametrize("argv, command, words", [c[1:] for c in CLI_OTHER], ids=[c[0] for c in CLI_OTHER])
def test_malformed_other_command(tmp_path, argv, command, words):
    before = snapshot(tmp_path)
    line = run_cli(argv, command)
    for w in words:
        assert w in line, line
    assert snapshot(tmp_path) == before


@pytest.mark.slow
@pytest.mark.parametrize("argv, command", [
    (["train", "--preset", "pgd-at", "optimizer.lr=-0.1", "--out", "run"], "train"),
    (["train", "--epochs", "x"], "train"),
    (["eval", "evil.pt"], "eval"),
], ids=["negative-lr", "flag-type", "checkpoint-runs-code"])
def test_a_real_process_prints_one_line_and_no_traceback(tmp_path, argv, command):
    """The installed entry point, in its own process: exit 2, one stderr line, no traceback, nothing written."""
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"format": "advlab-checkpoint-1", "model": _Evil()}))
    before = snapshot(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "advlab", *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(f"advlab {command}: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert snapshot(tmp_path) == before and not (tmp_path / MARKER).exists()


# ------------------------------------------------------------------------------------------------ API
def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))


X = torch.rand(5, 1, 2, 2, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 0, 1])


def _evaluate(**changes: Any) -> Any:
    kwargs = dict(model=_model(), images=X, labels=Y, eps=0.1, attacks=["clean"], sanity=False, progress=False)
    kwargs.update(changes)
    return advlab.evaluate(**kwargs)


def _pgd(**changes: Any) -> Any:
    kwargs: dict[str, Any] = dict(eps=0.1, step_size=0.025, steps=2)
    kwargs.update(changes)
    x, y, model = kwargs.pop("x", X), kwargs.pop("y", Y), kwargs.pop("model", _model())
    return advlab.attacks.pgd(model, x, y, **kwargs)


def _train(config: Any, out: Any = "run", **kwargs: Any) -> Any:
    return advlab.train(config, out, progress=False, evaluate=False, **kwargs)


# (id, call(tmp_path), error type, words the one-line message must hold)
API = [
    ("evaluate-eps-text", lambda t: _evaluate(eps="abc"), AdvlabError, ["eps"]),
    ("evaluate-eps-above-1", lambda t: _evaluate(eps=1.5), AdvlabError, ["eps", "(0, 1]"]),
    ("evaluate-norm", lambda t: _evaluate(norm="l3"), AdvlabError, ["norm", "l3"]),
    ("evaluate-attacks-not-names", lambda t: _evaluate(attacks=3), AdvlabError, ["attacks"]),
    ("evaluate-unknown-attack", lambda t: _evaluate(attacks=["pgd1000"]), AdvlabError, ["pgd1000", "allowed"]),
    ("evaluate-batch-size-0", lambda t: _evaluate(batch_size=0), AdvlabError, ["batch_size"]),
    ("evaluate-batch-size-float", lambda t: _evaluate(batch_size=2.5), AdvlabError, ["batch_size"]),
    ("evaluate-images-not-tensor", lambda t: _evaluate(images=[[0.5]]), AdvlabError, ["tensors"]),
    ("evaluate-images-outside-box", lambda t: _evaluate(images=X + 2), AdvlabError, ["[0, 1]"]),
    ("evaluate-images-nan", lambda t: _evaluate(images=X * float("nan")), AdvlabError, ["[0, 1]"]),
    ("evaluate-labels-float", lambda t: _evaluate(labels=Y.float()), AdvlabError, ["labels", "integer"]),
    ("evaluate-labels-length", lambda t: _evaluate(labels=Y[:3]), AdvlabError, ["labels"]),
    ("evaluate-labels-out-of-range", lambda t: _evaluate(labels=Y + 10), AdvlabError, ["labels", "[0, 3)"]),
    ("evaluate-model-not-module", lambda t: _evaluate(model="small-cnn"), AdvlabError, ["model", "nn.Module"]),
    ("evaluate-model-wrong-input", lambda t: _evaluate(images=torch.rand(5, 3, 4, 4)), AdvlabError, ["shape"]),
    ("evaluate-device", lambda t: _evaluate(device="tpu"), AdvlabError, ["device", "allowed"]),
    ("evaluate-square-queries-0", lambda t: _evaluate(attacks=["square"], square_queries=0), AdvlabError,
     ["square_queries"]),
    ("evaluate-num-classes-0", lambda t: _evaluate(num_classes=0), AdvlabError, ["num_classes"]),
    ("evaluate-seed-text", lambda t: _evaluate(seed="x"), AdvlabError, ["seed"]),
    ("evaluate-aa-version", lambda t: _evaluate(attacks=["autoattack"], autoattack_version="x"), AdvlabError,
     ["AutoAttack version", "allowed"]),
    ("pgd-eps-negative", lambda t: _pgd(eps=-0.1), AdvlabError, ["eps"]),
    ("pgd-eps-text", lambda t: _pgd(eps="x"), AdvlabError, ["eps"]),
    ("pgd-step-size-nan", lambda t: _pgd(step_size=float("nan")), AdvlabError, ["step_size"]),
    ("pgd-step-size-negative", lambda t: _pgd(step_size=-0.1), AdvlabError, ["step_size"]),
    ("pgd-steps-float", lambda t: _pgd(steps=2.5), AdvlabError, ["steps"]),
    ("pgd-norm", lambda t: _pgd(norm="l3"), AdvlabError, ["norm"]),
    ("pgd-loss", lambda t: _pgd(loss="mse"), AdvlabError, ["loss", "mse"]),
    ("pgd-random-start", lambda t: _pgd(random_start="gauss"), AdvlabError, ["random_start"]),
    ("pgd-x-uint8", lambda t: _pgd(x=(X * 255).to(torch.uint8)), AdvlabError, ["x", "float"]),
    ("pgd-x-outside-box", lambda t: _pgd(x=X + 3), AdvlabError, ["x", "[0, 1]"]),
    ("pgd-labels-out-of-range", lambda t: _pgd(y=Y + 10), AdvlabError, ["labels", "[0, 3)"]),
    ("pgd-labels-float", lambda t: _pgd(y=Y.float()), AdvlabError, ["labels"]),
    ("pgd-direction", lambda t: _pgd(direction=2), AdvlabError, ["direction"]),
    ("pgd-logit-scale", lambda t: _pgd(logit_scale=float("nan")), AdvlabError, ["logit_scale"]),
    ("pgd-generator", lambda t: _pgd(generator="seed"), AdvlabError, ["generator"]),
    ("pgd-model-mode", lambda t: _pgd(model_mode="test"), AdvlabError, ["model_mode"]),
    ("load-unknown-dataset", lambda t: data.load("imagenet-21k", "train"), DataError, ["imagenet-21k", "allowed"]),
    ("load-unknown-split", lambda t: data.load("mnist", "validation"), DataError, ["validation", "allowed"]),
    ("load-root-not-path", lambda t: data.load("mnist", "test", root=3), DataError, ["root"]),
    ("load-val-per-class-text", lambda t: data.load("mnist", "val", val_per_class="x"), DataError,
     ["val_per_class"]),
    ("load-val-per-class-negative", lambda t: data.load("mnist", "val", root=write_mnist(t).parent,
                                                        val_per_class=-1), DataError, ["val_per_class"]),
    ("train-config-not-config", lambda t: _train(3), ConfigError, ["config"]),
    ("train-config-list", lambda t: _train(["pgd-at"]), ConfigError, ["config"]),
    ("train-out-not-path", lambda t: _train("pgd-at", out=3), ConfigError, ["out"]),
    ("train-overrides-string", lambda t: _train("pgd-at", overrides="epochs=2"), ConfigError, ["overrides"]),
    ("train-mapping-out-of-range", lambda t: _train({"epochs": 0}), ConfigError, ["epochs", ">= 1"]),
    ("train-mapping-unknown-key", lambda t: _train({"epoch": 3}), ConfigError, ["epoch", "allowed keys"]),
    ("train-edited-config", lambda t: _train(_edited_config()), ConfigError, ["optimizer.lr", "> 0"]),
    ("train-mapping-with-overrides", lambda t: _train({}, overrides=["epochs=1"]), ConfigError, ["overrides"]),
    ("load-model-truncated-checkpoint", lambda t: advlab.load_model(_truncated(t)), CheckpointError,
     ["cannot read checkpoint"]),
]


def _edited_config():
    """A TrainConfig changed in code after it was checked: the run checks it again."""
    from advlab.config import load_config

    config = load_config("pgd-at")
    config.optimizer.lr = -1.0
    return config


def _truncated(tmp_path: Path) -> Path:
    path = tmp_path / "t.pt"
    save_checkpoint(path, {"model": create_model(**SPEC).state_dict(), "model_spec": SPEC})
    _cut(path, 300)
    return path


@pytest.mark.parametrize("call, kind, words", [c[1:] for c in API], ids=[c[0] for c in API])
def test_malformed_api_argument(tmp_path, call, kind, words):
    (tmp_path / "keep").mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(Exception) as info:
        call(tmp_path)
    text = _one_line_error(info, kind)
    for w in words:
        assert w in text, text
    after = snapshot(tmp_path)
    made = {k: v for k, v in after.items() if k not in before}
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()
    # only what the case itself wrote as its input (a checkpoint, data files) may be new
    assert all(k.startswith(("mnist", "t.pt")) for k in made), made
