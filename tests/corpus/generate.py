"""The bad-input corpus: every kind of hostile or broken file a night's exports can hold.

    python tests/corpus/generate.py OUTDIR [--no-big]

writes the corpus into OUTDIR and prints its manifest (name -> expected outcome) as JSON;
`write_corpus(outdir)` does the same from Python and returns the manifest. Nothing generated
is committed: the 200 MB object is a sparse file made at the time, in the folder given.

Each name maps to what the night must make of it:

- a reject reason code (`truncated_pixel_data`, `too_large`, `symlink_not_followed`, ...): the
  input is quarantined carrying that code (among others it may also carry);
- a warn code (`low_counts`, ...): the input is scored, flagged with that code;
- `scored`: the input is scored;
- `any`: pydicom's own test files (and the few other foreign files bundled with it): whatever
  the decoder says, as long as it is scored or quarantined with a known reason code.

Names are relative paths with `/` separators (`x.dcm/inner.dcm` lives in a folder named
`x.dcm`); special entries (a symbolic link, a named pipe, an empty folder named `.dcm`) are
made with `os` calls, so the corpus is meant for a POSIX folder (a `LocalStore`).

The valid images, the simulator's fault kinds (`scintiflow.sim.FAULT_KINDS`) and the NM files
edited into each class come from the simulator; the rest is byte surgery on those files.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Final

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from scintiflow.sim import case_to_multiview_dicom, fault_file, simulate_cases
from scintiflow.sim._cases import PhantomCase
from scintiflow.sim._nm import code_item, export_context, nm_image, to_bytes

NIGHT: Final = date(2026, 12, 3)
SEED: Final = 8
BIG_BYTES: Final = 200 * 2**20  # the too-large object (sparse: takes no disk space)
PADDED_BYTES: Final = 60 * 2**20  # under the size limit: read whole, refused by the walk
SECONDARY_CAPTURE: Final = UID("1.2.840.10008.5.1.4.1.1.7")
PHI_TEXT: Final = "CORPUS^SENTINEL^PHI"  # a name planted in odd places: must never leak

SCORED: Final = "scored"
ANY: Final = "any"

_Builder = Callable[["_Cases"], bytes]


class _Cases:
    """Simulated patients, one per class that needs its own SOP Instance UID."""

    def __init__(self) -> None:
        self._cases = simulate_cases(64, sites=("A",), seed=SEED)
        self._next = 0

    def take(self) -> tuple[PhantomCase, int]:
        case, index = self._cases[self._next], self._next
        self._next += 1
        return case, index

    def dataset(self) -> Dataset:
        """A valid single-view NM Image Storage dataset (explicit VR LE when written)."""
        case, index = self.take()
        ctx = export_context(case, night=NIGHT, index=index, seed=SEED)
        return nm_image(case, ctx, [case.image], ["anterior"], phi_sentinel=False)

    def fault(self, kind: str, rng_seed: int = 0) -> bytes:
        case, index = self.take()
        rng = np.random.default_rng([SEED, index, rng_seed])
        return fault_file(kind, case, night=NIGHT, index=index, seed=SEED, rng=rng)


def _write(ds: Dataset, ts: UID = ExplicitVRLittleEndian) -> bytes:
    return to_bytes(ds, ts)


def _pixels(ds: Dataset) -> np.ndarray:
    return np.frombuffer(ds.PixelData, dtype="<u2").reshape(int(ds.Rows), int(ds.Columns))


def _set_pixels(ds: Dataset, image: np.ndarray) -> Dataset:
    ds.Rows, ds.Columns = image.shape
    ds.PixelData = np.ascontiguousarray(image, dtype="<u2").tobytes()
    return ds


# ---------------------------------------------------------------------------------------
# Valid inputs (the names are the classes: spaces, non-ASCII, a folder named .dcm)


def _good(c: _Cases) -> bytes:
    return _write(c.dataset())


def _good_rle(c: _Cases) -> bytes:
    return _write(c.dataset(), RLELossless)


def _good_j2k(c: _Cases) -> bytes:
    return _write(c.dataset(), JPEG2000Lossless)


def _good_deflated(c: _Cases) -> bytes:
    return _write(c.dataset(), DeflatedExplicitVRLittleEndian)


# ---------------------------------------------------------------------------------------
# Decode reasons


def _too_small(c: _Cases) -> bytes:
    return b"DICM" * 10


def _text(c: _Cases) -> bytes:
    return b"Thyroid scan exported as text.\nNot an image at all.\n" * 20


def _zip(c: _Cases) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("scan.dcm", _good(c))
    return buf.getvalue()


def _meta_only(c: _Cases) -> bytes:
    """Preamble + file meta and nothing after it."""
    return _meta_only_from(_good(c))


def _meta_only_from(data: bytes) -> bytes:
    """The preamble and file meta group of a Part 10 file."""
    pos = 132
    while struct.unpack_from("<H", data, pos)[0] == 0x0002:
        vr = data[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR"):
            pos += 12 + struct.unpack_from("<I", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return data[:pos]


def _huge_element_length(c: _Cases) -> bytes:
    """A few-KB file whose one OB element declares 0x7FFFFFF0 bytes."""
    ds = c.dataset()
    del ds.PixelData
    ds.add(DataElement(0x00091010, "OB", b"\x00" * 64))
    ds.add(DataElement(0x00090010, "LO", "CORPUS"))
    data = bytearray(_write(ds))
    marker = b"\x09\x00\x10\x10OB\x00\x00" + struct.pack("<I", 64)
    at = data.index(marker)
    data[at + 8 : at + 12] = struct.pack("<I", 0x7FFFFFF0)
    return bytes(data)


def _huge_pixel_length(c: _Cases) -> bytes:
    """Pixel Data declaring 0xFFFFFFF0 bytes (pydicom reads it without complaint)."""
    data = bytearray(_good(c))
    marker = b"\xe0\x7f\x10\x00OW\x00\x00"
    at = data.rindex(marker)
    data[at + 8 : at + 12] = struct.pack("<I", 0xFFFFFFF0)
    return bytes(data)


def _item_delimiter_at_top(c: _Cases) -> bytes:
    data = _good(c)
    marker = b"\xe0\x7f\x10\x00OW"
    at = data.rindex(marker)
    return data[:at] + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + data[at:]


def _nonstandard_vr(c: _Cases) -> bytes:
    """Study Description written with the VR "QZ", which no DICOM edition defines."""
    ds = c.dataset()
    ds.StudyDescription = "THYROID"
    data = bytearray(_write(ds))
    marker = b"\x08\x00\x30\x10LO"
    at = data.index(marker)
    data[at + 4 : at + 6] = b"QZ"
    return bytes(data)


def _deflate_bomb(c: _Cases) -> bytes:
    """A deflated dataset of ~100 KB that inflates to 100 MiB."""
    ds = c.dataset()
    good = _write(ds, DeflatedExplicitVRLittleEndian)
    meta_end = len(_meta_only_from(good))
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    element = b"\x09\x00\x10\x10OB\x00\x00" + struct.pack("<I", 100 * 2**20)
    body = deflater.compress(element)
    chunk = b"\x00" * 2**20
    for _ in range(100):
        body += deflater.compress(chunk)
    body += deflater.flush()
    return good[:meta_end] + body


def _raw_encapsulated(c: _Cases) -> bytes:
    """No preamble, no file meta (so no transfer syntax), compressed pixel data."""
    data = _write(c.dataset(), JPEG2000Lossless)
    return data[len(_meta_only_from(data)) :]


def _unknown_syntax(c: _Cases) -> bytes:
    data = _good(c)
    ts = ExplicitVRLittleEndian.encode()
    at = data.index(ts + b"\x00")
    # same length, so the file meta stays consistent
    return data[:at] + b"1.2.999.19.1.2.1" + b"\x00" * 4 + data[at + len(ts) + 1 :]


def _missing_pixel_data(c: _Cases) -> bytes:
    ds = c.dataset()
    del ds.PixelData
    return _write(ds)


def _missing_bits_stored(c: _Cases) -> bytes:
    ds = c.dataset()
    del ds.BitsStored
    return _write(ds)


def _rescale_slope_zero(c: _Cases) -> bytes:
    ds = c.dataset()
    ds.RescaleSlope = "0"
    ds.RescaleIntercept = "0"
    return _write(ds)


def _rows_as_sequence(c: _Cases) -> bytes:
    ds = c.dataset()
    item = Dataset()
    item.PatientName = PHI_TEXT
    del ds.Rows
    ds.add(DataElement(0x00280010, "SQ", Sequence([item])))
    return _write(ds)


def _slope_as_sequence(c: _Cases) -> bytes:
    ds = c.dataset()
    item = Dataset()
    item.PatientName = PHI_TEXT
    ds.add(DataElement(0x00281053, "SQ", Sequence([item])))
    return _write(ds)


def _patient_name_as_sequence(c: _Cases) -> bytes:
    ds = c.dataset()
    item = Dataset()
    item.PatientName = PHI_TEXT
    item.PatientID = PHI_TEXT
    del ds.PatientName
    ds.add(DataElement(0x00100010, "SQ", Sequence([item])))
    return _write(ds)


def _patient_id_as_sequence(c: _Cases) -> bytes:
    ds = c.dataset()
    item = Dataset()
    item.PatientID = PHI_TEXT
    del ds.PatientID
    ds.add(DataElement(0x00100020, "SQ", Sequence([item])))
    return _write(ds)


def _modality_as_sequence(c: _Cases) -> bytes:
    """Modality as a sequence whose item names the patient: once str()'d into the checks
    table and from there into the reason file's failing values."""
    ds = c.dataset()
    item = Dataset()
    item.PatientName = PHI_TEXT
    del ds.Modality
    ds.add(DataElement(0x00080060, "SQ", Sequence([item])))
    return _write(ds)


