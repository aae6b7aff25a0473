"""One record per dataset (:class:`DatasetInfo`) and the registry of them (:data:`DATASETS`).

A record holds everything advlab knows about a dataset: classes, image shape, default augmentation,
channel statistics, the size of the validation split, the file layout (:mod:`advlab.data.sources`), the
published files with their URLs and md5 checksums (downloaded by :mod:`advlab.data.download`), and how a
user gets the files. The user's own data (``folder``, ``tensors``) are records too, whose classes, channels and
image size come from the files (None in the record).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import AdvlabError, DataError
from ..registry import Registry
from .download import Remote
from .folder import FolderSource
from .imagenet import ImageNetSource
from .sources import CifarSource, IdxSource, MatSource, Source
from .stl10 import Stl10Source
from .tensor_file import TensorFileSource
from .tiny_imagenet import TinyImageNetSource

LARGE = 128
"""From this image side on, ``augment: auto`` of a user's set is ``resized-crop`` (the ImageNet recipe); below, ``crop``."""


@dataclass(frozen=True)
class DatasetInfo:
    """Fixed facts and defaults of one dataset.

    ``flip`` and ``crop_padding`` are the default training augmentation (the config may override them; a
    ``crop_padding`` of None is an eighth of the image side); ``augment`` the default kind
    (:data:`advlab.data.plan.AUGMENTATIONS`, or ``auto``: ``resized-crop`` from :data:`LARGE` pixels on, else
    ``crop``); ``mean``/``std`` are per-channel statistics of the training files, in [0, 1] pixel units, for
    users who want a normalisation layer (advlab models see pixels in [0, 1]; None where not computed);
    ``val_per_class`` is how many training images of each class form the validation split (1,000 images in all;
    None: ``min(1000 // C, smallest class // 10)``, at least 1). ``source`` is the file layout, ``remotes`` the
    published files (URLs tried in order, md5), ``hint`` how to get the files. ``num_classes``, ``in_channels``,
    ``image_size``: None when the files say (a user's set). ``resize``: the files vary in size, and every image is
    brought to ``image_size`` (resize and centre crop). ``search``: the files are looked for in advlab's folders
    (:mod:`advlab.data.paths`); False: only in ``data.root``. ``parts``: the parts it has (``unlabeled``: images
    without labels, for self-supervised training). ``named_classes``: the files name the classes (wnids, folders,
    ``class_names.txt``): the classes are those of the files (``num_classes`` is the published set's count).
    """

    name: str
    num_classes: int | None
    in_channels: int | None
    image_size: int | None
    flip: bool
    crop_padding: int | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    val_per_class: int | None
    source: Source
    remotes: tuple[Remote, ...]
    hint: str
    augment: str = "crop"
    resize: bool = False
    search: bool = True
    parts: tuple[str, ...] = ("train", "test")
    named_classes: bool = False

    @property
    def shape(self) -> tuple[int, int, int] | None:
        """``(C, H, W)`` of one image; None when the files say (a user's set)."""
        if self.in_channels is None or self.image_size is None:
            return None
        return (self.in_channels, self.image_size, self.image_size)

    def remote(self, filename: str) -> Remote:
        """The published file ``filename``; a DataError when the record lists no such file."""
        for r in self.remotes:
            if r.filename == filename:
                return r
        raise DataError(f"{self.name}: no download source for {filename}; known: "
                        f"{', '.join(r.filename for r in self.remotes)}")


def _mirrored(bases: tuple[str, ...], md5s: dict[str, str]) -> tuple[Remote, ...]:
    """One Remote per file, each tried at every base URL in order."""
    return tuple(Remote(n, tuple(b + n for b in bases), h) for n, h in md5s.items())


_FASHION = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_MNIST = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
_CIFAR = ("https://www.cs.toronto.edu/~kriz/",)
_SVHN = ("http://ufldl.stanford.edu/housenumbers/",)
_DOWNLOAD = "call advlab.data.load(name, split, download=True) to download the files"
_IDX_HINT = "put the four IDX files (.gz or not) in one of the folders above"

