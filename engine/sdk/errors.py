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
    │   ├── MalformedDescriptorError 1201  a data-plane descriptor does not decode
    │   ├── FormatChangeError        1202  a mid-stream format change is refused
    │   ├── SlotTooSmallError        1203  a new format does not fit the ring's slots
    │   ├── MalformedMediaError      1210  a file or stream is not valid media (truncated, corrupt)
    │   ├── FrameSizeError           1211  a source declares a frame larger than the engine accepts
    │   ├── PushShapeError           1212  a pushed array's shape does not fit its pixel format or the node's size
    │   ├── PushDtypeError           1213  a pushed array has the wrong dtype (video uint8, PCM int16/float32)
    │   ├── PushPixelFormatError     1214  a pushed pixel or sample format is not one the engine takes
    │   ├── PushAudioError           1215  a pushed PCM chunk's rate or channel count is out of range
    │   └── PushTargetError          1216  the node takes no pushed media of that kind (not an external_source)
    ├── ResourceError                1300  a device, file or network endpoint failed
    │   ├── FileError                1301  a file is missing or unreadable
    │   ├── ConnectError             1302  a server cannot be reached
    │   │   └── TlsError                 1313  a TLS server's certificate or host name is not verified
    │   ├── EncoderError             1303  a codec failed to open or encode
    │   ├── SharedMemoryError        1304  no room in shared memory for a ring
    │   ├── DiskFullError            1305  no space left on the device being written
    │   ├── RuntimeDirError          1310  the runtime directory is not private to this user
    │   ├── DeviceNotFoundError      1320  a capture device does not exist or is not a capture device
    │   ├── DeviceBusyError          1321  a capture device is in use by another program
    │   ├── DeviceLostError          1322  a capture device stopped delivering frames (unplugged, ended)
    │   ├── DeviceAccessError        1323  no permission to open a capture device
    │   ├── DisplayError             1324  no X display to capture, or it cannot be reached
    │   ├── ControlUnsupportedError  1325  the capture device has no such control (focus on a lavfi camera)
    │   │   └── NoTorchError             1326  the capture device has no light (torch/flash) control
    │   ├── ControlFailedError       1327  the capture device refused a control value
    │   ├── CameraSwitchError        1328  `switch` names no device of the camera's `devices` list
    │   ├── ImageDecodeError         1330  an image (watermark) is corrupt or not a format it reads
    │   ├── ImageTooLargeError       1331  an image (watermark) is larger than the engine accepts
    │   ├── MarkLimitError           1332  no room for another watermark (3 static, 5 animated)
    │   ├── MarkError                1333  a watermark outside the frame, of zero size, or no such id
    │   ├── InputPathError           1334  a command names an image outside the assets folder
    │   ├── UnknownLayerError        1335  a command names no layer / input of a compositor or switcher
    │   ├── LayerGeometryError       1336  a compositor layer's place, size or style is invalid
    │   ├── PreviewError             1337  the preview cannot open its window or HTTP endpoint
    │   ├── AudioBackendError        1340  the sound-device or noise-reduction library is missing or broken
    │   ├── FaceModelError           1345  the face-landmark library (mediapipe, the beauty extra) is missing or broken
    │   └── (EncoderError) HardwareEncoderError 1350  a hardware encoder asked for by name cannot open
    ├── ProtocolError                1400  the control plane got a bad message
    │   ├── MalformedMessageError    1401  not msgpack / not a map / oversized
    │   ├── UnknownTypeError         1402  unknown message type
    │   ├── FieldError               1403  a field is missing or has the wrong type
    │   ├── UnknownTargetError       1404  the message names no node
    │   ├── UnknownCommandError      1405  the node has no such command
    │   ├── CommandFailedError       1406  the command was refused by the node
    │   ├── NotAllowedError          1407  e.g. fault injection without --allow-faults
    │   ├── TimeoutError_            1408  the node did not answer in time
    │   ├── RequestFailedError       1409  handling a well-formed message failed unexpectedly
    │   ├── ActorOnlyError           1410  a client sent a message only actors may send
    │   ├── InsecureEndpointError    1411  TCP control/events without CURVE keys
    │   ├── ActorAuthError           1412  an actor connection failed authentication
    │   ├── BusyError                1413  the node has too many requests waiting
    │   ├── OutputPathError          1415  a command names a file outside the output directory
    │   └── (CommandFailedError) QueueFullError 1420  a node's bounded command queue is full
    └── SupervisorError              1500  the supervisor gave up
        ├── IntensityExceededError   1501  too many restarts within the period
        ├── ActorFailedError         1502  an actor failed and its policy says stop
        └── GroupGaveUpError         1503  a temporary group exceeded its intensity and stopped alone

