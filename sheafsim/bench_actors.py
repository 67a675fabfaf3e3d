"""Benchmarks of the Ray actor runtime, run by ``sheafsim bench``.

Each benchmark sets an actor run against a baseline timed in the same process:

- ``actor_round``: the synchronous round (actor wall time per step) against the
  in-process step of :func:`sheafsim.dynamics.diffuse` on the digits network.
- ``actor_messages``: vertex-to-vertex messages per second per actor in an
  actor run against bare Ray actors that exchange arrays of the same shapes in
  the same pattern and do nothing else.
- ``async_slow_vertex``: time to ``tol`` of the asynchronous schedule against
  the synchronous one when one vertex computes 5x slower than the others.

A benchmark starts a local Ray instance on the loopback interface and shuts it
down at the end, unless Ray is already initialised, in which case it uses that
instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import statistics
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from sheafsim.bench import BenchResult
from sheafsim.dynamics import diffuse, initial_state
from sheafsim.integrators import stability_limit
from sheafsim.neural import NeuralSheaf
from sheafsim.stepsize import estimate_lambda_max

__all__ = ["bench_actor_round", "bench_actor_messages", "bench_async_slow_vertex"]

# Ray passes an argument larger than this many bytes through its shared-memory
# object store instead of inline in the call. It is the default of
# max_direct_call_object_size in Ray's src/ray/common/ray_config_def.h.
RAY_INLINE_LIMIT_BYTES = 100 * 1024

# Integrator of the digits job in examples/digits.toml.
DIGITS_INTEGRATOR = "nesterov"

# Seconds between two CPU samples of a profiled run.
PROFILE_INTERVAL_S = 0.5


@dataclass
class _Case:
    """A network, its input columns and the step size both runs use."""

    label: str
    net: NeuralSheaf
    x: np.ndarray
    dt: float


def _auto_dt(net: NeuralSheaf, x: np.ndarray, integrator: str) -> float:
    """Return 90% of the stable step at the random start of seed 0.

    This is the ``dt = "auto"`` rule of the run configurations.
    """
    start = initial_state(net, x, "random", 0)
    lam = float(np.max(estimate_lambda_max(net, [start[v] for v in net.free_vertices])))
    return 0.9 * stability_limit(integrator) / (lam * 1.02)


def _digits_run_size(quick: bool) -> tuple[int, int]:
    """Return the steps per run and the repeats of the digits benchmarks."""
    return (40, 1) if quick else (300, 5)


def _digits_case(quick: bool) -> _Case:
    """Fit the digits MLPClassifier of the main job and build its sheaf.

    The model has one hidden ReLU layer of 64 units and is fitted on all 1797
    digits, with pixel intensities 0..16 scaled to [0, 1]. The input is every
    digit, or the first 300 when ``quick``.
    """
    samples, max_iter = (300, 30) if quick else (None, 500)
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    data = load_digits()
    features = data.data / 16.0
    model = MLPClassifier(
        hidden_layer_sizes=(64,),
        activation="relu",
        max_iter=max_iter,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(features, data.target)
    net = NeuralSheaf.from_sklearn(model)
    if samples is not None:
        features = features[:samples]
    x = np.ascontiguousarray(features.T)
    label = f"{net.widths} {net.output} (digits MLP)"
    return _Case(label, net, x, _auto_dt(net, x, DIGITS_INTEGRATOR))


@contextlib.contextmanager
def _local_ray(system_config: dict[str, Any] | None = None) -> Iterator[bool]:
    """Use the initialised Ray instance, or run a local one on 127.0.0.1.

    Yields whether this call started Ray. ``system_config`` is passed to
    ``ray.init`` when it does.
    """
    if ray.is_initialized():
        yield False
        return
    ray.init(
        address="local",
        include_dashboard=False,
        logging_level=logging.ERROR,
        _node_ip_address="127.0.0.1",
        _system_config=system_config,
    )
    try:
        yield True
    finally:
        ray.shutdown()


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """Limit BLAS to one thread, as Ray does in its worker processes.

    Ray sets ``OMP_NUM_THREADS=1`` in an actor that reserves no CPUs, so the
    vertex actors multiply matrices on one thread each.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _in_process_step_s(case: _Case, steps: int) -> tuple[float, dict[str, Any]]:
    """Return the wall time per step of ``diffuse`` and its final state."""
    with _one_blas_thread():
        result = diffuse(
            case.net,
            case.x,
            dt=case.dt,
            tol=1e-300,
            max_steps=steps,
            integrator=DIGITS_INTEGRATOR,
            record_crossings=False,
            check_step=False,
        )
    return result.wall_time_s / result.steps, result.state


