"""`w2sd plugins new NAME`: write a working plugin package (a card, a kind, a metric, tests) from the public API.

The package passes its own tests after ``pip install -e``; it is the smallest complete example of the plugin
contract (docs/plugins.md). Written files are plain text; nothing is overwritten.
"""

from __future__ import annotations

import re
from pathlib import Path

from w2sd_cli.errors import InputError

NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

PYPROJECT = '''[build-system]
requires = ["hatchling>=1.25"]
build-backend = "hatchling.build"

[project]
name = "w2sd-__NAME__"
version = "0.1.0"
description = "A w2sd plugin: the __NAME__ pair kind, its card and its metric"
requires-python = ">=3.11"
dependencies = ["w2sd"]

[project.optional-dependencies]
test = ["pytest>=8"]

# The one line that makes this a w2sd plugin: an entry point in group "w2sd".
[project.entry-points.w2sd]
__NAME__ = "__PKG__"

[tool.hatch.build.targets.wheel]
packages = ["__PKG__"]

[tool.hatch.build]
dev-mode-dirs = ["."]  # `pip install -e .` adds this folder to sys.path
'''

README = '''# w2sd-__NAME__

A [w2sd](https://pypi.org/project/w2sd/) plugin made by `w2sd plugins new __NAME__`: a pair kind
(`__NAME__-gaussian`), a card (`__NAME__-demo`) and a metric (`__NAME__-mean-error`).

```bash
pip install -e .
pytest                                  # the plugin's own tests
w2sd pairs list                         # __NAME__-demo is listed
w2sd gen --pair __NAME__-demo --compare # weak | strong | W2SD, with the metric for each
```

Edit `__PKG__/kind.py` (load / prepare / decode) and `__PKG__/cards/`; see w2sd's docs/plugins.md.
'''

INIT = '''"""The __NAME__ w2sd plugin: hooks only; the code lives in kind.py (imported when a hook runs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from w2sd_cli.plugin import hookimpl

CARDS = Path(__file__).parent / "cards"


@hookimpl
def register_pair_kinds(register: Callable[[Any], None]) -> None:
    from __PKG__.kind import GaussianKind

    register(GaussianKind())


@hookimpl
def register_pairs(register: Callable[[Any], None]) -> None:
    for path in sorted(CARDS.glob("*.yaml")):
        register(path)


@hookimpl
def register_metrics(register: Callable[[Any], None]) -> None:
    from __PKG__.kind import MeanError

    register(MeanError())
'''

KIND = '''"""A pair kind with exact scores: one-dimensional Gaussians for the strong, weak and ideal models.

The strong model's mean sits between the weak model's and the truth's, so the weak-to-strong difference points
at the truth and W2SD should move samples toward it (W2SD, arXiv 2502.00473).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from w2sd_cli.plugin import Condition, LoadSettings, PairCard, PairKind, PreparedPair, Settings, Strict


class GaussianOptions(Strict):
    """The card's ``options``: mean and std of each model."""

    strong_mean: float = 0.8
    weak_mean: float = 0.5
    ideal_mean: float = 1.0
    std: float = Field(0.5, gt=0)


class GaussianKind(PairKind):
    """Strong and weak 1-D Gaussians with exact eps (no training, no download)."""

    name = "__NAME__-gaussian"
    summary = "1-D Gaussians with exact scores (made by `w2sd plugins new`)"
    options_model = GaussianOptions
    output = "samples"
    conditioning = "none"
    compare_methods = ("weak", "strong", "w2sd")

    def load(self, card: PairCard, settings: LoadSettings) -> GaussianPair:
        return GaussianPair(self.options(card))


class GaussianPair:
    """The loaded pair: nothing to load, the denoisers are formulas."""

    def __init__(self, options: GaussianOptions) -> None:
        self.options = options

    def prepare(self, condition: Condition, settings: Settings) -> PreparedPair:
        import torch

        from w2sd_cli.plugin import VPSchedule

        schedule = VPSchedule.linear()
        std = self.options.std

        def eps_of(mean: float) -> Any:
            def eps(x: Any, t: float) -> Any:
                a = schedule.alpha_bar(t)
                return math.sqrt(1 - a) * (x - math.sqrt(a) * mean) / (a * std**2 + 1 - a)
            return eps

        samples = settings.samples or 10_000

        def noise(seed: int) -> Any:
            return torch.randn(samples, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))

        strong, weak = eps_of(self.options.strong_mean), eps_of(self.options.weak_mean)
        sides = {"strong": {"mean": self.options.strong_mean}, "weak": {"mean": self.options.weak_mean},
                 "final": {"mean": self.options.strong_mean}, "weak_plain": {"mean": self.options.weak_mean}}
        return PreparedPair(strong=strong, weak=weak, final=strong, weak_plain=weak, schedule=schedule,
                            grid=schedule.timesteps(settings.steps), make_grid=schedule.timesteps, noise=noise,
                            sides=sides)

    def decode(self, x: Any, count: int) -> list[Any]:
        return [part.numpy() for part in x.chunk(count)]

    def provenance(self) -> dict[str, Any]:
        return {"device": "cpu", "dtype": "float64"}


class MeanError:
    """How far the samples' mean is from the ideal mean (lower is better)."""

    name = "__NAME__-mean-error"
    summary = "|mean of the samples - the ideal mean| (__NAME__ plugin)"
    inputs = "samples"
    directions = {"mean_error": -1}  # noqa: RUF012
    primary = "mean_error"

    def score(self, samples: Sequence[Any], prompts: Sequence[str], card: Any = None) -> list[dict[str, float]]:
        ideal = GaussianKind().options(card).ideal_mean
        return [{"mean_error": abs(float(x.mean()) - ideal)} for x in samples]
'''

