"""Model files: what kind a file is, its input signature, and loading it as a PyTorch module or ONNX graph."""
