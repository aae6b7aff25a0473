"""Hard labels: the attack and the loss both aim at the dataset's labels."""
from ..base import LabelsPart, register


@register("labels", "hard")
class HardLabels(LabelsPart):
    """The given one-hot labels, unchanged (every baseline)."""

    label_free = True  # hands the labels on; only the parts that read them need them
