"""Progress events of one spawn, streamed to the hub's progress page as they happen."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from html import escape


class ProgressLog:
    """An append-only list of progress events that readers can follow.

    The spawner emits; ``Spawner.progress()`` follows. Messages are plain text and are HTML-escaped
    for ``html_message`` so build output can never inject markup into the page.
    """

    def __init__(self) -> None:
        self.events: list[dict] = []
        self._changed = asyncio.Event()

    def emit(self, progress: int, message: str) -> None:
        """Add an event. Progress never goes back: a step that comes after a long one (an
        image build that took the bar to 50) keeps the bar where it is."""
        text = str(message)
        last = self.events[-1]["progress"] if self.events else 0
        self.events.append(
            {
                "progress": max(last, min(100, int(progress))),
                "message": text,
                "html_message": escape(text),
            }
        )
        self._changed.set()

    async def follow(self) -> AsyncIterator[dict]:
        """Yield every event, past and future; the hub stops iterating when the spawn ends."""
        sent = 0
        while True:
            while sent < len(self.events):
                yield self.events[sent]
                sent += 1
            self._changed.clear()
            await self._changed.wait()
