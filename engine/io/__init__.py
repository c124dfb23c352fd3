"""Reading and writing what users bring: ONNX and torch models, VNN-LIB specs and counterexamples, datasets, onnxruntime runs."""
