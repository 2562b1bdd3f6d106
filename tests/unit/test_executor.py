"""How `PoolExecutor` pickles a task (runtime/pool/executor.py `dumps_task`), and how its
adapter answers (runtime/adapters/executor.py), driven without processes."""

from __future__ import annotations

import pickle
import threading

import pytest

from runtime.adapters.executor import ExecutorAdapter
from runtime.pool.executor import dumps_task
from tests.adapters import executor_tasks as tasks


def test_a_module_function_pickles_by_reference_and_a_lambda_by_value() -> None:
    by_name = dumps_task((tasks.mul, (2, 3), {}), tasks.mul)
    assert b"executor_tasks" in by_name and b"cloudpickle" not in by_name
    base = 5
    closure = lambda x: x + base  # noqa: E731 - what users pass
    by_value = dumps_task((closure, (1,), {}), closure)
    fn, args, _ = pickle.loads(by_value)
    assert fn(*args) == 6


def test_by_value_code_for_another_python_is_refused_with_what_to_do() -> None:
    closure = lambda: 1  # noqa: E731
    with pytest.raises(pickle.PicklingError, match="workers run Python 3.99.0: define the"):
        dumps_task((closure, (), {}), closure, "3.99.0")
    assert dumps_task((tasks.mul, (1, 2), {}), tasks.mul, "3.99.0")  # by name: fine
    with pytest.raises(pickle.PicklingError, match=r"\(pickle: cannot pickle '_thread.lock'"):
        dumps_task((tasks.arg_len, (threading.Lock(),), {}), tasks.arg_len, "3.99.0")


def test_the_adapter_answers_values_errors_and_chunks() -> None:
    adapter = ExecutorAdapter()
    assert pickle.loads(adapter.call(pickle.dumps((tasks.mul, (6, 7), {})))) == ("ok", 42)
    kind, exc, text = pickle.loads(adapter.call(pickle.dumps((divmod, (1, 0), {}))))
    assert kind == "raise" and isinstance(exc, ZeroDivisionError) and "Traceback" in text
    kind, values, (err, _) = pickle.loads(
        adapter.call_chunk(pickle.dumps((divmod, [(4, 2), (1, 0), (9, 3)]))))
    assert kind == "chunk" and values == [(2, 0)] and isinstance(err, ZeroDivisionError)
    kind, exc, _ = pickle.loads(adapter.call(pickle.dumps((tasks.return_lock, (), {}))))
    assert kind == "raise" and isinstance(exc, TypeError)  # the pickling error, not a hang


def test_a_ray_backend_is_refused_before_any_worker_starts() -> None:
    from runtime import PoolExecutor

    with pytest.raises(ValueError, match="this machine only"):
        PoolExecutor(1, backend="ray")
