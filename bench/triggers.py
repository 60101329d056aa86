"""Figure 5: many ``OperationStatusTrigger``s in one event loop, as one triggerer runs them.

The emulator runs in another process with a huge processing delay, so every operation stays
``in_progress`` and every trigger keeps polling. The child runs each trigger's ``run()`` as a
task in one asyncio loop, next to a ticker that sleeps 10 ms and records how late it wakes
(the loop's stalls). CPU is the child's process time over the polling window, divided by the
polls the emulator served; memory is the RSS growth from before the triggers were made to its
peak while they ran, divided by their number.

Each full garbage collection is timed; a stall that overlaps one is counted as the
collector's. The collector walks every tracked object of the process (about 200,000 after
Airflow's imports) however few of them the triggers made, so the run is repeated, shorter,
with those start-up objects frozen (``gc.freeze()``, what a triggerer could do once started):
the ``whatif_gc_freeze_`` figures.

To tell Airflow's objects from the triggers', a full collection is also timed on its own (best of
three) before the first trigger is made, again with every trigger waiting, and, once they have
ended, with as many idle triggers waiting (an async generator that only sleeps, run like a
trigger: the objects asyncio keeps per waiting trigger, none of this package's). To tell the
loop's own work from time it was not running at all (on two cores the emulator serving the polls,
and the machine's other processes, take turns with it), each tick records the CPU time the loop's
thread had.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import time
from pathlib import Path
from typing import Any

from bench.common import (
    TOPIC,
    Figure,
    Report,
    Settings,
    abs_client,
    batchcode_connection,
    child,
    child_main,
    emulator,
    fmt,
)

TICK = 0.01
MANIFEST = b'{"recordId":"1","occp_text":"chef","tasks_text":"cooking"}\n'


class _Ticker:
    """Wakes every :data:`TICK`; records when it woke, how late, and the CPU the loop's thread had meanwhile."""

    def __init__(self) -> None:
        self.lateness: list[tuple[float, float]] = []
        self.cpu: dict[float, float] = {}
        """Per tick (by wake time): the loop thread's CPU seconds since the tick went to sleep. A stall
        with far less CPU than its length is time the thread was not running: the machine's other
        processes had the cores (or it waited in a system call), not work of the loop's own."""

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + TICK
            cpu = time.thread_time()
            await asyncio.sleep(TICK)
            woke = loop.time()
            self.lateness.append((woke, woke - expected))
            self.cpu[woke] = time.thread_time() - cpu


def _timed_collect() -> tuple[float, int]:
    """A full collection's seconds (the best of three), and how many objects it walked."""
    gc.collect()
    tracked = len(gc.get_objects())
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        gc.collect()
        best = min(best, time.perf_counter() - started)
    return best, tracked


class _Idle:
    """A trigger that only waits: what asyncio and the harness keep per waiting trigger."""

    async def run(self) -> Any:
        await asyncio.sleep(3600)
        yield None


async def _consume(trigger: Any) -> list[Any]:
    return [event async for event in trigger.run()]


