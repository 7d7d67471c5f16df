//! The task behind one client connection.
//!
//! It owns the socket and the guest instance. Bytes from the client are
//! framed natively and handed to the guest in batches (`on-frames`);
//! deliveries from the router are drained in batches (`on-deliver`); what the
//! guest `send`s is written after each call. When the connection ends for any
//! reason (client, guest, timeout, takeover, fault, shutdown) the host cleans
//! up the same way: subscriptions removed, session released, will published.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::auth::ConnAuth;
use crate::broker::{BrokerCore, VERSION};
use crate::config::ListenerTransport;
use crate::mailbox::{Kick, Mailbox, Routed};
use crate::metrics::ProtocolMetrics;
use crate::net::framing::{Framing, FramingError};
use crate::net::probe;
use crate::net::stream::BoxedStream;
use crate::net::{tls, websocket};
use crate::sessions::WillDeferral;
use crate::store::StoredMessage;
use crate::wasm::bindings::types::{CloseReason, ConnectionInfo, NextFrame, Transport, Will};
use crate::wasm::guest::{Fault, Guest};
use crate::wasm::guest_text::GuestText;
use crate::wasm::protocol::Protocol;
use crate::wasm::state::{ConnLink, GuestState};

/// Most deliveries passed to the guest in one `on-deliver` call.
const MAX_DELIVERY_BATCH: usize = 256;

/// Most at-least-once deliveries a connection may leave unacknowledged
/// before it is treated as a slow consumer (MQTT's largest receive maximum).
const MAX_UNACKED: usize = 65_535;

/// Most frames passed to the guest in one `on-frames` call.
const MAX_FRAME_BATCH: usize = 256;

/// Most bytes of frames passed in one `on-frames` call (a single larger
/// frame still goes alone).
const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Most bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Bytes a connection first reads at a time. Reads that fill the buffer
/// double it up to [`READ_CHUNK`], so busy clients get big reads while the
/// many quiet ones hold small buffers.
const FIRST_READ: usize = 256;

/// Least time between two yields of a publishing connection to the
/// connections it reached ([`yield_to_receivers`]): about the longest a
/// subscriber waits behind a busy publisher on the same worker. Each yield
/// moves the publisher to another worker, so not one per read.
const HANDOFF_YIELD_INTERVAL: Duration = Duration::from_micros(200);

/// How long the goodbye (on-close output) may take to write.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// What every connection of a listener shares.
pub struct ListenerInfo {
    pub name: Arc<str>,
    pub candidates: Vec<Arc<Protocol>>,
    pub probe_bytes: usize,
    pub probe_timeout: Duration,
    /// TCP, or WebSocket with these accepted subprotocols.
    pub transport: ListenerTransport,
    pub subprotocols: Vec<String>,
    /// TLS below the transport, when configured.
    pub tls: Option<TlsAcceptor>,
    /// Clients without credentials are admitted (as anonymous).
    pub allow_anonymous: bool,
    pub core: Arc<BrokerCore>,
    pub shutdown: CancellationToken,
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    PeerClosed,
    GuestClosed(String),
    /// `on-frames` returned an error: the client broke the protocol.
    ProtocolError,
    IdleTimeout,
    /// Asked to close by the rest of the broker, shutdown included.
    Kicked(Kick),
    Framing(String),
    TooLarge,
    Fault(Fault),
}

impl End {
    fn reason(&self) -> CloseReason {
        match self {
            End::PeerClosed => CloseReason::PeerClosed,
            End::GuestClosed(_) | End::ProtocolError => CloseReason::GuestClosed,
            End::IdleTimeout => CloseReason::IdleTimeout,
            End::Kicked(Kick::SessionTakenOver) => CloseReason::SessionTakenOver,
            End::Kicked(Kick::SlowConsumer) => CloseReason::SlowConsumer,
            End::Kicked(Kick::ClosedByRequest) => CloseReason::ClosedByRequest,
            End::Framing(why) => CloseReason::ProtocolError(why.clone()),
            End::TooLarge => CloseReason::FrameTooLarge,
            End::Kicked(Kick::Shutdown) => CloseReason::ServerShutdown,
            End::Fault(fault) => CloseReason::ProtocolError(fault.to_string()),
        }
    }
}

