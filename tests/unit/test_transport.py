"""The worker-transport seam's pure parts: command lines of command-started workers."""

from __future__ import annotations

import pytest

from runtime.pool.transport import adapter_flags, command_argv


def test_placeholders_are_filled_and_an_unknown_one_is_named() -> None:
    assert command_argv(["w", "--port", "{port}", "--run-id", "{run_id}"], port=5, adapter="a",
                        host_pid=1, run_id="r", token="t") == ["w", "--port", "5", "--run-id", "r"]
    with pytest.raises(ValueError, match=r"\{colour\} is not a placeholder"):
        command_argv(["w", "{colour}"], port=5)


def test_adapter_args_become_flags() -> None:
    assert adapter_flags(["--model", "small", "-v"]) == ["--model", "small", "-v"]
    assert adapter_flags({"model_name": "small", "layers": 3, "verbose": True, "quiet": False,
                          "extra": None, "sizes": [1, 2]}) == [
        "--model-name", "small", "--layers", "3", "--verbose", "--sizes", "[1, 2]"]
