"""deployopt: take a PyTorch model to a deployable, verified, faster artifact.

Importing this package is cheap (no torch, onnx or onnxruntime); the heavy libraries load inside the
modules that need them. The public Python API mirrors the CLI verbs: :func:`deployopt.api.build`,
:func:`deployopt.api.export`, :func:`deployopt.api.optimize`, :func:`deployopt.api.verify`,
:func:`deployopt.api.bench`.
"""

__version__ = "0.1.0"
