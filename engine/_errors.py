"""The engine's one error hierarchy, with stable numeric codes.

    EngineError                      1000  anything the engine reports
    ├── TopologyError                1100  a topology file or dict is wrong (load time)
    │   ├── TopologySyntaxError      1101  not YAML / not a mapping
    │   ├── TopologyVersionError     1102  missing or unsupported `version`
    │   ├── UnknownKindError         1103  `kind` names no actor
    │   ├── UnknownNodeError         1104  an input names no node
    │   ├── UnknownPadError          1105  an input or output pad does not exist
    │   ├── DuplicateIdError         1106  two nodes share an id
    │   ├── CycleError               1107  the graph has a cycle
    │   ├── OptionError              1108  missing, unknown or wrongly typed option
    │   ├── FormatMismatchError      1109  linked ports do not agree on a format
    │   ├── VariableError            1110  `${VAR}` is not set
    │   ├── SupervisionError         1111  bad restart / group / supervisor settings
    │   └── UnlinkedInputError       1112  a required input pad is not linked
    ├── FormatError                  1200  a frame does not match its port (stream time)
    ├── ResourceError                1300  a device, file or network endpoint failed
    │   ├── FileError                1301  a file is missing or unreadable
    │   ├── ConnectError             1302  a server cannot be reached
    │   └── EncoderError             1303  a codec failed to open or encode
    ├── ProtocolError                1400  the control plane got a bad message
    │   ├── MalformedMessageError    1401  not msgpack / not a map / oversized
    │   ├── UnknownTypeError         1402  unknown message type
    │   ├── FieldError               1403  a field is missing or has the wrong type
    │   ├── UnknownTargetError       1404  the message names no node
    │   ├── UnknownCommandError      1405  the node has no such command
    │   ├── CommandFailedError       1406  the command was refused by the node
    │   ├── NotAllowedError          1407  e.g. fault injection without --allow-faults
    │   └── TimeoutError_            1408  the node did not answer in time
    └── SupervisorError              1500  the supervisor gave up
        ├── IntensityExceededError   1501  too many restarts within the period
        └── ActorFailedError         1502  an actor failed and its policy says stop

The same codes are used by the CLI (stderr + exit status 2 for usage/topology errors, 1 for run
failures), the Python API (these classes) and the control protocol (`error` replies carry `code`,
`name` and `message`).  docs/errors.md is the table for users.
"""

from __future__ import annotations

from typing import ClassVar


class EngineError(Exception):
    """Base of every error the engine raises; carries a stable numeric `code`."""

    code: ClassVar[int] = 1000

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)

    @property
    def name(self) -> str:
        return type(self).__name__.rstrip("_")

    def to_wire(self) -> dict[str, object]:
        """The `error` reply fields for the control protocol."""
        return {"code": self.code, "name": self.name, "message": str(self)}


class TopologyError(EngineError):
    code = 1100


class TopologySyntaxError(TopologyError):
    code = 1101


class TopologyVersionError(TopologyError):
    code = 1102


class UnknownKindError(TopologyError):
    code = 1103


class UnknownNodeError(TopologyError):
    code = 1104


class UnknownPadError(TopologyError):
    code = 1105


class DuplicateIdError(TopologyError):
    code = 1106


class CycleError(TopologyError):
    code = 1107


class OptionError(TopologyError):
    code = 1108


class FormatMismatchError(TopologyError):
    code = 1109


class VariableError(TopologyError):
    code = 1110


class SupervisionError(TopologyError):
    code = 1111


class UnlinkedInputError(TopologyError):
    code = 1112


class FormatError(EngineError):
    code = 1200


class ResourceError(EngineError):
    code = 1300


class FileError(ResourceError, FileNotFoundError):
    code = 1301


class ConnectError(ResourceError, ConnectionError):
    code = 1302


class EncoderError(ResourceError):
    code = 1303


class ProtocolError(EngineError):
    code = 1400


class MalformedMessageError(ProtocolError):
    code = 1401


class UnknownTypeError(ProtocolError):
    code = 1402


class FieldError(ProtocolError):
    code = 1403


class UnknownTargetError(ProtocolError):
    code = 1404


class UnknownCommandError(ProtocolError):
    code = 1405


class CommandFailedError(ProtocolError):
    code = 1406


class NotAllowedError(ProtocolError, PermissionError):
    code = 1407


class TimeoutError_(ProtocolError, TimeoutError):
    code = 1408


class SupervisorError(EngineError):
    code = 1500


class IntensityExceededError(SupervisorError):
    code = 1501


class ActorFailedError(SupervisorError):
    code = 1502


def _all_subclasses(cls: type[EngineError]) -> list[type[EngineError]]:
    out: list[type[EngineError]] = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


ERRORS_BY_CODE: dict[int, type[EngineError]] = {c.code: c for c in _all_subclasses(EngineError)}


def error_from_wire(fields: dict[str, object]) -> EngineError:
    """Rebuild the typed exception from an `error` reply (unknown codes map to the nearest base)."""
    code = fields.get("code")
    message = str(fields.get("message", "error"))
    if isinstance(code, int):
        cls = ERRORS_BY_CODE.get(code) or ERRORS_BY_CODE.get(code - code % 100) or EngineError
    else:
        cls = EngineError
    return cls(message)