async def _run(operations: list[str], seconds: float, interval: float, freeze_gc: bool) -> dict[str, Any]:
    import psutil

    from airflow_batchcode.hooks.batchcode import BatchCodeHook
    from airflow_batchcode.services.abs import AsyncAbsClient
    from airflow_batchcode.triggers.batchcode import OperationStatusTrigger

    polls = 0
    get_operation: Any = AsyncAbsClient.get_operation

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal polls
        polls += 1
        return await get_operation(self, *args, **kwargs)

    AsyncAbsClient.get_operation = counted  # type: ignore[method-assign]
    process = psutil.Process()
    loop = asyncio.get_running_loop()
    pauses: list[tuple[int, float, float]] = []  # generation, seconds, loop time at its end
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - gc_started[0], loop.time()))

    gc.callbacks.append(on_gc)
    client = await BatchCodeHook("batchcode_default").get_async_client()  # imports, token; then gone
    await get_operation(client, operations[0], TOPIC)
    await client.aclose()
    del client
    if freeze_gc:
        gc.collect()
        gc.freeze()
    floor = _timed_collect()  # no trigger yet: Airflow's objects, the imports' and the client's leftovers
    pauses.clear()  # only collections while the triggers run count
    ticker = _Ticker()
    ticking = asyncio.create_task(ticker.run())
    await asyncio.sleep(0.5)
    rss_before = process.memory_info().rss
    cpu_before = time.process_time()
    started = loop.time()
    deadline = time.time() + 3600
    triggers = [
        OperationStatusTrigger(
            batchcode_conn_id="batchcode_default",
            operation_id=operation,
            topic=TOPIC,
            poll_interval=interval,
            deadline=deadline,
        )
        for operation in operations
    ]
    tasks = [asyncio.create_task(_consume(trigger)) for trigger in triggers]
    samples: list[tuple[float, float, int, float]] = []
    while loop.time() - started < seconds:
        await asyncio.sleep(1.0)
        samples.append((loop.time() - started, time.process_time() - cpu_before, polls, process.memory_info().rss))
    ended_early = sum(1 for task in tasks if task.done())
    ticking.cancel()
    gc.callbacks.remove(on_gc)
    loaded = _timed_collect()  # every trigger still waiting
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    count = len(triggers)
    del tasks, triggers  # the ended triggers (and their cancelled tasks' tracebacks) are gone before the idle ones come
    # as many idle triggers (after the run, so they leave no memory for the triggers to reuse): the
    # floor of a trigger that keeps nothing of its own
    idle = [asyncio.create_task(_consume(_Idle())) for _ in operations]
    await asyncio.sleep(0.1)
    idling = _timed_collect()
    for task in idle:
        task.cancel()
    await asyncio.gather(*idle, return_exceptions=True)
    full = [(seconds, end) for generation, seconds, end in pauses if generation == 2]
    # a tick that woke at ``when``, ``late`` late, waited from ``when - late - TICK``: a full
    # collection that ended in that window made (part of) the stall
    gc_stalls = [
        (when, late) for when, late in ticker.lateness if any(when - late - TICK <= end <= when for _, end in full)
    ]
    other = [late for when, late in ticker.lateness if (when, late) not in gc_stalls]
    long_other = [
        (late, ticker.cpu[when]) for when, late in ticker.lateness if late > 0.1 and (when, late) not in gc_stalls
    ]
    # steady state: from the first second at which every trigger has polled at least once
    steady_from = next((s for s in samples if s[2] >= count), samples[-1])
    end = samples[-1]
    steady_polls = end[2] - steady_from[2]
    steady = [late for when, late in ticker.lateness if when - started > steady_from[0]]
    everything = [late for _, late in ticker.lateness]
    return {
        "triggers": count,
        "freeze_gc": freeze_gc,
        "seconds": end[0],
        "cpu_seconds": end[1],
        "polls": end[2],
        "startup_s": steady_from[0],
        "startup_cpu_s": steady_from[1],
        "steady_cpu_per_poll_ms": (end[1] - steady_from[1]) / steady_polls * 1000 if steady_polls else None,
        "steady_polls": steady_polls,
        "rss_before_mb": rss_before / 2**20,
        "rss_peak_mb": max(s[3] for s in samples) / 2**20,
        "rss_samples_mb": [round(s[3] / 2**20, 1) for s in samples[:: max(1, len(samples) // 20)]],
        "max_stall_s": max(everything, default=0.0),
        "max_stall_steady_s": max(steady, default=0.0),
        "stalls_over_100ms": sum(1 for late in everything if late > 0.1),
        "stalls_over_100ms_in_full_gc": sum(1 for _, late in gc_stalls if late > 0.1),
        "max_stall_outside_full_gc_s": max(other, default=0.0),
        "p99_stall_s": sorted(everything)[int(0.99 * (len(everything) - 1))] if everything else 0.0,
        "ended_early": ended_early,
        "gc_full_collections": len(full),
        "gc_longest_full_s": max((seconds for seconds, _ in full), default=0.0),
        "gc_longest_any_s": max((seconds for _, seconds, _ in pauses), default=0.0),
        "tracked_objects": len(gc.get_objects()),
        "full_gc_without_triggers_s": floor[0],
        "objects_without_triggers": floor[1],
        "full_gc_with_idle_triggers_s": idling[0],
        "objects_with_idle_triggers": idling[1],
        "full_gc_with_triggers_s": loaded[0],
        "objects_with_triggers": loaded[1],
        "stalls_over_100ms_outside_full_gc": len(long_other),
        "stalls_over_100ms_outside_full_gc_mostly_off_cpu": sum(
            1 for late, cpu in long_other if cpu < (late + TICK) / 2
        ),
        "max_cpu_share_in_stall_over_100ms_outside_full_gc": max(
            (cpu / (late + TICK) for late, cpu in long_other), default=0.0
        ),
    }


def run(operations_file: str, seconds: float, interval: float, freeze_gc: bool = False) -> dict[str, Any]:
    operations = json.loads(Path(operations_file).read_text())
    return asyncio.run(_run(operations, seconds, interval, freeze_gc))


def figure_triggers(report: Report, settings: Settings, work: Path, env: dict[str, str], log: Path) -> None:
    """Figure 5, then the same with the start-up objects frozen out of garbage collection."""
    with emulator(log, "--processing-delay", "100000", "--awaiting-timeout", "100000") as base_url:
        client = abs_client(base_url)
        operations = []
        for _ in range(settings.trigger_count):
            target = client.create_operation(TOPIC)
            client.upload_manifest(target, io.BytesIO(MANIFEST))
            operations.append(target.operation_id)
        client.close()
        listing = work / "operations.json"
        listing.write_text(json.dumps(operations))
        env = {**env, "AIRFLOW_CONN_BATCHCODE_DEFAULT": batchcode_connection(base_url)}
        runs = {}
        for frozen, seconds in ((False, settings.trigger_seconds), (True, settings.trigger_whatif_seconds)):
            kwargs = {"operations_file": str(listing), "seconds": seconds, "interval": settings.trigger_interval}
            runs[frozen] = child(
                "triggers", "run", {**kwargs, "freeze_gc": frozen}, env=env, log=log, timeout=seconds + 600
            )
    for frozen, run in runs.items():
        r = run.result
        prefix = "whatif_gc_freeze_trigger" if frozen else "trigger"
        goals = not frozen
        count, polls = r["triggers"], max(r["polls"], 1)
        ideal = count * (r["seconds"] - 0.0) / settings.trigger_interval
        per_trigger_kb = (r["rss_peak_mb"] - r["rss_before_mb"]) * 1024 / count
        cpu_ms = r["cpu_seconds"] / polls * 1000
        steady = r["steady_cpu_per_poll_ms"]
        details = {**r, "ideal_polls": round(ideal), "peak_rss_child_mb": run.peak_rss_mb}
        report.add(
            Figure(
                f"{prefix}_cpu_per_poll",
                cpu_ms,
                "ms",
                f"{r['polls']} polls by {count} triggers in {fmt(r['seconds'])} s (ideal {round(ideal)}), "
                f"{fmt(r['cpu_seconds'])} CPU s; start-up {fmt(r['startup_s'])} s, "
                f"steady state {fmt(steady) if steady is not None else 'n/a'} ms/poll",
                goal="< 2 ms" if goals else "",
                met=cpu_ms < 2 if goals else None,
                details=details,
            )
        )
        report.add(
            Figure(
                f"{prefix}_memory_per_trigger",
                per_trigger_kb,
                "KB",
                f"RSS {fmt(r['rss_before_mb'])} MB before the triggers, peak {fmt(r['rss_peak_mb'])} MB",
                goal="< 50 KB" if goals else "",
                met=per_trigger_kb < 50 if goals else None,
            )
        )
        report.add(
            Figure(
                f"{prefix}_max_loop_stall",
                r["max_stall_s"],
                "s",
                f"10 ms ticker; {r['stalls_over_100ms']} ticks > 0.1 s late "
                f"({r['stalls_over_100ms_in_full_gc']} in a full collection: {r['gc_full_collections']} of them, "
                f"longest {fmt(r['gc_longest_full_s'])} s over {r['tracked_objects']:,} tracked objects); "
                f"max outside them {fmt(r['max_stall_outside_full_gc_s'])} s, "
                f"p99 {fmt(r['p99_stall_s'] * 1000)} ms, steady-state max {fmt(r['max_stall_steady_s'])} s; "
                f"of the {r['stalls_over_100ms_outside_full_gc']} ticks > 0.1 s late outside a full collection, "
                f"{r['stalls_over_100ms_outside_full_gc_mostly_off_cpu']} had the loop's thread on a CPU for less "
                f"than half the time (at most {fmt(r['max_cpu_share_in_stall_over_100ms_outside_full_gc'] * 100)} % "
                f"in any); a full collection took {fmt(r['full_gc_without_triggers_s'])} s over "
                f"{r['objects_without_triggers']:,} objects before any trigger (Airflow's, the imports'), "
                f"{fmt(r['full_gc_with_idle_triggers_s'])} s over {r['objects_with_idle_triggers']:,} with "
                f"{count:,} idle ones (asyncio's objects per trigger), "
                f"{fmt(r['full_gc_with_triggers_s'])} s over {r['objects_with_triggers']:,} with {count:,} triggers",
                goal="<= 0.1 s" if goals else "",
                met=r["max_stall_s"] <= 0.1 if goals else None,
            )
        )


if __name__ == "__main__":
    child_main({"run": run})
