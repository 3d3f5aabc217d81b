"""Benchmarks: `python -m workbench.bench NAME [--json]`.

Each one measures Workbench next to its reference in the same run and prints the ratio.
They report numbers; the test suite asserts behaviour.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from workbench.children import load_llama

# Some benchmarks run llama.cpp in this process (the raw baseline); its libraries load
# before any benchmark module brings numpy in (workbench/children.py says why).
load_llama()

BENCHMARKS = ("throughput", "turns", "stop", "fit", "download", "faults", "gpu", "gui")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.bench", description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", help="GGUF to use (default: the built-in model)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    args = parser.parse_args(argv)
    module = importlib.import_module(f"workbench.bench.{args.name}")
    result = module.run(model=args.model, quick=args.quick)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key != "rows":
                print(f"{key:>34}: {value}")
        for row in result.get("rows", []):
            print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
