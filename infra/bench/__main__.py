"""`python -m infra.bench [ingress] [export] [e2e] [soak]`: run benchmarks in turn and print their figures.

Without names it runs ingress, export and e2e; soak runs only when named (it takes minutes).
"""

import argparse
import sys
import time

BENCHMARKS = ("ingress", "export", "e2e", "soak")
DEFAULT_BENCHMARKS = ("ingress", "export", "e2e")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected record counts like 10000,100000, got {text!r}") from None
    if not sizes or any(size <= 0 for size in sizes):
        raise argparse.ArgumentTypeError("record counts must be positive")
    return sizes


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.bench", description=__doc__)
    parser.add_argument(
        "benchmarks",
        nargs="*",
        metavar="BENCHMARK",
        # Checked below rather than with choices=: argparse checks a `*` positional's default against
        # its choices as one value, and so refuses an empty command line.
        help=f"any of {', '.join(BENCHMARKS)} (default: {' '.join(DEFAULT_BENCHMARKS)})",
    )
    ingress = parser.add_argument_group("ingress")
    ingress.add_argument("--seconds", type=int, default=10, help="duration of each ingress load run")
    export = parser.add_argument_group("export")
    export.add_argument(
        "--sizes",
        type=_sizes,
        default=(10_000, 100_000, 1_000_000),
        help="record counts (default: %(default)s)",
    )
    e2e = parser.add_argument_group("e2e")
    e2e.add_argument("--requests", type=int, default=500, help="Copy requests (default: %(default)s)")
    e2e.add_argument("--concurrency", type=int, default=16, help="concurrent senders (default: %(default)s)")
    soak = parser.add_argument_group("soak")
    soak.add_argument("--minutes", type=_positive, default=5.0, help="load duration (default: %(default)s)")
    soak.add_argument(
        "--rate", type=_positive, default=20.0, help="requests per second (default: %(default)s)"
    )
    soak.add_argument(
        "--sample-seconds", type=_positive, default=5.0, help="RSS sampling interval (default: %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _argument_parser()
    arguments = parser.parse_args(argv)
    names = arguments.benchmarks or list(DEFAULT_BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    for name in names:
        started = time.monotonic()
        if name == "ingress":
            from infra.bench import ingress

            print(ingress.report(ingress.run(arguments.seconds)), flush=True)
        elif name == "export":
            from infra.bench import export

            print(export.report(export.run(arguments.sizes)), flush=True)
        elif name == "e2e":
            from infra.bench import e2e

            print(e2e.report(e2e.run(arguments.requests, arguments.concurrency)), flush=True)
        elif name == "soak":
            from infra.bench import soak

            results = soak.run(arguments.minutes, arguments.rate, arguments.sample_seconds)
            print(soak.report(results), flush=True)
        print(f"({name}: {time.monotonic() - started:.0f} s wall)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
