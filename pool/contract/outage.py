"""What a loop that outlives Redis errors (and bugs) says: the first failure of a run of
them, and that it works again, not a line per try."""

from __future__ import annotations

import asyncio
import logging


class Outage:
    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger, self.what = logger, what
        self.ongoing = False  # a failure was said, and no success since

    def failed(self, exc: BaseException) -> None:
        """Redis away, or a reply cut short: said once."""
        if not self.ongoing:
            self.logger.warning("%s: %r (retrying)", self.what, exc)
        self.ongoing = True

    def bug(self) -> None:
        """Any other exception, with its traceback: said once too."""
        if not self.ongoing:
            self.logger.exception("%s failed (retrying)", self.what)
        self.ongoing = True

    def succeeded(self) -> None:
        if self.ongoing:
            self.logger.warning("%s: working again", self.what)
        self.ongoing = False


def cancellation_requested() -> bool:
    """Whether the current task was asked to stop.

    redis-py can absorb a cancellation that lands mid-command (it retries the
    command), so loops that keep going after Redis errors must also ask this.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
