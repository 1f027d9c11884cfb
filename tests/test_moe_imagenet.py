"""ImageNet class names: lookup by name, synonym or number, with suggestions on a miss."""

from __future__ import annotations

import pytest

from w2sd_cli.errors import InputError
from w2sd_cli.moe.imagenet import class_name, class_names, lookup


def test_table_has_a_thousand_classes_in_label_order() -> None:
    names = class_names()
    assert len(names) == 1000
    assert names[0] == ("tench", "Tinca tinca")
    assert class_name(207) == "golden retriever"
    assert class_name(999) == "toilet tissue"


@pytest.mark.parametrize(("text", "label"), [
    ("golden retriever", 207), ("Golden  Retriever", 207), ("golden_retriever", 207), ("207", 207),
    ("Tinca tinca", 0), ("red panda", 387), ("giant panda", 388), ("volcano", 980), ("0", 0),
])
def test_lookup(text: str, label: int) -> None:
    assert lookup(text) == label


def test_a_first_name_wins_over_another_class_synonym() -> None:
    # "bullet" is 466's synonym only; "jack" is a synonym of 955 only; "hen" is class 8's first name.
    assert lookup("hen") == 8
    assert lookup("jack") == 955


@pytest.mark.parametrize(("text", "labels"), [("crane", ("134", "517")), ("panda", ("387", "388")),
                                              ("cardigan", ("264", "474"))])
def test_ambiguous_names_list_the_candidates(text: str, labels: tuple[str, str]) -> None:
    with pytest.raises(InputError, match="several ImageNet classes") as err:
        lookup(text)
    assert all(f"{label} = " in str(err.value) for label in labels)


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(InputError, match="Did you mean 'golden retriever'"):
        lookup("golden retreiver")


def test_numbers_must_fit_the_model() -> None:
    with pytest.raises(InputError, match="out of range"):
        lookup("1000")
    with pytest.raises(InputError, match="out of range"):
        lookup("12", num_classes=10)
    with pytest.raises(InputError, match="beyond this model"):
        lookup("golden retriever", num_classes=10)
