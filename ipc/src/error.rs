//! The crate's one error type.

use std::io;

/// What can go wrong on a channel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer closed its end (or died): no more messages will come, and
    /// nothing sent will be read.
    #[error("the peer closed the channel")]
    Closed,

    /// A message arrived that was larger than [`crate::MAX_MESSAGE_SIZE`]; the
    /// kernel cut it, so it was dropped whole (with any descriptors it carried).
    #[error("received message was truncated: larger than {max} bytes")]
    Truncated { max: usize },

    /// A message arrived with more descriptors (or other control data) than
    /// fit: the kernel dropped some, so the message was dropped whole.
    #[error("received control data was truncated: more than {max} file descriptors")]
    ControlTruncated { max: usize },

    /// Control data other than `SCM_RIGHTS` arrived.
    #[error("received unexpected control message (level {level}, type {kind})")]
    UnexpectedControl { level: i32, kind: i32 },

    /// A message to send encodes to more than [`crate::MAX_MESSAGE_SIZE`] bytes.
    #[error("message too large to send: more than {max} bytes")]
    TooLarge { max: usize },

    /// More descriptors to send than [`crate::MAX_FDS`].
    #[error("too many file descriptors to send: {count} (at most {max})")]
    TooManyFds { count: usize, max: usize },

    /// The message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(#[source] bincode::error::EncodeError),

    /// The received bytes are not a valid message of the expected type.
    #[error("cannot decode message: {0}")]
    Decode(#[source] bincode::error::DecodeError),

    /// The received bytes hold a valid message followed by more bytes.
    #[error("message has {extra} trailing bytes after a {used}-byte message")]
    TrailingBytes { used: usize, extra: usize },

    /// The peer did not take a message or answer a call within the
    /// channel's deadline; the channel is given up.
    #[error("the peer did not respond within {after:?}; the channel is given up")]
    TimedOut { after: std::time::Duration },

    /// An earlier send or call on this channel timed out; nothing more is
    /// sent or awaited on it.
    #[error("the channel was given up after the peer stopped responding")]
    GivenUp,

    /// A system call on the socket failed.
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        Error::Io { op, source }
    }
}
