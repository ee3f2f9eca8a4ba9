//! The web dashboard at `/ui`: pages rendered on the server from the
//! broker's state, readable with JavaScript off, one address for every page
//! and every view of it (filters, positions and pages are in the URL).
//!
//! A small script (`assets/ui.js`) enhances them where it is on: live parts
//! refresh in place, a topic's live tail follows new events over one
//! Server-Sent Events stream, times are shown in the zone chosen, and
//! keyboard shortcuts move around. No page loads anything from beyond the
//! server, and the Content-Security-Policy says so to the browser.
//!
//! Viewing never consumes: pages read topics the way `GET
//! /v1/topics/{topic}/events` does, never through a group's poll or a
//! queue's receive, so looking at a topic leases, commits and advances
//! nothing.
//!
//! The pages sit behind the API's middleware: the same login, the same
//! draining, the same request log. What the principal may not describe is
//! not listed.
//!
//! Modules: `format` (numbers, sizes, times as pages show them), then one
//! per page family: `overview`, `topics`, `browse` (a topic's events: the
//! browser, one event, the export and the live tail), `groups`, `queues`.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use tidings_api::ErrorCode;
use tidings_auth::acl::{Operation, ResourceType};

use crate::access::Access;
use crate::{Api, ApiError};

pub(crate) use audit::AuditLog;
pub(crate) use history::History;
pub use history::SAMPLE_EVERY as HISTORY_SAMPLE_EVERY;

mod actions;
mod audit;
mod browse;
mod catalog;
mod format;
mod groups;
mod history;
mod journey;
mod overview;
mod queues;
mod store;
mod topics;

/// How `tidings serve` serves the dashboard: settings of `tidings serve`,
/// each a flag, a `TIDINGS_UI_*` environment variable and a key of the
/// configuration file's `[ui]` section.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiSettings {
    /// Serve the web dashboard at /ui.
    #[arg(
        id = "ui.enabled",
        long = "ui",
        value_name = "BOOL",
        env = "TIDINGS_UI",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub enabled: bool,
    /// Offer no control that changes anything: the dashboard only shows.
    #[arg(
        id = "ui.read_only",
        long = "ui-read-only",
        env = "TIDINGS_UI_READ_ONLY",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub read_only: bool,
    /// A name for this server shown on every page (and in its title), such
    /// as "orders-staging".
    #[arg(
        id = "ui.environment",
        long = "ui-environment",
        value_name = "NAME",
        env = "TIDINGS_UI_ENVIRONMENT"
    )]
    pub environment: Option<String>,
    /// Mark every page as PRODUCTION, in colour, so nobody mistakes it.
    #[arg(
        id = "ui.production",
        long = "ui-production",
        env = "TIDINGS_UI_PRODUCTION",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub production: bool,
}

impl Default for UiSettings {
    fn default() -> Self {
        UiSettings {
            enabled: true,
            read_only: false,
            environment: None,
            production: false,
        }
    }
}

/// What the dashboard knows beyond its settings: where the server listens,
/// for the commands it offers to copy.
#[derive(Clone, Debug, Default)]
pub struct UiContext {
    /// The settings.
    pub settings: UiSettings,
    /// The HTTP listener's address.
    pub http_addr: Option<SocketAddr>,
    /// The Kafka listener's address.
    pub kafka_addr: Option<SocketAddr>,
    /// Whether HTTP is served over TLS.
    pub https: bool,
    /// The data directory, whose file system's free space the overview shows.
    pub data_dir: Option<std::path::PathBuf>,
}

impl UiContext {
    /// Where the HTTP API is reached, for the commands pages offer to copy.
    pub(crate) fn http_base(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        match self.http_addr {
            Some(addr) => format!("{scheme}://{addr}"),
            None => format!("{scheme}://localhost:8080"),
        }
    }
}

