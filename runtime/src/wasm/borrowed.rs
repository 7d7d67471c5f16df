//! `publish`, `publish-batch` and `send`, reading what the guest passes
//! where it lies in the guest's memory.
//!
//! bindgen's `host` trait takes owned arguments: before a host function
//! runs, wasmtime has copied every string and list the guest passed into an
//! allocation of its own. On the per-message path that copy was thrown
//! away: `send` appended it to the outbound buffer and freed it, and
//! `publish` copied topic and payload out even when nobody subscribed
//! (Redis `PUBLISH` to an empty channel). So these two are linked here with
//! `func_wrap` over wasmtime's `WasmStr` and `WasmList`, which lifting only
//! bounds-checks, and they shadow the generated ones: the bytes are copied
//! once, into what the host keeps (the outbound buffer, a routed message),
//! and only when it keeps them.

use std::borrow::Cow;

use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentType, Lift, Linker, WasmList, WasmStr};

use crate::handoff::HeldDeliveries;
use crate::wasm::bindings::types::{HostError, Message, PublishOutcome, Qos};
use crate::wasm::cpu::HostTime;
use crate::wasm::host::{MAX_HEADERS, check_batch_len};
use crate::wasm::state::GuestState;

/// The `host` interface's name in the linker, as bindgen defines it.
const HOST_INTERFACE: &str = "sandport:protocol/host@0.2.0";

/// Link `publish`, `publish-batch` and `send` over bindgen's definitions
/// of them.
pub fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut host = linker.instance(HOST_INTERFACE)?;
    host.func_wrap("publish", publish)?;
    host.func_wrap("publish-batch", publish_batch)?;
    host.func_wrap("send", send)?;
    linker.allow_shadowing(false);
    Ok(())
}

fn send(mut store: StoreContextMut<'_, GuestState>, (bytes,): (WasmList<u8>,)) -> wasmtime::Result<()> {
    let _timed = HostTime::enter();
    store.data().outbound_room(bytes.len())?;
    // Out of the state while the guest's memory is borrowed to fill it.
    let mut out = std::mem::take(&mut store.data_mut().out);
    out.extend_from_slice(bytes.as_le_slice(&store));
    store.data_mut().out = out;
    Ok(())
}

fn publish(
    mut store: StoreContextMut<'_, GuestState>,
    (message,): (MessageView,),
) -> wasmtime::Result<(Result<PublishOutcome, HostError>,)> {
    Ok((publish_view(&mut store, &message, None)?,))
}

/// Each message as `publish` would take it, in order. The views are lifted
/// first (one pass over the list, bounds-checked), then each is published
/// while the guest's memory is borrowed for it. Deliveries to connections
/// are pushed once the batch is routed, one push per subscriber
/// ([`HeldDeliveries`]).
fn publish_batch(
    mut store: StoreContextMut<'_, GuestState>,
    (messages,): (WasmList<MessageView>,),
) -> wasmtime::Result<(Vec<Result<PublishOutcome, HostError>>,)> {
    check_batch_len(messages.len())?;
    // Sized up front and filled by a plain loop: views are large, and
    // `collect` through `Result` grows the vector from nothing, moving them.
    let mut views = Vec::with_capacity(messages.len());
    for view in messages.iter(&mut store)? {
        views.push(view?);
    }
    let mut outcomes = Vec::with_capacity(views.len());
    let mut held = HeldDeliveries::default();
    for view in &views {
        outcomes.push(publish_view(&mut store, view, Some(&mut held))?);
    }
    {
        let _timed = HostTime::enter();
        held.hand_over();
    }
    Ok((outcomes,))
}

/// Publish one message the guest passed, reading it where it lies.
fn publish_view(
    store: &mut StoreContextMut<'_, GuestState>,
    view: &MessageView,
    held: Option<&mut HeldDeliveries>,
) -> wasmtime::Result<Result<PublishOutcome, HostError>> {
    let headers = view.copy_headers(store)?;
    let published = {
        let message = view.borrow(headers, store)?;
        store.data().publish_ref(message, held)?
    };
    Ok(store.data_mut().record_publish(published))
}

/// The WIT `message` as lifted: where each field lies in guest memory.
#[derive(ComponentType, Lift)]
#[component(record)]
struct MessageView {
    topic: WasmStr,
    payload: WasmList<u8>,
    headers: WasmList<(WasmStr, WasmStr)>,
    #[component(name = "reply-to")]
    reply_to: Option<WasmStr>,
    correlation: Option<WasmList<u8>>,
    #[component(name = "content-type")]
    content_type: Option<WasmStr>,
    #[component(name = "utf8-payload")]
    utf8_payload: bool,
    #[component(name = "expiry-secs")]
    expiry_secs: Option<u32>,
    retain: bool,
    qos: Qos,
}

