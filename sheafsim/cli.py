"""Command line: ``sheafsim run CONFIG.toml``, ``sheafsim report RUN_DIR`` and
``sheafsim bench``.

``sheafsim run`` exits with 0 when the run converged (or a training run
completed), 3 when it ended with ``max_steps``, ``diverged`` or
``non_finite``, 4 when a vertex actor failed (``summary.json`` then has status
``failed``), 130 when it was stopped with Ctrl-C (status ``interrupted``), and 2
on a bad configuration or an unreachable cluster.

``sheafsim report`` exits with 0 when it read every file of the run, 3 when it
wrote the report but some files were unreadable or a figure failed, and 2 when
the directory is not a run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from sheafsim.errors import SheafsimError

__all__ = ["main"]


def _parse_value(text: str) -> Any:
    # Values of --set are TOML literals; bare words are strings.
    import tomllib

    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


class _ProgressPrinter:
    """Prints step, max change, rate and elapsed time.

    On a terminal one line is rewritten in place about once a second. Otherwise
    a new line is printed every ``log_every_s`` seconds, so log files stay
    readable.
    """

    def __init__(self, stream: Any, log_every_s: float = 10.0) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.log_every_s = log_every_s
        self.last_step: int | None = None
        self.last_time = 0.0
        self.last_line = -float("inf")

    def __call__(self, step: int, max_change: float, elapsed: float) -> None:
        now = time.perf_counter()
        if self.last_step is None or now <= self.last_time:
            rate_text = "     --"
        else:
            rate = (step - self.last_step) / (now - self.last_time)
            rate_text = f"{rate:7.0f}"
        self.last_step, self.last_time = step, now
        line = (
            f"step {step:>8d}  max change {max_change:9.3e}  "
            f"{rate_text} steps/s  elapsed {elapsed:7.1f} s"
        )
        if self.tty:
            self.stream.write("\r" + line)
        elif now - self.last_line >= self.log_every_s:
            self.stream.write(line + "\n")
            self.last_line = now
        else:
            return
        self.stream.flush()

    def finish(self) -> None:
        """End the in-place line on a terminal."""
        if self.tty and self.last_step is not None:
            self.stream.write("\n")


def _run(args: argparse.Namespace) -> int:
    from sheafsim.config import load_config
    from sheafsim.experiment import _finite, run_experiment

    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SheafsimError(
                f"--set {item!r} is invalid; write --set table.key=value, for "
                "example --set diffusion.tol=1e-8"
            )
        overrides[key.strip()] = _parse_value(value.strip())
    if args.address is not None:
        overrides["runtime.address"] = args.address
    if args.overwrite:
        overrides["output.overwrite"] = True
    config = load_config(args.config, overrides)
    printer = None if args.quiet else _ProgressPrinter(sys.stderr)

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr)

    summary = run_experiment(config, args.output, progress=printer, log=log)
    if printer is not None:
        printer.finish()
    directory = args.output or config.output.directory
    keys = [
        "status",
        "steps",
        "wall_time_s",
        "final_energy",
        "max_abs_error_vs_forward",
        "max_abs_error_vs_predict_proba",
        "test_accuracy",
        "train_loss",
        "test_loss",
        "train_accuracy",
        "baseline",
        "n_actors",
        "array_backend",
    ]
    shown = {k: summary[k] for k in keys if k in summary}
    print(json.dumps(_finite(shown), indent=2))
    if summary["status"] not in ("converged", "completed"):
        print(f"{summary['status']}: {summary.get('message', '')}", file=sys.stderr)
    log(f"run directory: {directory}")
    return _EXIT_STATUS.get(summary["status"], 3)


# Exit status of ``sheafsim run`` by run status; 2 is a bad input or set-up.
_EXIT_STATUS = {"converged": 0, "completed": 0, "failed": 4, "interrupted": 130}


def _bench(args: argparse.Namespace) -> int:
    from sheafsim.bench import run_benchmarks, write_report

    output = Path(args.output)
    if output.exists() and not output.is_file() or not output.parent.is_dir():
        raise SheafsimError(
            f"cannot write the benchmark report to {output}: its folder does not "
            "exist or the path is not a file; pass --output with a writable .md path"
        )
    command = "sheafsim bench" + (" --quick" if args.quick else "")
    if args.only:
        command += " " + " ".join(f"--only {name}" for name in args.only)
    results = run_benchmarks(
        args.only, quick=args.quick, progress=lambda m: print(m, file=sys.stderr)
    )
    for result in results:
        print(f"\n{result.title}")
        print(" | ".join(result.columns))
        for row in result.rows:
            print(" | ".join(str(cell) for cell in row))
    write_report(results, Path(args.output), command)
    print(f"\nwrote {args.output}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from sheafsim.report import write_report

    try:
        result = write_report(args.run_dir, args.output)
    except ImportError as error:
        raise SheafsimError(str(error)) from None
    print(result.html)
    for figure in result.figures:
        print(figure)
    for note in result.notes:
        print(f"sheafsim: note: {note}", file=sys.stderr)
    for file, message in result.problems.items():
        print(f"sheafsim: problem: {file}: {message}", file=sys.stderr)
    return 3 if result.problems else 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``sheafsim`` command."""
    parser = argparse.ArgumentParser(
        prog="sheafsim",
        description="Cellular-sheaf diffusion of neural networks on Ray vertex actors.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at INFO level"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run an experiment configuration (TOML)")
    run.add_argument("config", help="path of the TOML experiment configuration")
    run.add_argument("--output", help="run directory (overrides output.directory)")
    run.add_argument(
        "--address",
        help="Ray cluster to join: 'auto', 'host:port' or 'ray://host:port' "
        "(default: start a local Ray on this machine)",
    )
    run.add_argument(
        "--set",
        action="append",
        metavar="TABLE.KEY=VALUE",
        help="override one configuration value, e.g. --set data.samples=200",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run already in the run directory",
    )
    run.add_argument("--quiet", action="store_true", help="print only the summary")
    run.set_defaults(handler=_run)

    report = commands.add_parser(
        "report", help="draw the figures of a run directory into an HTML report"
    )
    report.add_argument("run_dir", help="run directory written by 'sheafsim run'")
    report.add_argument(
        "--output",
        help="directory for report.html and the PNG figures (default: RUN_DIR/report)",
    )
    report.set_defaults(handler=_report)

    bench = commands.add_parser(
        "bench", help="run benchmarks, write docs/benchmarks.md"
    )
    bench.add_argument("--quick", action="store_true", help="fewer steps and cases")
    bench.add_argument(
        "--only", action="append", metavar="NAME", help="run only this benchmark"
    )
    bench.add_argument(
        "--output", default="docs/benchmarks.md", help="Markdown report to update"
    )
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sheafsim`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args))
    except SheafsimError as error:
        print(f"sheafsim: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
