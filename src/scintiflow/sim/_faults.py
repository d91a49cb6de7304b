"""Broken or foreign files that turn up in real export folders, one builder per fault kind."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import date

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
)

from scintiflow.sim._anatomy import Anatomy, Blob
from scintiflow.sim._cases import PhantomCase
from scintiflow.sim._montage import colourise
from scintiflow.sim._nm import (
    ExportContext,
    base_dataset,
    code_item,
    derived_uid,
    detector_item,
    export_context,
    nm_image,
    to_bytes,
)
from scintiflow.sim._render import acquire

FAULT_KINDS: tuple[str, ...] = (
    "truncated",  # valid NM file cut inside the pixel data
    "truncated_header",  # valid NM file cut before the pixel data element
    "not_nm",  # a valid CT Image Storage file (wrong modality / SOP class)
    "colour_screenshot",  # RGB Secondary Capture of a report screen, burned-in text
    "multiframe_tomo",  # NM TOMO object: 64 SPECT projections, not a planar view
    "corrupt_compressed",  # JPEG baseline / JPEG-LS / J2K syntax, garbage or cut stream
    "random_bytes",  # not DICOM at all
    "png",  # a PNG picture dropped into the export folder
    "empty",  # 0 bytes
)
"""Every fault kind the night generator produces, in the order the round-robin draws from."""

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")

FaultBuilder = Callable[[PhantomCase, ExportContext, np.random.Generator, bool], bytes]


def _plain_nm(case: PhantomCase, ctx: ExportContext, phi_sentinel: bool) -> tuple[bytes, int]:
    """A valid explicit-VR NM file and the length of its pixel data."""
    data = to_bytes(nm_image(case, ctx, [case.image], ["anterior"], phi_sentinel=phi_sentinel))
    return data, case.image.size * 2


def _truncated(case: PhantomCase, ctx: ExportContext, rng: np.random.Generator, phi: bool) -> bytes:
    data, pixel_len = _plain_nm(case, ctx, phi)
    start = len(data) - pixel_len
    return data[: start + int(pixel_len * rng.uniform(0.05, 0.9))]


def _truncated_header(
    case: PhantomCase, ctx: ExportContext, rng: np.random.Generator, phi: bool
) -> bytes:
    data, pixel_len = _plain_nm(case, ctx, phi)
    element_start = len(data) - pixel_len - 12  # (7FE0,0010) OW, reserved, 4-byte length
    return data[: int(rng.integers(200, element_start))]


def _neck_ct(rng: np.random.Generator, n: int = 128) -> np.ndarray:
    """An axial neck slice in HU: body, fat, trachea, vertebra, thyroid, carotids."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    x, y = (xx - n / 2) * 1.5, (yy - n / 2) * 1.5  # mm
    hu = np.full((n, n), -1000.0)

    def ell(cx: float, cy: float, a: float, b: float) -> np.ndarray:
        return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 < 1.0

    hu[ell(0, 5, 62, 52)] = -90.0
    hu[ell(0, 5, 56, 46)] = 40.0
    hu[ell(0, 30, 16, 14)] = 700.0  # vertebral body
    hu[ell(-16, -14, 10, 7) | ell(16, -14, 10, 7)] = 110.0  # thyroid lobes (iodine)
    hu[ell(0, -14, 8, 8)] = -1000.0  # trachea
    hu[ell(-27, -5, 4, 4) | ell(27, -5, 4, 4)] = 180.0  # contrast-filled carotids
    return hu + rng.normal(0.0, 12.0, (n, n))


