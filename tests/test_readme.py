"""Every code block of the README runs, as a newcomer would run it (small sizes through arguments)."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README.read_text(), flags=re.S)
# appended to each `advlab` command of the README: argparse keeps the last value, so these shrink the runs
SMALL = {
    "train": ["--epochs", "1", "--train-size", "300", "--evaluation-n", "40", "--quiet", "--device", "cpu",
              "batch_size=100", "validation.n=40", "evaluation.attacks=[pgd20]", "data.meta_size=0"],
    "eval": ["--n", "40", "--attacks", "pgd20", "--no-sanity", "--quiet", "--device", "cpu"],
    "presets": [],
    "report": ["--quiet"],
    "compare": ["--quiet"],
    "bench": ["--batches", "1", "--warmup", "0", "--batch-size", "8", "--steps", "1", "--device", "cpu"],
    "probe": ["--epochs", "1", "--quiet", "--device", "cpu", "data.train_size=300", "batch_size=100", "validation.n=40",
              "evaluation.n=40", "evaluation.attacks=[pgd20]"],
}


FILE_BLOCK = re.compile(r"^# (\w+\.py)\b")  # a python block that starts "# mynets.py" is that file


def file_blocks() -> dict[str, str]:
    """The README's files (a python block whose first line is ``# <name>.py``): written into every folder the
    README's commands and other python blocks run in, as the user would have them beside their work."""
    return {m.group(1): code for lang, code in BLOCKS if lang == "python" and (m := FILE_BLOCK.match(code))}


def python_blocks() -> list[str]:
    return [code for lang, code in BLOCKS if lang == "python" and not FILE_BLOCK.match(code)]


def write_files(folder: Path) -> None:
    for name, code in file_blocks().items():
        (folder / name).write_text(code)


def advlab_lines() -> list[list[str]]:
    """The ``advlab`` lines of the README's bash blocks, and its ``python -c`` lines (as ``["python", ...]``),
    in order."""
    lines = []
    for lang, code in BLOCKS:
        if lang != "bash":
            continue
        for line in code.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "advlab":
                lines.append(words[1:])
            elif words and words[0] == "python":
                lines.append(words)
    return lines


def test_the_readme_has_the_blocks_this_test_runs():
    assert len(python_blocks()) >= 2 and len(advlab_lines()) >= 5


def write_my_images(folder: Path, train: int = 40, test: int = 5) -> None:
    """The README's ``my-images/``: Fashion-MNIST written out as PNG files in the ImageFolder layout."""
    from PIL import Image

    import advlab.data as data

    for split, n in (("train", train), ("test", test)):
        images, labels = data.load("fashion-mnist", split)
        for c in range(10):
            (folder / split / f"class{c}").mkdir(parents=True)
            for k, i in enumerate((labels == c).nonzero().flatten()[:n].tolist()):
                Image.fromarray(images[i, 0].numpy()).save(folder / split / f"class{c}" / f"{k}.png")


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist")
def test_every_advlab_command_of_the_readme_runs(tmp_path):
    write_files(tmp_path)
    if any("data.root=my-images" in words for words in advlab_lines()):
        write_my_images(tmp_path / "my-images")
    for words in advlab_lines():
        command = words[0]
        args = list(words)
        if command == "python":  # a step of the README between two advlab commands
            done = subprocess.run([sys.executable, *args[1:]], cwd=tmp_path, capture_output=True, text=True,
                                  timeout=300)
            assert done.returncode == 0, f"{' '.join(words)}\n{done.stderr[-3000:]}"
            continue
        if command == "train" and "--resume" in args:
            args += ["--quiet"]
        else:
            args += SMALL[command]
        done = subprocess.run([sys.executable, "-m", "advlab", *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"advlab {' '.join(words)}\n{done.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_every_python_block_of_the_readme_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path)
    code = python_blocks()[index]
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_advlab_evaluate_is_a_function_in_every_import_order():
    for first in ("import advlab.evaluation", "import advlab.evaluation.cli", "from advlab import data",
                  "import advlab.engine.train", "import advlab"):
        code = f"{first}\nimport advlab\nassert callable(advlab.evaluate), type(advlab.evaluate)\n" \
               "assert advlab.evaluate.__name__ == 'evaluate'\n" \
               "assert callable(advlab.train) and advlab.train.__name__ == 'train', type(advlab.train)"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{first}: {done.stderr[-2000:]}"
