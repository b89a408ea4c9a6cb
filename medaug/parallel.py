"""One way to run a function over cases in worker processes, results in order."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")


def map_cases(
    fn: Callable[[Job], Result],
    jobs: Sequence[Job],
    workers: int | None = None,
    progress: Callable[[Result], None] | None = None,
) -> Iterator[Result]:
    """Yield ``fn(job)`` for each job, in order, using up to ``workers`` processes.

    ``fn`` must be a module-level function (it is pickled). One worker, or one job,
    stays in this process, so errors and profiles are plain there.

    Args:
        fn: the per-case work.
        jobs: its arguments, one per case.
        workers: processes (default: all cores).
        progress: called with each result as it arrives, in order.
    """
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers <= 1:
        results: Iterator[Result] = map(fn, jobs)
        for result in results:
            if progress:
                progress(result)
            yield result
        return
    with ProcessPoolExecutor(workers) as pool:
        for result in pool.map(fn, jobs):
            if progress:
                progress(result)
            yield result