The same codes are used by the CLI (stderr + exit status 2 for usage/topology errors, 1 for run
failures), the Python API (these classes) and the control protocol (`error` replies carry `code`,
`name` and `message`).  docs/errors.md is the table for users.
"""

from __future__ import annotations

from typing import ClassVar


class EngineError(Exception):
    """Base of every error the engine raises; carries a stable numeric `code`."""

    code: ClassVar[int] = 1000
    #: False for errors that a restart cannot cure (bad input: malformed media, a frame too large, an
    #: untrusted TLS server): the supervisor then stops the node instead of restarting it in a loop
    restartable: ClassVar[bool] = True

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
    """A topology file or dict is wrong (load time)."""

    code = 1100


class TopologySyntaxError(TopologyError):
    """Not YAML, or the top level is not a mapping."""

    code = 1101


class TopologyVersionError(TopologyError):
    """Missing or unsupported `version` (this engine reads version 1)."""

    code = 1102


class UnknownKindError(TopologyError):
    """`kind` names no actor kind (`mediaengine kinds` lists them)."""

    code = 1103


class UnknownNodeError(TopologyError):
    """An input names a node that does not exist."""

    code = 1104


class UnknownPadError(TopologyError):
    """An input or output pad does not exist on that kind."""

    code = 1105


class DuplicateIdError(TopologyError):
    """Two nodes share an id."""

    code = 1106


class CycleError(TopologyError):
    """The graph has a cycle (the message shows it)."""

    code = 1107


class OptionError(TopologyError):
    """A missing, unknown or wrongly typed option, or a live `set` outside the option's range."""

    code = 1108


class FormatMismatchError(TopologyError):
    """Linked ports do not agree on a format."""

    code = 1109


class VariableError(TopologyError):
    """A `${VAR}` is not set in the environment."""

    code = 1110


class SupervisionError(TopologyError):
    """Bad restart type, group or supervisor setting."""

    code = 1111


class UnlinkedInputError(TopologyError):
    """A required input pad is not linked."""

    code = 1112


class FormatError(EngineError):
    """A frame does not match its port at run time."""

    code = 1200


class MalformedDescriptorError(FormatError):
    """A data-plane descriptor (frame, packet, end of stream, format change) does not decode."""

    code = 1201


class FormatChangeError(FormatError):
    """A mid-stream format change is refused (another media kind, or a format the port does not accept)."""

    code = 1202


class SlotTooSmallError(FormatError):
    """A new format's frames do not fit the slots of the pad's ring (declare a larger maximum size)."""

    code = 1203
class MalformedMediaError(FormatError):
    """A file or stream is not valid media: truncated, corrupt, empty or of another format."""

    code = 1210
    restartable = False


class FrameSizeError(FormatError):
    """A source declares a frame larger than the engine accepts (width x height cap)."""

    code = 1211
    restartable = False


class PushShapeError(FormatError, ValueError):
    """A pushed array's shape does not fit its pixel format or the node's declared size."""

    code = 1212


class PushDtypeError(FormatError, TypeError):
    """A pushed array has the wrong dtype (video uint8; PCM int16 or float32)."""

    code = 1213


class PushPixelFormatError(FormatError, ValueError):
    """A pushed pixel or sample format is not one the engine takes."""

    code = 1214


class PushAudioError(FormatError, ValueError):
    """A pushed PCM chunk's sample rate or channel count is out of range."""

    code = 1215


class PushTargetError(FormatError):
    """The node takes no pushed media of that kind (it is not an `external_source`, or has no such output)."""

    code = 1216


