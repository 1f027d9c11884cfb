"""Tiny CPU pairs run on one torch thread unless the user chose a count (W2SD_THREADS, OMP_NUM_THREADS)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from w2sd_cli.errors import InputError
from w2sd_cli.threads import limit_threads_for_small_work, small_work_threads, threads_for_small_work


@pytest.fixture
def two_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """torch at 2 threads with no thread variable set (conftest pins both to 1); 1 again afterwards."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "W2SD_THREADS"):
        monkeypatch.delenv(name, raising=False)
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(1)


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, 1),
    ({"W2SD_THREADS": "auto"}, 1),
    ({"W2SD_THREADS": "3"}, 3),
    ({"W2SD_THREADS": "3", "OMP_NUM_THREADS": "8"}, 3),
    ({"OMP_NUM_THREADS": "8"}, None),
    ({"MKL_NUM_THREADS": "4", "W2SD_THREADS": "auto"}, None),
])
def test_the_users_choice_wins(environ: dict[str, str], expected: int | None) -> None:
    assert threads_for_small_work(environ) == expected


@pytest.mark.parametrize("raw", ["0", "-2", "many"])
def test_a_bad_w2sd_threads_is_named(raw: str) -> None:
    with pytest.raises(InputError, match="W2SD_THREADS"):
        threads_for_small_work({"W2SD_THREADS": raw})


@pytest.mark.usefixtures("two_threads")
def test_cpu_work_drops_to_one_thread_and_the_context_restores_it() -> None:
    with small_work_threads("cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    assert limit_threads_for_small_work(torch.device("cpu")) == 2
    assert torch.get_num_threads() == 1
    assert limit_threads_for_small_work("cpu") is None


@pytest.mark.usefixtures("two_threads")
def test_gpu_work_and_explicit_counts_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert limit_threads_for_small_work("cuda:0") is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert limit_threads_for_small_work("cpu") is None
    assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("two_threads")
def test_the_analytic_pair_samples_on_one_thread_and_gives_the_threads_back() -> None:
    import w2sd_cli

    seen: list[int] = []
    pair = w2sd_cli.load_pair("gmm-1d")
    pair.generate(steps=2, samples=10, observer=lambda info: seen.append(torch.get_num_threads()))
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2  # restored: a large pair loaded next gets torch's threads