/// Serve one accepted socket until it closes.
pub async fn serve(listener: Arc<ListenerInfo>, tcp: TcpStream, peer: SocketAddr) {
    let id = listener.core.next_connection_id();
    let local = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
    // The handshake and probe futures are big and live only at the start:
    // boxed, they do not make every connection's task that big for its life.
    let Some(mut carried) = Box::pin(transport(&listener, tcp, peer, id)).await else {
        return;
    };
    let chosen = tokio::select! {
        chosen = Box::pin(probe::choose(&mut carried.stream, &listener.candidates, id, listener.probe_bytes, listener.probe_timeout)) => chosen,
        _ = listener.shutdown.cancelled() => return,
    };
    let chosen = match chosen {
        Ok(chosen) => chosen,
        Err(e) => {
            tracing::info!(listener = %listener.name, %peer, conn = id, "closing: {e}");
            return;
        }
    };
    let Some((mut connection, info)) = admit(&listener, chosen, carried, peer, id, local) else {
        return;
    };
    let end = connection.run(&info).await;
    connection.finish(end).await;
    let env = &connection.protocol.env;
    env.connections.remove(id);
    env.metrics.connections_active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// Take a probed connection in: the protocol's breaker and connection cap,
/// its mailbox and registration. Synchronous, so the set-up's temporaries
/// are not kept in every connection task's future for its whole life.
fn admit(
    listener: &ListenerInfo,
    chosen: probe::Chosen,
    carried: Carried,
    peer: SocketAddr,
    id: u64,
    local: String,
) -> Option<(Connection, ConnectionInfo)> {
    let Carried { stream, transport, certificate_user } = carried;
    let protocol = chosen.protocol;
    let metrics = &protocol.env.metrics;
    if let Some(left) = protocol.env.breaker.open_for(std::time::Instant::now()) {
        ProtocolMetrics::bump(&metrics.connections_refused);
        tracing::warn!(protocol = %protocol.env.name, %peer, left_ms = left.as_millis() as u64, "connection refused: the protocol's crash-loop breaker is open");
        return None;
    }
    let Ok(permit) = protocol.permits.clone().try_acquire_owned() else {
        ProtocolMetrics::bump(&metrics.connections_refused);
        tracing::warn!(protocol = %protocol.env.name, %peer, "connection refused: max_connections reached");
        return None;
    };
    let (mailbox, inbox) = Mailbox::new(id, protocol.env.limits.outbound_buffer_bytes);
    let mut guest = chosen.guest;
    let auth = ConnAuth { peer: peer.ip(), allow_anonymous: listener.allow_anonymous, certificate_user };
    guest.state_mut().principal = listener.core.auth.initial_identity(&auth);
    guest.state_mut().link = Some(ConnLink { broker: listener.core.clone(), mailbox: mailbox.clone(), auth });
    guest.state_mut().inbox = Some(inbox);
    let info = ConnectionInfo {
        id,
        peer: peer.to_string(),
        local,
        listener: listener.name.to_string(),
        transport,
        server_id: listener.core.server_id.clone(),
        server_version: VERSION.into(),
        max_frame_bytes: protocol.env.limits.max_frame_bytes,
        user: guest.state().principal.as_ref().map(|identity| identity.name().to_string()),
        credentials_checked: listener.core.auth.has_users(),
        settings: protocol.env.settings.clone(),
    };
    protocol.env.connections.insert(mailbox.clone(), peer.to_string());
    ProtocolMetrics::bump(&metrics.connections_opened);
    metrics.connections_active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(protocol = %protocol.env.name, %peer, conn = id, "connection opened");

    let connection = Connection {
        _permit: permit,
        stream,
        peer,
        framing: protocol.description.framing.clone(),
        max_frame: protocol.env.limits.max_frame_bytes as usize,
        protocol: protocol.clone(),
        guest,
        mailbox,
        inbuf: chosen.buffered,
        read_size: FIRST_READ,
        guest_needs: 0,
        idle: None,
        last_read: Instant::now(),
        yielded_at: Instant::now(),
        partial_since: None,
        frame_timeout: Duration::from_millis(protocol.env.limits.frame_timeout_ms),
        timer_at: None,
        batch_bytes: protocol.env.limits.outbound_buffer_bytes / 2,
        shutdown: listener.shutdown.clone(),
        core: listener.core.clone(),
    };
    Some((connection, info))
}

/// What carries a connection's bytes.
struct Carried {
    stream: BoxedStream,
    transport: Transport,
    /// The user a client certificate names.
    certificate_user: Option<String>,
}

/// Set up what carries the bytes: TLS and WebSocket as the listener says;
/// `None` (after a log line) when the client failed a handshake.
async fn transport(listener: &ListenerInfo, tcp: TcpStream, peer: SocketAddr, id: u64) -> Option<Carried> {
    let (stream, kind, user): (BoxedStream, _, _) = match &listener.tls {
        None => (Box::new(tcp), Transport::Tcp, None),
        Some(acceptor) => {
            let handshake = tokio::select! {
                handshake = tls::accept(acceptor, tcp, listener.probe_timeout) => handshake,
                _ = listener.shutdown.cancelled() => return None,
            };
            match handshake {
                Ok((stream, user)) => (Box::new(stream), Transport::Tls, user),
                Err(e) => {
                    tracing::info!(listener = %listener.name, %peer, conn = id, "closing: {e}");
                    return None;
                }
            }
        }
    };
    if listener.transport == ListenerTransport::Tcp {
        return Some(Carried { stream, transport: kind, certificate_user: user });
    }
    let max_message = listener.candidates.iter().map(|p| p.env.limits.max_frame_bytes as usize).max();
    let max_message = max_message.unwrap_or(0).max(64 * 1024);
    let upgrade = tokio::select! {
        upgrade = websocket::accept(stream, &listener.subprotocols, max_message, listener.probe_timeout) => upgrade,
        _ = listener.shutdown.cancelled() => return None,
    };
    match upgrade {
        Ok((pipe, subprotocol)) => {
            tracing::debug!(listener = %listener.name, %peer, conn = id, ?subprotocol, "WebSocket upgraded");
            Some(Carried { stream: Box::new(pipe), transport: Transport::Websocket, certificate_user: user })
        }
        Err(e) => {
            tracing::info!(listener = %listener.name, %peer, conn = id, "closing: {e}");
            None
        }
    }
}

struct Connection {
    /// Counts against the protocol's `max_connections` while it lives.
    _permit: tokio::sync::OwnedSemaphorePermit,
    stream: BoxedStream,
    peer: SocketAddr,
    framing: Framing,
    max_frame: usize,
    protocol: Arc<Protocol>,
    guest: Guest,
    mailbox: Arc<Mailbox>,
    inbuf: BytesMut,
    /// Room made in `inbuf` before each read; grows while reads fill it.
    read_size: usize,
    /// Guest framing: buffered bytes needed before asking the guest again.
    guest_needs: usize,
    idle: Option<Duration>,
    last_read: Instant,
    /// When the connection last yielded to the receivers of its publishes.
    yielded_at: Instant,
    /// When the buffered, still incomplete frame started to arrive.
    partial_since: Option<Instant>,
    /// How long a frame may take to arrive completely.
    frame_timeout: Duration,
    timer_at: Option<Instant>,
    /// Most delivery bytes per `on-deliver` call (half the outbound buffer).
    batch_bytes: usize,
    shutdown: CancellationToken,
    core: Arc<BrokerCore>,
}

// Guest calls are awaited boxed (`Box::pin(self.guest.on_...)`): a call's
// future is several hundred bytes and would otherwise be part of every
// connection's task, idle or not, for its whole life. One small allocation
// per call is the price.

/// What woke the connection up.
enum Wake {
    Read(std::io::Result<usize>),
    Deliveries,
    Deadline,
    Kicked(Kick),
}

/// Let the connections a publish just reached run on another worker.
///
/// tokio runs a task woken from a worker in that worker's LIFO slot, which no
/// other worker may steal, and wakes no idle worker for it. So a subscriber
/// woken by a publish would wait for the publisher's task to stop, and with
/// input arriving steadily both would share one worker while the other
/// slept. Waking itself moves this task to the back of the run queue, which
/// wakes an idle worker to steal it, while this worker runs the subscriber.
/// (`tokio::task::yield_now` defers the wake until the worker would park, so
/// no other worker is woken.)
async fn yield_to_receivers() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

impl Connection {
    async fn run(&mut self, info: &ConnectionInfo) -> End {
        // From here on shutdown reaches the connection as a kick: the broker
        // cancels, then kicks every registered connection, and this one was
        // registered before it looked.
        if self.shutdown.is_cancelled() {
            return End::Kicked(Kick::Shutdown);
        }
        if let Err(end) = self.open(info).await {
            return end;
        }
        // Grows with the first deliveries: quiet connections keep none.
        let mut batch = Vec::new();
        // One timer for the connection's life, moved as its deadline moves:
        // a new one per wake would be put into tokio's timer wheel and taken
        // out again every time (under the wheel's lock); pushing a
        // registered one later is lock-free.
        let mut armed = self.next_deadline();
        let timer = tokio::time::sleep_until(armed.unwrap_or_else(Instant::now));
        tokio::pin!(timer);
        loop {
            let deadline = self.next_deadline();
            if deadline != armed
                && let Some(at) = deadline
            {
                timer.as_mut().reset(at);
            }
            armed = deadline;
            self.inbuf.reserve(self.read_size);
            let room = self.inbuf.capacity() - self.inbuf.len();
            let wake = tokio::select! {
                biased;
                kick = self.mailbox.kicked() => Wake::Kicked(kick),
                read = self.stream.read_buf(&mut self.inbuf) => Wake::Read(read),
                _ = next_batch(self.guest.state_mut(), &mut batch, self.batch_bytes) => Wake::Deliveries,
                _ = &mut timer, if armed.is_some() => Wake::Deadline,
            };
            let step = match wake {
                Wake::Kicked(kick) => Err(End::Kicked(kick)),
                Wake::Read(Ok(0)) => Err(End::PeerClosed),
                Wake::Read(Ok(n)) => {
                    if n >= room {
                        self.read_size = (self.read_size * 2).min(READ_CHUNK);
                    }
                    let now = Instant::now();
                    self.last_read = now;
                    let handled = self.on_input().await;
                    if std::mem::take(&mut self.guest.state_mut().handed_off)
                        && now >= self.yielded_at + HANDOFF_YIELD_INTERVAL
                    {
                        self.yielded_at = now;
                        yield_to_receivers().await;
                    }
                    handled
                }
                Wake::Read(Err(e)) => {
                    tracing::debug!(peer = %self.peer, "read failed: {e}");
                    Err(End::PeerClosed)
                }
                Wake::Deliveries => self.deliver(&mut batch).await,
                Wake::Deadline => self.on_deadline().await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn open(&mut self, info: &ConnectionInfo) -> Result<(), End> {
        let opened = Box::pin(self.guest.on_open(info)).await;
        self.after_call(opened).await?;
        if !self.inbuf.is_empty() {
            self.on_input().await?;
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        let idle_at = self.idle.map(|idle| self.last_read + idle);
        let frame_at = self.partial_since.map(|since| since + self.frame_timeout);
        [idle_at, self.timer_at, frame_at].into_iter().flatten().min()
    }

    async fn on_deadline(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if self.idle.is_some_and(|idle| now >= self.last_read + idle) {
            return Err(End::IdleTimeout);
        }
        if self.partial_since.is_some_and(|since| now >= since + self.frame_timeout) {
            let env = &self.protocol.env;
            ProtocolMetrics::bump(&env.metrics.framing_errors);
            let why = format!("a frame took longer than {} ms to arrive", self.frame_timeout.as_millis());
            tracing::info!(protocol = %env.name, peer = %self.peer, "closing: {why}");
            return Err(End::Framing(why));
        }
        if self.timer_at.is_some_and(|at| now >= at) {
            self.timer_at = None;
            let fired = Box::pin(self.guest.on_timer()).await;
            self.after_call(fired).await?;
        }
        Ok(())
    }

    /// Hand buffered input to the guest: frames the host finds go to
    /// `on-frames`, a guest that frames itself gets the bytes in `on-stream`.
    async fn on_input(&mut self) -> Result<(), End> {
        match self.framing {
            Framing::Guest => self.guest_stream().await?,
            _ => self.host_frames().await?,
        }
        // A partial frame starts the clock against trickling clients.
        self.partial_since =
            if self.inbuf.is_empty() { None } else { self.partial_since.or(Some(Instant::now())) };
        Ok(())
    }

    /// Split buffered input into batches of frames for `on-frames`.
    async fn host_frames(&mut self) -> Result<(), End> {
        loop {
            let ends = self.native_frames()?;
            let Some(&total) = ends.last() else { return Ok(()) };
            let metrics = &self.protocol.env.metrics;
            metrics.frames_in.fetch_add(ends.len() as u64, std::sync::atomic::Ordering::Relaxed);
            // The frames go to the guest straight from the input buffer.
            let total = total as usize;
            let handled = Box::pin(self.guest.on_frames(&self.inbuf[..total], &ends)).await;
            self.inbuf.advance(total);
            self.after_handling(handled).await?;
        }
    }

    /// Pass buffered input to a guest that frames it, in windows of at most
    /// `max_frame` bytes (so no frame it finds is over the limit), until it
    /// needs more bytes than are buffered.
    async fn guest_stream(&mut self) -> Result<(), End> {
        while !self.inbuf.is_empty() && self.inbuf.len() >= self.guest_needs {
            let window = self.inbuf.len().min(self.max_frame);
            let scan = match Box::pin(self.guest.on_stream(&self.inbuf[..window])).await {
                Ok(Ok(scan)) => scan,
                Ok(Err(reason)) => return self.after_handling(Ok(Err(reason))).await,
                Err(fault) => return self.after_handling(Err(fault)).await,
            };
            let (handled, frames) = (scan.handled as usize, scan.frames as usize);
            if handled > window || frames > handled || (frames == 0) != (handled == 0) {
                let fault = Fault::Violation(format!(
                    "on-stream handled {handled} bytes in {frames} frames, of {window} bytes given"
                ));
                return self.after_handling(Err(fault)).await;
            }
            self.inbuf.advance(handled);
            let metrics = &self.protocol.env.metrics;
            metrics.frames_in.fetch_add(frames as u64, std::sync::atomic::Ordering::Relaxed);
            // What the guest saw of the next frame; bytes beyond the window
            // it has not seen, so they may complete it already.
            let seen = window - handled;
            let needs = match scan.next {
                NextFrame::Invalid(reason) => Err(FramingError::Rejected(reason)),
                NextFrame::Needs(n) if n as usize > self.max_frame => {
                    Err(FramingError::TooLarge { size: n.into(), max: self.max_frame })
                }
                // A claim of needing what it was given would ask again at once.
                NextFrame::Needs(n) => Ok((n as usize).max(seen + 1)),
                NextFrame::Unknown if seen >= self.max_frame => {
                    Err(FramingError::TooLarge { size: seen as u64, max: self.max_frame })
                }
                NextFrame::Unknown => Ok(seen + 1),
            };
            // Replies to the frames handled go out before any framing error.
            self.after_handling(Ok(Ok(()))).await?;
            self.guest_needs = needs.map_err(|error| self.framing_error(error))?;
        }
        Ok(())
    }

    /// Finish a call that handled client input: write what the guest sent,
    /// then close if it refused the input or faulted.
    async fn after_handling(&mut self, handled: Result<Result<(), String>, Fault>) -> Result<(), End> {
        match handled {
            Ok(Ok(())) => self.after_call(Ok(())).await,
            Ok(Err(reason)) => {
                // What the guest sent (an explanation, say) still goes out first.
                self.after_call(Ok(())).await?;
                let env = &self.protocol.env;
                ProtocolMetrics::bump(&env.metrics.protocol_errors);
                tracing::info!(protocol = %env.name, peer = %self.peer, conn = self.mailbox.connection, "closing on protocol error: {}", GuestText(&reason));
                Err(End::ProtocolError)
            }
            Err(fault) => self.after_call(Err(fault)).await,
        }
    }

    /// Where the complete frames at the start of the input end: at most
    /// [`MAX_FRAME_BATCH`] of them and, after the first, [`MAX_BATCH_BYTES`].
    fn native_frames(&mut self) -> Result<Vec<u32>, End> {
        let mut ends = Vec::new();
        let mut at = 0;
        while ends.len() < MAX_FRAME_BATCH {
            match self.framing.next_frame(&self.inbuf[at..], self.max_frame) {
                Ok(Some(len)) => match u32::try_from(at + len) {
                    Ok(end) if ends.is_empty() || at + len <= MAX_BATCH_BYTES => {
                        ends.push(end);
                        at += len;
                    }
                    // The frame goes in the next batch.
                    _ => break,
                },
                Ok(None) => break,
                // The frames before a bad one are handled (and answered) first;
                // the next call starts at the bad one.
                Err(_) if !ends.is_empty() => break,
                Err(e) => return Err(self.framing_error(e)),
            }
        }
        Ok(ends)
    }

    /// Hand a batch of routed messages to the guest.
    async fn deliver(&mut self, batch: &mut Vec<Routed>) -> Result<(), End> {
        if self.guest.state().unacked.len() >= MAX_UNACKED {
            tracing::info!(peer = %self.peer, "closing: {MAX_UNACKED} deliveries unacknowledged");
            return Err(End::Kicked(Kick::SlowConsumer));
        }
        // A buffer per batch rather than one kept per connection: an idle
        // connection would keep its largest batch's buffer for its lifetime.
        let mut packed = Vec::new();
        self.guest.state_mut().pack_deliveries(batch, &mut packed);
        batch.clear();
        let delivered =
            if packed.is_empty() { Ok(()) } else { Box::pin(self.guest.on_deliver(packed)).await };
        self.after_call(delivered).await
    }

    /// Apply what the guest asked for during a call and write its output.
    async fn after_call(&mut self, result: Result<(), Fault>) -> Result<(), End> {
        if let Err(fault) = result {
            return Err(self.fault(fault));
        }
        let state = self.guest.state_mut();
        let timers = std::mem::take(&mut state.timers);
        let ticket = state.ticket.take();
        if let Some(idle) = timers.idle {
            self.idle = idle;
        }
        if let Some(timer) = timers.timer {
            self.timer_at = timer.map(|after| Instant::now() + after);
        }
        if let Some(ticket) = ticket {
            // Acknowledgements in the output promise durability: wait for it.
            let stored = tokio::select! {
                stored = self.core.store.wait(ticket) => stored,
                kick = self.mailbox.kicked() => return Err(End::Kicked(kick)),
            };
            if let Err(e) = stored {
                tracing::error!(peer = %self.peer, "closing: {e}");
                return Err(End::Kicked(Kick::Shutdown));
            }
        }
        self.flush().await?;
        match self.guest.state_mut().close.take() {
            Some(reason) => Err(End::GuestClosed(reason)),
            None => Ok(()),
        }
    }

    /// Write what the guest sent. A client that stops reading blocks only
    /// its own task; a kick or shutdown still ends it.
    async fn flush(&mut self) -> Result<(), End> {
        let out = std::mem::take(&mut self.guest.state_mut().out);
        if out.is_empty() {
            return Ok(());
        }
        // The write first: it nearly always completes at once, and then the
        // kick is not even looked at.
        let written = tokio::select! {
            biased;
            written = self.stream.write_all(&out) => written,
            kick = self.mailbox.kicked() => return Err(End::Kicked(kick)),
        };
        // Keep the allocation for the next call.
        let mut out = out;
        out.clear();
        self.guest.state_mut().out = out;
        written.map_err(|e| {
            tracing::debug!(peer = %self.peer, "write failed: {e}");
            End::PeerClosed
        })
    }

    fn fault(&self, fault: Fault) -> End {
        let env = &self.protocol.env;
        env.record_fault(&fault);
        tracing::warn!(protocol = %env.name, peer = %self.peer, conn = self.mailbox.connection, "guest stopped: {fault}");
        End::Fault(fault)
    }

    fn framing_error(&self, error: FramingError) -> End {
        let env = &self.protocol.env;
        ProtocolMetrics::bump(&env.metrics.framing_errors);
        tracing::info!(protocol = %env.name, peer = %self.peer, "closing on framing error: {error}");
        match error {
            FramingError::TooLarge { .. } => End::TooLarge,
            other => End::Framing(other.to_string()),
        }
    }

    /// Tell the guest, write its goodbye, close the socket, and release
    /// everything the connection held.
    async fn finish(&mut self, end: End) {
        let core = self.core.clone();
        let env = self.protocol.env.clone();
        let connection = self.mailbox.connection;
        if !self.guest.is_poisoned() {
            match Box::pin(self.guest.on_close(&end.reason())).await {
                Ok(()) => {
                    let out = std::mem::take(&mut self.guest.state_mut().out);
                    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, self.stream.write_all(&out)).await;
                }
                Err(fault) => {
                    self.fault(fault);
                }
            }
        }
        let _ = self.stream.shutdown().await;

        let state = self.guest.state_mut();
        for (_, owned) in state.subscriptions.drain() {
            core.router.unsubscribe(owned.key);
        }
        // The will is settled before the session is released, so a session
        // that ends with its connection publishes a delayed will at once.
        if let Some(will) = state.will.take() {
            let deferral = match (&state.session, will.delay_secs) {
                (Some(session), delay) if delay > 0 => Some(session.defer_will(connection)),
                _ => None,
            };
            publish_will(&core, will, deferral, connection, &env.name);
        }
        if let Some(session) = state.session.take() {
            core.sessions.release(&core.router, &session, connection);
        }
        if matches!(end, End::Kicked(Kick::SlowConsumer)) {
            ProtocolMetrics::bump(&env.metrics.slow_consumers);
            tracing::info!(protocol = %env.name, peer = %self.peer, conn = connection, "closed a slow consumer");
        }
        let dropped = self.mailbox.dropped();
        if dropped > 0 {
            env.metrics.deliveries_dropped.fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
        }
        match &end {
            End::GuestClosed(reason) => {
                tracing::debug!(protocol = %env.name, peer = %self.peer, conn = connection, "connection closed by guest: {}", GuestText(reason))
            }
            other => {
                tracing::debug!(protocol = %env.name, peer = %self.peer, conn = connection, end = ?other, "connection closed")
            }
        }
    }
}

/// Publish a will now, or once its delay passes (or its session ends first).
fn publish_will(
    core: &Arc<BrokerCore>,
    will: Will,
    deferral: Option<WillDeferral>,
    connection: u64,
    protocol: &str,
) {
    let Will { message, delay_secs } = will;
    tracing::debug!(protocol, conn = connection, topic = %GuestText(&message.topic), delay_secs, "will due");
    let publish = move |core: &BrokerCore| {
        let stored = Arc::new(StoredMessage::new(message));
        if stored.message.retain {
            core.store.submit(vec![core.retained.update(&stored)]);
        }
        core.router.publish(stored, connection);
    };
    let delay = Duration::from_secs(delay_secs.into());
    match deferral {
        _ if delay_secs == 0 => publish(core),
        Some(WillDeferral::Ended) => publish(core),
        Some(WillDeferral::Resumed) => {
            tracing::debug!(protocol, conn = connection, "will dropped: the session was resumed")
        }
        Some(WillDeferral::Deferred(pending)) => {
            let core = core.clone();
            tokio::spawn(async move {
                if pending.wait(delay).await {
                    publish(&core);
                }
            });
        }
        None => {
            let core = core.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                publish(&core);
            });
        }
    }
}

/// The next batch of deliveries of a serving guest's connection.
async fn next_batch(state: &mut GuestState, batch: &mut Vec<Routed>, max_bytes: usize) {
    match state.inbox.as_mut() {
        Some(inbox) => {
            inbox.recv_batch(batch, MAX_DELIVERY_BATCH, max_bytes).await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake, Waker};

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The yield must wake the task itself while it is running (which tokio
    /// turns into a push to the run queue that wakes an idle worker), not
    /// defer the wake as `tokio::task::yield_now` does.
    #[test]
    fn yielding_to_receivers_wakes_the_task_at_once_and_ends_on_the_next_poll() {
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut yielding = Box::pin(super::yield_to_receivers());
        assert!(yielding.as_mut().poll(&mut cx).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(yielding.as_mut().poll(&mut cx).is_ready());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    }
}
