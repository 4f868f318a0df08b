"""A small stand-in for the ``tensorrt`` module, for testing the engine stage's logic without a GPU.

It mimics the parts of TensorRT's Python API that deployopt calls, records every call, and models the
one difference between majors that matters here: TensorRT 11 has no FP16/INT8 builder flags (using
them raises AttributeError, as the real module does). The fake "engine" is JSON describing the build.
"""

from __future__ import annotations

import enum
import json
import types

import onnx


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass


class Logger(ILogger):
    ERROR, WARNING = Severity.ERROR, Severity.WARNING

    def __init__(self, severity=Severity.WARNING) -> None:
        super().__init__()

    def log(self, severity, msg) -> None:
        pass


class FakeTensor:
    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.name, self.shape = name, shape


class FakeNetwork:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.inputs: list[FakeTensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> FakeTensor:
        return self.inputs[index]


class FakeParserError:
    def __init__(self, desc: str, node: int) -> None:
        self._desc, self._node = desc, node

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node


class FakeProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, list[list[int]]] = {}

    def set_shape(self, name, low, opt, high) -> None:
        self.shapes[name] = [list(low), list(opt), list(high)]


class FakeTimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"+tuned"


class FakeBuilderConfig:
    def __init__(self) -> None:
        self.flags: list[str] = []
        self.pools: dict[str, int] = {}
        self.profiles: list[FakeProfile] = []
        self.builder_optimization_level = 3
        self.hardware_compatibility_level = "NONE"
        self.timing_cache: FakeTimingCache | None = None

    def set_flag(self, flag) -> None:
        self.flags.append(flag)

    def set_memory_pool_limit(self, pool, size: int) -> None:
        self.pools[pool] = size

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> FakeTimingCache:
        return FakeTimingCache(bytes(data))

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        self.timing_cache = cache
        return True


def make_fake_tensorrt(version: str = "10.13.0.35", *, parse_errors=(), build_fails: bool = False):
    """A fresh fake module. ``parse_errors``: (description, node index) pairs the parser reports."""
    major = int(version.split(".")[0])
    flag_names = ["SPARSE_WEIGHTS", "VERSION_COMPATIBLE", "REFIT"] + (["FP16", "INT8", "BF16"] if major <= 10 else [])
    builder_flag = types.SimpleNamespace(**{name: name for name in flag_names})

    class OnnxParser:
        def __init__(self, network: FakeNetwork, logger) -> None:
            self.network, self.errors = network, []

        def parse_from_file(self, path: str) -> bool:
            graph = onnx.load_model(path, load_external_data=False).graph
            for value in graph.input:
                dims = tuple(d.dim_value if d.dim_value > 0 else -1 for d in value.type.tensor_type.shape.dim)
                self.network.inputs.append(FakeTensor(value.name, dims))
            self.errors = [FakeParserError(desc, node) for desc, node in parse_errors]
            return not self.errors

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, index: int) -> FakeParserError:
            return self.errors[index]

    class Builder:
        def __init__(self, logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> FakeNetwork:
            return FakeNetwork(flags)

        def create_builder_config(self) -> FakeBuilderConfig:
            return FakeBuilderConfig()

        def create_optimization_profile(self) -> FakeProfile:
            return FakeProfile()

        def build_serialized_network(self, network: FakeNetwork, config: FakeBuilderConfig):
            if build_fails:
                self.logger.log(Severity.ERROR, "Error Code 4: out of workspace memory for tactic selection")
                return None
            return json.dumps(
                {
                    "flags": config.flags,
                    "pools": config.pools,
                    "profiles": [p.shapes for p in config.profiles],
                    "opt_level": config.builder_optimization_level,
                    "hardware_compat": config.hardware_compatibility_level,
                }
            ).encode()

    module = types.ModuleType("tensorrt")
    module.__version__ = version
    module.ILogger, module.Logger = ILogger, Logger
    module.Builder, module.OnnxParser = Builder, OnnxParser
    module.BuilderFlag = builder_flag
    module.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    module.HardwareCompatibilityLevel = types.SimpleNamespace(
        NONE="NONE", AMPERE_PLUS="AMPERE_PLUS", SAME_COMPUTE_CAPABILITY="SAME_COMPUTE_CAPABILITY"
    )
    return module