def _bits_allocated_32(c: _Cases) -> bytes:
    ds = c.dataset()
    image = _pixels(ds).astype("<u4")
    ds.BitsAllocated = 32
    ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelData = image.tobytes()
    return _write(ds)


def _matrix_60000(c: _Cases) -> bytes:
    ds = c.dataset()
    ds.Rows = ds.Columns = 60_000
    return _write(ds)


def _rows_zero(c: _Cases) -> bytes:
    ds = c.dataset()
    ds.Rows = 0
    return _write(ds)


def _pixel_length_mismatch(c: _Cases) -> bytes:
    ds = c.dataset()
    ds.PixelData = ds.PixelData + b"\x00\x00\x00\x00"
    return _write(ds)


def _dynamic(c: _Cases) -> bytes:
    ds = c.dataset()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "DYNAMIC", "EMISSION"]
    return _write(ds)


def _multiview_ds(c: _Cases) -> Dataset:
    case, index = c.take()
    data = case_to_multiview_dicom(case, night=NIGHT, index=index, seed=SEED)
    return pydicom.dcmread(io.BytesIO(data))


def _ambiguous_multiframe(c: _Cases) -> bytes:
    ds = _multiview_ds(c)
    del ds.FrameIncrementPointer
    return _write(ds)


def _view_not_found(c: _Cases) -> bytes:
    ds = _multiview_ds(c)
    for item in ds.DetectorInformationSequence:
        view = item.ViewCodeSequence[0]
        if view.CodeValue == "399321004":  # anterior -> posterior
            item.ViewCodeSequence = Sequence([code_item("399001007", "posterior")])
    return _write(ds)


