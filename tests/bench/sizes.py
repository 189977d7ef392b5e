"""Unzipped size of every built function with its layers, against Lambda's limit (``make sizes``).

Lambda refuses a function whose code and layers together exceed 250 MB unzipped (262,144,000
bytes, so MB here is 2**20 bytes). Reads ``.aws-sam/build/template.yaml`` (run ``make build``
first) and prints one JSON line per function; exits 1 when one is over the limit.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.bench.artifacts import MIB, tree_size
from tests.bench.built import BUILD_DIR, FunctionArtifact, load_build

LAMBDA_UNZIPPED_LIMIT_MB = 250


@dataclass(frozen=True)
class FunctionSize:
    """One output line."""

    function: str
    code_mb: float
    layers_mb: float
    total_mb: float
    limit_mb: int = LAMBDA_UNZIPPED_LIMIT_MB

    @property
    def over_limit(self) -> bool:
        return self.total_mb > self.limit_mb


def function_size(function: FunctionArtifact, layer_bytes: dict[Path, int]) -> FunctionSize:
    """Size of ``function``'s code and layers; ``layer_bytes`` caches layer sizes across functions."""
    for layer in function.layers:
        if layer.path not in layer_bytes:
            layer_bytes[layer.path] = tree_size(layer.path)
    code = tree_size(function.path)
    layers = sum(layer_bytes[layer.path] for layer in function.layers)
    return FunctionSize(
        function=function.logical_id,
        code_mb=round(code / MIB, 2),
        layers_mb=round(layers / MIB, 2),
        total_mb=round((code + layers) / MIB, 2),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Print the sizes; 0 when every function fits."""
    parser = argparse.ArgumentParser(description="Unzipped size of each built function with its layers.")
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    parser.add_argument("--layers", action="store_true", help="also one line per layer (used or not)")
    args = parser.parse_args(argv)
    build = load_build(args.build_dir)
    layer_bytes: dict[Path, int] = {}
    if args.layers:
        for layer in build.layers:
            layer_bytes[layer.path] = tree_size(layer.path)
            print(json.dumps({"layer": layer.logical_id, "mb": round(layer_bytes[layer.path] / MIB, 2)}))
    over = []
    for function in build.functions:
        size = function_size(function, layer_bytes)
        print(json.dumps(asdict(size)))
        if size.over_limit:
            over.append(size.function)
    if over:
        print(
            f"over Lambda's {LAMBDA_UNZIPPED_LIMIT_MB} MB unzipped limit: {', '.join(over)}", file=sys.stderr
        )
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
