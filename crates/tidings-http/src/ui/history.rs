//! What the dashboard's trends are drawn from: the broker's figures sampled
//! every [`SAMPLE_EVERY`] and kept in memory for [`SAMPLES_MAX`] samples (an
//! hour), so a lag's trend, a topic's rate and a queue's growing dead
//! letters show without a Prometheus.
//!
//! Bounded: at most [`SERIES_MAX`] series (a series per topic, and two per
//! stream group and per queue), each at most [`SAMPLES_MAX`] numbers; a
//! series for a resource that is gone is dropped at the next sample, and
//! beyond the bound new series are not kept (the count of those left out
//! is shown). At the bound that is about 29 MB.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tidings_broker::Broker;

/// How often the figures are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples kept: an hour.
pub(crate) const SAMPLES_MAX: usize = 360;
/// Series kept at most.
pub(crate) const SERIES_MAX: usize = 10_000;
const _: () = assert!(SAMPLES_MAX as u64 * SAMPLE_EVERY.as_secs() == 3600);

/// What a series counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// Events appended to a topic since the broker started (a counter).
    Published(String),
    /// A stream group's lag, in events.
    GroupLag(String),
    /// The sum of a stream group's committed offsets (grows as it consumes).
    GroupCommitted(String),
    /// A queue's unresolved events.
    QueueUnresolved(String),
    /// A queue's dead letters.
    QueueDead(String),
}

#[derive(Default)]
struct Samples {
    /// When each sample was taken, oldest first.
    times: VecDeque<i64>,
    /// Each series' values, aligned with the end of `times` (a series that
    /// began later has fewer).
    series: HashMap<Key, VecDeque<u64>>,
    /// Series left out at the last sample because of [`SERIES_MAX`].
    left_out: usize,
}

/// The samples, shared by the sampler and the pages.
#[derive(Default)]
pub(crate) struct History {
    samples: Mutex<Samples>,
}

/// A series as a page draws it: `(milliseconds, value)`, oldest first.
pub(crate) type Points = Vec<(i64, u64)>;

impl History {
    /// Takes one sample of every topic, stream group and queue.
    pub(crate) async fn sample(&self, broker: &Broker) {
        let now = broker.clock().now().0;
        let mut figures: Vec<(Key, u64)> = Vec::new();
        for t in broker.list_topics() {
            figures.push((Key::Published(t.name.to_string()), t.published));
        }
        for g in broker.list_groups() {
            if let Ok(d) = broker.describe_group(&g) {
                let lag = d.partitions.iter().map(|p| p.lag).sum();
                let committed = d
                    .partitions
                    .iter()
                    .map(|p| p.committed.map_or(0, |o| o.0))
                    .sum();
                figures.push((Key::GroupLag(g.clone()), lag));
                figures.push((Key::GroupCommitted(g), committed));
            }
        }
        for q in broker.list_queue_groups() {
            if let Ok(s) = broker.queue_stats(&q).await {
                let unresolved = s.partitions.iter().map(|p| p.lag).sum::<u64>() + s.redriven.lag;
                figures.push((Key::QueueUnresolved(q.clone()), unresolved));
                figures.push((Key::QueueDead(q), s.dead_letters));
            }
        }
        self.record(now, figures);
    }

    /// Records one sample taken at `now`.
    fn record(&self, now: i64, figures: Vec<(Key, u64)>) {
        let mut s = self.samples.lock().expect("history lock");
        s.times.push_back(now);
        if s.times.len() > SAMPLES_MAX {
            s.times.pop_front();
        }
        let mut present: HashMap<Key, u64> = figures.into_iter().collect();
        // Series of resources that are gone go; the others take their value.
        s.series.retain(|k, _| present.contains_key(k));
        for (key, values) in s.series.iter_mut() {
            if let Some(v) = present.remove(key) {
                values.push_back(v);
                if values.len() > SAMPLES_MAX {
                    values.pop_front();
                }
            }
        }
        let room = SERIES_MAX.saturating_sub(s.series.len());
        s.left_out = present.len().saturating_sub(room);
        for (key, v) in present.into_iter().take(room) {
            s.series.insert(key, VecDeque::from([v]));
        }
    }

    /// A series' points, oldest first; empty when it has none.
    pub(crate) fn points(&self, key: &Key) -> Points {
        let s = self.samples.lock().expect("history lock");
        let Some(values) = s.series.get(key) else {
            return Vec::new();
        };
        let skip = s.times.len() - values.len();
        s.times
            .iter()
            .skip(skip)
            .copied()
            .zip(values.iter().copied())
            .collect()
    }

    /// Series left out at the last sample for want of room.
    pub(crate) fn left_out(&self) -> usize {
        self.samples.lock().expect("history lock").left_out
    }
}

