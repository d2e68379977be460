"""The ``driftline`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def package_version() -> str:
    try:
        return version("driftline")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftline",
        description="Streaming drift monitor for ML models: prediction events in, "
        "drift alerts and Prometheus metrics out.",
    )
    parser.add_argument("--version", action="version", version=f"driftline {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="replay a synthetic prediction stream with a known drift and watch the detectors",
        description="Replay a seeded stream of loan-application features whose distribution "
        "shifts at a known event, run ADWIN, KS, PSI and the categorical test on every "
        "feature, show the scores live and finish with detection delays.",
    )
    demo.add_argument("--events", type=int, default=60_000, help="events to replay (default 60000)")
    demo.add_argument(
        "--drift-at", type=int, default=None, help="event at which drift starts (default: half way)"
    )
    demo.add_argument("--batch", type=int, default=1000, help="events per batch (default 1000)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument(
        "--rate", type=float, default=20_000.0, help="events per second to replay at; 0 = flat out"
    )
    demo.add_argument("--no-live", action="store_true", help="print a plain summary only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "demo":
        from .demo import run_demo

        try:
            return run_demo(
                events=args.events,
                drift_at=args.drift_at,
                batch=args.batch,
                seed=args.seed,
                rate=args.rate,
                live=not args.no_live,
            )
        except ValueError as exc:
            print(f"driftline demo: {exc}", file=sys.stderr)
            return EXIT_USAGE
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE  # pragma: no cover - parser.error exits


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
