"""The ONNX Runtime engine: the CPU default, in fp32 or INT8.

Runs the version's `model.onnx` (exported once, cached in the version folder) or, with
`precision="int8"`, its proven `model.int8.onnx` (built once at registration by
`engines.int8.prove_int8`, never at scoring time), with every graph optimisation enabled
(ORT fuses DequantizeLinear -> Conv -> QuantizeLinear into integer kernels at this level) and
intra-op threads = the cores this process may use. The input is bound in place through IO
binding (no copy into an ORT tensor). Both graphs take and return float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scintiflow.inference.engines import ScoringModel, check_batch, softmax_probs
from scintiflow.inference.engines.export import INPUT_NAME, OUTPUT_CAMS, OUTPUT_LOGITS, model_onnx


def ort_session(
    onnx_bytes: bytes,
    *,
    threads: int | None = None,
    providers: list[str] | None = None,
    spin: bool = False,
) -> Any:
    """An `onnxruntime.InferenceSession` tuned for batch scoring on this machine."""
    import onnxruntime as ort

    from scintiflow.ml.training import available_cores

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or available_cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if not spin:
        # Idle intra-op threads sleep instead of spinning, leaving the cores to the decode and
        # PNG threads that run beside inference in the scoring pipeline.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        onnx_bytes, sess_options=opts, providers=providers or ["CPUExecutionProvider"]
    )


ORT_PRECISIONS: tuple[str, ...] = ("fp32", "int8")


class OrtEngine:
    """`run(batch) -> (probs, cams | None)` on ONNX Runtime.

    `name` is `onnxruntime` (fp32) or `onnxruntime-int8`; `precision` is `fp32` or `int8`.
    `onnx_bytes` overrides the version's stored graph (benchmarks, the proof itself).
    """

    def __init__(
        self,
        sm: ScoringModel,
        *,
        threads: int | None = None,
        cams: bool = True,
        onnx_bytes: bytes | None = None,
        precision: str = "fp32",
        spin: bool = False,
    ) -> None:
        if precision not in ORT_PRECISIONS:
            raise ValueError(f"ONNX Runtime runs {ORT_PRECISIONS}, not {precision!r}")
        self.sm = sm
        self.precision = precision
        self.name = "onnxruntime" if precision == "fp32" else f"onnxruntime-{precision}"
        if onnx_bytes is None:
            if precision == "int8":
                from scintiflow.inference.engines.int8 import model_int8_onnx

                onnx_bytes = model_int8_onnx(sm)
            else:
                onnx_bytes = model_onnx(sm)
        self.session = ort_session(onnx_bytes, threads=threads, spin=spin)
        names = [o.name for o in self.session.get_outputs()]
        self.outputs = [OUTPUT_LOGITS] + ([OUTPUT_CAMS] if cams and OUTPUT_CAMS in names else [])

    def logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw logits (B, K) and cams (B, K, h, w) or None."""
        x = check_batch(batch, self.sm.preprocess.image_size)
        binding = self.session.io_binding()
        binding.bind_cpu_input(INPUT_NAME, x)
        for name in self.outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        outs = binding.copy_outputs_to_cpu()
        return outs[0], (outs[1] if len(outs) > 1 else None)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, 1, S, S) -> (probs (B, K), cams (B, K, h, w) or None)."""
        logits, cams = self.logits(batch)
        return softmax_probs(logits, self.sm.temperature), cams
