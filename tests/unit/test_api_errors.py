"""The Python API's error mapping and argument handling, without processes.

Errors the API raises must be the `mediaengine.sdk.errors` classes with the same numeric codes as the control
protocol and the CLI (docs/errors.md is the one table), whichever way they arrive: an `error` reply, or
the line a CLI process printed before it exited.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from mediaengine.cli.argv import SET_ENV
from mediaengine.control.api import FAULTS, fault_args
from mediaengine.control.process import child_env, error_from_log, override_items, run_argv
from mediaengine.sdk.errors import (
    ERRORS_BY_CODE,
    EngineError,
    FieldError,
    NotAllowedError,
    OptionError,
    TimeoutError_,
    UnknownKindError,
    UnknownTargetError,
    error_from_wire,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def _doc_codes() -> dict[str, int]:
    return {name: int(code) for code, name in re.findall(r"^\| (\d+) \| (\w+) \|", DOC.read_text(), flags=re.M)}


@pytest.mark.parametrize("cls", [ERRORS_BY_CODE[c] for c in sorted(ERRORS_BY_CODE)], ids=lambda c: c.__name__)
def test_every_error_survives_the_wire_with_its_class_and_code(cls: type[EngineError]) -> None:
    err = cls("something went wrong", where="venc.bitrate_kbps")
    back = error_from_wire(err.to_wire())
    assert type(back) is cls
    assert back.code == cls.code == _doc_codes()[err.name]
    assert "venc.bitrate_kbps: something went wrong" in str(back)


def test_builtin_mixins_let_callers_catch_the_python_way() -> None:
    assert isinstance(error_from_wire({"code": 1407, "message": "no"}), PermissionError)
    assert isinstance(error_from_wire({"code": 1408, "message": "slow"}), TimeoutError)
    # an unknown code inside a known group maps to the group's base class
    assert type(error_from_wire({"code": 1499, "message": "new"})).__name__ == "ProtocolError"


def test_a_topology_error_printed_by_the_cli_becomes_the_same_class() -> None:
    log = ("mediaengine: something unrelated\n"
           "error: nodes[2].options.bitrate_kbps: expected int, got 'fast'\n"
           "  (error 1108 OptionError)\n")
    err = error_from_log(log, 2)
    assert isinstance(err, OptionError) and err.code == 1108
    assert str(err) == "nodes[2].options.bitrate_kbps: expected int, got 'fast'"


def test_a_run_error_printed_on_one_line_becomes_the_same_class() -> None:
    log = ("error: binding tcp://0.0.0.0:5555 would expose the engine beyond this machine without "
           "authentication; ... (error 1407 NotAllowedError)\n")
    err = error_from_log(log, 1)
    assert isinstance(err, NotAllowedError) and err.code == 1407
    assert str(err).startswith("binding tcp://0.0.0.0:5555 would expose")
    assert "(error" not in str(err)


def test_the_supervisors_last_words_are_used_when_the_cli_printed_no_error_line() -> None:
    log = ("mediaengine 11:00:00.000 node rec died (code 1)\n"
           "mediaengine 11:00:00.100 engine stopped: more than 3 restarts within 10s (error 1501)\n")
    err = error_from_log(log, 1)
    assert err.code == 1501 and type(err).__name__ == "IntensityExceededError"
    assert "more than 3 restarts" in str(err)


def test_an_exit_without_any_error_line_is_a_plain_engine_error_with_the_tail() -> None:
    err = error_from_log("Traceback (most recent call last):\n  boom\nKeyError: 'x'\n", 1)
    assert type(err) is EngineError and err.code == 1000
    assert "status 1" in str(err) and "KeyError: 'x'" in str(err)


def test_unknown_kind_from_a_two_line_cli_error() -> None:
    err = error_from_log("error: nodes[0].kind: unknown kind 'camra'; did you mean 'camera'?\n"
                         "  (error 1103 UnknownKindError)\n", 2)
    assert isinstance(err, UnknownKindError)


@pytest.mark.parametrize(("fault", "value", "expected"), [
    ("kill", None, {}), ("hang", None, {}), ("crash", None, {}), ("corrupt", None, {}),
    ("slow", 250, {"ms": 250}), ("slow", "40", {"ms": 40}), ("exit", 3, {"code": 3}), ("exit", "0", {"code": 0}),
])
def test_fault_args(fault: str, value: int | str | None, expected: dict[str, int]) -> None:
    assert fault_args(fault, value) == expected


@pytest.mark.parametrize(("fault", "value", "needle"), [
    ("explode", None, "unknown fault 'explode'"),
    ("slow", None, "needs MS"),
    ("slow", "fast", "needs MS"),
    ("slow", -5, "needs MS"),
    ("exit", 300, "needs CODE"),
    ("exit", True, "needs CODE"),
    ("kill", 9, "takes no value"),
])
def test_bad_fault_arguments_are_field_errors_naming_the_fix(fault: str, value: object, needle: str) -> None:
    with pytest.raises(FieldError, match=re.escape(needle)) as info:
        fault_args(fault, value)  # type: ignore[arg-type]
    assert info.value.code == 1403
    assert set(FAULTS) == {"kill", "hang", "crash", "slow", "exit", "corrupt"}


def test_overrides_travel_in_the_environment_never_on_the_command_line(tmp_path: Path) -> None:
    overrides = {"rec.path": "/tmp/a b.mp4", "venc.bitrate_kbps": 1500, "filt.box": False,
                 "push.url": "rtmp://host/live/sk_secret_key"}
    argv = run_argv(tmp_path / "t.yaml", duration=5, allow_faults=True, args=["--metrics-port", "9100"])
    assert argv == [sys.executable, "-m", "mediaengine.cli", "run", str(tmp_path / "t.yaml"),
                    "--duration", "5.0", "--allow-faults", "--metrics-port", "9100"]
    env = child_env({}, tmp_path, override_items(overrides))
    items = json.loads(env[SET_ENV])
    assert items == ['rec.path="/tmp/a b.mp4"', "venc.bitrate_kbps=1500", "filt.box=false",
                     'push.url="rtmp://host/live/sk_secret_key"']
    import yaml

    assert yaml.safe_load(items[0].partition("=")[2]) == "/tmp/a b.mp4"
    assert SET_ENV not in child_env({}, tmp_path)  # none given: none inherited from this process either


def test_timeout_and_unknown_target_codes_are_the_documented_ones() -> None:
    docs = _doc_codes()
    assert TimeoutError_.code == docs["TimeoutError"] == 1408
    assert UnknownTargetError.code == docs["UnknownTargetError"] == 1404
    assert OptionError.code == docs["OptionError"] == 1108
