"""CPU work (t-SNE, PNG/GIF writing, artifact uploads) done beside the accelerator's work.

On a GPU the training loop and the final scores keep the device busy while one worker thread
draws the t-SNE frames and the final t-SNE and writes them out; the run waits for it only at the
end. Jobs run in the order submitted (a frame continues from the previous frame's layout). On a
CPU the same jobs run at once in the caller's thread: the cores are the training's, and an epoch
must not slow down because a t-SNE competes for them.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class BackgroundWork:
    """One FIFO worker thread (`enabled`) or inline execution; `busy` counts the jobs' seconds."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="qvae-cpu-work") if enabled else None
        self._futures: list[Future[Any]] = []
        self.busy = 0.0  # seconds the jobs ran

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        """Run `job(*args)` beside the caller (or now, when not enabled); a failed earlier job raises here."""
        self._raise_failures()
        if self._pool is None:
            self._timed(job, *args)
        else:
            self._futures.append(self._pool.submit(self._timed, job, *args))

    def _timed(self, job: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return job(*args)
        finally:
            self.busy += time.perf_counter() - start

    def _raise_failures(self) -> None:
        for future in [f for f in self._futures if f.done()]:
            self._futures.remove(future)
            future.result()  # re-raises the job's exception in the caller's thread

    def wait(self) -> None:
        """Block until every submitted job is done; re-raise the first failure."""
        while self._futures:
            self._futures.pop(0).result()

    def close(self, cancel: bool = False) -> None:
        """Stop the worker: after the queue drains, or (`cancel`) after the running job only."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None

    def __enter__(self) -> BackgroundWork:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if kind is None:
            try:
                self.wait()
            finally:
                self.close()
        else:  # an error or an interrupt: finish the running job (e.g. an upload), drop the queue
            self.close(cancel=True)
