"""Scoring: engines (torch, ONNX Runtime, TensorRT), heatmaps, prediction rows."""
