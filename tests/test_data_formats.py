"""advlab.data file formats: small files written in the real formats, read through the real ``load``.

Every test runs with HOME and $ADVLAB_DATA pointed into tmp_path, so nothing outside it is read or written.
"""
import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import advlab.data as data
from advlab.data import download, paths
from advlab.errors import DataError

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    monkeypatch.setattr(paths, "SYSTEM_FOLDERS", {"fashion-mnist": (tmp_path / "no-system-folder",)})
    data.clear_cache()
    yield
    data.clear_cache()


def balanced_labels(n, classes=10):
    return RNG.permutation(np.arange(n) % classes).astype(np.uint8)


def load_error(*args, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        data.load(*args, **kwargs)
    err = info.value
    # the parser's own exception must not show up as the cause or context of the DataError
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    return err


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)
def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, n_train=50, n_test=20, gz=True, size=28):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = RNG.integers(0, 256, (n, size, size), dtype=np.uint8)
        y = balanced_labels(n)
        arrays[prefix] = (x, y)
        for kind, a in (("images-idx3", x), ("labels-idx1", y)):
            name = f"{prefix}-{kind}-ubyte"
            raw = idx_bytes(a)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_files_load_with_splits(tmp_path, name, gz):
    arrays = write_idx(tmp_path / name, gz=gz)
    x_tr, y_tr = data.load(name, "train", root=tmp_path, val_per_class=2)
    x_va, y_va = data.load(name, "val", root=tmp_path, val_per_class=2)
    x_te, y_te = data.load(name, "test", root=tmp_path)
    assert x_tr.dtype == torch.uint8 and y_tr.dtype == torch.int64 and x_tr.is_contiguous()
    assert x_tr.shape == (30, 1, 28, 28) and x_va.shape == (20, 1, 28, 28) and x_te.shape == (20, 1, 28, 28)
    assert torch.bincount(y_va, minlength=10).tolist() == [2] * 10
    assert torch.equal(x_te[:, 0], torch.from_numpy(arrays["t10k"][0]))
    assert torch.equal(y_te, torch.from_numpy(arrays["t10k"][1]).long())
    # train + val together are exactly the training file
    x_all, y_all = torch.from_numpy(arrays["train"][0]), torch.from_numpy(arrays["train"][1]).long()
    joined = torch.cat([x_tr, x_va])[:, 0]
    assert sorted(map(bytes, joined.numpy())) == sorted(map(bytes, x_all.numpy()))
    assert torch.equal(torch.sort(torch.cat([y_tr, y_va])).values, torch.sort(y_all).values)


def test_files_directly_in_the_base_folder_and_env_var(tmp_path, monkeypatch):
    write_idx(tmp_path / "flat")
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "flat"))
    x, _ = data.load("mnist", "test")
    assert x.shape == (20, 1, 28, 28)


def test_root_wins_over_env_var(tmp_path, monkeypatch):
    write_idx(tmp_path / "env" / "mnist", n_test=20)
    write_idx(tmp_path / "root" / "mnist", n_test=30)
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "env"))
    assert len(data.load("mnist", "test", root=tmp_path / "root")[1]) == 30
    assert len(data.load("mnist", "test")[1]) == 20


def test_cache_returns_fresh_tensors(tmp_path):
    write_idx(tmp_path / "mnist")
    x, y = data.load("mnist", "test", root=tmp_path)
    x.zero_()
    y.fill_(3)
    x2, y2 = data.load("mnist", "test", root=tmp_path)
    assert x2.sum() > 0 and not torch.equal(y2, y)


def test_missing_files_list_every_folder_and_the_way_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "env"))
    msg = str(load_error("mnist", "train", root=tmp_path / "root"))
    assert "train-images-idx3-ubyte" in msg and "not found" in msg
    folders = (tmp_path / "root" / "mnist", tmp_path / "root", tmp_path / "env" / "mnist", tmp_path / "env",
               tmp_path / "home" / ".cache" / "advlab" / "mnist", tmp_path / "home" / ".cache" / "advlab")
    assert f"folders searched, in order: {', '.join(map(str, folders))};" in msg and "\n" not in msg
    assert "download=True" in msg
    msg = str(load_error("fashion-mnist", "test", root=tmp_path))
    assert "apt-get install dataset-fashion-mnist" in msg and str(tmp_path / "no-system-folder") in msg


