"""readers.csv parsing and simulated readers."""

from __future__ import annotations

import numpy as np
import pytest

from scintiflow import CLASSES
from scintiflow.ml.readers import (
    SIMULATED_READERS,
    ReaderRead,
    ReadersCsvError,
    read_readers_csv,
    readers_csv,
    simulate_reads,
)

KEY_A = "a" * 64
KEY_B = "b" * 64


def test_roundtrip_and_extra_columns() -> None:
    reads = [
        ReaderRead("dr-1", KEY_A, "graves"),
        ReaderRead("dr-2", KEY_A, "thyroid_tumor"),
        ReaderRead("dr,with comma", KEY_B, "normal"),
    ]
    assert read_readers_csv(readers_csv(reads)) == reads
    data = (
        "\ufeffkey, label ,reader_id,comment\r\n"
        f"{KEY_A},Graves,dr-1,mild\r\n"
        "\r\n"
        f"{KEY_B}, subacute_thyroiditis ,dr-1,\r\n"
    ).encode()
    assert read_readers_csv(data) == [
        ReaderRead("dr-1", KEY_A, "graves"),
        ReaderRead("dr-1", KEY_B, "subacute_thyroiditis"),
    ]


@pytest.mark.parametrize(
    ("text", "reason", "fragment"),
    [
        ("reader_id,key\ndr,x\n", "missing_column", "label"),
        ("reader_id,key,label\ndr-1,k1,normal\ndr-1,k2,cancer\n", "unknown_label", "line 3"),
        ("reader_id,key,label\ndr-1,,normal\n", "empty_field", "line 2: empty key"),
        ("reader_id,key,label\ndr-1,k1,normal\ndr-1,k1,graves\n", "duplicate_read", "line 3"),
    ],
)
def test_parse_errors_have_reason_and_line(text: str, reason: str, fragment: str) -> None:
    with pytest.raises(ReadersCsvError) as info:
        read_readers_csv(text.encode())
    assert info.value.reason == reason
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_not_utf8() -> None:
    with pytest.raises(ReadersCsvError) as info:
        read_readers_csv(b"reader_id,key,label\n\xff\xfe,\x80,normal\n")
    assert info.value.reason == "not_utf8"


def test_simulated_reads_hit_per_class_accuracy() -> None:
    rng = np.random.default_rng(0)
    n = 8000
    labels = [CLASSES[i] for i in rng.choice(4, size=n, p=[0.4, 0.25, 0.15, 0.2])]
    keys = [f"{i:064x}" for i in range(n)]
    wanted = SIMULATED_READERS["simulated-senior"]
    reads = simulate_reads(
        keys, labels, reader_id="simulated-senior", per_class_accuracy=wanted, seed=1
    )
    assert [r.key for r in reads] == keys
    assert all(r.reader_id.startswith("simulated-") for r in reads)
    got = np.array([r.label for r in reads])
    truth = np.array(labels)
    for cls, acc in wanted.items():
        mask = truth == cls
        assert np.mean(got[mask] == truth[mask]) == pytest.approx(acc, abs=0.01)
    overall = np.mean(got == truth)
    assert 0.85 <= overall <= 0.89  # about the study's senior readers (0.868)
    # Errors follow the plausible confusions: missed Graves' are mostly read as normal.
    graves_wrong = got[(truth == "graves") & (got != truth)]
    assert np.mean(graves_wrong == "normal") > 0.6
    # Seeded.
    again = simulate_reads(
        keys, labels, reader_id="simulated-senior", per_class_accuracy=wanted, seed=1
    )
    assert again == reads


def test_junior_is_weaker_than_senior() -> None:
    def overall(per_class: dict[str, float]) -> float:
        return float(np.mean(list(per_class.values())))

    assert overall(SIMULATED_READERS["simulated-junior"]) < overall(
        SIMULATED_READERS["simulated-senior"]
    )


def test_simulated_reader_id_is_enforced() -> None:
    with pytest.raises(ValueError, match="simulated-"):
        simulate_reads([KEY_A], ["normal"], reader_id="dr-1", per_class_accuracy={}, seed=0)
    with pytest.raises(ValueError, match="unknown label"):
        simulate_reads([KEY_A], ["cancer"], reader_id="simulated-x", per_class_accuracy={}, seed=0)


def test_custom_confusions_are_used() -> None:
    labels = ["thyroid_tumor"] * 1000
    keys = [f"{i:064x}" for i in range(1000)]
    reads = simulate_reads(
        keys,
        labels,
        reader_id="simulated-x",
        per_class_accuracy={"thyroid_tumor": 0.5},
        seed=3,
        confusions={"thyroid_tumor": {"graves": 1.0}},
    )
    got = [r.label for r in reads]
    assert got.count("thyroid_tumor") == 500
    assert got.count("graves") == 500
