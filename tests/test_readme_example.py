"""The README's "Prune your own model" example runs as written: a user's CNN (the README's
my_nets.py), weights trained for a few batches, a generated folder of 64x64 images, and the
four commands, from the weights to `icepick compare`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("circle", "square", "stripes")


def _example_blocks() -> tuple[str, str]:
    """The README's example: its Python file (my_nets.py) and its shell commands."""
    text = (REPO / "README.md").read_text()
    example = re.search(r"<!-- example: own-model -->(.*?)<!-- /example -->", text, re.S)
    assert example, "README.md lost its example markers"
    python = re.search(r"```python\n(.*?)```", example.group(1), re.S).group(1)
    bash = re.search(r"```bash\n(.*?)```", example.group(1), re.S).group(1)
    return python, bash


def _images(root: Path, per_class: int = 16) -> None:
    """Three classes of 64x64 RGB images a small CNN tells apart: a disc, a square, stripes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            cy, cx, r = rng.integers(20, 44, 2).tolist() + [int(rng.integers(8, 14))]
            if name == "circle":
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            elif name == "square":
                mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
            else:
                mask = (xx // 4) % 2 == 0
            image = rng.normal(60, 15, (64, 64, 3))
            image[mask] += 120
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")


def _train_weights(folder: Path) -> None:
    """The user's side: make_net trained briefly on the images (0..1 inputs, their statistics), saved as a state dict."""
    sys.path.insert(0, str(folder))
    try:
        import my_nets  # the README's file
    finally:
        sys.path.remove(str(folder))
    from PIL import Image

    files = sorted((folder / "my_images").rglob("*.png"))
    x = torch.stack([torch.from_numpy(np.array(Image.open(f))).permute(2, 0, 1) for f in files]).float() / 255
    y = torch.tensor([CLASSES.index(f.parent.name) for f in files])
    x = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / x.std(dim=(0, 2, 3), keepdim=True)
    torch.manual_seed(0)
    model = my_nets.make_net(num_classes=len(CLASSES))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    torch.save(model.state_dict(), folder / "my_weights.pt")
    sys.modules.pop("my_nets", None)


@pytest.mark.slow
def test_the_readmes_own_model_example_runs_as_written(tmp_path):
    python, bash = _example_blocks()
    (tmp_path / "my_nets.py").write_text(python)
    _images(tmp_path / "my_images")
    _train_weights(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "-e", "-c", bash], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ICE-Pick against the iterative baseline" in done.stdout
    assert "pruning steps" in done.stdout  # `icepick blocks`
    result = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    methods = {row["method"] for row in result["table"]}
    assert methods >= {"icepick", "baseline"}
    assert (tmp_path / "cmp" / "comparison.png").is_file() and (tmp_path / "mine.pt").is_file()
    manifest = json.loads((tmp_path / "data" / "mine" / "manifest.json").read_text())
    assert manifest["image_shape"] == [3, 64, 64]
