"""Size a run before starting it: training-step throughput, time per step, peak memory and FLOP utilisation.

:func:`measure` times the training step of a preset (default ``pgd-at``: PGD-10 adversarial training) on
random uint8 images of a given shape, on the device, with the preset's recipe and the config's precision,
attack precision, ``compile`` and ``channels_last``. Content does not change the speed of these models, so
no dataset is loaded. :func:`largest_batch` finds the largest batch whose step fits in CUDA memory.
``advlab bench`` is the command line of both.
"""
from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from .. import data as datasets
from ..config import TrainConfig
from ..devices import pick_device
from ..errors import AdvlabError
from ..models import create_model
from ..recipes import RecipeEnv, create_recipe, train_step
from .acceleration import as_step_input, check_compiled, step_model
from .optimizers import create_optimizer
from .config_checks import check_config
from .fast_defaults import resolve_fast_defaults


@dataclass
class BenchResult:
    """One measurement. Rates are per training image (the adversarial example and its update together)."""

    model: str
    shape: tuple[int, ...]  # (C, H, W)
    batch_size: int
    precision: str
    attack_precision: str
    compile: str
    channels_last: bool
    device: str
    batches: int  # timed batches (after the warm-up)
    images_per_second: float
    ms_per_step: float
    peak_memory_mib: float  # CUDA: peak allocated by torch in the timed steps; CPU: the process's peak RSS
    peak_memory_kind: str
    flops_per_image: float | None = None  # forward and backward FLOPs of one step / batch size (torch's counter)
    matmul_flops_per_second: float | None = None  # measured bf16 8192^3 matrix-multiply rate (CUDA)
    mfu: float | None = None  # achieved FLOP/s over that rate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable lines for the command line."""
        out = [f"{self.model} {'x'.join(map(str, self.shape))}, batch {self.batch_size}, {self.precision} "
               f"(attack {self.attack_precision}), compile {self.compile}, channels_last {self.channels_last}, "
               f"{self.device}, {self.batches} timed batches",
               f"images/s      {self.images_per_second:,.0f}",
               f"ms/step       {self.ms_per_step:.1f}",
               f"peak memory   {self.peak_memory_mib:,.0f} MiB ({self.peak_memory_kind})"]
        if self.flops_per_image is not None:
            out.append(f"GFLOP/image   {self.flops_per_image / 1e9:.2f} (one training step, torch's FLOP counter)")
        if self.mfu is not None and self.matmul_flops_per_second:
            out.append(f"MFU           {100 * self.mfu:.1f}% of the measured bf16 matmul rate "
                       f"({self.matmul_flops_per_second / 1e12:.0f} TFLOP/s)")
        return out


class _Setup:
    """A preset's model, optimiser and recipe on random data of one shape, ready to step."""

    def __init__(self, config: TrainConfig, shape: tuple[int, int, int], num_classes: int, batch_size: int) -> None:
        check_config(config)
        self.device = pick_device(config.device)
        self.config = c = resolve_fast_defaults(config, self.device)[0]  # precision / channels_last: auto
        torch.manual_seed(c.seed)
        g = torch.Generator().manual_seed(c.seed)
        self.x = torch.randint(0, 256, (batch_size, *shape), dtype=torch.uint8, generator=g).to(self.device)
        self.y = torch.randint(0, num_classes, (batch_size,), generator=g).to(self.device)
        self.index = torch.arange(batch_size, device=self.device)
        stats = datasets.info(c.data.dataset)
        spec = c.model_spec(num_classes, shape[0], (stats.mean, stats.std))  # for model.normalize: dataset
        self.model = create_model(spec.pop("name"), **spec).to(self.device)
        self.step_model = step_model(self.model, c.compile, c.channels_last)
        self.optimizer = create_optimizer(self.model.parameters(), c.optimizer)
        meta = c.data.meta_size
        env = RecipeEnv(num_train=batch_size, num_classes=num_classes, epochs=c.epochs, eps=c.eps, norm=c.norm,
                        device=self.device, seed=c.seed, class_counts=torch.bincount(self.y.cpu(), minlength=num_classes).tolist(),
                        meta_images=torch.randint(0, 256, (meta, *shape), dtype=torch.uint8, generator=g) if meta else None,
                        meta_labels=torch.arange(meta) % num_classes if meta else None,
                        model=self.model, optimizer=self.optimizer)
        self.recipe = create_recipe(c.recipe_spec(), env)
        self.scaler = torch.amp.GradScaler("cuda") if c.precision == "fp16" else None
        if self.step_model is not self.model:
            check_compiled(self.model, self.step_model, as_step_input(self.x.float().div(255), c.channels_last), self.y)

    def step(self, model: torch.nn.Module | None = None) -> None:
        c = self.config
        x = as_step_input(self.x.float().div_(255), c.channels_last)
        train_step(model or self.step_model, x, self.y, self.index, 0, self.recipe, self.optimizer,
                   precision=c.precision, attack_precision=c.attack_precision, scaler=self.scaler)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _shape(shape: tuple[int, ...] | list[int]) -> tuple[int, int, int]:
    if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise AdvlabError(f"shape must be three positive ints (C, H, W), got {tuple(shape)!r}")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