# The STL-10 and ImageNet md5s are torchvision's (datasets/stl10.py, datasets/imagenet.py); Tiny-ImageNet's is the
# one published code uses for the CS231n zip. ImageNet is listed for its checksums only (no public download).
# The MNIST and Fashion-MNIST md5s are the ones torchvision lists (quoted from memory; a wrong one shows up
# as a checksum error naming both hashes).
DATASETS: Registry[DatasetInfo] = Registry("dataset")
for _info in (
    DatasetInfo(
        "fashion-mnist", num_classes=10, in_channels=1, image_size=28, flip=False, crop_padding=0,
        mean=(0.2860,), std=(0.3530,), val_per_class=100, source=IdxSource(),
        remotes=_mirrored(_FASHION, {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}),
        hint=f"install Debian's package (apt-get install dataset-fashion-mnist), {_DOWNLOAD}, or {_IDX_HINT}"),
    DatasetInfo(
        "mnist", num_classes=10, in_channels=1, image_size=28, flip=False, crop_padding=0,
        mean=(0.1307,), std=(0.3081,), val_per_class=100, source=IdxSource(),
        remotes=_mirrored(_MNIST, {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
        hint=f"{_DOWNLOAD}, or {_IDX_HINT}"),
    DatasetInfo(
        "cifar10", num_classes=10, in_channels=3, image_size=32, flip=True, crop_padding=4,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), val_per_class=100,
        source=CifarSource("cifar-10-python.tar.gz", "cifar-10-batches-py",
                           tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "labels"),
        remotes=_mirrored(_CIFAR, {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}),
        hint=f"{_DOWNLOAD}, or put cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/ folder) "
             "in one of the folders above"),
    DatasetInfo(
        "cifar100", num_classes=100, in_channels=3, image_size=32, flip=True, crop_padding=4,
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), val_per_class=10,
        source=CifarSource("cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",), "fine_labels"),
        remotes=_mirrored(_CIFAR, {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"}),
        hint=f"{_DOWNLOAD}, or put cifar-100-python.tar.gz (or its extracted cifar-100-python/ folder) "
             "in one of the folders above"),
    DatasetInfo(
        "svhn", num_classes=10, in_channels=3, image_size=32, flip=False, crop_padding=0,
        mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970), val_per_class=100, source=MatSource(),
        remotes=_mirrored(_SVHN, {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
                                  "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3"}),
        hint=f"{_DOWNLOAD}, or put train_32x32.mat and test_32x32.mat in one of the folders above"),
    DatasetInfo(
        "stl10", num_classes=10, in_channels=3, image_size=96, flip=True, crop_padding=12, mean=None, std=None,
        val_per_class=100, source=Stl10Source(), parts=("train", "test", "unlabeled"), named_classes=True,
        remotes=_mirrored(("http://ai.stanford.edu/~acoates/stl10/",),
                          {"stl10_binary.tar.gz": "91f7769df0f17e558f3565bffb0c7dfb"}),
        hint=f"{_DOWNLOAD} (2.6 GB), or put stl10_binary.tar.gz (or its extracted stl10_binary/ folder) in one of "
             "the folders above"),
    DatasetInfo(
        "tiny-imagenet", num_classes=200, in_channels=3, image_size=64, flip=True, crop_padding=4, mean=None,
        std=None, val_per_class=5, source=TinyImageNetSource(), named_classes=True,
        remotes=_mirrored(("http://cs231n.stanford.edu/",), {"tiny-imagenet-200.zip": "90528d7ca1a48142e341f4ef8d21d0de"}),
        hint="download http://cs231n.stanford.edu/tiny-imagenet-200.zip (md5 90528d7ca1a48142e341f4ef8d21d0de) and "
             "unzip it into one of the folders above (it makes tiny-imagenet-200/)"),
    DatasetInfo(
        "imagenet", num_classes=1000, in_channels=3, image_size=224, flip=True, crop_padding=0,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), val_per_class=1, source=ImageNetSource(),
        augment="resized-crop", resize=True, named_classes=True,
        remotes=_mirrored(("https://image-net.org/data/ILSVRC/2012/",), {
            "ILSVRC2012_img_train.tar": "1d675b47d978889d74fa0da5fadfb00e",
            "ILSVRC2012_img_val.tar": "29b22e2961454d5413ddabcf34fc5622",
            "ILSVRC2012_devkit_t12.tar.gz": "fa75699e90414af021442c21a62c3abf"}),
        hint="ImageNet needs a registration at https://image-net.org (or Kaggle's imagenet-object-localization-"
             "challenge); extract the training archive into train/<wnid>/ and the validation images into val/ "
             "(class folders, or flat with LOC_val_solution.csv or the devkit's ground truth and meta.mat) in one "
             "of the folders above"),
    DatasetInfo(
        "folder", num_classes=None, in_channels=None, image_size=None, flip=True, crop_padding=None, mean=None,
        std=None, val_per_class=None, source=FolderSource(), remotes=(), augment="auto", search=False,
        named_classes=True,
        parts=("train", "test", "unlabeled"),
        hint="set data.root to a folder holding train/<class>/ and test/<class>/ (or val/), or only <class>/ "
             "folders (a test split is carved), of .png/.jpg/.jpeg/.webp/.bmp images; unlabeled/ beside them for "
             "data.unlabeled"),
    DatasetInfo(
        "tensors", num_classes=None, in_channels=None, image_size=None, flip=True, crop_padding=None, mean=None,
        std=None, val_per_class=None, source=TensorFileSource(), remotes=(), augment="auto", search=False,
        named_classes=True,
        hint="set data.root to a .npz, .pt or .safetensors file with uint8 images (N x H x W x C or N x C x H x W) "
             "named images (or x) and integer labels named labels (or y); data.test_file for its test file"),
):
    DATASETS.register(_info.name, _info)


def info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; a DataError listing the known names otherwise."""
    try:
        return DATASETS.get(name)
    except AdvlabError as e:
        raise DataError(str(e)) from None