def _actor_run(case: _Case, steps: int, **options: Any) -> Any:
    """Run ``steps`` synchronous steps of the digits case on actors."""
    from sheafsim.runtime import diffuse_on_actors

    return diffuse_on_actors(
        case.net,
        case.x,
        dt=case.dt,
        tol=1e-300,
        max_steps=steps,
        integrator=DIGITS_INTEGRATOR,
        check_step=False,
        timeout_s=600.0,
        **options,
    )


def _message_shapes(net: NeuralSheaf, batch: int) -> list[tuple[str, str, tuple]]:
    """Return ``(sender, receiver, shape)`` of each message one sync round sends.

    Both ends of an edge between two stepping vertices send one message per
    round, shaped like the edge stalk, which has the dimension of the
    downstream vertex. The pinned input ``x`` sends only once.
    """
    messages = []
    for edge in net.edges:
        if edge.upstream == "x":
            continue
        shape = (net.stalk_dim(edge.downstream), batch)
        messages.append((edge.upstream, edge.downstream, shape))
        messages.append((edge.downstream, edge.upstream, shape))
    return messages


def _describe_shapes(messages: list[tuple[str, str, tuple]]) -> str:
    counts: dict[tuple, int] = {}
    for _, _, shape in messages:
        counts[shape] = counts.get(shape, 0) + 1
    parts = []
    for shape, count in counts.items():
        kib = np.prod(shape) * 8 / 1024
        parts.append(f"{count} x {shape} ({kib:.0f} KiB)")
    return ", ".join(parts)


# -- CPU profile of a run -----------------------------------------------------