impl MessageView {
    /// The headers, copied (MQTT 5 user properties, NATS headers; most
    /// messages have none). Reading a list of records needs the store
    /// mutably, so they are copied before the rest is borrowed. Beyond
    /// [`MAX_HEADERS`] none are read: the publish is refused.
    fn copy_headers(
        &self,
        store: &mut StoreContextMut<'_, GuestState>,
    ) -> wasmtime::Result<Vec<(String, String)>> {
        if self.headers.len() == 0 || self.headers.len() > MAX_HEADERS {
            return Ok(Vec::new());
        }
        let views = self.headers.iter(&mut *store)?.collect::<wasmtime::Result<Vec<_>>>()?;
        views
            .iter()
            .map(|(name, value)| {
                Ok((name.to_str(&*store)?.into_owned(), value.to_str(&*store)?.into_owned()))
            })
            .collect()
    }

    /// The message's fields, borrowed from the guest's memory. Text that is
    /// not UTF-8 is an error, as wasmtime's own lifting makes it.
    fn borrow<'a>(
        &self,
        headers: Vec<(String, String)>,
        store: &'a StoreContextMut<'_, GuestState>,
    ) -> wasmtime::Result<MessageRef<'a>> {
        let text = |view: &Option<WasmStr>| view.as_ref().map(|view| view.to_str(store)).transpose();
        Ok(MessageRef {
            topic: self.topic.to_str(store)?,
            payload: self.payload.as_le_slice(store),
            header_count: self.headers.len(),
            headers: Cow::Owned(headers),
            reply_to: text(&self.reply_to)?,
            correlation: self.correlation.as_ref().map(|list| list.as_le_slice(store)),
            content_type: text(&self.content_type)?,
            utf8_payload: self.utf8_payload,
            expiry_secs: self.expiry_secs,
            retain: self.retain,
            qos: self.qos,
        })
    }
}

/// A message a guest publishes or leaves as its will, borrowed: from guest
/// memory, or from an owned [`Message`].
pub struct MessageRef<'a> {
    pub topic: Cow<'a, str>,
    pub payload: &'a [u8],
    /// How many headers the guest passed; `headers` is empty when that was
    /// more than [`MAX_HEADERS`].
    pub header_count: usize,
    pub headers: Cow<'a, [(String, String)]>,
    pub reply_to: Option<Cow<'a, str>>,
    pub correlation: Option<&'a [u8]>,
    pub content_type: Option<Cow<'a, str>>,
    pub utf8_payload: bool,
    pub expiry_secs: Option<u32>,
    pub retain: bool,
    pub qos: Qos,
}

impl<'a> MessageRef<'a> {
    /// Borrow an owned message.
    pub fn of(message: &'a Message) -> Self {
        Self {
            topic: Cow::Borrowed(&message.topic),
            payload: &message.payload,
            header_count: message.headers.len(),
            headers: Cow::Borrowed(&message.headers),
            reply_to: message.reply_to.as_deref().map(Cow::Borrowed),
            correlation: message.correlation.as_deref(),
            content_type: message.content_type.as_deref().map(Cow::Borrowed),
            utf8_payload: message.utf8_payload,
            expiry_secs: message.expiry_secs,
            retain: message.retain,
            qos: message.qos,
        }
    }

    /// Bytes it occupies, charged to the call that passed it.
    pub fn bytes(&self) -> usize {
        self.topic.len()
            + self.payload.len()
            + self.headers.iter().map(|(name, value)| name.len() + value.len()).sum::<usize>()
            + self.reply_to.as_ref().map_or(0, |text| text.len())
            + self.correlation.map_or(0, <[u8]>::len)
            + self.content_type.as_ref().map_or(0, |text| text.len())
    }

    /// The message, copied: what the router stores and forwards.
    pub fn to_message(&self) -> Message {
        Message {
            topic: self.topic.to_string(),
            payload: self.payload.to_vec(),
            headers: self.headers.to_vec(),
            reply_to: self.reply_to.as_ref().map(|text| text.to_string()),
            correlation: self.correlation.map(<[u8]>::to_vec),
            content_type: self.content_type.as_ref().map(|text| text.to_string()),
            utf8_payload: self.utf8_payload,
            expiry_secs: self.expiry_secs,
            retain: self.retain,
            qos: self.qos,
        }
    }
}
