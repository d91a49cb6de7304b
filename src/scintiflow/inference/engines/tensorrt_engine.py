"""The TensorRT engine (GPU nodes), for the TensorRT 10 and 11 Python APIs.

- The engine is built from the version's ONNX graph with one optimisation profile over the
  batch axis (min 1, opt `OPT_BATCH`, max `MAX_BATCH`); larger batches run in chunks.
- Precision: TensorRT 10 builds FP16 from the float32 graph with `BuilderFlag.FP16`.
  TensorRT 11 networks are strongly typed (precision flags are gone): it gets the FP16 graph
  `model.fp16.onnx` (float32 in/out, float16 inside; `export_onnx(fp16=True)`).
- Plans are not portable: each is cached in the model version folder as
  `engine-sm<major><minor>-trt<version>.plan` (`engine_cache_name`), built on first use on
  a node of that kind and reused by every later run there.
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


def trt_major(version: str) -> int:
    """The major version of a TensorRT version string ("10.7.0.23" -> 10)."""
    match = re.match(r"^\s*(\d+)", version)
    if match is None:
        raise ValueError(f"not a TensorRT version: {version!r}")
    return int(match.group(1))


def strongly_typed(version: str) -> bool:
    """TensorRT 11+ networks are strongly typed: precision comes from the ONNX graph."""
    return trt_major(version) >= 11


def engine_cache_name(compute_capability: tuple[int, int], trt_version: str) -> str:
    """File name of a plan in the version folder: `engine-sm<maj><min>-trt<version>.plan`.

    A plan runs only on the GPU architecture and TensorRT version that built it, so both are
    in the key; the version is sanitised to `[0-9A-Za-z.]`.
    """
    major, minor = (int(v) for v in compute_capability)
    if major < 1 or minor < 0:
        raise ValueError(f"bad compute capability {compute_capability!r}")
    clean = re.sub(r"[^0-9A-Za-z.]", "_", trt_version.strip())
    if not clean or trt_major(clean) < 1:
        raise ValueError(f"bad TensorRT version {trt_version!r}")
    return f"engine-sm{major}{minor}-trt{clean}.plan"


def build_plan(
    onnx_bytes: bytes,
    image_size: int,
    *,
    opt_batch: int = OPT_BATCH,
    max_batch: int = MAX_BATCH,
    workspace_bytes: int = WORKSPACE_BYTES,
) -> bytes:
    """Serialized TensorRT engine from an ONNX graph, with a dynamic-batch profile and FP16."""
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
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError("TensorRT failed to build the engine", reason="tensorrt_build_failed")
    return bytes(plan)


def _torch_dtype(trt_dtype: Any) -> torch.dtype:
    import tensorrt as trt
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
    return table[trt_dtype]


class TensorRTEngine:
    """`run(batch) -> (probs, cams | None)` on a cached TensorRT plan; `name` is `tensorrt`."""

    name = "tensorrt"

    def __init__(self, sm: ScoringModel, *, cams: bool = True, device: int = 0) -> None:
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise EngineError("TensorRT needs a CUDA GPU", reason="engine_unavailable")
        self.sm = sm
        self.device = torch.device("cuda", device)
        self.trt_version = str(trt.__version__)
        cc = torch.cuda.get_device_capability(self.device)
        self.plan_name = engine_cache_name(cc, self.trt_version)
        fp16_graph = strongly_typed(self.trt_version)
        size = sm.preprocess.image_size
        plan = sm.cached(self.plan_name, lambda: build_plan(model_onnx(sm, fp16=fp16_graph), size))
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
