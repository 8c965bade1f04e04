"""A new bundle on probation: its answers are checked, and a bad one is answered by the
previous bundle instead, so a failing bundle costs no request.

`ProbationModel` sits in the micro-batcher in place of the runtime (same `infer_batch`); it
runs on the event loop's thread like every inference, and tells the updater about each batch
through `on_checked(good_answers, problem)`.
"""

from __future__ import annotations

from collections.abc import Callable

from edge_agent.bundle_update.health import check_results
from edge_agent.runtime import F32, EdgeRuntime, LocalResult

OnChecked = Callable[[int, str | None], None]


class ProbationModel:
    def __init__(self, new: EdgeRuntime, previous: EdgeRuntime, on_checked: OnChecked) -> None:
        self.new = new
        self.previous = previous
        self._on_checked = on_checked

    def infer(self, features: F32) -> LocalResult:
        return self.infer_batch(features.reshape(1, -1))[0]

    def infer_batch(self, batch: F32) -> list[LocalResult]:
        try:
            results = self.new.infer_batch(batch)
            problem = check_results(results, self.new.manifest)
        except Exception as exc:  # the new bundle's failure must not become the request's
            problem = f"inference failed: {type(exc).__name__}: {exc}"
        if problem is None:
            self._on_checked(len(results), None)
            return results
        self._on_checked(0, problem)
        return self.previous.infer_batch(batch)
