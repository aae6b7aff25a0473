"""docs/ADDING.md's example runs as written: its Python blocks, one after another in one fresh process (the
part is registered in the first, used in the next, tested against its own oracle in the last), and its stated
error is the one advlab gives."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ADDING = Path(__file__).resolve().parents[1] / "docs" / "ADDING.md"
BLOCKS = re.findall(r"```python\n(.*?)```", ADDING.read_text(), flags=re.S)

pytestmark = pytest.mark.usefixtures("fashion_mnist")


def test_the_example_of_docs_adding_runs_end_to_end(tmp_path):
    assert len(BLOCKS) >= 4
    script = "\n\n".join(BLOCKS) + "\n\nimport advlab\ntry:\n" \
        "    advlab.train('pgd-at', 'runs/bad', overrides=['weighting.name=focal', 'weighting.gamma=-1'])\n" \
        "except advlab.ConfigError as exc:\n    print('ERROR', exc)\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
    assert done.returncode == 0, done.stderr[-3000:]
    stated = re.search(r"`ConfigError: (weighting\.gamma: [^`]*)`", ADDING.read_text()).group(1)
    assert f"ERROR {stated}" in done.stdout  # the error the page states, word for word
    assert (tmp_path / "runs" / "focal" / "last.pt").is_file() and not (tmp_path / "runs" / "bad").exists()
