//! `GET /ui/catalog`: the event catalog — each topic's event types as the
//! topics hold them (counts, first and last seen, sources), the schema
//! documenting each, who consumes them, and the drift between what runs and
//! what is documented. The same catalog as `GET /v1/catalog`.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use tidings_api::Catalog;
use tidings_auth::acl::{Operation, ResourceType};
use tidings_types::TimestampMs;

use super::format::{count, When};
use super::{html, Chrome};
use crate::access::CLUSTER;
use crate::Api;

#[derive(Template)]
#[template(path = "ui/catalog.html")]
struct CatalogPage {
    chrome: Chrome,
    catalog: Catalog,
    topics: Vec<TopicTypes>,
    q: String,
    shown: String,
    pages: Vec<(usize, String, bool)>,
    /// The first drift entries (kind, detail), and how many more there are.
    drift: Vec<(String, String)>,
    drift_more: usize,
}

/// Drift entries listed at most.
const DRIFT_SHOWN_MAX: usize = 50;

/// Topics on one page of the catalog.
const TOPICS_PER_PAGE: usize = 50;

#[derive(serde::Deserialize, Default)]
pub(crate) struct CatalogQuery {
    /// Topics or types whose name holds this.
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<usize>,
}

struct TopicTypes {
    name: String,
    validation: String,
    unscanned: String,
    consumers: String,
    types: Vec<TypeRow>,
}

struct TypeRow {
    ty: String,
    count: String,
    first: When,
    last: When,
    sources: String,
    schema: String,
    browse: String,
}

/// `GET /ui/catalog`; the catalog is the server's, so it needs what the
/// API's catalog needs: `Describe` on the server.
pub(crate) async fn page(
    State(api): State<Api>,
    chrome: Chrome,
    Query(query_in): Query<CatalogQuery>,
) -> Response {
    if let Err(e) = chrome
        .access
        .require(ResourceType::Cluster, CLUSTER, Operation::Describe)
    {
        return chrome.error(e);
    }
    let catalog = match crate::catalog::build(&api).await {
        Ok(c) => c,
        Err(e) => return chrome.error(e),
    };
    let needle = query_in.q.trim().to_lowercase();
    let matching: Vec<_> = catalog
        .topics
        .iter()
        .filter(|t| !t.events.is_empty())
        .filter(|t| chrome.may_describe(ResourceType::Topic, &t.name))
        .filter(|t| {
            needle.is_empty()
                || t.name.to_lowercase().contains(&needle)
                || t.events.iter().any(|e| {
                    e.ty.as_deref()
                        .is_some_and(|ty| ty.to_lowercase().contains(&needle))
                })
        })
        .collect();
    let page_count = matching.len().div_ceil(TOPICS_PER_PAGE).max(1);
    let page = query_in.page.unwrap_or(1).clamp(1, page_count);
    let first = (page - 1) * TOPICS_PER_PAGE;
    let shown = format!(
        "{} topic{} with events{}{}",
        count(matching.len() as u64),
        if matching.len() == 1 { "" } else { "s" },
        if needle.is_empty() {
            String::new()
        } else {
            format!(" matching {:?}", query_in.q.trim())
        },
        if page_count > 1 {
            format!("; page {page} of {page_count}")
        } else {
            String::new()
        }
    );
    let pages = (1..=page_count)
        .map(|n| {
            let number = n.to_string();
            let href = format!(
                "/ui/catalog?{}",
                super::format::query(&[
                    ("q", query_in.q.trim()),
                    ("page", if n == 1 { "" } else { &number })
                ])
            );
            (n, href, n == page)
        })
        .collect();
    let topics = matching
        .into_iter()
        .skip(first)
        .take(TOPICS_PER_PAGE)
        .map(|t| TopicTypes {
            name: t.name.clone(),
            validation: t.schema_validation.clone(),
            unscanned: count(t.unscanned),
            consumers: t
                .consumers
                .iter()
                .map(|c| format!("{} ({})", c.group, c.mode))
                .collect::<Vec<_>>()
                .join(", "),
            types: t
                .events
                .iter()
                .map(|e| TypeRow {
                    ty: e.ty.clone().unwrap_or_else(|| "(raw records)".to_owned()),
                    count: count(e.count),
                    first: When::of(TimestampMs(e.first_seen_ms)),
                    last: When::of(TimestampMs(e.last_seen_ms)),
                    sources: format!(
                        "{}{}",
                        e.sources.join(", "),
                        if e.more_sources { ", …" } else { "" }
                    ),
                    schema: e.schema.as_ref().map_or_else(
                        || "none".to_owned(),
                        |s| format!("{} v{} (id {})", s.subject, s.version, s.id),
                    ),
                    browse: match &e.ty {
                        Some(ty) => format!(
                            "/ui/topics/{}/events?{}",
                            t.name,
                            super::format::query(&[("from", "earliest"), ("type", ty)])
                        ),
                        None => format!("/ui/topics/{}/events", t.name),
                    },
                })
                .collect(),
        })
        .collect();
    let drift = catalog
        .drift
        .iter()
        .take(DRIFT_SHOWN_MAX)
        .map(|d| (d.kind.clone(), d.detail.clone()))
        .collect();
    let drift_more = catalog.drift.len().saturating_sub(DRIFT_SHOWN_MAX);
    html(&CatalogPage {
        topics,
        drift,
        drift_more,
        catalog,
        q: query_in.q.trim().to_owned(),
        shown,
        pages,
        chrome,
    })
}
