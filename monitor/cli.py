"""The ``driftline`` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the heavy imports wait for a command that needs them (--help is fast)
    from monitor.config.schema import Config

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
        epilog="Exit status: 0 success, 1 runtime failure, 2 bad usage or configuration "
        "(Kafka credentials and permissions included).",
    )
    parser.add_argument("--version", action="version", version=f"driftline {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the daemon: consume prediction events from Kafka, alert on drift",
        description="Consume prediction events from Kafka, monitor every feature and the "
        "prediction, send alerts to the configured sinks and serve /metrics, /healthz, "
        "/readyz and /status. A broker, store or receiver that is away is retried while it "
        "serves. Stops cleanly on SIGTERM or SIGINT (exit 0); exit 2 for an invalid "
        "configuration (every error listed) or credentials/permissions Kafka refuses, 1 for "
        "a fault it cannot work around (a supervisor restarts it). State goes to ./data "
        "unless state: says otherwise. SIGHUP reloads the configuration (sinks, alerting, "
        "thresholds, reference files; other changes are refused and need a restart). "
        "SIGUSR1 logs where every task is waiting.",
    )
    run.add_argument("--config", "-c", required=True, type=Path, help="YAML configuration file")
    run.add_argument(
        "--log-level",
        default=None,
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level, any case (default: logging.level of the configuration, INFO)",
    )
    run.add_argument(
        "--log-format",
        default=None,
        choices=["text", "json"],
        help="log lines as text or JSON objects (default: logging.format, text)",
    )

    check = sub.add_parser(
        "check-config",
        help="validate a configuration file and list every error",
        description="Validate a configuration file (with ${VAR} expansion from the "
        "environment). Prints every error with its path and exits 2, or prints a summary "
        "and exits 0.",
    )
    check.add_argument("config", type=Path, help="YAML configuration file")

    ref = sub.add_parser(
        "reference", help="build reference files; accept a drift as the new normal"
    )
    ref_sub = ref.add_subparsers(dest="reference_command", metavar="ACTION")
    build = ref_sub.add_parser(
        "build",
        help="make a model's reference file from training data (CSV or JSON Lines)",
        description="Read training data (CSV with a header, or JSON Lines of flat objects "
        "or prediction events), take a seeded sample and write the reference file that "
        "'models.<model>.reference.file' points to.",
    )
    build.add_argument("--config", "-c", required=True, type=Path, help="YAML configuration file")
    build.add_argument("--model", "-m", required=True, help="model name from the configuration")
    build.add_argument("--input", "-i", required=True, type=Path, help="data.csv or data.jsonl")
    build.add_argument("-o", "--output", required=True, type=Path, help="reference file to write")
    build.add_argument("--sample", type=int, default=5000, help="rows to keep (default 5000)")
    build.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")

    accept = ref_sub.add_parser(
        "accept",
        help="accept a drift as the new normal: re-baseline a running daemon's model",
        description="Ask a running daemon (POST /models/<model>/reference) to make the "
        "model's most recent events (--recent N) or its next events (--next N) the new "
        "reference, of every series or of those named with --feature. Open alerts of those "
        "series resolve ('rebaselined'). The daemon must have http.token set; give it with "
        "--token or DRIFTLINE_TOKEN.",
        epilog="Exit status: 0 done (or under way, with --next), 1 the daemon cannot be "
        "reached or refused, 2 bad usage.",
    )
    accept.add_argument("--url", required=True, help="the daemon, e.g. http://127.0.0.1:9108")
    accept.add_argument("--model", "-m", required=True, help="model name")
    how = accept.add_mutually_exclusive_group(required=True)
    how.add_argument("--recent", type=int, metavar="N", help="the last N events (kept ones)")
    how.add_argument("--next", type=int, metavar="N", help="the next N events, once they come")
    accept.add_argument(
        "--feature",
        "-f",
        action="append",
        dest="features",
        metavar="F",
        help="re-baseline only this series (repeatable; default: every series)",
    )
    accept.add_argument("--token", default=None, help="bearer token (default: $DRIFTLINE_TOKEN)")
    accept.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")

    replay = sub.add_parser(
        "replay",
        help="run the daemon's pipeline over event files, offline (backtests, CI)",
        description="Run exactly the daemon's decode, detectors and alert policy (and the "
        "online learners when configured) over JSON Lines files in the wire format, with no "
        "Kafka: the alerts are those 'driftline run' would send for the same events in the "
        "same order, ids included. Use it to backtest a configuration on past traffic, tune "
        "thresholds, or gate a model's CI. Malformed lines are reported with file:line and "
        "their reason and counted. Sinks receive nothing unless --sinks is given.",
        epilog="Exit status: 0 done, 1 a runtime failure, 2 bad usage, configuration or "
        "input (a malformed line with --strict, an unreadable file), 3 alerts fired and "
        "--fail-on-alert was given.",
    )
    replay.add_argument("--config", "-c", required=True, type=Path, help="YAML configuration file")
    replay.add_argument(
        "--input",
        "-i",
        required=True,
        action="append",
        metavar="FILE",
        help="events, one JSON object per line; gzip accepted; '-' for stdin (repeatable: "
        "read in order)",
    )
    replay.add_argument("--alerts", "-o", type=Path, help="write the alerts here, one per line")
    replay.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="write an HTML report (self-contained: it opens with no network)",
    )
    replay.add_argument(
        "--sinks", action="store_true", help="also deliver the alerts through the configured sinks"
    )
    replay.add_argument("--strict", action="store_true", help="a malformed line is an error")
    replay.add_argument(
        "--fail-on-alert", action="store_true", help="exit 3 when any alert fired (for CI)"
    )
    replay.add_argument(
        "--no-learners", action="store_true", help="leave the online learners out (faster)"
    )
    replay.add_argument(
        "--batch",
        type=int,
        default=None,
        help="lines per batch (default 5000; 500 with --report, for finer timelines; the "
        "alerts are the same)",
    )
    replay.add_argument("--quiet", "-q", action="store_true", help="no progress, summary only")

    demo = sub.add_parser(
        "demo",
        help="the daemon end to end on an embedded broker, with a known drift",
        description="Start an embedded Kafka-compatible broker and a webhook receiver, run "
        "the daemon with the shipped demo configuration, replay scored loan applications "
        "whose distribution shifts at a known event, show scores and alerts live, and end "
        "with the detection delays. Cleans up everything it started.",
    )
    demo.add_argument("--events", type=int, default=60_000, help="events to replay (default 60000)")
    demo.add_argument(
        "--drift-at", type=int, default=None, help="event at which drift starts (default: half way)"
    )
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument(
        "--rate", type=float, default=4_000.0, help="events per second to send; 0 = flat out"
    )
    demo.add_argument("--no-live", action="store_true", help="print a plain summary only")
    demo.add_argument(
        "--write-events",
        type=Path,
        metavar="FILE",
        help="write the demo's events to FILE (JSON Lines; .gz compresses) and a configuration "
        "beside it for 'driftline replay', then exit; nothing is started",
    )
    return parser


def _load(path: Path) -> Config | None:
    from monitor.config.schema import load_config
    from monitor.errors import ConfigError

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        print("Fix the errors above, then run 'driftline check-config' again.", file=sys.stderr)
        return None


def cmd_check_config(path: Path) -> int:
    config = _load(path)
    if config is None:
        return EXIT_USAGE
    from monitor.config.kinds import describe_detector
    from monitor.config.plan import plan
    from monitor.ingest.decode import ModelSchema
    from monitor.online.reference import read_reference_file, unmonitorable

    problems: list[str] = []
    lines: list[str] = []
    for name, model_plan in plan(config).items():
        specs = config.feature_specs(name)
        ref = config.reference_for(name)
        skipped: dict[str, str] = {}
        if ref.file is None:
            lines.append(f"  model {name}: reference from its first {ref.warmup} events")
        else:
            try:
                reference = read_reference_file(ref.file, ModelSchema(model_plan))
            except ValueError as exc:
                problems.append(f"models.{name}.reference.file: {exc}")
                continue
            skipped = unmonitorable(reference, ModelSchema(model_plan))
            lines.append(
                f"  model {name}: reference from file {ref.file} ({reference.n_events} events)"
            )
        target = config.false_alert_rate(name) * 1e5
        lines.append(f"    target: {target:g} false alerts per 100,000 events per series")
        for series in model_plan.series:
            kind = specs[series.name].type
            if series.name in skipped:
                lines.append(f"    {series.name} ({kind}): NOT monitored: {skipped[series.name]}")
                continue
            dets = ", ".join(describe_detector(d.kind, d.params) for d in series.detectors)
            lines.append(f"    {series.name} ({kind}): {dets}")
    if problems:
        print(f"{path}: invalid configuration:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        print("Fix the errors above, then run 'driftline check-config' again.", file=sys.stderr)
        return EXIT_USAGE
    print(f"{path}: OK")
    print("\n".join(lines))
    sinks = ", ".join(s.type for s in config.sinks) or "none"
    print(
        f"  kafka: {config.kafka.topic} at {config.kafka.bootstrap_servers}, "
        f"group {config.kafka.group_id}; sinks: {sinks}"
    )
    not_monitored = sum("NOT monitored" in line for line in lines)
    if not_monitored:
        print(f"warning: {not_monitored} configured series will not be monitored (see above)")
    return EXIT_OK


def cmd_run(path: Path, level: str | None, format: str | None) -> int:
    from monitor.logs import configure

    config = _load(path)
    if config is None:
        return EXIT_USAGE
    configure(level or config.logging.level, format or config.logging.format)
    from monitor.app.build import build
    from monitor.app.hooks import CrashPoints

    async def main() -> int:
        try:
            daemon = build(
                config,
                config_path=path,
                version=package_version(),
                crash=CrashPoints(os.environ.get("DRIFTLINE_CRASH_AT")),
            )
        except ValueError as exc:  # e.g. an unreadable reference file
            print(f"driftline run: {exc}", file=sys.stderr)
            return EXIT_USAGE
        daemon.install_signal_handlers()
        return await daemon.run()

    try:
        return asyncio.run(main())
    except OSError as exc:  # e.g. the HTTP port is taken
        print(f"driftline run: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def cmd_reference_build(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    if args.model not in config.models:
        known = ", ".join(sorted(config.models))
        print(
            f"driftline reference build: no model {args.model!r} in {args.config} "
            f"(models: {known})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from monitor.config.plan import plan
    from monitor.ingest.decode import ModelSchema
    from monitor.online.reference import build_reference, describe, write_reference

    model_plan = plan(config)[args.model]
    try:
        ref = build_reference(model_plan, args.input, args.sample, args.seed)
    except (OSError, ValueError) as exc:
        print(f"driftline reference build: {exc}", file=sys.stderr)
        return EXIT_USAGE
    write_reference(ref, model_plan, args.output)
    print(describe(ref, ModelSchema(model_plan)))
    print(f"wrote {args.output}; point models.{args.model}.reference.file at it")
    return EXIT_OK


def cmd_reference_accept(args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    token = args.token or os.environ.get("DRIFTLINE_TOKEN")
    body: dict[str, object] = {
        "from": "recent" if args.recent is not None else "next",
        "events": args.recent if args.recent is not None else args.next,
    }
    if args.features:
        body["features"] = args.features
    url = f"{args.url.rstrip('/')}/models/{urllib.parse.quote(args.model, safe='')}/reference"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as resp:
            answer = json.loads(resp.read())
            code = resp.status
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            reason = exc.reason
        hint = (
            " (give the daemon's http.token with --token or DRIFTLINE_TOKEN)"
            if (exc.code == 401 and not token)
            else ""
        )
        print(f"driftline reference accept: {exc.code}: {reason}{hint}", file=sys.stderr)
        return EXIT_FAILURE
    except (urllib.error.URLError, OSError, ValueError) as exc:
        why = getattr(exc, "reason", exc)
        print(f"driftline reference accept: cannot reach {args.url}: {why}", file=sys.stderr)
        return EXIT_FAILURE
    ref = answer.get("reference", {})
    which = ", ".join(ref.get("features") or []) or "every series"
    if code == 202:
        pending = ref.get("pending", {})
        which = ", ".join(pending.get("features") or []) or "every series"
        print(
            f"model {args.model}: re-baseline under way: the next {pending.get('events')} "
            f"events become the reference of {which}"
        )
    else:
        print(
            f"model {args.model}: reference version {ref.get('version')} made from the "
            f"{ref.get('source')} {ref.get('events')} events ({which})"
        )
    resolved = answer.get("resolved", [])
    print(
        f"{len(resolved)} open alert(s) resolved as re-baselined"
        + (f": {', '.join(resolved)}" if resolved else "")
    )
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    if args.batch is not None and args.batch < 1:
        print("driftline replay: --batch must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    from monitor.replay.cli import replay_command

    return replay_command(config, args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "check-config":
        return cmd_check_config(args.config)
    if args.command == "run":
        return cmd_run(args.config, args.log_level, args.log_format)
    if args.command == "reference":
        if args.reference_command == "accept":
            if (args.recent if args.recent is not None else args.next) <= 0:
                parser.error("--recent/--next take a positive number of events")
            return cmd_reference_accept(args)
        if args.reference_command != "build":
            parser.parse_args(["reference", "--help"])
        return cmd_reference_build(args)
    if args.command == "replay":
        return cmd_replay(args)
    if args.command == "demo":
        from monitor.demo.demo import run_demo

        try:
            return run_demo(
                events=args.events,
                drift_at=args.drift_at,
                seed=args.seed,
                rate=args.rate,
                live=not args.no_live,
                write_to=args.write_events,
            )
        except ValueError as exc:
            print(f"driftline demo: {exc}", file=sys.stderr)
            return EXIT_USAGE
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE  # pragma: no cover - parser.error exits


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
