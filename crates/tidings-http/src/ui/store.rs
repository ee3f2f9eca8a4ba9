//! The event store: `$all` (or one category) in the global order, with a
//! live follow (`/ui/store`), and one stream as a timeline
//! (`/ui/streams/{stream}`), events on a time axis with the gaps between
//! them, as a saga's or an aggregate's history reads.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use tidings_api::ErrorCode;
use tidings_auth::acl::{Operation, ResourceType};
use tidings_store::{
    EmbeddedStore, EventStore, Position, ReadStream, RecordedEvent, Selector, StreamName,
    StreamVersion, Subscription,
};

use super::format::{count, duration_ms, preview, query, When};
use super::{html, Chrome};
use crate::access::ALL_STREAMS;
use crate::sse::{self, Item, Source};
use crate::stop::Stop;
use crate::{Api, ApiError};

/// Events on one page of `$all`, by default and at most.
const ALL_PAGE_DEFAULT: usize = 50;
const ALL_PAGE_MAX: usize = 500;
/// Events of a stream its timeline shows (the newest).
const TIMELINE_EVENTS_MAX: usize = 500;
/// Characters of an event's data in a row.
const DATA_CHARS: usize = 120;

/// One event of the store as a row.
pub(crate) struct StoreRow {
    pub(crate) position: u64,
    pub(crate) stream: String,
    pub(crate) version: u64,
    pub(crate) when: When,
    pub(crate) ty: String,
    pub(crate) id: String,
    pub(crate) data: String,
}

impl StoreRow {
    fn of(e: &RecordedEvent) -> StoreRow {
        StoreRow {
            position: e.position.0,
            stream: e.stream.to_string(),
            version: e.version.0,
            when: When::of(e.recorded),
            ty: e.event.ty().to_owned(),
            id: e.event.id().to_owned(),
            data: preview(
                &e.event
                    .data()
                    .map(|d| String::from_utf8_lossy(d).into_owned())
                    .unwrap_or_default(),
                DATA_CHARS,
            ),
        }
    }
}

/// A row as the live follow sends it.
#[derive(Template)]
#[template(path = "ui/store_row.html")]
struct StoreRowFragment<'a> {
    row: &'a StoreRow,
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct AllQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    limit: String,
}

#[derive(Template)]
#[template(path = "ui/store.html")]
struct AllPage {
    chrome: Chrome,
    category: String,
    from: String,
    limit: String,
    rows: Vec<StoreRow>,
    summary: String,
    older: Option<String>,
    newer: Option<String>,
    follow: String,
}

fn selector(category: &str) -> Result<Selector, ApiError> {
    match category.trim() {
        "" => Ok(Selector::All),
        c if c.contains('-') => Err(ApiError::new(
            ErrorCode::InvalidCategory,
            format!("category {c:?} must hold no '-': it is the part of a stream name before the first '-'"),
        )),
        c => Ok(Selector::Category(c.to_owned())),
    }
}