def _corrupt_rle(c: _Cases) -> bytes:
    """RLE Lossless with a segment table pointing past the end of its fragment."""
    ds = c.dataset()
    header = struct.pack("<16I", 2, 64, 0x7FFF0000, *([0] * 13))
    ds.PixelData = encapsulate([header + b"\x7f\x00" * 64])
    elem = ds["PixelData"]
    elem.VR = "OB"
    elem.is_undefined_length = True
    return to_bytes(ds, RLELossless, encode=False)


def _corrupt_compressed(variant: int) -> _Builder:
    """The simulator's corrupt JPEG 2000 (0), JPEG-LS (1) or JPEG baseline (2) stream."""

    def build(c: _Cases) -> bytes:
        seed = next(s for s in range(1000) if int(np.random.default_rng(s).integers(3)) == variant)
        case, index = c.take()
        rng = np.random.default_rng(seed)
        return fault_file("corrupt_compressed", case, night=NIGHT, index=index, seed=SEED, rng=rng)

    return build


def _fault(kind: str) -> _Builder:
    return lambda c: c.fault(kind)


# ---------------------------------------------------------------------------------------
# Suite reasons (they decode; the checks reject or warn)


def _wrong_sop_class(c: _Cases) -> bytes:
    ds = c.dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    return _write(ds)


