"""Run the sheaf-training experiments and write a Markdown report with CSVs and figures.

The four experiments compare sheaf training (``sheafsim.train``) with
full-batch gradient descent on the recipes of Bosca and Ghrist
(arXiv:2603.14831): the eight synthetic configurations, the learning-rate law,
depth against integration time, and the digits. The full run took 6 minutes
on an idle 2-core machine and up to 25 minutes when other jobs shared it, and
``--quick`` takes seconds.

    python examples/run_training_experiments.py
    python examples/run_training_experiments.py --quick --output /tmp/exp.md
    python examples/run_training_experiments.py --only learning_rate_law
"""

from __future__ import annotations

import os

# Every worker trains small matrices, where extra BLAS threads only compete
# with the other worker for the cores.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from training import (  # noqa: E402
    configurations,
    depth,
    digits,
    learning_rate_law,
)
from training.report import RunInfo, write_report  # noqa: E402
from training.settings import EXPERIMENTS, FULL, QUICK  # noqa: E402
from training.tasks import run_all  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]
MODULES = {
    "configurations": configurations,
    "learning_rate_law": learning_rate_law,
    "depth": depth,
    "digits": digits,
}

logger = logging.getLogger("run_training_experiments")


def _workers(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid; use at least 1 worker")
    return value


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="run every experiment for a few hundred steps with one seed, to check "
        "that the script works (numbers not comparable with the recorded ones)",
    )
    parser.add_argument(
        "--only",
        choices=EXPERIMENTS,
        help="run one experiment; the report then contains only its section",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="Markdown report to write; the CSV files and figures go to the folder "
        "of the same name without '.md' (default: docs/experiments.md, or "
        "runs/experiments-quick.md with --quick)",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=2,
        help="worker processes that run the trainings in parallel (default: 2)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen experiments and write the report; return the exit status."""
    arguments = parse_arguments(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    settings = QUICK if arguments.quick else FULL
    names = [arguments.only] if arguments.only else list(EXPERIMENTS)
    default = "runs/experiments-quick.md" if arguments.quick else "docs/experiments.md"
    output = arguments.output or REPOSITORY / default
    directory = output.with_suffix("")

    tasks = [task for name in names for task in MODULES[name].tasks(settings)]
    logger.info(
        "running %s: %d runs on %d worker(s), report %s",
        ", ".join(names),
        len(set(tasks)),
        arguments.workers,
        output,
    )
    load_before = os.getloadavg()
    start = time.perf_counter()
    results = run_all(tasks, arguments.workers)
    elapsed = time.perf_counter() - start
    load_after = os.getloadavg()

    sections = [
        MODULES[name].summarise(settings, results, directory, f"{directory.name}/")
        for name in names
    ]
    command = " ".join(
        ["python", "examples/run_training_experiments.py"]
        + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])]
    )
    info = RunInfo(command, arguments.workers, elapsed, load_before, load_after)
    write_report(output, settings, sections, info)
    logger.info("wrote %s and %s/ in %.0f s", output, directory, elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
