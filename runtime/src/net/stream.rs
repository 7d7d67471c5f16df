//! The byte stream under a connection, whatever carries it.
//!
//! A plain TCP socket, or the near end of a pipe whose far end a WebSocket
//! bridge feeds: probing, framing and the guest see the same bytes either way.

use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream a connection can be served on.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientStream for T {}

/// The stream a connection task owns.
pub type BoxedStream = Box<dyn ClientStream>;