def _burned_in(c: _Cases) -> bytes:
    ds = c.dataset()
    ds.BurnedInAnnotation = "YES"
    return _write(ds)


def _not_square(c: _Cases) -> bytes:
    ds = c.dataset()
    return _write(_set_pixels(ds, _pixels(ds)[:, :64]))


def _all_zero(c: _Cases) -> bytes:
    ds = c.dataset()
    return _write(_set_pixels(ds, np.zeros_like(_pixels(ds))))


def _flat(c: _Cases) -> bytes:
    ds = c.dataset()
    return _write(_set_pixels(ds, np.full_like(_pixels(ds), 40)))


def _no_patient_id(c: _Cases) -> bytes:
    ds = c.dataset()
    del ds.PatientID
    return _write(ds)


def _same_sop_instance(c: _Cases) -> bytes:
    """good.dcm's SOP Instance UID on different bytes (a re-export with a new description)."""
    ds = pydicom.dcmread(io.BytesIO(_CACHE["good.dcm"]))
    ds.SeriesDescription = "THYROID ANT PINHOLE (RE-EXPORT)"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _low_counts(c: _Cases) -> bytes:
    ds = c.dataset()
    image = _pixels(ds).astype(np.float64)
    scaled = np.round(image * (20_000.0 / image.sum()))
    return _write(_set_pixels(ds, scaled.astype("<u2")))


def _saturated(c: _Cases) -> bytes:
    ds = c.dataset()
    image = _pixels(ds)
    top = np.percentile(image, 90)
    return _write(_set_pixels(ds, np.minimum(image, top).astype("<u2")))


def _anisotropic_spacing(c: _Cases) -> bytes:
    ds = c.dataset()
    ds.PixelSpacing = ["1.2", "1.8"]
    return _write(ds)


def _no_spacing(c: _Cases) -> bytes:
    ds = c.dataset()
    del ds.PixelSpacing
    return _write(ds)


def _no_radiopharmaceutical(c: _Cases) -> bytes:
    ds = c.dataset()
    del ds.RadiopharmaceuticalInformationSequence
    return _write(ds)


def _monochrome1(c: _Cases) -> bytes:
    ds = c.dataset()
    ds.PhotometricInterpretation = "MONOCHROME1"
    return _write(ds)


def _posterior_view(c: _Cases) -> bytes:
    ds = c.dataset()
    ds.DetectorInformationSequence[0].ViewCodeSequence = Sequence(
        [code_item("399001007", "posterior")]
    )
    return _write(ds)


# ---------------------------------------------------------------------------------------
# The corpus