def test_truncated_gzip(tmp_path):
    write_idx(tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:500])
    msg = str(load_error("mnist", "train", root=tmp_path))
    assert "train-images-idx3-ubyte.gz" in msg and "gzip" in msg and "download=True" in msg


def test_truncated_idx_payload(tmp_path):
    write_idx(tmp_path / "mnist", gz=False)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    msg = str(load_error("mnist", "test", root=tmp_path))
    assert "t10k-images-idx3-ubyte" in msg and "truncated" in msg


def test_wrong_magic_number(tmp_path):
    write_idx(tmp_path / "mnist", gz=False)
    y = balanced_labels(20)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(y, magic=0x0803))
    msg = str(load_error("mnist", "test", root=tmp_path))
    assert "t10k-labels-idx1-ubyte" in msg and "magic number" in msg and "download=True" in msg


def test_count_mismatch(tmp_path):
    write_idx(tmp_path / "mnist", gz=False)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(balanced_labels(19)))
    msg = str(load_error("mnist", "test", root=tmp_path))
    assert "t10k-images-idx3-ubyte" in msg and "20 images" in msg and "19 labels" in msg


def test_wrong_image_size(tmp_path):
    write_idx(tmp_path / "mnist", size=32)
    assert "expected 1x28x28" in str(load_error("mnist", "test", root=tmp_path))


def test_unknown_name_and_split():
    assert "allowed: cifar10, cifar100, fashion-mnist, folder, imagenet" in str(load_error("imagenet-1k", "train"))
    assert "allowed: train, val, test" in str(load_error("mnist", "validation"))


def test_too_few_images_for_validation(tmp_path):
    write_idx(tmp_path / "mnist")
    assert "val_per_class" in str(load_error("mnist", "train", root=tmp_path))  # 5 per class < 100


# ---------------------------------------------------------------- CIFAR
def cifar_arrays(n, classes):
    return RNG.integers(0, 256, (n, 3072), dtype=np.uint8), balanced_labels(n, classes).tolist()


def write_cifar(folder: Path, name="cifar10", n_per_file=20, protocol=4, old_numpy_name=False):
    """Write the extracted batch folder; return the expected (train, test) arrays."""
    spec = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                        b"labels", 10),
            "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100)}[name]
    sub, train_files, test_files, key, classes = spec
    out = folder / sub
    out.mkdir(parents=True, exist_ok=True)
    expected = {}
    for part, files in (("train", train_files), ("test", test_files)):
        xs, ys = [], []
        for f in files:
            n = 200 if name == "cifar100" and part == "train" else n_per_file
            x, y = cifar_arrays(n, classes)
            raw = pickle.dumps({b"batch_label": f.encode(), b"data": x, key: y}, protocol=protocol)
            if old_numpy_name:  # what the published (Python 2) files reference
                raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            (out / f).write_bytes(raw)
            xs.append(x)
            ys += y
        expected[part] = (np.concatenate(xs).reshape(-1, 3, 32, 32), np.array(ys))
    return expected


@pytest.mark.parametrize("protocol,old_name", [(2, True), (4, False), (5, False)])
def test_cifar10_batches(tmp_path, protocol, old_name):
    expected = write_cifar(tmp_path / "cifar10", protocol=protocol, old_numpy_name=old_name)
    x_te, y_te = data.load("cifar10", "test", root=tmp_path)
    assert x_te.shape == (20, 3, 32, 32) and x_te.dtype == torch.uint8 and y_te.dtype == torch.int64
    assert np.array_equal(x_te.numpy(), expected["test"][0]) and np.array_equal(y_te.numpy(), expected["test"][1])
    x_tr, y_tr = data.load("cifar10", "train", root=tmp_path, val_per_class=3)
    x_va, y_va = data.load("cifar10", "val", root=tmp_path, val_per_class=3)
    assert len(y_tr) == 70 and torch.bincount(y_va).tolist() == [3] * 10
    assert torch.equal(torch.sort(torch.cat([y_tr, y_va])).values,
                       torch.sort(torch.from_numpy(expected["train"][1])).values)