class ResourceError(EngineError):
    """A device, file or network endpoint failed."""

    code = 1300


class FileError(ResourceError, FileNotFoundError):
    """A file is missing or unreadable."""

    code = 1301


class ConnectError(ResourceError, ConnectionError):
    """A server cannot be reached."""

    code = 1302


class TlsError(ConnectError):
    """A TLS server's certificate or host name could not be verified (rtmps)."""

    code = 1313
    restartable = False


class EncoderError(ResourceError):
    """A codec failed to open or to encode."""

    code = 1303


class HardwareEncoderError(EncoderError):
    """A hardware H.264 encoder named by `codec` (h264_nvenc, ...) cannot open on this machine (no
    device, no driver, not in the FFmpeg build) and `fallback` is false: use `codec: auto` or
    libx264, or set `fallback: true`."""

    code = 1350
    restartable = False  # the machine will not grow a GPU between two restarts


class SharedMemoryError(ResourceError, MemoryError):
    """No room in shared memory (/dev/shm) for a ring: the message names the ring, its size and the free space."""

    code = 1304


class DiskFullError(ResourceError, OSError):
    """No space left on the device a file is written to."""

    code = 1305
class RuntimeDirError(ResourceError, PermissionError):
    """The runtime directory (sockets, engine.json) is not private: not owned by this user, writable by
    others, a symbolic link, or it cannot be created."""

    code = 1310


class DeviceNotFoundError(ResourceError, FileNotFoundError):
    """A capture device does not exist (nothing at the path, no `/dev/video*` for `auto`), is not a
    capture device, or FFmpeg cannot open what `FORMAT:TARGET` describes."""

    code = 1320


class DeviceBusyError(ResourceError):
    """A capture device is in use by another program (EBUSY); a restart retries it with backoff."""

    code = 1321


class DeviceLostError(ResourceError):
    """A capture device stopped delivering frames: unplugged, a driver error, a read timeout, or a
    finite `lavfi` graph that ended."""

    code = 1322


class DeviceAccessError(ResourceError, PermissionError):
    """No permission to open a capture device (on Linux: the user is not in the `video` group)."""

    code = 1323


class DisplayError(ResourceError):
    """No X display to capture: `DISPLAY` is not set, the X server cannot be reached, a Wayland-only
    session, or the capture region does not fit the screen."""

    code = 1324


class ControlUnsupportedError(ResourceError):
    """A camera control was asked of a device that has none for it: focus, torch or exposure on a
    device without V4L2 controls (a `lavfi` camera: only digital zoom applies), or a V4L2 camera
    whose control table lacks it.  A restart cannot add a control, so the node is not restarted for it."""

    code = 1325
    restartable = False


class NoTorchError(ControlUnsupportedError):
    """`torch` was asked of a capture device with no light control (the V4L2 flash class's `led_mode` or
    `torch_intensity`); most webcams have none."""

    code = 1326


class ControlFailedError(ResourceError):
    """The capture device refused a control value (the driver's ioctl failed: the control is inactive
    under another setting, out of range, or the device is gone)."""

    code = 1327


class CameraSwitchError(ResourceError):
    """`switch` names a device that is not in the camera's `devices` list, or there is no other
    device to switch to; the camera keeps its current device."""

    code = 1328
    restartable = False


class ImageDecodeError(ResourceError):
    """An image a filter overlays (a watermark, a frame of an animated one) is corrupt, truncated or not a
    format it reads (PNG, JPEG, WebP, GIF, APNG, a folder of numbered frames)."""

    code = 1330
    restartable = False


class ImageTooLargeError(ResourceError):
    """An image a filter overlays is larger than it accepts (checked from the file's header, before
    decoding), or an animation's decoded frames would take too much memory."""

    code = 1331
    restartable = False


class MarkLimitError(ResourceError):
    """No room for another watermark: at most 3 static and 5 animated marks at once."""

    code = 1332


class MarkError(ResourceError):
    """A watermark that cannot be placed (outside the frame, zero size, opacity outside 0..1), an id
    that is taken, or a command that names no such mark."""

    code = 1333


