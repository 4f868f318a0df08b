"""What this machine offers: GPU detection and timing, TensorRT's import and version rules, ``doctor``."""
