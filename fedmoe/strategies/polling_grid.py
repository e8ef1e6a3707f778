"""A Flower ``Grid`` that collects replies sooner: Flower 1.41's deployment grid waits 3 s between pulls.

``Grid.send_and_receive`` of Flower's deployment runtime (``flwr.superlink.grid.http_grid``)
pushes the messages, then asks the SuperLink for replies and, while some are missing, sleeps
3 s before it asks again: a round whose last reply arrives just after a pull waits up to 3 s
more. :class:`PollingGrid` wraps any grid and does the same with Flower's own
``push_messages`` and ``pull_messages`` (part of the ``Grid`` API), asking every
``interval_s`` seconds instead (default :data:`PULL_INTERVAL_S`). Everything else is the
wrapped grid's. Replies are the same messages in the same order of arrival; a ``timeout`` is
honoured as Flower honours it (the replies that arrived by then).
"""

from __future__ import annotations

import time
from typing import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

PULL_INTERVAL_S = 0.25
"""Seconds between two pulls of the replies (Flower 1.41's deployment grid: 3 s)."""


class PollingGrid(Grid):
    """``grid`` with a :meth:`send_and_receive` that pulls replies every ``interval_s`` s (module docstring)."""

    def __init__(self, grid: Grid, interval_s: float = PULL_INTERVAL_S) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.inner = grid
        self.interval_s = interval_s

    def set_run(self, run) -> None:
        self.inner.set_run(run)

    @property
    def run(self):
        return self.inner.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        waiting = set(self.push_messages(messages))
        end = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            got = list(self.pull_messages(waiting))
            replies.extend(got)
            waiting.difference_update(m.metadata.reply_to_message_id for m in got)
            if not waiting or (end is not None and time.monotonic() >= end):
                break
            time.sleep(self.interval_s if end is None else max(0.0, min(self.interval_s, end - time.monotonic())))
        return replies


def with_fast_replies(grid: Grid) -> Grid:
    """``grid`` wrapped in a :class:`PollingGrid` if it is Flower's deployment grid (``HttpGrid``, 3 s between
    pulls); any other grid (the simulation's in-memory grid pulls every 0.1 s) unchanged."""
    from flwr.superlink.grid.http_grid import HttpGrid

    return PollingGrid(grid) if isinstance(grid, HttpGrid) else grid