CLASSES: Final[dict[str, tuple[str, _Builder]]] = {
    # valid, with awkward names and encodings
    "good.dcm": (SCORED, _good),
    "good rle.dcm": (SCORED, _good_rle),
    "good j2k.dcm": (SCORED, _good_j2k),
    "good-deflated.dcm": (SCORED, _good_deflated),
    "Schilddrüse ñ 甲状腺.dcm": (SCORED, _good),
    "x.dcm/inner.dcm": (SCORED, _good),
    "pn_as_sequence.dcm": (SCORED, _patient_name_as_sequence),
    # the simulator's fault kinds
    "sim_truncated.dcm": ("truncated_pixel_data", _fault("truncated")),
    "sim_truncated_header.dcm": ("truncated_element", _fault("truncated_header")),
    "sim_not_nm.dcm": ("not_nm_modality", _fault("not_nm")),
    "sim_colour_screenshot.dcm": ("colour_image", _fault("colour_screenshot")),
    "sim_multiframe_tomo.dcm": ("tomographic_not_supported", _fault("multiframe_tomo")),
    "sim_corrupt_j2k.dcm": ("corrupt_pixel_data", _corrupt_compressed(0)),
    "sim_corrupt_jpegls.dcm": ("corrupt_pixel_data", _corrupt_compressed(1)),
    "sim_corrupt_jpeg.dcm": ("corrupt_pixel_data", _corrupt_compressed(2)),
    "sim_random_bytes.dcm": ("not_dicom", _fault("random_bytes")),
    "sim_png.dcm": ("not_dicom", _fault("png")),
    "sim_empty.dcm": ("empty_file", _fault("empty")),
    # decode reasons
    "zero_bytes.dcm": ("empty_file", lambda c: b""),
    "too_small.dcm": ("too_small", _too_small),
    "text.dcm": ("not_dicom", _text),
    "zip.dcm": ("not_dicom", _zip),
    "meta_only.dcm": ("truncated_header", _meta_only),
    "huge_element_length.dcm": ("truncated_element", _huge_element_length),
    "huge_pixel_length.dcm": ("truncated_pixel_data", _huge_pixel_length),
    "item_delimiter_at_top.dcm": ("malformed_structure", _item_delimiter_at_top),
    "nonstandard_vr.dcm": ("malformed_structure", _nonstandard_vr),
    "deflate_bomb.dcm": ("malformed_structure", _deflate_bomb),
    "raw_encapsulated.dcm": ("missing_transfer_syntax", _raw_encapsulated),
    "unknown_syntax.dcm": ("unsupported_transfer_syntax", _unknown_syntax),
    "no_pixel_data.dcm": ("missing_pixel_data", _missing_pixel_data),
    "no_bits_stored.dcm": ("missing_required_tag", _missing_bits_stored),
    "rescale_slope_zero.dcm": ("invalid_tag_value", _rescale_slope_zero),
    "rows_as_sequence.dcm": ("invalid_tag_value", _rows_as_sequence),
    "slope_as_sequence.dcm": ("invalid_tag_value", _slope_as_sequence),
    "bits_allocated_32.dcm": ("unsupported_bits_allocated", _bits_allocated_32),
    "matrix_60000.dcm": ("bad_geometry", _matrix_60000),
    "rows_zero.dcm": ("bad_geometry", _rows_zero),
    "pixel_length_mismatch.dcm": ("pixel_length_mismatch", _pixel_length_mismatch),
    "dynamic.dcm": ("dynamic_not_supported", _dynamic),
    "ambiguous_multiframe.dcm": ("ambiguous_multiframe", _ambiguous_multiframe),
    "view_not_found.dcm": ("view_not_found", _view_not_found),
    "corrupt_rle.dcm": ("corrupt_pixel_data", _corrupt_rle),
    # suite reasons
    "pid_as_sequence.dcm": ("missing_identifier", _patient_id_as_sequence),
    "modality_as_sequence.dcm": ("not_nm_modality", _modality_as_sequence),
    "wrong_sop_class.dcm": ("wrong_sop_class", _wrong_sop_class),
    "burned_in.dcm": ("burned_in_annotation", _burned_in),
    "not_square.dcm": ("wrong_geometry", _not_square),
    "all_zero.dcm": ("empty_image", _all_zero),
    "flat.dcm": ("blank_image", _flat),
    "no_patient_id.dcm": ("missing_identifier", _no_patient_id),
    "zz_copy_of_good.dcm": ("duplicate_bytes", lambda c: _CACHE["good.dcm"]),
    "zz_same_sop_instance.dcm": ("duplicate_sop_instance", _same_sop_instance),
    "low_counts.dcm": ("low_counts", _low_counts),
    "saturated.dcm": ("saturated_pixels", _saturated),
    "anisotropic_spacing.dcm": ("unusual_pixel_spacing", _anisotropic_spacing),
    "no_spacing.dcm": ("missing_pixel_spacing", _no_spacing),
    "no_radiopharmaceutical.dcm": ("missing_radiopharmaceutical", _no_radiopharmaceutical),
    "monochrome1.dcm": ("monochrome1_image", _monochrome1),
    "posterior_view.dcm": ("unexpected_view", _posterior_view),
}
"""name -> (expected outcome, builder) of every regular file the corpus holds."""