/// The dashboard's routes, under `/ui`.
pub(crate) fn routes() -> Router<Api> {
    Router::new()
        .route("/", get(overview::page))
        .route("/help", get(help))
        .route("/go", get(go))
        .route("/prefs", post(prefs))
        .route("/assets/{name}", get(asset))
        .route("/audit", get(actions::audit))
        .route("/topics", get(topics::list).post(actions::create_topic))
        .route("/topics/{topic}", get(topics::detail))
        .route("/topics/{topic}/settings", post(actions::alter_topic))
        .route(
            "/topics/{topic}/delete",
            get(actions::delete_topic_preview).post(actions::delete_topic),
        )
        .route(
            "/topics/{topic}/events",
            get(browse::events).post(actions::publish),
        )
        .route(
            "/topics/{topic}/events/{partition}/{offset}",
            get(browse::event),
        )
        .route("/topics/{topic}/export", get(browse::export))
        .route("/topics/{topic}/tail", get(browse::tail))
        .route("/journey", get(journey::page))
        .route("/catalog", get(catalog::page))
        .route("/store", get(store::all))
        .route("/store/follow", get(store::follow))
        .route("/streams/{stream}", get(store::stream))
        .route("/groups", get(groups::list))
        .route("/groups/{group}", get(groups::detail))
        .route(
            "/groups/{group}/reset",
            get(actions::reset_preview).post(actions::reset),
        )
        .route("/queues", get(queues::list))
        .route("/queues/{queue}", get(queues::detail))
        .route(
            "/queues/{queue}/redrive",
            get(actions::redrive_preview).post(actions::redrive),
        )
        .route(
            "/queues/{queue}/purge",
            get(actions::purge_preview).post(actions::purge),
        )
        .route(
            "/queues/{queue}/dead-letters/{offset}",
            get(queues::dead_letter),
        )
        .fallback(unknown_page)
}

/// What every page shows around its content, and who is looking.
pub(crate) struct Chrome {
    pub(crate) access: Access,
    pub(crate) principal: String,
    /// `light`, `dark`, or none to follow the system.
    pub(crate) theme: Option<&'static str>,
    /// `utc`, `local` or `relative`.
    pub(crate) time: &'static str,
    pub(crate) read_only: bool,
    pub(crate) environment: Option<String>,
    pub(crate) production: bool,
    /// This page's path and query, where the preferences form comes back to.
    pub(crate) here: String,
    pub(crate) context: UiContext,
}

/// The cookie that keeps the theme chosen.
const THEME_COOKIE: &str = "tidings_theme";
/// The cookie that keeps how times are shown.
const TIME_COOKIE: &str = "tidings_time";

impl Chrome {
    /// The navigation: each section's address and name, and whether this
    /// page is in it.
    pub(crate) fn nav(&self) -> Vec<(&'static str, &'static str, bool)> {
        let path = self.here.split('?').next().unwrap_or("");
        // A stream's page is in the event store's section.
        let path = if path.starts_with("/ui/streams/") {
            "/ui/store"
        } else {
            path
        };
        [
            ("/ui", "Overview"),
            ("/ui/topics", "Topics"),
            ("/ui/groups", "Stream groups"),
            ("/ui/queues", "Queues"),
            ("/ui/store", "Event store"),
            ("/ui/catalog", "Catalog"),
            ("/ui/journey", "Journey"),
            ("/ui/audit", "Audit log"),
        ]
        .into_iter()
        .filter(|(href, _)| (*href != "/ui/audit" && *href != "/ui/catalog") || self.may_audit())
        .filter(|(href, _)| {
            *href != "/ui/store"
                || self.access.allows(
                    ResourceType::Stream,
                    crate::access::ALL_STREAMS,
                    Operation::Read,
                )
        })
        .map(|(href, label)| {
            let current = if href == "/ui" {
                path == "/ui" || path == "/ui/"
            } else {
                path == href || path.starts_with(&format!("{href}/"))
            };
            (href, label, current)
        })
        .collect()
    }

    /// The address of a bundled asset, with its content's hash in it so a
    /// browser may keep it for good.
    pub(crate) fn asset(&self, name: &str) -> String {
        match ASSETS.iter().find(|a| a.name == name) {
            Some(a) => format!("/ui/assets/{}", a.versioned()),
            None => format!("/ui/assets/{name}"),
        }
    }