CARD = '''schema: 1
name: __NAME__-demo
kind: __NAME__-gaussian
description: >-
  Strong N(0.8, 0.5) and weak N(0.5, 0.5) Gaussians; the truth is N(1.0, 0.5). The weak-to-strong
  difference points at the truth, so W2SD should move the samples' mean toward 1.0.
source:
  paper: made by `w2sd plugins new` (not from the paper)
  licence: MIT
defaults: {steps: 30, seed: 0, samples: 10000}
metrics: [__NAME__-mean-error]
options: {strong_mean: 0.8, weak_mean: 0.5, ideal_mean: 1.0, std: 0.5}
'''

TESTS = '''"""The plugin's own tests: listed, and its pair works through `w2sd gen`, `w2sd bench` and the Python API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from w2sd_cli.testing import reset

    monkeypatch.setenv("W2SD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    reset()


def invoke(*args: str) -> dict:
    """Run the installed `w2sd` command, as a user would, and read its --json output."""
    done = subprocess.run([sys.executable, "-m", "w2sd_cli", *args, "--json"], capture_output=True, text=True,
                          env=dict(os.environ), timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_pair_is_listed_with_this_plugin() -> None:
    pairs = {p["name"]: p for p in invoke("pairs", "list")["pairs"]}
    assert pairs["__NAME__-demo"]["plugin"] == "__NAME__"


def test_w2sd_moves_the_mean_toward_the_truth(tmp_path: Path) -> None:
    methods = invoke("gen", "--pair", "__NAME__-demo", "--compare", "--out", str(tmp_path))["methods"]
    assert methods["w2sd"]["mean_error"] < methods["strong"]["mean_error"] < methods["weak"]["mean_error"]


def test_bench_and_the_python_api(tmp_path: Path) -> None:
    import w2sd_cli

    facts = invoke("bench", "__NAME__-demo", "--seeds", "0-1", "--samples", "500", "--out", str(tmp_path / "run"))
    assert facts["complete"]
    [sample] = w2sd_cli.load_pair("__NAME__-demo").generate(samples=1000)
    assert sample.samples.shape == (1000, 1) and sample.nfe == 30 + 2 * 29
'''


def new_plugin(name: str, parent: Path) -> list[Path]:
    """Write the package ``w2sd-NAME`` under ``parent``; return the files written.

    Raises:
        InputError: a name that cannot be a package name, a reserved plugin name (``w2sd``, ``user``), or a
            folder that already exists.
    """
    if not NAME.match(name):
        raise InputError(f"plugin name {name!r}: use lowercase letters, digits and single hyphens, starting with "
                         "a letter (e.g. my-pairs).")
    name = name.removeprefix("w2sd-")
    from w2sd_cli.plugins import reserved

    if reserved(name) is not None:
        raise InputError(f"plugin name {name!r} is reserved: w2sd uses it for its built-ins and for your own cards "
                         "(`w2sd:NAME`, `user:NAME`), so the plugin would be refused. Choose another name, e.g. "
                         f"{name}-pairs (nothing was written).")
    package = "w2sd_" + name.replace("-", "_")
    root = parent / f"w2sd-{name}"
    if root.exists():
        raise InputError(f"{root} already exists; choose another name or remove it first (nothing was written).")
    files = {"pyproject.toml": PYPROJECT, "README.md": README, f"{package}/__init__.py": INIT,
             f"{package}/kind.py": KIND, f"{package}/cards/{name}-demo.yaml": CARD, "tests/test_plugin.py": TESTS}
    written = []
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("__NAME__", name).replace("__PKG__", package), encoding="utf-8")
        written.append(path)
    return written
