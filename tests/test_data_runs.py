"""Whole runs on data written in the real layouts (tests/layouts.py): pgd-at trains and evaluates on a folder and on
a tensor file; streaming and in-memory loading give the same metrics for one seed; the examples of configs/examples
(SimCLR then SSAT on STL-10, smooth adversarial training on ImageNet, SGLR on Tiny-ImageNet) run end to end at tiny
sizes set by overrides."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from layouts import write_folder, write_imagenet, write_stl10, write_tensor_file, write_tiny_imagenet

import advlab
import advlab.data as data

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "configs" / "examples"
TIMING = {"seconds", "train_seconds", "images_per_second"}
SMALL = ["epochs=1", "batch_size=10", "validation.n=6", "validation.batch_size=6", "evaluation.n=6",
         "evaluation.batch_size=6", "evaluation.attacks=[pgd20]", "evaluation.sanity=false", "device=cpu",
         "data.val_per_class=1", "data.workers=0"]


@pytest.fixture(autouse=True)
def fresh_cache():
    data.clear_cache()
    yield
    data.clear_cache()


def rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train(preset: str, out: Path, overrides: list[str]) -> dict:
    return advlab.train(preset, out, overrides=SMALL + overrides, progress=False, overwrite=True)


def test_pgd_at_trains_and_evaluates_on_a_folder_and_advlab_eval_reads_it_back(tmp_path):
    write_folder(tmp_path / "imgs", train=12, test=4, size=16)
    summary = train("pgd-at", tmp_path / "run", [
        "data.dataset=folder", f"data.root={tmp_path / 'imgs'}", "model.options.image_size=16",
        "perturbation.steps=2", "epochs=2"])
    assert summary["best"]["n"] == 6 and 0 <= summary["best"]["robust"]["acc"] <= summary["best"]["clean"]["acc"]
    assert summary["best"]["meta"]["preprocessing"] == "none"
    record = json.loads((tmp_path / "run" / "data.json").read_text())
    assert record["images"]["classes"] == ["cat", "dog", "frog"] and record["loader"] == "memory"
    assert record["images"]["source"]["test"] == str(tmp_path / "imgs" / "test") and record["size"] == 33
    done = subprocess.run([sys.executable, "-m", "advlab", "eval", str(tmp_path / "run"), "--n", "5", "--attacks",
                           "pgd20", "--no-sanity", "--quiet", "--device", "cpu", "--out", str(tmp_path / "e.json")],
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
                                                               "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads((tmp_path / "e.json").read_text())["meta"]
    assert meta["dataset"] == "folder" and meta["first_n"] == 5 and meta["preprocessing"] == "none"


def test_pgd_at_trains_and_evaluates_on_a_tensor_file_with_its_test_file(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    images = (rng.integers(0, 60, (60, 16, 16, 3)) + 60 * labels[:, None, None, None]).astype(np.uint8)
    write_tensor_file(tmp_path / "train.npz", images, labels)
    write_tensor_file(tmp_path / "test.npz", images[:9], labels[:9])
    summary = train("pgd-at", tmp_path / "run", [
        "data.dataset=tensors", f"data.root={tmp_path / 'train.npz'}", f"data.test_file={tmp_path / 'test.npz'}",
        "model.options.image_size=16", "perturbation.steps=2"])
    assert summary["evaluation_n"] == 6 and summary["last"]["epoch"] == 1
    assert summary["data"]["images"]["source"]["test"] == str(tmp_path / "test.npz") and summary["data"]["size"] == 57


def test_streaming_and_in_memory_loading_give_the_same_metrics_for_one_seed(tmp_path):
    write_folder(tmp_path / "imgs", train=14, test=4, size=16)
    runs = {}
    for loader, workers in (("memory", 0), ("stream", 2)):
        summary = train("pgd-at", tmp_path / loader, [
            "data.dataset=folder", f"data.root={tmp_path / 'imgs'}", "model.options.image_size=16", "epochs=2",
            "perturbation.steps=2", f"data.loader={loader}", f"data.workers={workers}", "seed=4"])
        runs[loader] = (rows(tmp_path / loader), summary)
        assert json.loads((tmp_path / loader / "data.json").read_text())["loader"] == loader
    assert runs["memory"][0] == runs["stream"][0] and len(runs["memory"][0]) == 2
    for which in ("best", "last"):
        assert runs["memory"][1][which]["robust"] == runs["stream"][1][which]["robust"]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_streamed_run_stopped_mid_epoch_resumes_to_the_uninterrupted_metrics(tmp_path, workers,
                                                                               whole_and_resumed_mid_epoch):
    """Streamed from a folder (decoded in this process or in 2 worker processes, with the random crop and flip of
    small images): stopped by SIGINT in epoch 2 at its mid-epoch checkpoint, resumed, every logged number and the
    weights equal the uninterrupted run's (the loader restarts at the checkpoint's batch, the epoch's plan
    drawn from (seed, epoch) again)."""
    from advlab.config import load_config
    from advlab.runs import MID_EPOCH, load_checkpoint

    write_folder(tmp_path / "imgs", train=14, test=4, size=16)  # 3 classes: 39 training images, 4 batches
    config = load_config("pgd-at", [*SMALL, "epochs=2", "data.dataset=folder", f"data.root={tmp_path / 'imgs'}",
                                    "model.options.image_size=16", "perturbation.steps=2", "data.loader=stream",
                                    f"data.workers={workers}", "data.flip=true", "data.crop_padding=2"])

    def stopped_in_epoch_2(run_dir):
        saved = load_checkpoint(run_dir / MID_EPOCH)
        assert (saved["mid_epoch"]["epoch"], saved["mid_epoch"]["batch"]) == (1, 2)

    whole, resumed = whole_and_resumed_mid_epoch(config, tmp_path, stop_at=6, on_stop=stopped_in_epoch_2)
    assert json.loads((resumed / "data.json").read_text())["loader"] == "stream"
    assert rows(whole) == rows(resumed) and len(rows(whole)) == 2
    a, b = load_checkpoint(whole / "last.pt")["model"], load_checkpoint(resumed / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_simclr_on_stl10_unlabeled_then_ssat_with_the_knn_on_the_training_images(tmp_path):
    write_stl10(tmp_path / "data", train=40, test=10, unlabeled=16)
    tiny = [f"data.root={tmp_path / 'data'}", "data.image_size=32", "model.name=small-cnn", "model.options.image_size=32",
            "knn.k=3", "validation.attack=pgd20"]
    simclr = train(str(EXAMPLES / "stl10-simclr.yaml"), tmp_path / "simclr", tiny + ["batch_size=14"])
    record = simclr["data"]
    assert record["unlabeled"] == 16 and record["size"] == 30 + 16 and simclr["best"]["classifier"]["kind"] == "knn"
    assert simclr["best"]["classifier"]["bank"] == 30  # the labelled training images only
    ssat = train(str(EXAMPLES / "stl10-ssat.yaml"), tmp_path / "ssat", tiny + [
        f"init.from={tmp_path / 'simclr'}", "perturbation.steps=2", "evaluation.attacks=[knn-guide]"])
    assert ssat["data"]["unlabeled"] == 0 and ssat["best"]["classifier"]["bank"] == 30


@pytest.mark.parametrize("example", ["imagenet-sat-silu", "imagenet-sat-relu"])
def test_smooth_adversarial_training_on_imagenet_folders_streams_resized_crops(tmp_path, example):
    write_imagenet(tmp_path / "data", train=6, val=2, val_layout="devkit")
    summary = train(str(EXAMPLES / f"{example}.yaml"), tmp_path / "run", [
        f"data.root={tmp_path / 'data'}", "data.image_size=32", "batch_size=6"])
    record = summary["data"]
    assert record["loader"] == "stream" and record["images"]["preprocessing"] == "resize-37-center-crop-32"
    assert record["images"]["augment"].startswith("resized-crop 32")
    assert summary["best"]["meta"]["preprocessing"] == "resize-37-center-crop-32"
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "resnet50-imagenet" in config and ("silu" if "silu" in example else "relu") in config


def test_sglr_on_tiny_imagenet_runs_from_its_published_layout(tmp_path):
    write_tiny_imagenet(tmp_path / "data", train=8, val=2)
    summary = train(str(EXAMPLES / "tiny-imagenet-sglr.yaml"), tmp_path / "run", [
        f"data.root={tmp_path / 'data'}", "data.image_size=32", "model.name=small-cnn", "model.options.image_size=32",
        "epochs=2", "labels.start_epoch=1", "perturbation.steps=2", "batch_size=7"])
    history = rows(tmp_path / "run")
    counts = summary["data"]["images"]
    assert len(history) == 2 and counts["converted"] + counts["converted_validation"] == 3  # a grayscale JPEG a class
    assert summary["data"]["num_classes"] == 3
