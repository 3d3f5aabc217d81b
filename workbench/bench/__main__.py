"""Benchmarks: `python -m workbench.bench NAME [--json]`.

Each one measures Workbench next to its reference in the same run and prints the ratio.
They report numbers; the test suite asserts behaviour.
"""

from __future__ import annotations

import argparse
import json
import sys

from workbench.bench import download, faults, fit, stop, throughput, turns

BENCHMARKS = {
    "throughput": throughput.run, "turns": turns.run, "stop": stop.run, "fit": fit.run,
    "download": download.run, "faults": faults.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.bench", description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", help="GGUF to use (default: the built-in model)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    args = parser.parse_args(argv)
    result = BENCHMARKS[args.name](model=args.model, quick=args.quick)
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
