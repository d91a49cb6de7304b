"""DICOM bytes -> `ImageRecord`: one trustworthy planar count image, or a typed `DecodeError`.

The decoder is the first line of defence against whatever lands in the export bucket. It
FAILS (raises `DecodeError` with a stable `DecodeReason`) whenever it cannot vouch for a 2-D
count image: not DICOM, truncated, structurally broken, colour, odd bit depths, compressed
without a decoder, corrupt streams, decodes that run too long, tomographic / dynamic /
unidentifiable multi-frame objects. It SUCCEEDS for well-formed grayscale images that are
merely the wrong kind (CT, wrong SOP class, burned-in annotation): those facts are reported
in the record and rejected later by the data checks, which own that policy.

Decisions worth knowing:
- pydicom 3 loads several broken files silently, so `dcmread` raising is never relied on. A
  small structural walk over the raw bytes (`structure.check_structure`) first proves that every
  declared length fits in the file; only then are values read with pydicom.
- Raw datasets without the 128-byte preamble + "DICM" are accepted when their first element
  is a plausible DICOM element. A missing transfer syntax (raw dataset, or a file meta group
  without (0002,0010)) is inferred from the encoding of the first element, as pydicom does;
  that is only trusted for native pixel data: encapsulated (compressed) pixel data without a
  transfer syntax fails with `missing_transfer_syntax`.
- Multi-frame static NM objects are resolved to one frame through the Frame Increment Pointer
  -> Detector Vector -> Detector Information Sequence -> View Code Sequence. When every frame
  has a view but none matches `preferred_view`, the reason is `view_not_found`; when views are
  missing, not unique, or the object has no detector vector, it is `ambiguous_multiframe`.
- Compressed pixel data is decoded in a worker thread and waited on with a timeout. A codec
  stuck in C code without releasing the GIL cannot be bounded by a thread; callers that need
  a hard bound should run batches in a subprocess. Native pixel data is a bounded copy
  (geometry and byte count are checked first) and is decoded inline.
- Native pixel data must hold exactly Rows x Columns x Frames x Bits/8 x Samples bytes plus
  at most one pad byte (pydicom silently drops extra bytes; we do not). For JPEG, JPEG-LS
  and JPEG 2000 the codestream's own size must equal Rows x Columns before any decode, so a
  crafted stream cannot make the codec allocate gigabytes.
- MONOCHROME1 images are decoded as stored (not inverted) and reported as such; pixel values
  are counts either way and the data checks decide whether to accept them.
- Messages never carry tag values that could be PHI: a reason code, a generic sentence and at
  most tag keywords or structural numbers (bits, frame counts). pydicom's own warnings and
  log records (which quote invalid values verbatim) are silenced while a decode runs.

Modules, in the order a decode runs: `structure` (the byte walk), `header` (pydicom parse and
the non-PHI `DicomHeader`), `pixel_format` (syntax, decoder, pixel description), `frames`
(the planar frame and its view), `codestream` (compressed sizes), `pixels` (the
time-limited decode to counts), `metadata` (the record's other facts), `decode`
(`decode_dicom`). `reasons` holds the codes and errors, `values` the safe value readers,
`quiet` the silencing of pydicom.
"""

from scintiflow.ingest.dicom.decode import DEFAULT_PATIENT_HASH_KEY, decode_dicom
from scintiflow.ingest.dicom.frames import MANY_FRAMES, normalise_view
from scintiflow.ingest.dicom.header import DicomHeader, read_header
from scintiflow.ingest.dicom.pixel_format import MAX_FRAMES, MAX_MATRIX
from scintiflow.ingest.dicom.quiet import quiet_pydicom
from scintiflow.ingest.dicom.reasons import REASON_TEXT, DecodeError, DecodeReason
from scintiflow.ingest.dicom.reasons import _rebuild_error as _rebuild_error  # old pickles
from scintiflow.ingest.dicom.structure import (
    MAX_ELEMENTS,
    MAX_INFLATED_BYTES,
    MAX_NESTING,
    MIN_FILE_BYTES,
)

_quiet_pydicom = quiet_pydicom  # the name scintiflow.outputs.secondary_capture imports today

__all__ = [
    "DEFAULT_PATIENT_HASH_KEY",
    "MANY_FRAMES",
    "MAX_ELEMENTS",
    "MAX_FRAMES",
    "MAX_INFLATED_BYTES",
    "MAX_MATRIX",
    "MAX_NESTING",
    "MIN_FILE_BYTES",
    "REASON_TEXT",
    "DecodeError",
    "DecodeReason",
    "DicomHeader",
    "decode_dicom",
    "normalise_view",
    "quiet_pydicom",
    "read_header",
]
