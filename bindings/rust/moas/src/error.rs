use moas_sys as sys;
use std::ffi::CStr;
use std::fmt;

/// The failure statuses of `moas_status` (every one except `MOAS_OK`).
///
/// The C library only ever appends statuses; one this crate does not know yet arrives as `Other(code)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    NullArgument,
    InvalidConfig,
    AbiMismatch,
    SizeMismatch,
    TokenOutOfRange,
    TargetOutOfRange,
    ContextTooLong,
    NoForward,
    NonFinite,
    UnknownParameter,
    Io,
    CheckpointTruncated,
    CheckpointHeader,
    CheckpointLayout,
    CheckpointMissingTensor,
    CheckpointUnexpectedTensor,
    CheckpointShape,
    CheckpointDtype,
    CheckpointConfig,
    NoRouter,
    DeviceUnavailable,
    OutOfMemory,
    IndexOutOfRange,
    Internal,
    ContextFull,
    /// Two buffers of one call overlap in a way it does not allow.
    InvalidArgument,
    /// A checkpoint tensor holds a value its role cannot have (a negative AdamW second moment).
    CheckpointValue,
    Other(u32),
}

const STATUS_CODES: [(sys::moas_status, Status); 27] = [
    (sys::MOAS_ERR_NULL_ARGUMENT, Status::NullArgument),
    (sys::MOAS_ERR_INVALID_CONFIG, Status::InvalidConfig),
    (sys::MOAS_ERR_ABI_MISMATCH, Status::AbiMismatch),
    (sys::MOAS_ERR_SIZE_MISMATCH, Status::SizeMismatch),
    (sys::MOAS_ERR_TOKEN_OUT_OF_RANGE, Status::TokenOutOfRange),
    (sys::MOAS_ERR_TARGET_OUT_OF_RANGE, Status::TargetOutOfRange),
    (sys::MOAS_ERR_CONTEXT_TOO_LONG, Status::ContextTooLong),
    (sys::MOAS_ERR_NO_FORWARD, Status::NoForward),
    (sys::MOAS_ERR_NON_FINITE, Status::NonFinite),
    (sys::MOAS_ERR_UNKNOWN_PARAMETER, Status::UnknownParameter),
    (sys::MOAS_ERR_IO, Status::Io),
    (sys::MOAS_ERR_CHECKPOINT_TRUNCATED, Status::CheckpointTruncated),
    (sys::MOAS_ERR_CHECKPOINT_HEADER, Status::CheckpointHeader),
    (sys::MOAS_ERR_CHECKPOINT_LAYOUT, Status::CheckpointLayout),
    (sys::MOAS_ERR_CHECKPOINT_MISSING_TENSOR, Status::CheckpointMissingTensor),
    (sys::MOAS_ERR_CHECKPOINT_UNEXPECTED_TENSOR, Status::CheckpointUnexpectedTensor),
    (sys::MOAS_ERR_CHECKPOINT_SHAPE, Status::CheckpointShape),
    (sys::MOAS_ERR_CHECKPOINT_DTYPE, Status::CheckpointDtype),
    (sys::MOAS_ERR_CHECKPOINT_CONFIG, Status::CheckpointConfig),
    (sys::MOAS_ERR_NO_ROUTER, Status::NoRouter),
    (sys::MOAS_ERR_DEVICE_UNAVAILABLE, Status::DeviceUnavailable),
    (sys::MOAS_ERR_OUT_OF_MEMORY, Status::OutOfMemory),
    (sys::MOAS_ERR_INDEX_OUT_OF_RANGE, Status::IndexOutOfRange),
    (sys::MOAS_ERR_INTERNAL, Status::Internal),
    (sys::MOAS_ERR_CONTEXT_FULL, Status::ContextFull),
    (sys::MOAS_ERR_INVALID_ARGUMENT, Status::InvalidArgument),
    (sys::MOAS_ERR_CHECKPOINT_VALUE, Status::CheckpointValue),
];

impl Status {
    fn from_code(code: sys::moas_status) -> Status {
        STATUS_CODES.iter().find(|(c, _)| *c == code).map_or(Status::Other(code), |(_, status)| *status)
    }

    /// The numeric `moas_status`.
    pub fn code(self) -> u32 {
        match self {
            Status::Other(code) => code,
            known => STATUS_CODES.iter().find(|(_, s)| *s == known).map(|(c, _)| *c).expect("every variant has a code"),
        }
    }

    /// The C name, e.g. `"MOAS_ERR_SIZE_MISMATCH"` (from `moas_status_string`).
    pub fn name(self) -> &'static str {
        // Static storage in the library, valid for the life of the process.
        let name = unsafe { CStr::from_ptr(sys::moas_status_string(self.code())) };
        name.to_str().unwrap_or("MOAS_ERR_UNKNOWN_STATUS")
    }
}

/// A failed libmoas call: its status and the message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

impl Error {
    /// A failure detected on the Rust side before the call (a slice length, a name with a NUL byte).
    pub(crate) fn new(status: Status, message: impl Into<String>) -> Error {
        Error { status, message: message.into() }
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// The library's `moas_last_error()` text for the failed call (or the Rust side's own message).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status.name(), self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Turns a status into a Result, reading the thread's last-error message at once (the next libmoas call on this
/// thread replaces it).
pub(crate) fn check(code: sys::moas_status) -> Result<()> {
    if code == sys::MOAS_OK {
        return Ok(());
    }
    let message = unsafe { CStr::from_ptr(sys::moas_last_error()) }.to_string_lossy().into_owned();
    Err(Error { status: Status::from_code(code), message })
}