    /// The `color-scheme` the page declares.
    pub(crate) fn color_scheme(&self) -> &'static str {
        match self.theme {
            Some("dark") => "dark",
            Some(_) => "light",
            None => "light dark",
        }
    }

    /// The time setting in words.
    pub(crate) fn time_label(&self) -> &'static str {
        match self.time {
            "local" => "your browser's time zone",
            "relative" => "time ago",
            _ => "UTC",
        }
    }

    /// Whether the dashboard offers the principal to do `op` to the
    /// resource: not in read-only mode, and only what its permissions allow.
    pub(crate) fn may_change(&self, resource: ResourceType, name: &str, op: Operation) -> bool {
        !self.read_only && self.access.allows(resource, name, op)
    }

    /// Whether the principal may create a topic so named: `Create` on the
    /// server or on the topic, as the API's create asks.
    pub(crate) fn may_create_topic(&self, name: &str) -> bool {
        !self.read_only
            && (self.access.allows(
                ResourceType::Cluster,
                crate::access::CLUSTER,
                Operation::Create,
            ) || self
                .access
                .allows(ResourceType::Topic, name, Operation::Create))
    }

    /// Whether the principal may create some topic: `Create` on the server,
    /// or on some topic name.
    pub(crate) fn may_create_topics(&self) -> bool {
        !self.read_only
            && (self.access.allows(
                ResourceType::Cluster,
                crate::access::CLUSTER,
                Operation::Create,
            ) || self
                .access
                .allows_some(ResourceType::Topic, Operation::Create))
    }

    /// Whether the principal may read the audit log.
    pub(crate) fn may_audit(&self) -> bool {
        self.access.allows(
            ResourceType::Cluster,
            crate::access::CLUSTER,
            Operation::Describe,
        )
    }

    /// Whether the principal may see the resource.
    pub(crate) fn may_describe(&self, resource: ResourceType, name: &str) -> bool {
        self.access.allows(resource, name, Operation::Describe)
    }

    /// The page refusing `operation` on the resource: read-only mode, or
    /// the permissions' refusal.
    pub(crate) fn refuse(
        self,
        resource: ResourceType,
        name: &str,
        operation: Operation,
    ) -> Response {
        let refusal = self.refusal(resource, name, operation);
        self.error(refusal)
    }

    /// Why `operation` on the resource is not offered: read-only mode, or
    /// the permissions' refusal.
    pub(crate) fn refusal(
        &self,
        resource: ResourceType,
        name: &str,
        operation: Operation,
    ) -> ApiError {
        if self.read_only {
            ApiError::new(
                ErrorCode::Forbidden,
                "the dashboard is read-only (--ui-read-only): it changes nothing",
            )
        } else {
            match self.access.require(resource, name, operation) {
                Err(e) => e,
                Ok(()) => ApiError::new(ErrorCode::Forbidden, "refused"),
            }
        }
    }

    /// The page for `error`, with its status.
    pub(crate) fn error(self, error: ApiError) -> Response {
        let status = error.status();
        let page = ErrorPage {
            status: format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ),
            code: error.code().as_str(),
            message: error.message().to_owned(),
            chrome: self,
        };
        let mut response = html(&page);
        *response.status_mut() = status;
        response
    }
}

impl FromRequestParts<Api> for Chrome {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Chrome, Response> {
        let access = Access::from_request_parts(parts, api)
            .await
            .map_err(IntoResponse::into_response)?;
        let cookies = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect::<Vec<_>>();
        let cookie = |name: &str| {
            cookies
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let theme = match cookie(THEME_COOKIE) {
            Some("light") => Some("light"),
            Some("dark") => Some("dark"),
            _ => None,
        };
        let time = match cookie(TIME_COOKIE) {
            Some("local") => "local",
            Some("relative") => "relative",
            _ => "utc",
        };
        let context = api.inner.ui.clone();
        Ok(Chrome {
            principal: access.principal().to_string(),
            access,
            theme,
            time,
            read_only: context.settings.read_only,
            environment: context.settings.environment.clone(),
            production: context.settings.production,
            // The page's own address: the nested router sees it without
            // its `/ui`.
            here: parts
                .extensions
                .get::<axum::extract::OriginalUri>()
                .map_or(&parts.uri, |o| &o.0)
                .path_and_query()
                .map_or_else(|| "/ui".to_owned(), |p| p.as_str().to_owned()),
            context,
        })
    }
}

#[derive(Template)]
#[template(path = "ui/error.html")]
struct ErrorPage {
    chrome: Chrome,
    status: String,
    code: &'static str,
    message: String,
}

#[derive(Template)]
#[template(path = "ui/help.html")]
struct HelpPage {
    chrome: Chrome,
}

/// The policy every page is served under: nothing but this server's own
/// scripts, styles and connections; no frames around it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// A page as an answer: HTML, never cached, under the policy.
pub(crate) fn html(page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "same-origin"),
            ],
            body,
        )
            .into_response(),
        Err(e) => ApiError::new(
            ErrorCode::Internal,
            format!("a dashboard page failed to render: {e}"),
        )
        .into_response(),
    }
}

/// `GET /ui/help`.
async fn help(chrome: Chrome) -> Response {
    html(&HelpPage { chrome })
}

/// Any other path under `/ui`: the dashboard's own 404 page.
async fn unknown_page(chrome: Chrome) -> Response {
    let path = chrome.here.clone();
    chrome.error(ApiError::new(
        ErrorCode::NotFound,
        format!("the dashboard has no page {path}"),
    ))
}

#[derive(serde::Deserialize)]
struct GoQuery {
    name: String,
}

