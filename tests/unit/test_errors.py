"""`errors.remote_class` and `errors.from_payload`: every builtin exception class a tool can
raise becomes a class the host can catch by that type (or its nearest base that combines),
picklable and copyable, printed with the worker's traceback as its cause."""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import copy
import pickle
import traceback

import pytest

from runtime import errors
from runtime.errors import RemoteError, RemoteTraceback, from_payload, remote_class
from runtime.ml_errors import DeviceMismatch

TB = ('Traceback (most recent call last):\n  File "/srv/adapter.py", line 9, in tool\n'
      '    raise Oops("x")\nOops: x\n')
BUILTINS = sorted(name for name, obj in vars(builtins).items()
                  if isinstance(obj, type) and issubclass(obj, BaseException))
EXCEPTIONS = [n for n in BUILTINS if issubclass(getattr(builtins, n), Exception)]
# Builtins whose class is not combined with them (the docstring of `_NEVER_MIXED` says why)
# or whose constructor wants other arguments: the nearest base that combines stands in.
STAND_INS = {"StopIteration": None, "StopAsyncIteration": None, "ExceptionGroup": None,
             "Exception": None, "UnicodeDecodeError": UnicodeError,
             "UnicodeEncodeError": UnicodeError, "UnicodeTranslateError": UnicodeError}


def payload(rtype: str, message: str = "m", **extra: object) -> dict[str, object]:
    return {"type": rtype, "message": message, "traceback": TB, **extra}


@pytest.mark.parametrize("name", EXCEPTIONS)
def test_every_builtin_exception_class_is_caught_by_its_type_or_nearest_base(name: str) -> None:
    builtin = getattr(builtins, name)
    err = from_payload(payload(name), "t", {"pool": "p"})
    cls = type(err)
    assert cls is remote_class(name) and cls.__name__ == name
    assert isinstance(err, RemoteError) and err.category == "remote_error"
    expected = STAND_INS.get(name, builtin)
    if expected is not None:
        assert isinstance(err, expected)
    assert str(err) == f"tool 't' raised {name}: m" and err.remote_type == name
    assert err.details == {"pool": "p"} and err.remote_traceback == TB
    for again in (pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)):
        assert type(again) is cls and str(again) == str(err)
        assert again.remote_traceback == TB and again.details == err.details
        assert isinstance(again.__cause__, RemoteTraceback)
    try:
        raise err
    except Exception as caught:  # noqa: BLE001 - every one is an Exception
        printed = "".join(traceback.format_exception(caught))
    assert 'File "/srv/adapter.py", line 9' in printed
    assert "direct cause of the following exception" in printed


@pytest.mark.parametrize("name", sorted(set(BUILTINS) - set(EXCEPTIONS)))
def test_base_exception_only_types_never_escape_except_exception(name: str) -> None:
    err = from_payload(payload(name), "t", {})
    assert isinstance(err, RemoteError) and type(err).__name__ == name
    assert not isinstance(err, getattr(builtins, name)) or name == "BaseException"


def test_keyerror_and_oserror_keep_the_message_as_sent() -> None:
    err = from_payload(payload("KeyError", "'k'"), "t", {})
    assert isinstance(err, KeyError) and str(err) == "tool 't' raised KeyError: 'k'"
    assert err.args == ("tool 't' raised KeyError: 'k'",)
    oserr = from_payload(payload("FileNotFoundError", "[Errno 2] No such file: 'x'"), "t", {})
    assert isinstance(oserr, FileNotFoundError) and oserr.errno is None
    assert str(oserr) == "tool 't' raised FileNotFoundError: [Errno 2] No such file: 'x'"


def test_other_names_get_one_named_subclass_each() -> None:
    a = remote_class("QuotaExceeded")
    assert a is remote_class("QuotaExceeded") and a.__bases__ == (RemoteError,)
    assert remote_class("mylib.ValueError").__bases__ == (RemoteError,)  # not the builtin
    assert issubclass(remote_class("builtins.ValueError"), ValueError)
    assert remote_class("not an identifier") is RemoteError
    err = from_payload(payload("QuotaExceeded"), "t", {})
    assert type(err) is a and not isinstance(err, ValueError)
    assert type(pickle.loads(pickle.dumps(err))) is a


def test_pit_categories_keep_their_classes() -> None:
    for category, cls in [("tool_not_found", errors.ToolNotFound),
                          ("invalid_argument", errors.InvalidArgument),
                          ("timeout", errors.CallTimeout),
                          ("result_error", errors.ResultError)]:
        err = from_payload(payload("ValueError", "no", category=category), "t", {})
        assert type(err) is cls and str(err) == "no" and getattr(err, "ml", None) is None


def test_ml_details_ride_on_the_error_and_survive_pickling() -> None:
    err = from_payload(payload("RuntimeError", "Expected all tensors to be on the same device, "
                               "but found at least two devices, cuda:0 and cpu!"), "t", {})
    assert err.ml == DeviceMismatch(("cuda:0", "cpu"), "torch")
    assert err.to_dict()["ml"] == {"category": "device_mismatch",
                                   "devices": ("cuda:0", "cpu"), "framework": "torch"}
    assert pickle.loads(pickle.dumps(err)).ml == err.ml


def test_futures_and_asyncio_raise_them_unchanged() -> None:
    err = from_payload(payload("TimeoutError"), "t", {})
    fut: concurrent.futures.Future[None] = concurrent.futures.Future()
    fut.set_exception(err)
    with pytest.raises(TimeoutError) as info:
        fut.result()
    assert info.value is err

    async def main() -> None:
        afut = asyncio.get_running_loop().create_future()
        afut.set_exception(from_payload(payload("KeyError"), "t", {}))
        with pytest.raises(KeyError):
            await afut

    asyncio.run(main())
    with concurrent.futures.ProcessPoolExecutor(1) as pool:  # pickled to a process and back
        back = pool.submit(pickle.loads, pickle.dumps(err)).result()
    assert type(back) is type(err)


def test_a_payload_without_a_traceback_has_no_cause() -> None:
    err = from_payload({"type": "ValueError", "message": "m"}, "t", {})
    assert err.__cause__ is None and err.remote_traceback is None
    assert type(pickle.loads(pickle.dumps(err))) is type(err)


def test_a_hint_shows_under_the_traceback_and_survives_a_copy() -> None:
    err = errors.ConfigError("pit.toml: [pools.a] size must be >= 1", hint="set size = 1")
    text = "".join(traceback.format_exception(err))
    assert text.rstrip().endswith("hint: set size = 1")
    copied = pickle.loads(pickle.dumps(err))
    assert "".join(traceback.format_exception(copied)).count("hint: set size = 1") == 1
    # the message itself stays the message (the CLI prints the hint on a line of its own)
    assert err.message == "pit.toml: [pools.a] size must be >= 1"


def test_no_hint_adds_no_note() -> None:
    assert not getattr(errors.PitError("plain"), "__notes__", None)