def _read_ppid_map() -> dict[int, int]:
    parents = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        # The command name in brackets may contain spaces, so split after it.
        fields = text[text.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, parent in _read_ppid_map().items():
        children.setdefault(parent, []).append(pid)
    found, queue = [root], [root]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _process_group(pid: int, root: int, command: str, thread_name: str) -> str:
    if pid == root:
        return "driver"
    program = command.split("\0", 1)[0]
    if "VertexActor" in command:
        if thread_name.startswith("ray::"):
            return "vertex actors, Python threads"
        return "vertex actors, Ray C++ threads"
    if "CoordinatorActor" in command:
        return "coordinator"
    if program.endswith("/raylet"):
        return "raylet"
    if program.endswith("/gcs_server"):
        return "gcs_server"
    return "other Ray processes"


def _thread_cpu_s(root: int) -> dict[tuple[int, int], tuple[str, float]]:
    """Return ``{(pid, tid): (group, CPU seconds)}`` of ``root`` and its descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    threads = {}
    for pid in _descendants(root):
        try:
            with open(f"/proc/{pid}/cmdline") as cmdline:
                command = cmdline.read()
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                    text = stat.read()
            except OSError:
                continue
            name = text[text.index("(") + 1 : text.rindex(")")]
            fields = text[text.rindex(")") + 2 :].split()
            # Fields 14 and 15 of proc(5), utime and stime, in clock ticks.
            cpu_s = (int(fields[11]) + int(fields[12])) / ticks
            group = _process_group(pid, root, command, name)
            threads[(pid, int(tid))] = (group, cpu_s)
    return threads


class _CpuProfile:
    """CPU time per round of the Ray processes this process started, by group.

    Use an instance as the ``progress`` callback of an actor run. Each call
    samples the CPU time of every thread from ``/proc`` (Linux only) together
    with the coordinator's last checked step, so the profile leaves out actor
    start-up and clean-up. Threads that started or ended between the first and
    the last sample are left out.
    """

    def __init__(self) -> None:
        self.root = os.getpid()
        self.samples: list[tuple[int, float, dict]] = []

    @staticmethod
    def available() -> bool:
        """Return whether ``/proc`` exposes per-thread CPU times."""
        return os.path.exists(f"/proc/{os.getpid()}/task")

    def __call__(self, step: int, max_change: float, elapsed_s: float) -> None:
        self.samples.append((step, time.perf_counter(), _thread_cpu_s(self.root)))

    def per_round_ms(self) -> tuple[dict[str, float], float] | None:
        """Return CPU ms per round by group and wall ms per round, if sampled."""
        if len(self.samples) < 2:
            return None
        first_step, first_time, first = self.samples[0]
        last_step, last_time, last = self.samples[-1]
        rounds = last_step - first_step
        if rounds <= 0:
            return None
        groups: dict[str, float] = {}
        for key, (group, cpu_s) in last.items():
            if key in first:
                groups[group] = groups.get(group, 0.0) + cpu_s - first[key][1]
        per_round = {g: 1e3 * s / rounds for g, s in groups.items()}
        return per_round, 1e3 * (last_time - first_time) / rounds


def _profile_note(profile: _CpuProfile | None, step_s: float) -> str:
    """Describe where a profiled round spends CPU time, against one in-process step."""
    measured = None if profile is None else profile.per_round_ms()
    if measured is None:
        return (
            "No CPU profile: the profiled run was too short for two samples, or "
            "/proc is missing."
        )
    per_round, wall_ms = measured
    ordered = sorted(per_round.items(), key=lambda item: -item[1])
    parts = [f"{group} {ms:.1f}" for group, ms in ordered]
    total = sum(per_round.values())
    python_ms = per_round.get("vertex actors, Python threads", 0.0)
    return (
        "CPU time per round of one more, profiled run, from /proc, in ms: "
        f"{', '.join(parts)}. That is {total:.1f} ms of CPU in "
        f"{wall_ms:.1f} ms of wall time per round on {os.cpu_count()} cores, "
        f"{total / (step_s * 1e3):.1f}x the median in-process step, so the "
        "round is bound by CPU time. The step's arithmetic takes about one "
        f"in-process step ({step_s * 1e3:.2f} ms) of the {python_ms:.1f} ms in "
        "the vertex actors' Python threads. The rest is Ray's cost of the "
        "calls: pickling, object store puts and gets, and dispatch to the event "
        "loop. Python threads are those whose name starts with `ray::`. The "
        "other threads of a vertex actor are Ray's named C++ threads (gRPC, "
        "I/O), and the raylet runs the object store. The driver's share "
        "includes reading /proc for this profile."
    )


# -- actor_round --------------------------------------------------------------


@dataclass
class _RoundTimes:
    """In-process steps and actor rounds of one case, timed alternately.

    Attributes
    ----------
    steps_s : list of float
        Seconds per in-process step, one more entry than ``rounds_s``.
    rounds_s : list of float
        Seconds per actor round. Actor run ``i`` ran between in-process runs
        ``i`` and ``i + 1``.
    mismatch : float
        Largest difference between the final stalks of the two.
    """

    steps_s: list[float]
    rounds_s: list[float]
    mismatch: float

    def ratios(self) -> list[float]:
        """Return each actor round over the mean of the two steps around it."""
        return [
            round_s / (0.5 * (before + after))
            for round_s, before, after in zip(
                self.rounds_s, self.steps_s, self.steps_s[1:], strict=False
            )
        ]


def _time_rounds(
    case: _Case, steps: int, repeats: int, profile: _CpuProfile | None
) -> _RoundTimes:
    """Time ``repeats`` actor runs with an in-process run before and after each.

    With a ``profile``, the last actor run is sampled by it.
    """
    step_s, reference = _in_process_step_s(case, steps)
    steps_s = [step_s]
    rounds_s: list[float] = []
    mismatch = 0.0
    for repeat in range(repeats):
        options: dict[str, Any] = {}
        if profile is not None and repeat == repeats - 1:
            options = {"progress": profile, "progress_interval_s": 0.1}
        result = _actor_run(case, steps, **options)
        rounds_s.append(result.wall_time_s / result.steps)
        for vertex, value in reference.items():
            gap = float(np.max(np.abs(result.state[vertex] - value)))
            mismatch = max(mismatch, gap)
        steps_s.append(_in_process_step_s(case, steps)[0])
    return _RoundTimes(steps_s, rounds_s, mismatch)


def _round_row(
    case: _Case, steps: int, inline: str, times: _RoundTimes, target: bool
) -> list[Any]:
    ratios = times.ratios()
    ratio = statistics.median(ratios)
    target_text, met = "-", "-"
    if target:
        target_text = "<= 1.5x"
        met = "yes" if ratio <= 1.5 else "no"
    return [
        case.label,
        case.x.shape[1],
        steps,
        inline,
        f"{statistics.median(times.steps_s) * 1e3:.2f}",
        f"{statistics.median(times.rounds_s) * 1e3:.2f}",
        f"{ratio:.2f}x",
        f"{min(ratios):.2f}x-{max(ratios):.2f}x",
        target_text,
        met,
        f"{times.mismatch:.1e}",
    ]


# Inline-argument limit of the second actor_round row, above every message of
# the digits run (the largest is 64 x 1797 float64, 898 KiB).
RAISED_INLINE_LIMIT_BYTES = 2 * 1024 * 1024


def bench_actor_round(quick: bool = False) -> BenchResult:
    """Synchronous actor round against the in-process step on the digits network.

    When the benchmark starts Ray itself and ``quick`` is False, it measures
    again on a Ray instance that passes every message inline, to show what the
    object store costs.
    """
    steps, repeats = _digits_run_size(quick)
    case = _digits_case(quick)
    # The quick variant profiles its only timed run. The full one keeps its
    # timed runs free of the sampling and profiles one more run.
    profile = _CpuProfile() if _CpuProfile.available() else None
    with _local_ray() as started:
        times = _time_rounds(case, steps, repeats, profile if quick else None)
        if profile is not None and not quick:
            _actor_run(
                case,
                steps,
                progress=profile,
                progress_interval_s=PROFILE_INTERVAL_S,
            )
    default_limit = f"{RAY_INLINE_LIMIT_BYTES // 1024} KiB (default)"
    rows = [_round_row(case, steps, default_limit, times, target=True)]
    inline_times = None
    if started and not quick:
        raised = {"max_direct_call_object_size": RAISED_INLINE_LIMIT_BYTES}
        with _local_ray(raised):
            inline_times = _time_rounds(case, steps, repeats, None)
        raised_limit = f"{RAISED_INLINE_LIMIT_BYTES // 1024**2} MiB"
        rows.append(_round_row(case, steps, raised_limit, inline_times, False))
    messages = _message_shapes(case.net, case.x.shape[1])
    large = sum(
        1 for *_, shape in messages if np.prod(shape) * 8 > RAY_INLINE_LIMIT_BYTES
    )
    ratio = statistics.median(times.ratios())
    verdict = "met" if ratio <= 1.5 else "not met"
    notes = [
        f"Target {verdict}: the synchronous round takes {ratio:.2f}x the "
        "in-process step, against a target of at most 1.5x.",
        "The actor round is the wall time of `diffuse_on_actors` (from the start "
        "of the vertex loops to the coordinator's end, actor start-up excluded) "
        f"over its {steps} steps. The in-process step is the wall time of "
        "`diffuse` over the same steps with crossings not recorded and BLAS "
        "limited to one thread, as in Ray's workers. Both run "
        f"{DIGITS_INTEGRATOR} from the same random stalks (seed 0) with "
        f"dt = {case.dt:.4g} (90% of the stable step) and tol = 1e-300, so both "
        f"take exactly {steps} steps. The last column is the largest difference "
        f"between their final stalks. {repeats} actor runs alternate with "
        f"{repeats + 1} in-process runs on a local single-node Ray instance. "
        "The times are medians. Each ratio divides an actor round by the mean "
        "of the in-process steps timed just before and after it, and the ratio "
        "column is the median of these ratios, the range their span.",
        f"One round sends {len(messages)} vertex-to-vertex messages: "
        f"{_describe_shapes(messages)}, float64. {large} of them exceed Ray's "
        "limit for inline arguments (`max_direct_call_object_size`), so Ray "
        "copies them into its shared-memory object store, and the receiver "
        "fetches them from there through the raylet. Each vertex also reports "
        "to the coordinator every 10 steps, and the coordinator then sends "
        "every vertex a permit.",
        _profile_note(profile, statistics.median(times.steps_s)),
    ]
    if inline_times is not None:
        default_ms = statistics.median(times.rounds_s) * 1e3
        inline_ms = statistics.median(inline_times.rounds_s) * 1e3
        every_step_ms = [t * 1e3 for t in times.steps_s + inline_times.steps_s]
        notes.append(
            "The second row repeats the measurement on a Ray instance started "
            "with `_system_config={'max_direct_call_object_size': "
            f"{RAISED_INLINE_LIMIT_BYTES}}}`, so every message travels inline in "
            "its call. The runtime itself does not change this setting. It cut "
            f"the actor round from {default_ms:.2f} to {inline_ms:.2f} ms. The "
            "in-process step is timed again for each row, and across all "
            f"{len(every_step_ms)} in-process runs it took "
            f"{min(every_step_ms):.2f} to {max(every_step_ms):.2f} ms, so the "
            "ratios of the two rows are not comparable. A step allocates "
            "temporaries of up to 0.9 MB, which glibc's allocator serves from "
            "fresh pages or from its heap depending on thresholds it adjusts at "
            "run time, the likely cause of this spread."
        )
    return BenchResult(
        "actor_round",
        "Synchronous actor round against the in-process step (digits network)",
        [
            "network",
            "columns",
            "steps",
            "Ray inline arguments up to",
            "in-process step (ms)",
            "actor round (ms)",
            "ratio",
            "ratio range",
            "target",
            "met",
            "max abs(actor - in-process)",
        ],
        rows,
        notes,
    )


# -- actor_messages -----------------------------------------------------------


class _BareActor:
    """Plain async actor that exchanges arrays with its neighbours round by round.

    Round ``t`` sends one array to every neighbour with a fire-and-forget call
    and then waits until every neighbour's round-``t`` array has arrived, as a
    vertex of the synchronous schedule does, but computes nothing.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.arrived: dict[tuple[int, int], int] = {}
        self.wake = asyncio.Event()

    async def ready(self) -> str:
        """Return the actor's name once it is constructed."""
        return self.name

    @ray.method(num_returns=0)
    async def receive(self, loop: int, step: int, value: np.ndarray) -> None:
        """Count an array of round ``step`` of loop number ``loop``."""
        key = (loop, step)
        self.arrived[key] = self.arrived.get(key, 0) + 1
        self.wake.set()

    async def run(
        self, loop: int, targets: list[tuple[Any, np.ndarray]], rounds: int
    ) -> tuple[int, float, float]:
        """Exchange ``rounds + 1`` rounds and return (sent, start, end).

        ``targets`` pairs each neighbour's handle with the array sent to it.
        ``loop`` separates the arrays of this loop from late ones of an earlier
        loop. ``start`` and ``end`` are ``time.perf_counter()`` seconds.
        """
        start = time.perf_counter()
        sent = 0
        for step in range(rounds + 1):
            for handle, value in targets:
                handle.receive.remote(loop, step, value)
                sent += 1
            if step == rounds:
                break
            while self.arrived.get((loop, step), 0) < len(targets):
                self.wake.clear()
                await self.wake.wait()
            del self.arrived[(loop, step)]
        return sent, start, time.perf_counter()


_RemoteBareActor: Any = ray.remote(_BareActor)


class _BareLoop:
    """One bare actor per stepping vertex, reused for loops of several array sizes."""

    def __init__(self, names: list[str]) -> None:
        self.actors = {name: _RemoteBareActor.remote(name) for name in names}
        self.loops = 0
        ray.get([handle.ready.remote() for handle in self.actors.values()])

    def rate(self, messages: list[tuple[str, str, tuple]], rounds: int) -> float:
        """Return messages per second per actor of ``rounds`` rounds of ``messages``.

        ``messages`` lists ``(sender, receiver, shape)`` of one round.
        """
        self.loops += 1
        rng = np.random.default_rng(0)
        targets: dict[str, list] = {name: [] for name in self.actors}
        for sender, receiver, shape in messages:
            targets[sender].append((self.actors[receiver], rng.normal(size=shape)))
        runs = [
            handle.run.remote(self.loops, targets[name], rounds)
            for name, handle in self.actors.items()
        ]
        results = ray.get(runs)
        sent = sum(result[0] for result in results)
        elapsed = max(r[2] for r in results) - min(r[1] for r in results)
        return sent / elapsed / len(self.actors)

    def close(self) -> None:
        """Kill the actors."""
        for handle in self.actors.values():
            ray.kill(handle)


def bench_actor_messages(quick: bool = False) -> BenchResult:
    """Messages per second per actor of an actor run against a bare actor loop."""
    steps, repeats = _digits_run_size(quick)
    case = _digits_case(quick)
    batch = case.x.shape[1]
    messages = _message_shapes(case.net, batch)
    one_column = [
        (sender, receiver, (shape[0], 1)) for sender, receiver, shape in messages
    ]

    bare: list[float] = []
    run: list[float] = []
    tiny: list[float] = []
    with _local_ray():
        loop = _BareLoop(sorted({sender for sender, _, _ in messages}))
        try:
            for _ in range(repeats):
                bare.append(loop.rate(messages, steps))
                result = _actor_run(case, steps)
                stats = result.vertex_stats
                stepping = [v for v, counters in stats.items() if counters["steps"]]
                sent = sum(stats[v]["messages_sent"] for v in stepping)
                run.append(sent / result.wall_time_s / len(stepping))
                tiny.append(loop.rate(one_column, steps))
        finally:
            loop.close()
        n_actors = len(loop.actors)

    bare_rate = statistics.median(bare)
    run_rate = statistics.median(run)
    tiny_rate = statistics.median(tiny)
    ratio = run_rate / bare_rate
    shapes = _describe_shapes(messages)

    rows = [
        [
            f"actor run, {case.label}",
            len(stepping),
            len(messages),
            shapes,
            steps,
            f"{run_rate:.1f}",
            f"{ratio:.2f}x",
            ">= 0.5x",
            "yes" if ratio >= 0.5 else "no",
        ],
        [
            "bare actor loop, same arrays",
            n_actors,
            len(messages),
            shapes,
            steps,
            f"{bare_rate:.1f}",
            "1.00x",
            "-",
            "-",
        ],
        [
            "bare actor loop, one column per array",
            n_actors,
            len(one_column),
            _describe_shapes(one_column),
            steps,
            f"{tiny_rate:.1f}",
            f"{tiny_rate / bare_rate:.2f}x",
            "-",
            "-",
        ],
    ]

    verdict = "met" if ratio >= 0.5 else "not met"
    notes = [
        f"Target {verdict}: the actor run sends {ratio:.2f}x as many messages "
        "per second per actor as the bare loop, against a target of at least "
        "0.5x. With arrays of one column the bare loop runs at "
        f"{tiny_rate / bare_rate:.2f}x its rate with the run's arrays, and the "
        "difference is the cost of moving the arrays.",
        "Counted: the `receive` calls that the stepping vertex actors make to "
        "one another, which is the sum of their `messages_sent` counters. There "
        "is one per edge direction per step, including the step-0 messages. The "
        "count is divided by the run's wall time and by the number of stepping "
        "actors. Reports to the "
        "coordinator, its permits and the single message of the pinned input "
        f"`x` are not counted. The run takes {steps} synchronous "
        f"{DIGITS_INTEGRATOR} steps with tol = 1e-300.",
        "The bare loop has one plain async Ray actor per stepping vertex, joined "
        "like the vertices. In each round an actor sends every neighbour a "
        "preallocated float64 array of that edge's shape with a fire-and-forget "
        "call (`num_returns=0`, as the vertices send theirs), then waits for its "
        "neighbours' arrays of that round; it computes nothing. Its count is "
        "the calls made over the time from the first actor's start to the last "
        "actor's end, divided by the number of actors. The one-column loop sends "
        "arrays of one column, which Ray passes inline, so it shows the cost of "
        "the calls without the cost of moving the arrays.",
        f"Rates are medians of {repeats} interleaved repeats.",
    ]
    return BenchResult(
        "actor_messages",
        "Messages per second per actor: actor run against a bare actor loop",
        [
            "loop",
            "actors",
            "messages per round",
            "message arrays (float64)",
            "rounds",
            "messages/s per actor",
            "ratio to bare loop",
            "target",
            "met",
        ],
        rows,
        notes,
    )


# -- async_slow_vertex --------------------------------------------------------

# Compute-time factor of the slow vertex.
SLOW_FACTOR = 5.0


def _async_verdict(met_at: list[str], missed_at: list[str]) -> str:
    """State for which slow vertices the asynchronous run met its target."""
    target = "(target: at most 0.5x the synchronous time to tol)."
    if not missed_at:
        return f"Target met for every slow vertex {target}"
    if not met_at:
        return f"Target not met for any slow vertex {target}"
    return (
        f"Target met with the slow vertex at {', '.join(met_at)} and not met "
        f"at {', '.join(missed_at)} {target}"
    )


def bench_async_slow_vertex(quick: bool = False) -> BenchResult:
    """Time to tol of the asynchronous schedule against the synchronous one.

    Every vertex sleeps ``compute_s`` after each step and one vertex sleeps
    ``SLOW_FACTOR`` times as long. The synchronous schedule runs every round
    at the pace of the slow vertex, wherever it sits, so it is timed once, with
    the middle vertex slow. The asynchronous schedule lets the other vertices
    step on the slow vertex's latest message. It is timed once for each
    stepping vertex as the slow one, or only for the middle one when ``quick``.
    """
    from sheafsim.runtime import DelayModel, diffuse_on_actors

    batch = 16
    integrator = "euler"
    widths, compute_s, tol = (
        ([4, 8, 1], 0.002, 1e-4) if quick else ([4, 16, 16, 1], 0.01, 1e-6)
    )
    net = NeuralSheaf.random(widths, seed=0)
    x = np.random.default_rng(0).normal(size=(widths[0], batch))
    dt = _auto_dt(net, x, integrator)
    forward = net.forward(x).output
    in_process = diffuse(net, x, dt=dt, tol=tol, integrator=integrator)
    vertices = net.free_vertices
    middle = vertices[len(vertices) // 2]

    def run(schedule: str, slow: str) -> Any:
        delays = DelayModel(
            compute_s=compute_s, slowdown={slow: SLOW_FACTOR}, jitter=0.0, seed=0
        )
        return diffuse_on_actors(
            net,
            x,
            dt=dt,
            tol=tol,
            integrator=integrator,
            schedule=schedule,
            delays=delays,
            max_steps=100_000,
            timeout_s=900.0,
        )

    with _local_ray():
        runs = [("sync", middle, run("sync", middle))]
        slow_vertices = [middle] if quick else vertices
        runs += [("async", slow, run("async", slow)) for slow in slow_vertices]

    sync_steps = runs[0][2].steps
    sync_s = runs[0][2].wall_time_s
    rows = []
    met_at: list[str] = []
    missed_at: list[str] = []
    per_step_ms: list[float] = []
    slow_shares: list[float] = []
    for schedule, slow, result in runs:
        ratio = result.wall_time_s / sync_s
        # A synchronous vertex may run a few steps past the stopping step, so
        # its own counter can exceed the run's steps.
        slow_steps = result.steps
        target_text, met = "-", "-"
        if schedule == "async":
            slow_steps = result.vertex_stats[slow]["steps"]
            slow_shares.append(slow_steps / sync_steps)
            target_text = "<= 0.5x"
            if ratio <= 0.5:
                met = "yes"
                met_at.append(slow)
            else:
                met = "no"
                missed_at.append(slow)
        per_step_ms.append(1e3 * result.wall_time_s / slow_steps)
        rows.append(
            [
                schedule,
                slow,
                result.status,
                slow_steps,
                result.steps,
                f"{result.wall_time_s:.2f}",
                f"{per_step_ms[-1]:.1f}",
                f"{ratio:.2f}x",
                target_text,
                met,
                f"{float(np.max(np.abs(result.output - forward))):.1e}",
            ]
        )
    notes = [
        _async_verdict(met_at, missed_at)
        + " Every run spends about the same time per slow-vertex step "
        f"({min(per_step_ms):.1f} to {max(per_step_ms):.1f} ms), so the time "
        "to tol follows the number of steps the slow vertex takes. In the "
        f"asynchronous runs it took {min(slow_shares):.0%} to "
        f"{max(slow_shares):.0%} of the synchronous {sync_steps} steps, "
        "depending on where it sits."
    ]
    notes += [
        f"Network {widths}, random weights (seed 0), {batch} random input "
        f"columns, Euler with dt = {dt:.4g} (90% of the stable step) and "
        f"tol = {tol:g}, from random stalks (seed 0). Every vertex sleeps "
        f"{compute_s * 1e3:g} ms after each step and the slow vertex "
        f"{SLOW_FACTOR:g}x as long (`DelayModel(compute_s={compute_s:g}, "
        f"slowdown={{vertex: {SLOW_FACTOR:g}}}, jitter=0, seed=0)`). A "
        "synchronous round therefore cannot be shorter than "
        f"{compute_s * SLOW_FACTOR * 1e3:g} ms, and the excess in the ms column "
        "of the synchronous row is Ray and runtime overhead. The synchronous "
        "run is timed once, because every synchronous round waits for the slow "
        "vertex wherever it sits.",
        "Time to tol is the run's wall time, from the start of the vertex loops "
        "to the coordinator's end. For an asynchronous run it includes the "
        "quiescence rounds that confirm convergence. The steps columns give the "
        "slow vertex's steps and the most steps any vertex took, both the "
        "stopping step in the synchronous run. The last column is the largest "
        "gap between the run's output and the forward pass. `diffuse` in "
        f"process converges in {in_process.steps} steps with a gap of "
        f"{float(np.max(np.abs(in_process.output - forward))):.1e}.",
    ]
    return BenchResult(
        "async_slow_vertex",
        f"Asynchronous against synchronous schedule with one vertex {SLOW_FACTOR:g}x "
        "slower",
        [
            "schedule",
            "slow vertex",
            "status",
            "slow vertex steps",
            "max vertex steps",
            "time to tol (s)",
            "ms per slow-vertex step",
            "time against sync",
            "target",
            "met",
            "max abs(output - forward)",
        ],
        rows,
        notes,
    )