/// `GET /ui/go?name=`: the page of the topic, stream group or queue so
/// named (in that order), or the topics list filtered by the name.
async fn go(State(api): State<Api>, chrome: Chrome, Query(query): Query<GoQuery>) -> Response {
    let name = query.name.trim();
    let broker = api.broker();
    let topic = broker.describe_topic(name).is_ok();
    let target = if topic && chrome.may_describe(ResourceType::Topic, name) {
        format!("/ui/topics/{name}")
    } else if broker.has_queue_group(name) && chrome.may_describe(ResourceType::Group, name) {
        format!("/ui/queues/{name}")
    } else if broker.list_groups().iter().any(|g| g == name)
        && chrome.may_describe(ResourceType::Group, name)
    {
        format!("/ui/groups/{name}")
    } else {
        format!("/ui/topics?{}", format::query(&[("q", name)]))
    };
    Redirect::to(&target).into_response()
}

#[derive(serde::Deserialize)]
struct Prefs {
    theme: Option<String>,
    time: Option<String>,
    back: Option<String>,
}

/// `POST /ui/prefs`: keeps the theme and the time setting in cookies (so
/// the next page is rendered in them from its first byte, with no flash),
/// then goes back.
async fn prefs(headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(refused) = same_origin(&headers) {
        return refused.into_response();
    }
    let Ok(prefs) = serde_urlencoded::from_bytes::<Prefs>(&body) else {
        return ApiError::invalid_request("the preferences form did not parse").into_response();
    };
    // Only a path of the dashboard, in visible characters: never a
    // redirect elsewhere, and never a header that cannot be sent.
    let back = prefs
        .back
        .filter(|b| b.starts_with("/ui") && !b.starts_with("//"))
        .filter(|b| b.bytes().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "/ui".to_owned());
    let mut response = Redirect::to(&back).into_response();
    let year = 60 * 60 * 24 * 365;
    let mut set = |name: &str, value: Option<&str>| {
        let cookie = match value {
            Some(v) => format!("{name}={v}; Path=/ui; Max-Age={year}; SameSite=Lax"),
            None => format!("{name}=; Path=/ui; Max-Age=0; SameSite=Lax"),
        };
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    };
    match prefs.theme.as_deref() {
        Some(t @ ("light" | "dark")) => set(THEME_COOKIE, Some(t)),
        Some(_) => set(THEME_COOKIE, None),
        None => {}
    }
    match prefs.time.as_deref() {
        Some(t @ ("local" | "relative")) => set(TIME_COOKIE, Some(t)),
        Some(_) => set(TIME_COOKIE, None),
        None => {}
    }
    response
}

/// A change asked by a browser must come from the dashboard's own pages:
/// `Sec-Fetch-Site` (when sent) says same-origin, and `Origin` (when sent)
/// names the host the request was sent to. Clients that send neither are
/// not browsers, which another site cannot drive.
pub(crate) fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refused = |why: String| {
        ApiError::new(
            ErrorCode::Forbidden,
            format!("a change from another site is refused: {why}"),
        )
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return Err(refused(format!("Sec-Fetch-Site is {site:?}")));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        if host.is_empty() || origin_host != host {
            return Err(refused(format!(
                "Origin {origin:?} is not this server ({host:?})"
            )));
        }
    }
    Ok(())
}

/// A file compiled into the binary and served under `/ui/assets/`.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    hash: u64,
}

impl Asset {
    /// Its name with its hash: `ui.<hash>.css`.
    fn versioned(&self) -> String {
        match self.name.rsplit_once('.') {
            Some((stem, ext)) => format!("{stem}.{:016x}.{ext}", self.hash),
            None => self.name.to_owned(),
        }
    }
}

/// FNV-1a, at compile time: enough to tell one version of a file from
/// another in its address.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($name:literal, $type:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!("../../assets/", $name));
        Asset {
            name: $name,
            content_type: $type,
            body: BODY,
            hash: fnv1a(BODY),
        }
    }};
}

const ASSETS: [Asset; 3] = [
    asset!("ui.css", "text/css; charset=utf-8"),
    asset!("ui.js", "text/javascript; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// `GET /ui/assets/{name}`: a bundled file. Asked by its versioned name it
/// may be kept for a year; by its plain name, revalidated.
async fn asset(Path(name): Path<String>) -> Response {
    let found = ASSETS
        .iter()
        .find(|a| a.versioned() == name)
        .map(|a| (a, "public, max-age=31536000, immutable"))
        .or_else(|| {
            ASSETS
                .iter()
                .find(|a| a.name == name)
                .map(|a| (a, "no-cache"))
        });
    match found {
        Some((a, cache)) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, cache),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            a.body,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            ApiError::new(ErrorCode::NotFound, format!("no asset {name}")).into_response(),
        )
            .into_response(),
    }
}