def test_cifar100_batches_directly_in_root(tmp_path):
    expected = write_cifar(tmp_path, name="cifar100", n_per_file=40)
    x_va, y_va = data.load("cifar100", "val", root=tmp_path, val_per_class=1)
    x_tr, _ = data.load("cifar100", "train", root=tmp_path, val_per_class=1)
    x_te, y_te = data.load("cifar100", "test", root=tmp_path)
    assert x_va.shape == (100, 3, 32, 32) and sorted(y_va.tolist()) == list(range(100))
    assert len(x_tr) == 100 and len(x_te) == 40
    assert np.array_equal(y_te.numpy(), expected["test"][1])


def make_tar(path: Path, folder: Path, arcname: str) -> None:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=arcname)


def test_cifar10_archive_is_extracted(tmp_path):
    expected = write_cifar(tmp_path / "src")
    (tmp_path / "data" / "cifar10").mkdir(parents=True)
    make_tar(tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz", tmp_path / "src" / "cifar-10-batches-py",
             "cifar-10-batches-py")
    x_te, y_te = data.load("cifar10", "test", root=tmp_path / "data")
    assert np.array_equal(x_te.numpy(), expected["test"][0])
    assert (tmp_path / "data" / "cifar10" / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not [p for p in (tmp_path / "data" / "cifar10").iterdir() if p.name.startswith(".extract")]


def test_corrupted_pickle(tmp_path):
    write_cifar(tmp_path / "cifar10")
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:1000])
    msg = str(load_error("cifar10", "test", root=tmp_path))
    assert "test_batch" in msg and "not a valid CIFAR batch pickle" in msg and "download=True" in msg


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_cannot_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_cifar(tmp_path / "cifar10")
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": _Evil()}))
    msg = str(load_error("cifar10", "test", root=tmp_path))
    assert "refused to load global" in msg and not (tmp_path / "pwned").exists()


def test_cifar_label_count_mismatch(tmp_path):
    write_cifar(tmp_path / "cifar10")
    x, y = cifar_arrays(20, 10)
    path = tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": x, b"labels": y[:-1]}))
    msg = str(load_error("cifar10", "test", root=tmp_path))
    assert "test_batch" in msg and "20 images" in msg


def _malicious_tar(path: Path, kind: str) -> None:
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("cifar-10-batches-py/readme")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"hi"))
        if kind in ("dotdot", "absolute"):
            bad = tarfile.TarInfo("cifar-10-batches-py/../../escaped" if kind == "dotdot" else "/tmp/escaped")
            bad.size = 2
            tar.addfile(bad, io.BytesIO(b"no"))
        else:
            bad = tarfile.TarInfo("cifar-10-batches-py/link")
            bad.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            bad.linkname = "/etc/passwd" if kind == "symlink" else "../outside"
            tar.addfile(bad)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_tar_path_traversal_is_refused(tmp_path, kind):
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    _malicious_tar(folder / "cifar-10-python.tar.gz", kind)
    msg = str(load_error("cifar10", "train", root=tmp_path / "data"))
    assert "refusing to extract" in msg and "cifar-10-python.tar.gz" in msg and "download=True" in msg
    assert not (tmp_path / "escaped").exists() and not (folder / "cifar-10-batches-py").exists()


def test_truncated_archive(tmp_path):
    write_cifar(tmp_path / "src")
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    make_tar(folder / "cifar-10-python.tar.gz", tmp_path / "src" / "cifar-10-batches-py", "cifar-10-batches-py")
    archive = folder / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[:3000])
    msg = str(load_error("cifar10", "test", root=tmp_path / "data"))
    assert "cifar-10-python.tar.gz" in msg and "truncated or corrupted" in msg
    assert not (folder / "cifar-10-batches-py").exists()


