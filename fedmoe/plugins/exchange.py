"""``Grid.send_and_receive`` with a polling interval that follows what a pull costs.

Flower 1.41's grids wait for replies by pulling at a fixed interval: every 0.1 s in a
simulation (``InMemoryGrid``), every 3 s in a deployment (``HttpGrid``). Both costs show:

* a round ends on average half an interval after its last reply arrives: 1.5 s a round in a
  deployment, 0.05 s in a simulation, where a round of 50 small devices takes under 2 s;
* a simulation's pull checks every outstanding message id (the link state's dictionaries are
  walked for each one), so with thousands of messages in flight the ServerApp's thread
  spends a large share of a core pulling, on the same cores the virtual clients train on.

:class:`AdaptivePolling` wraps a grid and replaces its ``send_and_receive`` by the same
push-then-pull loop with another wait between pulls: the last pull's duration ``c``
divided by ``busy_share``, kept within ``[min_interval_s, max_interval_s]``,

.. math:: w = \\min(w_\\max, \\max(w_\\min, c / \\beta)),

so pulling takes at most a share ``β`` of the waiting thread's time (5 % by default), however
many messages are in flight, and a cheap pull is repeated within milliseconds. Everything else
(``push_messages``, ``pull_messages``, ``get_node_ids``, ``create_message``, the run) is the
wrapped grid's own. The replies returned, the timeout and its meaning (pull at least once;
give up ``timeout`` seconds after the push, returning what arrived) are Flower's.

:func:`adaptive_polling` wraps only Flower's own polling grids (a grid whose class
overrides ``send_and_receive`` keeps it), and does not wrap twice.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from flwr.app import Message
from flwr.serverapp import Grid

DEFAULT_BUSY_SHARE = 0.05
"""Largest share of the waiting thread's time spent pulling (``β``)."""
DEFAULT_MIN_INTERVAL_S = 0.002
DEFAULT_MAX_INTERVAL_S = 0.5


def poll_interval(pull_s: float, busy_share: float = DEFAULT_BUSY_SHARE, min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
                  max_interval_s: float = DEFAULT_MAX_INTERVAL_S) -> float:
    """The wait after a pull that took ``pull_s`` seconds: ``min(max, max(min, pull_s / busy_share))``."""
    return min(max_interval_s, max(min_interval_s, pull_s / busy_share))


class AdaptivePolling:
    """A grid whose ``send_and_receive`` waits between pulls in proportion to what a pull costs (module docstring).

    Parameters
    ----------
    grid : Grid
        The ServerApp's grid (any ``Grid`` with working ``push_messages`` and ``pull_messages``).
    busy_share : float
        ``β`` in (0, 1]: the wait is the last pull's duration divided by it.
    min_interval_s, max_interval_s : float
        Bounds of the wait between pulls, seconds.
    clock, sleep : callable
        Time source and wait (``time.monotonic``, ``time.sleep``); replaceable for tests.
    """

    def __init__(self, grid: Grid, busy_share: float = DEFAULT_BUSY_SHARE,
                 min_interval_s: float = DEFAULT_MIN_INTERVAL_S, max_interval_s: float = DEFAULT_MAX_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        if not 0.0 < busy_share <= 1.0:
            raise ValueError(f"busy_share must be in (0, 1], got {busy_share}")
        if not 0.0 <= min_interval_s <= max_interval_s:
            raise ValueError(f"need 0 <= min_interval_s <= max_interval_s, got {min_interval_s}, {max_interval_s}")
        self.grid = grid
        self.busy_share, self.min_interval_s, self.max_interval_s = busy_share, min_interval_s, max_interval_s
        self._clock, self._sleep = clock, sleep
        self.pulls = 0
        """Pulls made by :meth:`send_and_receive` so far."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Push ``messages``, then pull until every one has a reply or ``timeout`` seconds have passed."""
        waiting = set(self.grid.push_messages(messages))
        end = None if timeout is None else self._clock() + timeout
        replies: list[Message] = []
        while True:
            start = self._clock()
            got = list(self.grid.pull_messages(waiting))
            now = self._clock()
            self.pulls += 1
            replies.extend(got)
            waiting.difference_update(msg.metadata.reply_to_message_id for msg in got)
            if not waiting or (end is not None and now >= end):
                return replies
            wait = poll_interval(now - start, self.busy_share, self.min_interval_s, self.max_interval_s)
            self._sleep(wait if end is None else max(0.0, min(wait, end - now)))


def _flower_polling_grids() -> tuple[type, ...]:
    """Flower's grids whose ``send_and_receive`` is a fixed-interval polling loop."""
    from flwr.superlink.grid.http_grid import HttpGrid
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    return InMemoryGrid, HttpGrid


def adaptive_polling(grid: Grid, **options: Any) -> Grid:
    """``grid`` in :class:`AdaptivePolling` if its ``send_and_receive`` is one of Flower's polling loops
    (``InMemoryGrid``'s or ``HttpGrid``'s, not overridden by a subclass); otherwise ``grid`` itself."""
    if isinstance(grid, AdaptivePolling):
        return grid
    own = {cls.send_and_receive for cls in _flower_polling_grids()}
    if getattr(type(grid), "send_and_receive", None) in own:
        return AdaptivePolling(grid, **options)  # type: ignore[return-value]
    return grid
