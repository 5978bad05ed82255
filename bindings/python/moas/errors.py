"""The exception hierarchy: one class per moas_status, grouped by family.

Every exception carries ``status`` (the moas_status code, an int), ``status_name`` (e.g.
"MOAS_ERR_SIZE_MISMATCH") and ``message`` (moas_last_error(): what to fix).
"""
from . import _lib


class Error(Exception):
    """Base of every libmoas failure."""

    status = None  # the moas_status code this class stands for (None for the base and for errors without one)

    def __init__(self, message, status=None, function=None):
        if status is not None:
            self.status = status
        self.message = message
        self.function = function
        super().__init__(message)

    @property
    def status_name(self):
        if self.status is None:
            return None
        text = _lib.lib().moas_status_string(self.status).decode("utf-8", "replace")
        return text.split(":", 1)[0]

    def __str__(self):
        where = f" (in {self.function})" if self.function else ""
        name = self.status_name
        return f"{name}: {self.message}{where}" if name else f"{self.message}{where}"


class NullArgument(Error):
    status = 1


class InvalidConfig(Error, ValueError):
    """A config field is out of range or inconsistent (the message names the field)."""
    status = 2


class AbiMismatch(Error):
    status = 3


class SizeMismatch(Error, ValueError):
    """A buffer length or shape does not match what the model needs."""
    status = 4


class InvalidInput(Error, ValueError):
    """Tokens, targets or sequence length outside what the model accepts."""


class TokenOutOfRange(InvalidInput):
    status = 5


class TargetOutOfRange(InvalidInput):
    status = 6


class ContextTooLong(InvalidInput):
    status = 7


class NoForward(Error):
    """backward() (or router_stats()) without the forward it needs."""
    status = 8


class NonFinite(Error, ValueError):
    status = 9


class UnknownParameter(Error, LookupError):
    status = 10


class CheckpointError(Error):
    """Reading or writing a checkpoint failed."""


class FileError(CheckpointError):
    """A file could not be opened, read, written or renamed (MOAS_ERR_IO)."""
    status = 11


class CheckpointTruncated(CheckpointError):
    status = 12


class CheckpointHeader(CheckpointError):
    status = 13


class CheckpointLayout(CheckpointError):
    status = 14


class CheckpointMissingTensor(CheckpointError):
    status = 15


class CheckpointUnexpectedTensor(CheckpointError):
    status = 16


class CheckpointShape(CheckpointError):
    status = 17


class CheckpointDtype(CheckpointError):
    status = 18


class CheckpointConfig(CheckpointError):
    status = 19


class NoRouter(Error):
    """The model (or that layer) routes nothing: router statistics do not apply."""
    status = 20


class DeviceUnavailable(Error):
    status = 21


class OutOfMemory(Error, MemoryError):
    status = 22


class IndexOutOfRange(Error, IndexError):
    status = 23


class InternalError(Error):
    """A bug in libmoas: please report it with the message."""
    status = 24


class ContextFull(Error):
    """The KV cache has no room for more positions (its capacity, at most block_size): reset it."""
    status = 25


class InvalidArgument(Error, ValueError):
    """Two buffers of one call overlap in a way it does not allow, or a handle was made for another device (a KV
    cache of a CPU model given with a CUDA model)."""
    status = 26


class CheckpointValue(CheckpointError):
    """A checkpoint tensor holds a value its role cannot have (a negative AdamW second moment)."""
    status = 27


def _status_classes():
    found = {}
    stack = [Error]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if "status" in vars(cls) and cls.status is not None:
            found[cls.status] = cls
    return found


#: moas_status code -> exception class.
BY_STATUS = _status_classes()


def check(status, function):
    """Raises the exception for a failed libmoas call; call it on the same thread, right after the call."""
    if status == 0:
        return
    message = _lib.lib().moas_last_error().decode("utf-8", "replace")
    cls = BY_STATUS.get(status, Error)
    raise cls(message or "(no message)", status=status, function=function)