/// `GET /ui/store?from=&category=&limit=`: the global order, the newest
/// page unless `from` names a position.
pub(crate) async fn all(
    State(api): State<Api>,
    chrome: Chrome,
    Query(q): Query<AllQuery>,
) -> Response {
    let shown = async {
        chrome
            .access
            .require(ResourceType::Stream, ALL_STREAMS, Operation::Read)?;
        let selector = selector(&q.category)?;
        let limit = match q.limit.trim() {
            "" => ALL_PAGE_DEFAULT,
            l => match l.parse::<usize>() {
                Ok(n) if (1..=ALL_PAGE_MAX).contains(&n) => n,
                _ => {
                    return Err(ApiError::invalid_request(format!(
                        "limit={l:?}: it must be 1..={ALL_PAGE_MAX}"
                    )))
                }
            },
        };
        let store = api.store();
        let head = store.head().await?.0;
        let from = match q.from.trim() {
            "" | "latest" => head.saturating_sub(limit as u64),
            "earliest" => 0,
            f => f.parse::<u64>().map_err(|_| {
                ApiError::invalid_request(format!(
                    "from={f:?}: expected earliest, latest or a global position"
                ))
            })?,
        };
        let slice = store.read_all(&selector, Position(from), limit).await?;
        Ok::<_, ApiError>((slice, head, from, limit))
    }
    .await;
    let (slice, head, from, limit) = match shown {
        Ok(s) => s,
        Err(e) => return chrome.error(e),
    };
    let rows: Vec<StoreRow> = slice.events.iter().map(StoreRow::of).collect();
    let link = |from: u64| {
        format!(
            "/ui/store?{}",
            query(&[
                ("from", &from.to_string()),
                ("category", q.category.trim()),
                ("limit", q.limit.trim()),
            ])
        )
    };
    let older = (from > 0).then(|| link(from.saturating_sub(limit as u64)));
    let newer = (slice.next.0 < head).then(|| link(slice.next.0));
    let summary = format!(
        "{} event{} from position {} on{}; the store's next position is {}",
        count(rows.len() as u64),
        if rows.len() == 1 { "" } else { "s" },
        count(from),
        if q.category.trim().is_empty() {
            String::new()
        } else {
            format!(" in category {}", q.category.trim())
        },
        count(head)
    );
    let follow = format!(
        "/ui/store/follow?{}",
        query(&[
            ("category", q.category.trim()),
            ("from", &slice.next.0.to_string())
        ])
    );
    html(&AllPage {
        category: q.category.trim().to_owned(),
        from: q.from.trim().to_owned(),
        limit: q.limit.trim().to_owned(),
        rows,
        summary,
        older,
        newer,
        follow,
        chrome,
    })
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct FollowQuery {
    #[serde(default)]
    category: String,
    #[serde(default)]
    from: Option<u64>,
    /// The position of the last row a resumed follow has.
    #[serde(default)]
    at: Option<u64>,
}

/// `GET /ui/store/follow?category=&from=`: rows of the events appended
/// from `from` (or after the `Last-Event-ID` position) on, as they come.
pub(crate) async fn follow(
    State(api): State<Api>,
    chrome: Chrome,
    headers: HeaderMap,
    Query(q): Query<FollowQuery>,
) -> Response {
    let opened = async {
        chrome
            .access
            .require(ResourceType::Stream, ALL_STREAMS, Operation::Read)?;
        let selector = selector(&q.category)?;
        let from = match headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(last) => last.saturating_add(1),
            None => match (q.at, q.from) {
                (Some(last), _) => last.saturating_add(1),
                (None, Some(f)) => f,
                (None, None) => api.store().head().await?.0,
            },
        };
        let subscription = Subscription::new(api.store().clone(), selector, Position(from));
        sse::open(&api, Following(subscription))
    }
    .await;
    opened.unwrap_or_else(IntoResponse::into_response)
}

/// The store followed for the page.
struct Following(Subscription<EmbeddedStore>);

impl Source for Following {
    async fn next(&mut self, stop: &Stop) -> Result<Vec<Item>, ApiError> {
        let events = tokio::select! {
            events = self.0.next_batch(256, sse::SOURCE_WAIT) => events?,
            () = stop.wait() => Vec::new(),
        };
        events
            .iter()
            .map(|e| {
                let row = StoreRow::of(e);
                let html = StoreRowFragment { row: &row }
                    .render()
                    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
                Ok(Item::text(e.position.0.to_string(), html))
            })
            .collect()
    }
}

#[derive(Template)]
#[template(path = "ui/stream.html")]
struct StreamPage {
    chrome: Chrome,
    stream: String,
    category: String,
    version: Option<u64>,
    deleted: bool,
    rows: Vec<TimelineRow>,
    timeline: String,
    shown_note: String,
}

struct TimelineRow {
    row: StoreRow,
    /// Since the event before it.
    gap: String,
}

