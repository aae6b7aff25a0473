"""What advlab knows about each dataset: classes, image shape, default augmentation, channel stats."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import AdvlabError, DataError
from ..registry import Registry


@dataclass(frozen=True)
class DatasetInfo:
    """Fixed facts and defaults of one dataset.

    ``flip`` and ``crop_padding`` are the default training augmentation (the config may override them);
    ``mean``/``std`` are per-channel statistics of the training files, in [0, 1] pixel units, for users who
    want a normalisation layer (advlab models see pixels in [0, 1]); ``val_per_class`` is how many training
    images of each class form the validation split (1,000 images in all).
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    flip: bool
    crop_padding: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_per_class: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return (self.in_channels, self.image_size, self.image_size)


DATASETS: Registry[DatasetInfo] = Registry("dataset")

for _info in (
    DatasetInfo("fashion-mnist", 10, 1, 28, False, 0, (0.2860,), (0.3530,), 100),
    DatasetInfo("mnist", 10, 1, 28, False, 0, (0.1307,), (0.3081,), 100),
    DatasetInfo("cifar10", 10, 3, 32, True, 4, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 100),
    DatasetInfo("cifar100", 100, 3, 32, True, 4, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 10),
    DatasetInfo("svhn", 10, 3, 32, False, 0, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 100),
):
    DATASETS.register(_info.name, _info)


def info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; a DataError listing the known names otherwise."""
    try:
        return DATASETS.get(name)
    except AdvlabError as e:
        raise DataError(str(e)) from None