class FlopCount(TorchDispatchMode):
    """Counts the FLOPs of every aten operation run inside it with the formulas of torch's FLOP counter
    (``torch.utils.flop_counter.flop_registry``: matrix products and convolutions, forward and backward).

    torch's ``FlopCounterMode`` cannot be used here: its module tracker refuses ``torch.autograd.grad``
    with respect to the input, which every gradient attack calls.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.flops += count(*args, **kwargs, out_val=out)
        return out


def matmul_rate(device: torch.device, size: int = 8192, repeats: int = 10) -> float:
    """FLOP/s of a ``size``^3 bf16 matrix product on ``device`` (random operands, 3 warm-ups, mean of
    ``repeats``): the measured ceiling model FLOP utilisation is given against."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize(device)
    return repeats * 2 * size ** 3 / (time.perf_counter() - start)


def measure(config: TrainConfig, shape: tuple[int, ...], num_classes: int = 10, batches: int = 20, warmup: int = 3,
            flops: bool | None = None) -> BenchResult:
    """Time ``batches`` training steps of ``config`` (its preset's recipe, model, batch size, precision,
    attack precision, compile, channels_last, device) on random uint8 images of ``shape`` (C, H, W), after
    ``warmup`` untimed steps (they also compile).

    ``flops``: count one eager step's FLOPs (forward and backward, attack included) with torch's FLOP counter
    and, on CUDA, give model FLOP utilisation against :func:`matmul_rate`; default: on CUDA only.

    Raises:
        AdvlabError: a bad shape, batches < 1 or warmup < 0; ConfigError for a config a run could not use.
    """
    shape = _shape(shape)
    if batches < 1 or warmup < 0:
        raise AdvlabError(f"batches must be >= 1 and warmup >= 0, got {batches} and {warmup}")
    setup = _Setup(config, shape, num_classes, config.batch_size)
    cuda = setup.device.type == "cuda"
    for _ in range(warmup):
        setup.step()
    setup.sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(setup.device)
    start = time.perf_counter()
    for _ in range(batches):
        setup.step()
    setup.sync()
    seconds = time.perf_counter() - start
    if cuda:
        peak, kind = torch.cuda.max_memory_allocated(setup.device) / 2 ** 20, "CUDA, allocated by torch"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "CPU, process peak RSS"
    result = BenchResult(
        model=config.model.name, shape=shape, batch_size=config.batch_size, precision=setup.config.precision,
        attack_precision=config.attack_precision, compile=config.compile, channels_last=setup.config.channels_last,
        device=str(setup.device), batches=batches, images_per_second=batches * config.batch_size / seconds,
        ms_per_step=1000 * seconds / batches, peak_memory_mib=peak, peak_memory_kind=kind)
    if cuda if flops is None else flops:
        counter = FlopCount()
        with counter:
            setup.step(setup.model)  # eager: the counter sees every aten operation of the step
        result.flops_per_image = counter.flops / config.batch_size
        if cuda:
            result.matmul_flops_per_second = matmul_rate(setup.device)
            result.mfu = result.flops_per_image * result.images_per_second / result.matmul_flops_per_second
    return result


def largest_batch(config: TrainConfig, shape: tuple[int, ...], num_classes: int = 10, start: int = 64,
                  limit: int = 1 << 16) -> int:
    """The largest batch size (a multiple of 8, or ``start`` itself) whose training step of ``config`` runs
    in CUDA memory: doubling from ``start`` until a step runs out of memory or ``limit`` is reached, then
    bisecting. 0 when even ``start`` does not fit.

    Raises:
        AdvlabError: the config's device is not CUDA (CPU memory is not a hard limit worth searching).
    """
    shape = _shape(shape)
    device = pick_device(config.device)
    if device.type != "cuda":
        raise AdvlabError("the largest-batch search needs a CUDA device (device=cuda)")

    def fits(batch: int) -> bool:
        setup = None
        try:
            setup = _Setup(config, shape, num_classes, batch)
            setup.step()
            setup.sync()
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            del setup
            torch.cuda.empty_cache()

    if not fits(start):
        return 0
    good, bad = start, None
    while bad is None and good < limit:
        trial = min(2 * good, limit)
        if fits(trial):
            good = trial
        else:
            bad = trial
    if bad is None:
        return good
    while bad - good > 8:
        mid = (good + bad) // 2 // 8 * 8
        if mid <= good:
            break
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good