/// `GET /ui/streams/{stream}`: the stream's newest events, oldest first, on
/// a time axis.
pub(crate) async fn stream(
    State(api): State<Api>,
    chrome: Chrome,
    Path(name): Path<String>,
) -> Response {
    let read = async {
        chrome
            .access
            .require(ResourceType::Stream, &name, Operation::Read)?;
        let stream = StreamName::new(&name)
            .map_err(|e| ApiError::new(ErrorCode::InvalidStream, e.to_string()))?;
        let info = api.store().stream_info(&stream).await?;
        let slice = api
            .store()
            .read_stream(&stream, ReadStream::backward().limit(TIMELINE_EVENTS_MAX))
            .await?;
        Ok::<_, ApiError>((stream, info, slice))
    }
    .await;
    let (stream, info, slice) = match read {
        Ok(r) => r,
        Err(e) => return chrome.error(e),
    };
    let mut events = slice.events;
    events.reverse();
    let mut rows = Vec::with_capacity(events.len());
    let mut before: Option<i64> = None;
    for e in &events {
        let gap = match before {
            None => "–".to_owned(),
            Some(t) => format!(
                "+{}",
                duration_ms(u64::try_from(e.recorded.0 - t).unwrap_or(0))
            ),
        };
        before = Some(e.recorded.0);
        rows.push(TimelineRow {
            row: StoreRow::of(e),
            gap,
        });
    }
    let shown_note = match info.version {
        Some(v) if v.0 + 1 > events.len() as u64 => format!(
            "The newest {} of its {} events.",
            count(events.len() as u64),
            count(v.0 + 1)
        ),
        _ => String::new(),
    };
    html(&StreamPage {
        timeline: timeline(&events, &stream),
        category: stream.category().to_owned(),
        version: info.version.map(|v: StreamVersion| v.0),
        deleted: info.deleted,
        stream: stream.to_string(),
        rows,
        shown_note,
        chrome,
    })
}

/// The events as dots on a time axis, each type on its own line, as SVG:
/// when things happened, how far apart, and in which order.
fn timeline(events: &[RecordedEvent], stream: &StreamName) -> String {
    const WIDTH: f64 = 880.0;
    const LANE: f64 = 22.0;
    const LEFT: f64 = 180.0;
    if events.is_empty() {
        return String::new();
    }
    let mut types: Vec<&str> = Vec::new();
    for e in events {
        if !types.contains(&e.event.ty()) {
            types.push(e.event.ty());
        }
    }
    let (t0, t1) = (events[0].recorded.0, events[events.len() - 1].recorded.0);
    let span = (t1 - t0).max(1) as f64;
    let height = LANE * types.len() as f64 + 24.0;
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut svg = format!(
        "<svg class=\"timeline\" role=\"img\" width=\"{}\" height=\"{height}\" viewBox=\"0 0 {} {height}\" aria-labelledby=\"timeline-title\"><title id=\"timeline-title\">{} events of {} over {}, by type</title>",
        WIDTH + LEFT + 20.0,
        WIDTH + LEFT + 20.0,
        events.len(),
        escape(stream.as_str()),
        duration_ms(u64::try_from(t1 - t0).unwrap_or(0))
    );
    for (i, ty) in types.iter().enumerate() {
        let y = LANE * i as f64 + LANE / 2.0 + 4.0;
        svg.push_str(&format!(
            "<text x=\"0\" y=\"{:.1}\" fill=\"currentColor\" font-size=\"12\">{}</text><line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"currentColor\" stroke-opacity=\"0.25\"/>",
            y + 4.0,
            escape(&preview(ty, 26)),
            LEFT + WIDTH
        ));
    }
    for e in events {
        let lane = types.iter().position(|t| *t == e.event.ty()).unwrap_or(0);
        let x = LEFT + (e.recorded.0 - t0) as f64 / span * WIDTH;
        let y = LANE * lane as f64 + LANE / 2.0 + 4.0;
        svg.push_str(&format!(
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"5\" fill=\"currentColor\"><title>v{} {} at {}</title></circle>",
            e.version.0,
            escape(e.event.ty()),
            When::of(e.recorded).text
        ));
    }
    let axis = LANE * types.len() as f64 + 18.0;
    svg.push_str(&format!(
        "<text x=\"{LEFT}\" y=\"{axis:.1}\" fill=\"currentColor\" font-size=\"11\">{}</text><text x=\"{:.1}\" y=\"{axis:.1}\" fill=\"currentColor\" font-size=\"11\" text-anchor=\"end\">{}</text></svg>",
        When::of(events[0].recorded).text,
        LEFT + WIDTH,
        When::of(events[events.len() - 1].recorded).text
    ));
    svg
}
