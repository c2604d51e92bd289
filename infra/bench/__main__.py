"""`python -m infra.bench [ingress|export|e2e ...]`: run benchmarks and print their figures."""

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.bench", description=__doc__)
    parser.add_argument("benchmarks", nargs="*", default=["ingress"], choices=["ingress"])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each ingress load run")
    arguments = parser.parse_args(argv)
    for name in arguments.benchmarks:
        if name == "ingress":
            from infra.bench import ingress

            print(ingress.report(ingress.run(arguments.seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
