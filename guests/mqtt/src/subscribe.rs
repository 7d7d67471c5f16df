//! SUBSCRIBE and UNSUBSCRIBE (3.1.1 section 3.8-3.11, 5.0 section 3.8-3.11):
//! options, shared subscriptions (`$share/GROUP/filter`), subscription
//! identifiers and retain handling, mapped onto host subscriptions.

use sandport_guest::host;
use sandport_guest::types::{ErrorCode, FilterKind, RetainedHandling, SubscribeOptionsParam};

use crate::codec::kind;
use crate::error::MqttError;
use crate::packets::{self, Subscription};
use crate::publish::qos_from;
use crate::reason::{self, v3};
use crate::state::{Conn, SubscriptionMeta};

/// Split `$share/GROUP/filter` into group and filter (5.0 4.8.2; many 3.1.1
/// clients use it too). `Err` for a malformed share.
pub fn shared(filter: &str) -> Result<(Option<&str>, &str), ()> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Ok((None, filter));
    };
    match rest.split_once('/') {
        Some((group, inner)) if !group.is_empty() && !group.contains(['+', '#']) && !inner.is_empty() => {
            Ok((Some(group), inner))
        }
        _ => Err(()),
    }
}

pub fn on_subscribe(conn: &mut Conn, flags: u8, body: &[u8], out: &mut Vec<u8>) -> Result<(), MqttError> {
    let v5 = conn.v5();
    let subscribe = packets::subscribe(flags, body, v5)?;
    let mut codes = Vec::with_capacity(subscribe.filters.len());
    for subscription in &subscribe.filters {
        codes.push(subscribe_one(conn, subscription, subscribe.subscription_id)?);
    }
    conn.save_subscriptions();
    packets::put_sub_ack(out, kind::SUBACK, subscribe.packet_id, v5, &codes);
    Ok(())
}

/// Make one subscription; returns its SUBACK code.
fn subscribe_one(
    conn: &mut Conn,
    subscription: &Subscription<'_>,
    identifier: Option<u32>,
) -> Result<u8, MqttError> {
    let v5 = conn.v5();
    let failure = |v5_code: u8| if v5 { v5_code } else { v3::SUBACK_FAILURE };
    let Ok((group, filter)) = shared(subscription.filter) else {
        return Ok(failure(reason::TOPIC_FILTER_INVALID));
    };
    if group.is_some() && subscription.no_local {
        return Err(MqttError::protocol("no local set on a shared subscription"));
    }
    let existing = conn.remove_subscription(subscription.filter);
    let retained = match (group, subscription.retain_handling) {
        // Retained messages are not sent for shared subscriptions.
        (Some(_), _) => RetainedHandling::Skip,
        (None, 0) => RetainedHandling::Send,
        (None, 1) if existing.is_none() => RetainedHandling::Send,
        _ => RetainedHandling::Skip,
    };
    let options = SubscribeOptionsParam {
        kind: FilterKind::Wildcard,
        max_qos: qos_from(subscription.qos),
        group,
        no_local: subscription.no_local,
        retained,
    };
    // A repeated filter replaces the earlier subscription (3.8.4).
    if let Some(old) = existing {
        let _ = host::unsubscribe(old.host_id);
    }
    match host::subscribe(filter, options) {
        Ok(host_id) => {
            let meta = SubscriptionMeta {
                host_id,
                identifier,
                retain_as_published: v5 && subscription.retain_as_published,
            };
            conn.add_subscription(subscription.filter.to_string(), meta);
            Ok(subscription.qos)
        }
        Err(e) => {
            sandport_guest::host::log(
                sandport_guest::types::LogLevel::Info,
                &format!("SUBSCRIBE to {} refused: {}", subscription.filter, e.message),
            );
            Ok(failure(match e.code {
                ErrorCode::Invalid => reason::TOPIC_FILTER_INVALID,
                ErrorCode::NotAuthorized => reason::NOT_AUTHORIZED,
                ErrorCode::QuotaExceeded => reason::QUOTA_EXCEEDED,
                ErrorCode::Unsupported => reason::IMPLEMENTATION_SPECIFIC,
                ErrorCode::Unavailable => reason::UNSPECIFIED_ERROR,
            }))
        }
    }
}

pub fn on_unsubscribe(conn: &mut Conn, flags: u8, body: &[u8], out: &mut Vec<u8>) -> Result<(), MqttError> {
    let v5 = conn.v5();
    let (packet_id, filters) = packets::unsubscribe(flags, body, v5)?;
    let codes: Vec<u8> = filters
        .iter()
        .map(|filter| match conn.remove_subscription(filter) {
            Some(meta) => {
                let _ = host::unsubscribe(meta.host_id);
                reason::SUCCESS
            }
            None => reason::NO_SUBSCRIPTION_EXISTED,
        })
        .collect();
    conn.save_subscriptions();
    packets::put_sub_ack(out, kind::UNSUBACK, packet_id, v5, &codes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_subscriptions_split() {
        assert_eq!(shared("$share/g/a/#"), Ok((Some("g"), "a/#")));
        assert_eq!(shared("a/#"), Ok((None, "a/#")));
        assert!(shared("$share//a").is_err());
        assert!(shared("$share/g").is_err());
        assert!(shared("$share/g+/a").is_err());
    }
}
