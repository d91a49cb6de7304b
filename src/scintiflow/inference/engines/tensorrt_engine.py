"""The TensorRT engine (GPU nodes), for the TensorRT 10 and 11 Python APIs.

- The engine is built from the version's ONNX graph with one optimisation profile over the
  batch axis (min 1, opt `OPT_BATCH`, max `MAX_BATCH`); larger batches run in chunks.
- Precision: TensorRT 10 builds FP16 from the float32 graph with `BuilderFlag.FP16`.
  TensorRT 11 networks are strongly typed (precision flags are gone): it gets the FP16 graph
  `model.fp16.onnx` (float32 in/out, float16 inside; `export_onnx(fp16=True)`).
- INT8, behind a flag (`--engine tensorrt-int8`), calibrated on the SAME calibration set as
  the ONNX Runtime INT8 graph (`int8-calibration.npy`, stored by `engines.int8.prove_int8`):
  TensorRT 10 calibrates the float32 graph itself (`IInt8EntropyCalibrator2`, a calibration
  profile fixed at the calibration batch, `BuilderFlag.INT8` with FP16 for layers left in
  float). TensorRT 11 dropped implicit INT8: it gets an explicit Q/DQ graph instead,
  `model.int8.trt.onnx` (symmetric int8 activations and weights, `quantize_int8(...,
  target="tensorrt")`), built from the stored calibration set on first use.
- Plans are not portable: each is cached in the model version folder as
  `engine-sm<major><minor>-trt<version>.plan` (`-int8.plan` for INT8; `engine_cache_name`),
  built on first use on a node of that kind and reused by every later run there.
- Execution: torch CUDA tensors for input and outputs, `set_input_shape`,
  `set_tensor_address`, `execute_async_v3` on torch's current stream.

`tensorrt` is imported only inside the functions that need it (it cannot be installed on the
development machines; the build/run tests carry the `gpu` marker).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from scintiflow.inference.engines import EngineError, ScoringModel, check_batch, softmax_probs
from scintiflow.inference.engines.export import INPUT_NAME, OUTPUT_CAMS, OUTPUT_LOGITS, model_onnx

if TYPE_CHECKING:
    import torch

OPT_BATCH = 64
MAX_BATCH = 256
WORKSPACE_BYTES = 2 << 30
CALIBRATION_BATCH = 8
TRT_INT8_GRAPH = "model.int8.trt.onnx"


def trt_major(version: str) -> int:
    """The major version of a TensorRT version string ("10.7.0.23" -> 10)."""
    match = re.match(r"^\s*(\d+)", version)
    if match is None:
        raise ValueError(f"not a TensorRT version: {version!r}")
    return int(match.group(1))


def strongly_typed(version: str) -> bool:
    """TensorRT 11+ networks are strongly typed: precision comes from the ONNX graph."""
    return trt_major(version) >= 11


def engine_cache_name(
    compute_capability: tuple[int, int], trt_version: str, precision: str = "fp16"
) -> str:
    """File name of a plan in the version folder: `engine-sm<maj><min>-trt<version>.plan`
    (FP16) or `...-int8.plan` (INT8).

    A plan runs only on the GPU architecture and TensorRT version that built it, so both are
    in the key; the version is sanitised to `[0-9A-Za-z.]`.
    """
    if precision not in ("fp16", "int8"):
        raise ValueError(f"TensorRT plans are fp16 or int8, not {precision!r}")
    major, minor = (int(v) for v in compute_capability)
    if major < 1 or minor < 0:
        raise ValueError(f"bad compute capability {compute_capability!r}")
    clean = re.sub(r"[^0-9A-Za-z.]", "_", trt_version.strip())
    if not clean or trt_major(clean) < 1:
        raise ValueError(f"bad TensorRT version {trt_version!r}")
    suffix = "-int8" if precision == "int8" else ""
    return f"engine-sm{major}{minor}-trt{clean}{suffix}.plan"


def calibration_batches(x: np.ndarray, batch: int = CALIBRATION_BATCH) -> list[np.ndarray]:
    """Equal-sized calibration batches (TensorRT calibrates at one fixed batch size; a short
    tail is dropped, all of it when fewer than `batch` images: then one smaller batch)."""
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 4 or len(arr) == 0:
        raise ValueError(f"calibration must be a non-empty (N, 1, S, S) array, got {arr.shape}")
    size = min(batch, len(arr))
    return [arr[i : i + size] for i in range(0, len(arr) - size + 1, size)]


def _entropy_calibrator(batches: list[np.ndarray]) -> Any:
    """A TensorRT 10 `IInt8EntropyCalibrator2` feeding `batches` from CUDA memory."""
    import tensorrt as trt
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(batches)
            self.current: torch.Tensor | None = None  # kept alive while TensorRT reads it

        def get_batch_size(self) -> int:
            return int(batches[0].shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            item = next(self.batches, None)
            if item is None:
                return None
            self.current = torch.from_numpy(item).cuda().contiguous()
            return [int(self.current.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return None  # the built plan is cached instead

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

    return Calibrator()


def build_plan(
    onnx_bytes: bytes,
    image_size: int,
    *,
    opt_batch: int = OPT_BATCH,
    max_batch: int = MAX_BATCH,
    workspace_bytes: int = WORKSPACE_BYTES,
    int8_calibration: np.ndarray | None = None,
) -> bytes:
    """Serialized TensorRT engine from an ONNX graph, with a dynamic-batch profile and FP16.

    `int8_calibration` (TensorRT 10): also INT8, calibrated with `IInt8EntropyCalibrator2` on
    these preprocessed inputs. TensorRT 11 takes its INT8 from an explicit Q/DQ graph (pass
    that graph, no calibration).
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TRT 10+
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(
            f"TensorRT cannot parse the ONNX graph: {errors}", reason="tensorrt_build_failed"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if not strongly_typed(trt.__version__):
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    shape = (1, image_size, image_size)
    profile.set_shape(INPUT_NAME, (1, *shape), (opt_batch, *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    calibrator = None
    if int8_calibration is not None and not strongly_typed(trt.__version__):
        batches = calibration_batches(int8_calibration)
        calibrator = _entropy_calibrator(batches)
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        fixed = (len(batches[0]), *shape)
        calib_profile = builder.create_optimization_profile()
        calib_profile.set_shape(INPUT_NAME, fixed, fixed, fixed)
        config.set_calibration_profile(calib_profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError("TensorRT failed to build the engine", reason="tensorrt_build_failed")
    return bytes(plan)


def _torch_dtype(trt_dtype: Any) -> torch.dtype:
    import tensorrt as trt
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
    return table[trt_dtype]


def trt_int8_onnx(sm: ScoringModel) -> bytes:
    """The explicit Q/DQ graph TensorRT 11 builds INT8 from (cached in the version folder),
    quantised from the version's fp32 graph on its stored calibration set."""
    from scintiflow.inference.engines.int8 import int8_calibration
    from scintiflow.inference.engines.quantize import QuantOptions, quantize_int8

    return sm.cached(
        TRT_INT8_GRAPH,
        lambda: quantize_int8(
            model_onnx(sm), int8_calibration(sm), QuantOptions(target="tensorrt")
        ),
    )


def _plan_builder(sm: ScoringModel, trt_version: str, int8: bool) -> Any:
    """What builds this version's plan: FP16, or INT8 (implicit on TRT 10, Q/DQ on 11)."""
    size = sm.preprocess.image_size
    typed = strongly_typed(trt_version)
    if not int8:
        return lambda: build_plan(model_onnx(sm, fp16=typed), size)
    if typed:
        return lambda: build_plan(trt_int8_onnx(sm), size)

    def build() -> bytes:
        from scintiflow.inference.engines.int8 import int8_calibration

        return build_plan(model_onnx(sm), size, int8_calibration=int8_calibration(sm))

    return build


class TensorRTEngine:
    """`run(batch) -> (probs, cams | None)` on a cached TensorRT plan.

    `name` is `tensorrt` (`precision` fp16) or, with `int8=True`, `tensorrt-int8` (int8).
    """

    def __init__(
        self, sm: ScoringModel, *, cams: bool = True, device: int = 0, int8: bool = False
    ) -> None:
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise EngineError("TensorRT needs a CUDA GPU", reason="engine_unavailable")
        self.sm = sm
        self.precision = "int8" if int8 else "fp16"
        self.name = "tensorrt-int8" if int8 else "tensorrt"
        self.device = torch.device("cuda", device)
        self.trt_version = str(trt.__version__)
        cc = torch.cuda.get_device_capability(self.device)
        self.plan_name = engine_cache_name(cc, self.trt_version, self.precision)
        plan = sm.cached(self.plan_name, _plan_builder(sm, self.trt_version, int8))
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineError(
                "cannot deserialize the TensorRT plan", reason="tensorrt_build_failed"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [OUTPUT_LOGITS] + ([OUTPUT_CAMS] if cams and OUTPUT_CAMS in names else [])
        self.unused = [n for n in names if n not in (INPUT_NAME, *self.outputs)]
        self.input_dtype = _torch_dtype(self.engine.get_tensor_dtype(INPUT_NAME))

    def _run_chunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        import torch

        self.context.set_input_shape(INPUT_NAME, tuple(x.shape))
        self.context.set_tensor_address(INPUT_NAME, x.data_ptr())
        outs: dict[str, torch.Tensor] = {}
        for name in [*self.outputs, *self.unused]:  # every output needs an address
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = _torch_dtype(self.engine.get_tensor_dtype(name))
            outs[name] = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EngineError("TensorRT execution failed", reason="engine_unavailable")
        stream.synchronize()
        return [outs[name].float() for name in self.outputs]

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, 1, S, S) -> (probs (B, K), cams (B, K, h, w) or None), in MAX_BATCH chunks."""
        import torch

        arr = check_batch(batch, self.sm.preprocess.image_size)
        x_all = torch.from_numpy(arr).to(self.device, non_blocking=True).to(self.input_dtype)
        logits, cams = [], []
        for start in range(0, len(x_all), MAX_BATCH):
            outs = self._run_chunk(x_all[start : start + MAX_BATCH].contiguous())
            logits.append(outs[0].cpu().numpy())
            if len(outs) > 1:
                cams.append(outs[1].cpu().numpy())
        probs = softmax_probs(np.concatenate(logits), self.sm.temperature)
        return probs, (np.concatenate(cams) if cams else None)