def _not_nm(case: PhantomCase, ctx: ExportContext, rng: np.random.Generator, phi: bool) -> bytes:
    ds = base_dataset(case, ctx, sop_class=CT_IMAGE_STORAGE, modality="CT", phi_sentinel=phi)
    ds.StudyDescription = "CT NECK WITH CONTRAST"
    ds.SeriesDescription = "NECK 3MM AXIAL"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BodyPartExamined = "NECK"
    ds.KVP = "120"
    ds.SliceThickness = "3"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = derived_uid("for", ctx.study_uid)
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = ["-96", "-96", "-120"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 128
    ds.PixelSpacing = ["1.5", "1.5"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    stored = np.clip(np.round(_neck_ct(rng) + 1024.0), 0, 4095).astype("<u2")
    ds.PixelData = stored.tobytes()
    return to_bytes(ds)


def _screen(case: PhantomCase, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A workstation-like report screen: coloured scan, ROI table text, colour bar."""
    width, height = size
    screen = Image.new("RGB", (width, height), (22, 26, 38))
    draw = ImageDraw.Draw(screen)
    side = min(height - 40, width // 2)
    scan = Image.fromarray(colourise(case.image)).resize((side, side), Image.Resampling.BILINEAR)
    screen.paste(scan, (10, 30))
    font = ImageFont.load_default(size=12)
    draw.text((10, 8), "THYROID UPTAKE REPORT  (SIMULATED)", font=font, fill=(240, 240, 240))
    x0 = side + 24
    for i, line in enumerate(
        (
            f"ROI R lobe  {int(rng.integers(2000, 9000))} cts",
            f"ROI L lobe  {int(rng.integers(2000, 9000))} cts",
            f"Uptake      {rng.uniform(0.3, 6.0):.1f} %",
            "Window 0-100 %",
        )
    ):
        draw.text((x0, 40 + 18 * i), line, font=font, fill=(180, 220, 255))
    bar = colourise(np.tile(np.linspace(1.0, 0.0, 120)[:, None], (1, 12)), clip_percentile=100)
    screen.paste(Image.fromarray(bar), (width - 24, 40))
    return screen


def _colour_screenshot(
    case: PhantomCase, ctx: ExportContext, rng: np.random.Generator, phi: bool
) -> bytes:
    ds = base_dataset(case, ctx, sop_class=SECONDARY_CAPTURE, modality="NM", phi_sentinel=phi)
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SNAPSHOT"]
    ds.SeriesDescription = "THYROID REPORT SCREEN"
    ds.ConversionType = "WSD"
    ds.SecondaryCaptureDeviceManufacturer = case.profile.manufacturer
    ds.BurnedInAnnotation = "YES"
    rgb = np.asarray(_screen(case, rng, (320, 240)), dtype=np.uint8)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = rgb.tobytes()
    return to_bytes(ds)


def _rotated(an: Anatomy, angle_deg: float) -> Anatomy:
    """The neck seen from `angle_deg` around the body axis (thyroid lies anterior)."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))

    def turn(blob: Blob, depth: float) -> Blob:
        return replace(blob, cx=an.tx + (blob.cx - an.tx) * c + depth * s)

    return replace(
        an,
        lobes=(turn(an.lobes[0], 20.0), turn(an.lobes[1], 20.0)),
        isthmus=turn(an.isthmus, 25.0),
        pyramidal=None,
        parotids=(turn(an.parotids[0], -10.0), turn(an.parotids[1], -10.0)),
        submandibulars=(turn(an.submandibulars[0], 5.0), turn(an.submandibulars[1], 5.0)),
        mouth=None if an.mouth is None else turn(an.mouth, 20.0),
        oesophagus=None,
        marker=None,
        nodule=None,
        motion_mm=0.0,
    )


def _multiframe_tomo(
    case: PhantomCase, ctx: ExportContext, rng: np.random.Generator, phi: bool
) -> bytes:
    site = replace(
        case.profile, matrix=64, pixel_spacing_mm=4.8, magnification=1.0, blur_fwhm_mm=12.0
    )
    per_head, step = 32, 5.625  # two heads, 180 degrees each
    frames = []
    for head in range(2):
        for k in range(per_head):
            angle = head * 180.0 + k * step
            view = replace(_rotated(case.anatomy, angle), expected_counts=rng.uniform(1.2e4, 2.5e4))
            frames.append(acquire(view, site, rng))
    ds = nm_image(case, ctx, frames, ["anterior"], phi_sentinel=phi)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "TOMO", "EMISSION"]
    ds.SeriesDescription = "THYROID SPECT PROJECTIONS"
    ds.ImageID = "SPECT"
    ds.PixelSpacing = ["4.8", "4.8"]
    ds.NumberOfDetectors = 2
    ds.DetectorVector = [1] * per_head + [2] * per_head
    ds.DetectorInformationSequence = Sequence(
        [detector_item(site, "anterior"), detector_item(site, "anterior")]
    )
    for det in ds.DetectorInformationSequence:
        det.CollimatorGridName = "LEHR"
        det.CollimatorType = "PARA"
        det.FieldOfViewShape = "RECTANGLE"
        del det.ViewCodeSequence
        del det.FocalDistance
    rotation = Dataset()
    rotation.StartAngle = "0"
    rotation.AngularStep = f"{step}"
    rotation.RotationDirection = "CW"
    rotation.ScanArc = "180"
    rotation.ActualFrameDuration = 20_000
    rotation.NumberOfFramesInRotation = per_head
    rotation.RadialPosition = ["220"] * per_head
    ds.RotationInformationSequence = Sequence([rotation])
    ds.NumberOfRotations = 1
    ds.RotationVector = [1] * (2 * per_head)
    ds.AngularViewVector = list(range(1, per_head + 1)) * 2
    ds.FrameIncrementPointer = [
        Tag(0x0054, 0x0010),
        Tag(0x0054, 0x0020),
        Tag(0x0054, 0x0050),
        Tag(0x0054, 0x0090),
    ]
    ds.PatientGantryRelationshipCodeSequence = Sequence([code_item("102540008", "headfirst")])
    return to_bytes(ds)


def _corrupt_compressed(
    case: PhantomCase, ctx: ExportContext, rng: np.random.Generator, phi: bool
) -> bytes:
    """A compressed transfer syntax whose stream is cut short or is not a codestream at all."""
    ds = nm_image(case, ctx, [case.image], ["anterior"], phi_sentinel=phi)
    variant = int(rng.integers(3))
    if variant == 0:  # a real JPEG 2000 lossless stream, cut part-way
        to_bytes(ds, JPEG2000Lossless)  # compresses ds in place
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        fragment = frame[: int(len(frame) * rng.uniform(0.2, 0.7))]
        syntax = JPEG2000Lossless
    elif variant == 1:  # JPEG-LS start-of-image marker, then noise
        fragment = b"\xff\xd8\xff\xf7" + rng.bytes(int(rng.integers(800, 6000)))
        syntax = JPEGLSLossless
    else:  # 8-bit JPEG baseline: SOI, noise, EOI
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.LossyImageCompression = "01"
        fragment = b"\xff\xd8\xff\xe0" + rng.bytes(int(rng.integers(800, 6000))) + b"\xff\xd9"
        syntax = JPEGBaseline8Bit
    if len(fragment) % 2:
        fragment += b"\x00"
    ds.PixelData = encapsulate([fragment])
    elem = ds["PixelData"]
    elem.VR = "OB"
    elem.is_undefined_length = True
    return to_bytes(ds, syntax, encode=False)


def _random_bytes(
    case: PhantomCase, ctx: ExportContext, rng: np.random.Generator, phi: bool
) -> bytes:
    return rng.bytes(int(rng.integers(512, 65536)))


def _png(case: PhantomCase, ctx: ExportContext, rng: np.random.Generator, phi: bool) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(colourise(case.image, colormap="inverted_grey")[..., 0]).save(buf, "PNG")
    return buf.getvalue()


def _empty(case: PhantomCase, ctx: ExportContext, rng: np.random.Generator, phi: bool) -> bytes:
    return b""


_BUILDERS: dict[str, FaultBuilder] = {
    "truncated": _truncated,
    "truncated_header": _truncated_header,
    "not_nm": _not_nm,
    "colour_screenshot": _colour_screenshot,
    "multiframe_tomo": _multiframe_tomo,
    "corrupt_compressed": _corrupt_compressed,
    "random_bytes": _random_bytes,
    "png": _png,
    "empty": _empty,
}
CARRIES_PATIENT_ID = frozenset(FAULT_KINDS) - {"random_bytes", "png", "empty", "truncated_header"}


def fault_file(
    kind: str,
    case: PhantomCase,
    *,
    night: date,
    index: int,
    seed: int,
    rng: np.random.Generator,
    phi_sentinel: bool = False,
) -> bytes:
    """The bytes of one faulty file of `kind`, built around `case` where it needs an image."""
    try:
        build = _BUILDERS[kind]
    except KeyError:
        raise ValueError(f"unknown fault kind {kind!r}; known: {FAULT_KINDS}") from None
    return build(case, export_context(case, night=night, index=index, seed=seed), rng, phi_sentinel)
