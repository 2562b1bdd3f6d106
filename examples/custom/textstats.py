"""A user adapter: loads its 'model' once per worker, then answers calls."""

import collections
import os

from runtime import Adapter, SessionContext, tool


class TextStats(Adapter):
    def initialize(self) -> None:
        # Heavy set-up belongs here: it runs once per worker, before its first call.
        self.stopwords = {"the", "a", "an", "and", "of", "to", "in"}

    @tool
    def word_counts(self, text: str, top: int = 3) -> dict:
        """The most common words of text, stopwords left out."""
        words = [w.strip(".,!?").lower() for w in text.split()]
        counts = collections.Counter(w for w in words if w and w not in self.stopwords)
        return {"top": counts.most_common(top), "worker": os.getpid()}

    @tool
    def tokens(self, text: str):
        """Stream the words of text one by one."""
        yield from text.split()

    @tool
    def remember(self, ctx: SessionContext, item: str) -> list:
        """Keep items per session inside this worker."""
        items = ctx.session.setdefault("items", [])
        items.append(item)
        return items
