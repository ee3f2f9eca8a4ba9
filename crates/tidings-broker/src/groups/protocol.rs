//! The consumer protocol's subscription and assignment (Kafka's
//! `ConsumerProtocolSubscription` and `ConsumerProtocolAssignment`), the
//! opaque bytes Kafka consumers exchange through JoinGroup and SyncGroup.
//! The broker reads them to show who owns what and to put HTTP members in a
//! Kafka group, and writes a subscription for each HTTP member. Every
//! version so far starts with the fields read here; later fields are skipped.
//! Every length is checked against the bytes left before it is used.

use bytes::{BufMut, Bytes, BytesMut};
use tidings_types::TopicName;

/// A version 0 subscription to `topic`, no user data: what the Kafka leader
/// sees of an HTTP member.
pub(crate) fn subscription(topic: &TopicName) -> Bytes {
    let name = topic.as_str().as_bytes();
    let mut out = BytesMut::with_capacity(12 + name.len());
    out.put_i16(0);
    out.put_i32(1);
    out.put_i16(i16::try_from(name.len()).expect("topic names are short"));
    out.put_slice(name);
    out.put_i32(-1);
    out.freeze()
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    /// An array count: each element takes at least `min_bytes`.
    fn count(&mut self, min_bytes: usize) -> Option<usize> {
        let n = usize::try_from(self.i32()?).ok()?;
        (n.saturating_mul(min_bytes) <= self.0.len()).then_some(n)
    }
    fn topic(&mut self) -> Option<TopicName> {
        let len = usize::try_from(self.i16()?).ok()?;
        let bytes = self.take(len)?;
        TopicName::new(std::str::from_utf8(bytes).ok()?).ok()
    }
}

/// The topics a subscription names, or `None` when it is not a consumer
/// protocol subscription.
pub(crate) fn subscription_topics(meta: &[u8]) -> Option<Vec<TopicName>> {
    let mut r = Reader(meta);
    if r.i16()? < 0 {
        return None;
    }
    let n = r.count(2)?;
    (0..n).map(|_| r.topic()).collect()
}

/// The partitions an assignment gives, by topic, or `None` when it is not a
/// consumer protocol assignment.
pub(crate) fn assignment_partitions(bytes: &[u8]) -> Option<Vec<(TopicName, u32)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut r = Reader(bytes);
    if r.i16()? < 0 {
        return None;
    }
    let topics = r.count(6)?;
    let mut out = Vec::new();
    for _ in 0..topics {
        let topic = r.topic()?;
        let n = r.count(4)?;
        for _ in 0..n {
            out.push((topic.clone(), u32::try_from(r.i32()?).ok()?));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicName {
        TopicName::new(name).unwrap()
    }

    #[test]
    fn an_http_members_subscription_reads_back() {
        let bytes = subscription(&topic("orders"));
        assert_eq!(subscription_topics(&bytes), Some(vec![topic("orders")]));
    }

    #[test]
    fn assignments_as_clients_write_them_read_back_and_garbage_does_not() {
        // Version 1, {orders: [0, 2], payments: [1]}, null user data.
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_i32(2);
        for (t, parts) in [("orders", vec![0, 2]), ("payments", vec![1])] {
            b.put_i16(t.len() as i16);
            b.put_slice(t.as_bytes());
            b.put_i32(parts.len() as i32);
            for p in parts {
                b.put_i32(p);
            }
        }
        b.put_i32(-1);
        assert_eq!(
            assignment_partitions(&b),
            Some(vec![
                (topic("orders"), 0),
                (topic("orders"), 2),
                (topic("payments"), 1)
            ])
        );
        assert_eq!(assignment_partitions(&[]), Some(vec![]));
        for cut in 1..b.len() - 4 {
            assert_eq!(assignment_partitions(&b[..cut]), None, "cut at {cut}");
        }
        // A count far past the bytes is refused before anything is reserved.
        let mut huge = BytesMut::new();
        huge.put_i16(0);
        huge.put_i32(i32::MAX);
        assert_eq!(assignment_partitions(&huge), None);
        assert_eq!(subscription_topics(&huge), None);
        assert_eq!(subscription_topics(b"meta"), None);
    }
}