class InputPathError(ResourceError, PermissionError):
    """A command names an image outside the folder commands may read from (the filter's `assets_dir`):
    `..`, an absolute path elsewhere, a hidden name, a symbolic link on the way, or a file type it does
    not read (docs/security.md, "Files the engine reads")."""

    code = 1334


class UnknownLayerError(ResourceError, LookupError):
    """A compositor or switcher command names a layer or input the node does not have (`layer cam`
    with no input `cam`, `select pause` with no input `pause`); the node keeps running unchanged."""

    code = 1335


class LayerGeometryError(ResourceError, ValueError):
    """A compositor layer's place, size or style is invalid (zero or negative width/height, a
    fraction outside 0..1, an unknown `fit`, a bad colour); the node keeps its previous layer."""

    code = 1336


class PreviewError(ResourceError):
    """The preview cannot show the picture: its HTTP port is taken, or `mode: window` without a display
    or without an OpenCV build that has a GUI."""

    code = 1337


class AudioBackendError(ResourceError):
    """The library behind sound devices (PortAudio through `sounddevice`) or noise reduction (RNNoise through
    `pyrnnoise`) is not installed or does not load; a restart cannot cure it."""

    code = 1340
    restartable = False


class FaceModelError(ResourceError):
    """The face-landmark library behind `beauty` (mediapipe 0.10.21 with its face models, `pip install
    'mediaengine[beauty]'`, Python 3.9-3.12) is not installed, does not load, its model file is missing, or
    its face detector does not start; a restart cannot cure it."""

    code = 1345
    restartable = False


class ProtocolError(EngineError):
    """The control plane got a bad message."""

    code = 1400


class MalformedMessageError(ProtocolError):
    """Not msgpack, not a map, or larger than 1 MiB."""

    code = 1401


class UnknownTypeError(ProtocolError):
    """Unknown message type."""

    code = 1402


class FieldError(ProtocolError):
    """A field is missing or has the wrong type, or the protocol version is wrong."""

    code = 1403


class UnknownTargetError(ProtocolError):
    """The message names no node."""

    code = 1404


class UnknownCommandError(ProtocolError):
    """The node has no such command."""

    code = 1405


class CommandFailedError(ProtocolError):
    """The node refused the command."""

    code = 1406


class QueueFullError(CommandFailedError):
    """A node's bounded queue of pending commands is full (snapshot, send_message): retry later."""

    code = 1420


class NotAllowedError(ProtocolError, PermissionError):
    """Not allowed, e.g. fault injection without `--allow-faults`."""

    code = 1407


class TimeoutError_(ProtocolError, TimeoutError):
    """The engine or node did not answer in time."""

    code = 1408


class RequestFailedError(ProtocolError):
    """Handling a well-formed message failed unexpectedly; the message is dropped, the engine goes on."""

    code = 1409


class ActorOnlyError(ProtocolError):
    """A client sent a message type only the engine's own actors send (hello, heartbeat, event, ...)."""

    code = 1410


class InsecureEndpointError(NotAllowedError):
    """Control or events over TCP without CURVE keys (also on loopback, unless `--insecure-loopback`)."""

    code = 1411


class ActorAuthError(ProtocolError):
    """A connection to the actors' socket was refused: not this run's key for the node it claims to be."""

    code = 1412


class BusyError(ProtocolError):
    """The node has too many requests waiting for an answer; try again when it has answered them."""

    code = 1413
class OutputPathError(NotAllowedError):
    """A command names a file outside the topology's `output_dir` (`..`, an absolute path elsewhere, a
    symbolic link that leads out) or of a type it may not write."""

    code = 1415


class SupervisorError(EngineError):
    """The supervisor gave up."""

    code = 1500


class IntensityExceededError(SupervisorError):
    """More restarts than `intensity` within `period_s`: the engine stopped."""

    code = 1501


class ActorFailedError(SupervisorError):
    """An actor failed with an unexpected exception (its message names the place)."""

    code = 1502


class GroupGaveUpError(SupervisorError):
    """A `restart: temporary` group exceeded its own intensity: its members stay stopped, the engine runs on."""

    code = 1503


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