# ---------------------------------------------------------------- SVHN
def write_svhn(folder: Path, n_train=40, n_test=20):
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n in (("train", n_train), ("test", n_test)):
        x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        digits = balanced_labels(n)
        scipy.io.savemat(str(folder / f"{part}_32x32.mat"),
                         {"X": x, "y": np.where(digits == 0, 10, digits).reshape(n, 1).astype(np.uint8)})
        out[part] = (x, digits)
    return out


def test_svhn_mat(tmp_path):
    expected = write_svhn(tmp_path / "svhn")
    x, y = data.load("svhn", "test", root=tmp_path)
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8 and x.is_contiguous()
    assert np.array_equal(y.numpy(), expected["test"][1])  # 10 became 0
    raw = expected["test"][0]
    assert np.array_equal(x[7].numpy(), raw[:, :, :, 7].transpose(2, 0, 1))
    x_va, y_va = data.load("svhn", "val", root=tmp_path, val_per_class=2)
    assert torch.bincount(y_va).tolist() == [2] * 10
    assert len(data.load("svhn", "train", root=tmp_path, val_per_class=2)[1]) == 20


def test_bad_mat(tmp_path):
    write_svhn(tmp_path / "svhn")
    (tmp_path / "svhn" / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, this is not one" * 4)
    msg = str(load_error("svhn", "test", root=tmp_path))
    assert "test_32x32.mat" in msg and "not a readable MATLAB file" in msg and "download=True" in msg


# ---------------------------------------------------------------- download
@pytest.fixture
def serve():
    """``serve(name, {published name: local file})``: the dataset's record downloads those files instead."""
    originals = {}

    def serve_(name, files: dict[str, Path], wrong_md5=False):
        remotes = []
        for published, path in files.items():
            md5 = hashlib.md5(path.read_bytes()).hexdigest()
            remotes.append(download.Remote(published, (path.as_uri(),), "0" * 32 if wrong_md5 else md5))
        originals.setdefault(name, data.info(name))
        data.DATASETS.register(name, dataclasses.replace(originals[name], remotes=tuple(remotes)), overwrite=True)

    yield serve_
    for name, record in originals.items():
        data.DATASETS.register(name, record, overwrite=True)


def test_download_idx_into_root(tmp_path, serve):
    write_idx(tmp_path / "server")
    serve("mnist", {p.name: p for p in (tmp_path / "server").iterdir()})
    x, y = data.load("mnist", "val", root=tmp_path / "data", download=True, val_per_class=1)
    assert x.shape == (10, 1, 28, 28)
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == [
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]  # only what the split needs


def test_download_cifar_archive_into_cache(tmp_path, serve):
    expected = write_cifar(tmp_path / "src")
    make_tar(tmp_path / "cifar-10-python.tar.gz", tmp_path / "src" / "cifar-10-batches-py", "cifar-10-batches-py")
    serve("cifar10", {"cifar-10-python.tar.gz": tmp_path / "cifar-10-python.tar.gz"})
    x, _ = data.load("cifar10", "test", download=True)
    assert np.array_equal(x.numpy(), expected["test"][0])
    assert (tmp_path / "home" / ".cache" / "advlab" / "cifar10" / "cifar-10-batches-py" / "test_batch").is_file()


def test_download_checksum_mismatch(tmp_path, serve):
    write_svhn(tmp_path / "server")
    serve("svhn", {"test_32x32.mat": tmp_path / "server" / "test_32x32.mat"}, wrong_md5=True)
    msg = str(load_error("svhn", "test", root=tmp_path / "data", download=True))
    actual = hashlib.md5((tmp_path / "server" / "test_32x32.mat").read_bytes()).hexdigest()
    assert "checksum mismatch for test_32x32.mat" in msg and "0" * 32 in msg and actual in msg
    assert list((tmp_path / "data" / "svhn").iterdir()) == []  # nothing half-written left behind


def test_download_network_error_is_a_data_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    msg = str(load_error("mnist", "test", root=tmp_path, download=True))
    assert "t10k-images-idx3-ubyte.gz" in msg and "network is unreachable" in msg
    assert "ossci-datasets.s3.amazonaws.com" in msg
