"""What the corpus and the fuzzer found: size limits and values of the wrong kind.

The size limit, the inflate limit, the undefined VR and the sequence in a text element are
regression tests (each fails on the code before its fix); the sequence in a number element
was already `invalid_tag_value` and is kept as a check.
"""

from __future__ import annotations

import zlib
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from test_corpus import load_generator

from scintiflow.ingest.dicom import MAX_INFLATED_BYTES, DecodeError, decode_dicom, read_header
from scintiflow.ingest.objects import MAX_OBJECT_BYTES, read_object
from scintiflow.storage import LocalStore

KEY = b"test-phi-key"
gen = load_generator()


class _Counting(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls: Counter[str] = Counter()

    def get(self, key: str, *, if_match: str = "") -> bytes:
        self.calls["get"] += 1
        return super().get(key, if_match=if_match)


def test_an_object_over_the_limit_is_refused_without_being_fetched(tmp_path: Path) -> None:
    store = _Counting(tmp_path)
    good = gen._good(gen._Cases())
    store.put("exports/big.dcm", good + b"\x00" * 1000)
    store.put("exports/fits.dcm", good)

    obj, data = read_object(store, "exports/big.dcm", patient_hash_key=KEY, max_bytes=len(good))
    assert (obj.reason, obj.sha256, data, obj.storage_error) == ("too_large", None, None, False)
    assert store.calls["get"] == 0

    obj, data = read_object(store, "exports/fits.dcm", patient_hash_key=KEY, max_bytes=len(good))
    assert obj.ok
    assert data == good
    assert MAX_OBJECT_BYTES == MAX_INFLATED_BYTES == 64 * 2**20


def _deflated(body_bytes: int) -> bytes:
    """A deflated-syntax file whose dataset inflates to about `body_bytes` bytes."""
    good = gen._write(gen._Cases().dataset(), pydicom.uid.DeflatedExplicitVRLittleEndian)
    meta = gen._meta_only_from(good)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    element = b"\x09\x00\x10\x10OB\x00\x00" + (body_bytes - 12).to_bytes(4, "little")
    body = deflater.compress(element)
    body += deflater.compress(b"\x00" * (body_bytes - 12))
    return meta + body + deflater.flush()


def test_a_deflated_dataset_is_inflated_to_at_most_the_object_limit() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_dicom(_deflated(64 * 2**20 + 4096), patient_hash_key=KEY)
    assert caught.value.reason == "malformed_structure"
    assert "size limit" in caught.value.message
    # under the limit it inflates (and fails later, for a reason of its own)
    with pytest.raises(DecodeError) as small:
        decode_dicom(_deflated(2**20), patient_hash_key=KEY)
    assert small.value.reason != "malformed_structure"


def test_megabytes_of_zero_padding_are_refused_before_pydicom_parses_them() -> None:
    # 1 MiB of zeros after the pixel data reads as 131,072 empty 8-byte elements: the old
    # decoder walked and parsed every one (2 s per MiB, 2 minutes at the size limit) and
    # accepted the file
    data = gen._good(gen._Cases()) + b"\x00" * 2**20
    with pytest.raises(DecodeError) as caught:
        decode_dicom(data, patient_hash_key=KEY)
    assert caught.value.reason == "malformed_structure"
    assert "elements" in caught.value.message


def test_a_vr_that_dicom_does_not_define_is_malformed() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_dicom(gen._nonstandard_vr(gen._Cases()), patient_hash_key=KEY)
    assert caught.value.reason == "malformed_structure"


def _with_sequence_at(keyword: str) -> bytes:
    ds = gen._Cases().dataset()
    item = Dataset()
    item.PatientName = gen.PHI_TEXT
    item.PatientID = gen.PHI_TEXT
    tag = pydicom.datadict.tag_for_keyword(keyword)
    assert tag is not None
    if tag in ds:
        del ds[tag]
    ds.add(DataElement(tag, "SQ", Sequence([item])))
    return gen._write(ds)


def test_a_sequence_in_a_text_element_reads_as_absent_never_as_its_text() -> None:
    record = decode_dicom(_with_sequence_at("PatientID"), patient_hash_key=KEY)
    assert record.patient_hash is None  # -> missing_identifier, not a hash of the item's text
    header = read_header(_with_sequence_at("ImageType"))
    assert header.image_type == ()
    assert gen.PHI_TEXT not in repr(header)
    assert read_header(_with_sequence_at("Modality")).modality is None


@pytest.mark.parametrize("keyword", ["Rows", "RescaleSlope", "NumberOfFrames"])
def test_a_sequence_in_a_number_element_is_an_invalid_value(keyword: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_dicom(_with_sequence_at(keyword), patient_hash_key=KEY)
    assert caught.value.reason == "invalid_tag_value"
    assert gen.PHI_TEXT not in str(caught.value)
