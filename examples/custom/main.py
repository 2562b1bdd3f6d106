"""Run with `pit run main.py` from examples/custom: a user adapter named in pit.toml."""

import runtime

text = "The quick brown fox jumps over the lazy dog and the quick cat"
print("counts:", runtime.execute("word_counts", {"text": text, "top": 2})["top"])
print("tokens:", list(runtime.stream("tokens", {"text": "one two three"})))
print("pools:", list(runtime.current_pools()))