_CACHE: dict[str, bytes] = {}

SPECIAL: Final[dict[str, str]] = {
    "link.dcm": "symlink_not_followed",  # -> good.dcm, never followed
    "fifo.dcm": "not_a_regular_file",  # a named pipe
    "back\\slash.dcm": "invalid_key",  # a name that is not a safe object key
    "big.dcm": "too_large",  # 200 MB, sparse
    "zero_padded.dcm": "malformed_structure",  # good.dcm + zeros to 60 MiB (8-byte elements)
}
"""name -> expected code of the entries made with `os` calls (not bytes)."""

NOT_LISTED: Final = ("empty folder.dcm/",)
"""An empty folder named like a file: no object at all (a folder is not an input)."""


def write_corpus(outdir: Path | str, *, big: bool = True, pydicom_files: bool = True) -> dict:
    """Write the corpus into `outdir` (created); return its manifest: name -> expected.

    `big`: include the 200 MB sparse object; `pydicom_files`: include every file of
    `pydicom.data.get_testdata_files()` under `pydicom/` (expected `any`).
    """
    root = Path(outdir)
    root.mkdir(parents=True, exist_ok=True)
    cases = _Cases()
    manifest: dict[str, str] = {}
    _CACHE.clear()
    for name, (expected, build) in CLASSES.items():
        data = build(cases)
        _CACHE[name] = data
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        manifest[name] = expected
    for name, expected in SPECIAL.items():
        if name in ("big.dcm", "zero_padded.dcm") and not big:
            continue
        path = root / name
        if name == "link.dcm":
            path.symlink_to("good.dcm")
        elif name == "fifo.dcm":
            os.mkfifo(path)
        elif name in ("big.dcm", "zero_padded.dcm"):
            with path.open("wb") as fh:
                fh.write(_CACHE["good.dcm"])
                fh.truncate(BIG_BYTES if name == "big.dcm" else PADDED_BYTES)
        else:
            path.write_bytes(_CACHE["good.dcm"][:-2] + b"\x01\x00")
        manifest[name] = expected
    for name in NOT_LISTED:
        (root / name).mkdir(parents=True, exist_ok=True)
    if pydicom_files:
        manifest.update(_pydicom_files(root / "pydicom"))
    return manifest


def _pydicom_files(folder: Path) -> dict[str, str]:
    from pydicom.data import get_testdata_files

    base = Path(pydicom.data.__file__).parent
    found: dict[str, str] = {}
    for source in sorted(get_testdata_files()):
        src = Path(source)
        if not src.is_file():  # the list holds a few folders (DICOMDIR trees)
            continue
        rel = src.relative_to(base) if src.is_relative_to(base) else Path(src.name)
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(src.read_bytes())
        found[f"pydicom/{rel.as_posix()}"] = ANY
    return found


def seed_inputs(outdir: Path | str) -> list[Path]:
    """The corpus's regular files of at most 1 MiB (the fuzzer's seeds), written to `outdir`."""
    write_corpus(outdir, big=False)
    return sorted(
        p
        for p in Path(outdir).rglob("*")
        if p.is_file() and not p.is_symlink() and p.stat().st_size <= 2**20
    )


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 1:
        print("usage: python tests/corpus/generate.py OUTDIR [--no-big]", file=sys.stderr)
        return 2
    manifest = write_corpus(args[0], big="--no-big" not in argv)
    print(json.dumps(manifest, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
