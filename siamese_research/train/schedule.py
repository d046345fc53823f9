"""Which train steps are view steps: pure, a function of the step, the
cadences and the run's first and last step only (big_vision's `itstime`).

Every run shows everything at its first step and its last, whatever the
cadences (so a short run is never empty), and at every multiple of
`log_every` (scalars), `grad_check_every` (the sum check) and
`histogram_every` (histograms). A compiled call holds the view steps that
fall in it (`views`); it does not end at them. Being pure, the schedule is
the same on every worker of a multi-worker run, so their calls (and
collectives) pair.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

Due = Tuple[bool, bool, bool]  # (log, check, histograms)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The view steps of a run.

    Args:
      log_every, grad_check_every, histogram_every: cadences (steps).
      branch_views: False schedules the train scalars only (no branch
        views, no check, no histograms).
      scheduled: False makes no view step at all (no writers, one worker).
    """

    log_every: int = 10
    grad_check_every: int = 10
    histogram_every: int = 100
    branch_views: bool = True
    scheduled: bool = True

    def due(self, step: int, first: int, last: int) -> Optional[Due]:
        """What is due at global step `step` of a run going from `first` to
        `last`, or None for a plain step."""
        if not self.scheduled:
            return None
        edge = step in (first, last)
        log = edge or step % self.log_every == 0
        check = self.branch_views and (edge or step % self.grad_check_every == 0)
        hist = self.branch_views and (edge or step % self.histogram_every == 0)
        return (log, check, hist) if (log or check or hist) else None

    def next_due(self, step: int, first: int, last: int) -> int:
        """The first view step after global step `step` (past `last`: none)."""
        if not self.scheduled:
            return last + 1
        everies = (self.log_every,)
        if self.branch_views:
            everies += (self.grad_check_every, self.histogram_every)
        candidates = [step + every - step % every for every in everies]
        candidates += [s for s in (first, last) if s > step]
        return min(candidates)

    def views(self, step: int, end: int, first: int, last: int) -> List[Tuple[int, Due]]:
        """[(global step, due)] of the view steps after `step`, up to `end`:
        those a compiled call over steps step + 1 .. end holds."""
        out = []
        while (step := self.next_due(step, first, last)) <= end:
            out.append((step, self.due(step, first, last)))
        return out