/// How fast a counter grew over the last `window`, per second; `None`
/// without two samples in it.
pub(crate) fn rate(points: &Points, window: Duration) -> Option<f64> {
    let &(last_t, last_v) = points.last()?;
    let since = last_t - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let &(first_t, first_v) = points.iter().find(|(t, _)| *t >= since)?;
    if last_t <= first_t {
        return None;
    }
    Some(last_v.saturating_sub(first_v) as f64 * 1000.0 / (last_t - first_t) as f64)
}

/// The change of a figure over the last `window` (positive: it grew);
/// `None` without two samples in it.
pub(crate) fn change(points: &Points, window: Duration) -> Option<i64> {
    let &(last_t, last_v) = points.last()?;
    let since = last_t - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let &(first_t, first_v) = points.iter().find(|(t, _)| *t >= since)?;
    (last_t > first_t).then(|| last_v as i64 - first_v as i64)
}

/// A line of `points` as an SVG image, `width` × `height` pixels, in the
/// text's colour; `label` says what it shows to those who cannot see it.
pub(crate) fn sparkline(points: &Points, width: u32, height: u32, label: &str) -> String {
    let label = escape(label);
    if points.len() < 2 {
        let y = height / 2 + 4;
        return format!(
            "<svg class=\"spark\" role=\"img\" aria-label=\"{label}: not enough samples yet\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\"><title>{label}: not enough samples yet</title><text x=\"4\" y=\"{y}\" fill=\"currentColor\" font-size=\"12\">collecting samples (one every 10 s)</text></svg>"
        );
    }
    let (t0, t1) = (points[0].0, points[points.len() - 1].0);
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1);
    let span = (t1 - t0).max(1) as f64;
    let (w, h) = (f64::from(width) - 2.0, f64::from(height) - 2.0);
    let line: Vec<String> = points
        .iter()
        .map(|&(t, v)| {
            let x = 1.0 + (t - t0) as f64 / span * w;
            let y = 1.0 + h - v as f64 / max as f64 * h;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let (first, last) = (points[0].1, points[points.len() - 1].1);
    let minutes = (t1 - t0) / 60_000;
    format!(
        "<svg class=\"spark\" role=\"img\" aria-label=\"{label}: from {first} to {last} over {minutes} min, at most {max}\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\"><title>{label}: from {first} to {last} over {minutes} min, at most {max}</title><polyline fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.5\" points=\"{}\"/></svg>",
        line.join(" ")
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// When a group behind by `lag` events catches up, consuming at
/// `consumed_per_s` while `published_per_s` arrive; `None` while it does
/// not gain.
pub(crate) fn time_to_drain_ms(lag: u64, consumed_per_s: f64, published_per_s: f64) -> Option<u64> {
    let gain = consumed_per_s - published_per_s;
    if lag == 0 {
        return Some(0);
    }
    (gain > 0.0).then(|| (lag as f64 / gain * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> Key {
        Key::Published(format!("t{n}"))
    }

    #[test]
    fn series_keep_the_last_hour_and_drop_what_is_gone() {
        let h = History::default();
        for i in 0..(SAMPLES_MAX as i64 + 20) {
            let mut figures = vec![(key(1), i as u64)];
            if i < 5 {
                figures.push((key(2), 0));
            }
            h.record(i * 10_000, figures);
        }
        let p = h.points(&key(1));
        assert_eq!(p.len(), SAMPLES_MAX);
        assert_eq!(p[0], (20 * 10_000, 20));
        assert!(h.points(&key(2)).is_empty(), "a gone series is dropped");
        // A series that began late is aligned with the latest times.
        h.record(1_000_000_000, vec![(key(1), 1), (key(3), 7)]);
        assert_eq!(h.points(&key(3)), vec![(1_000_000_000, 7)]);
    }

    #[test]
    fn no_more_series_than_the_bound() {
        let h = History::default();
        let figures: Vec<(Key, u64)> = (0..SERIES_MAX + 5).map(|n| (key(n), 1)).collect();
        h.record(0, figures);
        assert_eq!(h.left_out(), 5);
        assert_eq!(h.samples.lock().unwrap().series.len(), SERIES_MAX);
    }

    #[test]
    fn rates_changes_and_drain_times() {
        let points: Points = vec![(0, 100), (10_000, 150), (20_000, 300)];
        assert_eq!(rate(&points, Duration::from_secs(60)), Some(10.0));
        assert_eq!(rate(&points, Duration::from_secs(10)), Some(15.0));
        assert_eq!(rate(&points[..1].to_vec(), Duration::from_secs(60)), None);
        assert_eq!(change(&points, Duration::from_secs(60)), Some(200));
        assert_eq!(time_to_drain_ms(100, 15.0, 5.0), Some(10_000));
        assert_eq!(time_to_drain_ms(100, 5.0, 5.0), None);
        assert_eq!(time_to_drain_ms(0, 0.0, 5.0), Some(0));
        let svg = sparkline(&points, 100, 20, "lag <of> \"billing\"");
        assert!(
            svg.contains("lag &lt;of&gt; &quot;billing&quot;: from 100 to 300"),
            "{svg}"
        );
        assert!(svg.contains("<polyline"));
    }
}
