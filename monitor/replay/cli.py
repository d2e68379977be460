"""The ``driftline replay`` command: progress while it runs, a summary when it ends."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from monitor.alerting.alerts import CONCEPT
from monitor.config.schema import Config
from monitor.replay.inputs import lines
from monitor.replay.replay import Replay, ReplayResult, StrictError, alert_lines, summarize
from sinks.base import Sink

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_ALERTS = 0, 1, 2, 3


def replay_command(config: Config, args: argparse.Namespace) -> int:
    out = Console()
    err = Console(stderr=True)
    sinks: list[Sink] = []
    if args.sinks:
        from monitor.app.build import make_sink
        from sinks.registry import named

        # No outbox on disk: a replay must not share a running daemon's.
        memory = config.model_copy(
            update={
                "state": config.state.model_copy(update={"memory_only": True, "path": None}),
                "outbox": config.outbox.model_copy(update={"path": None}),
            }
        )
        sinks = [make_sink(memory, name, spec) for name, spec in named(config.sinks)]
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        disable=args.quiet or not err.is_terminal,
    )
    task = progress.add_task("replaying", total=None)
    started = time.perf_counter()
    recorder = None
    if args.report is not None:
        from monitor.replay.report import Recorder

        recorder = Recorder()

    def on_batch(r: ReplayResult) -> None:
        if recorder is not None:
            recorder.record(replay.pipeline.status)
        rate = r.events / max(time.perf_counter() - started, 1e-9)
        progress.update(
            task,
            description=f"{r.lines:,} lines, {r.events:,} events ({rate:,.0f}/s), "
            f"{len({a.id for a in r.alerts}):,} alert episodes, {len(r.malformed):,} malformed",
        )

    replay = Replay(
        config,
        learners=not args.no_learners,
        sinks=sinks,
        batch=args.batch or (500 if args.report is not None else 5000),
        strict=args.strict,
        on_batch=on_batch,
    )

    async def go() -> ReplayResult:
        for sink in sinks:
            await sink.start()
        try:
            return await replay.run(lines(args.input))
        finally:
            for sink in sinks:
                await sink.flush(config.shutdown_timeout_s)
                await sink.close(config.shutdown_timeout_s)

    try:
        with progress:
            result = asyncio.run(go())
    except StrictError as exc:
        print(f"driftline replay: malformed line (--strict): {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        print(f"driftline replay: cannot read the input: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.alerts is not None:
        with args.alerts.open("wb") as fh:
            fh.writelines(alert_lines(result.alerts))
    report(out, result)
    if recorder is not None:
        from monitor.replay.report import write

        plots = write(
            args.report,
            recorder,
            result.alerts,
            title=f"driftline replay of {', '.join(Path(i).name for i in args.input)}",
        )
        size = args.report.stat().st_size / 1e6
        out.print(f"report written to {args.report} ({plots} plots, {size:.1f} MB)", soft_wrap=True)
    if args.alerts is not None:
        out.print(f"alerts written to {args.alerts}", soft_wrap=True)
    fired = any(a.status == "firing" for a in result.alerts)
    return EXIT_ALERTS if args.fail_on_alert and fired else EXIT_OK


def report(out: Console, result: ReplayResult) -> None:
    """The summary: series that alerted, malformed lines, throughput."""
    rate = result.events / result.seconds if result.seconds > 0 else 0.0
    out.print(
        f"{result.lines:,} lines, {result.events:,} events accepted "
        f"({', '.join(f'{m} {n:,}' for m, n in result.events_by_model.items())}) "
        f"in {result.seconds:.1f} s ({rate:,.0f} events/s); {len(result.alerts):,} alerts",
        soft_wrap=True,
    )
    rows = summarize(result.alerts)
    if rows:
        table = Table(title="series that alerted", title_justify="left")
        for col in ("model", "series", "episodes", "first alert at event", "at (UTC)", "detectors"):
            table.add_column(col)
        for s in rows:
            kind = next(iter(s.detectors))
            pairs = s.feature is None and kind == CONCEPT
            cells: list[Any] = [
                s.model,
                s.feature or ("(concept drift)" if pairs else "(several features)"),
                str(s.episodes),
                ""
                if s.first_event is None
                else f"{s.first_event:,}" + (" (labelled pair)" if pairs else ""),
                (s.first_at or "")[:19].replace("T", " "),
                ", ".join(sorted(s.detectors)),
            ]
            table.add_row(*cells)
        out.print(table)
    else:
        out.print("no alert fired")
    if result.rejected:
        counts = ", ".join(f"{reason} {n:,}" for reason, n in result.rejected.most_common())
        out.print(
            f"malformed lines: {sum(result.rejected.values()):,} ({counts}); the first:",
            soft_wrap=True,
        )
        for m in result.malformed[:10]:
            out.print(
                f"  {m.where}: {m.reason}: {m.detail}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
