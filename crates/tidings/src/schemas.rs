//! Checking events against their schemas in the producer, before anything is
//! sent: [`SchemaCheck`], a [`PublishHook`] for the [`Publisher`](crate::Publisher).
//!
//! The check is the broker's own (`tidings_schema::enforce`): the same
//! resolution (a registry `dataschema` URL, Confluent framing, the event's
//! type as subject, `<topic>-value`) and the same validator, so an event the
//! producer lets through is one a validating topic takes. It runs against a
//! registry in the process (an embedded engine's), or against a server's
//! registry over HTTP, whose answers it keeps: schemas by id for good (an id
//! never changes), a subject's latest version and a missing schema for the
//! refresh interval, so a schema registered meanwhile is seen within it.
//!
//! Unlike the topic's own check, this one runs whatever the backend: a Kafka,
//! NATS or PostgreSQL backend gets events checked against Tidings' registry
//! before they leave.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidings_client::Client;
use tidings_schema::enforce::{self, EventRef, Found, Lookup, Schemas};
use tidings_schema::{JsonSchema, Registry};
use tidings_types::CloudEvent;

use crate::backend::BoxFuture;
use crate::{Error, PublishHook};

/// How long a server's answer about a subject's latest version (or about a
/// schema it does not have) is kept, unless set otherwise.
pub const REFRESH_DEFAULT: Duration = Duration::from_secs(30);

/// Checks every event a [`Publisher`](crate::Publisher) sends against its
/// schema; an event that fails (or has none) refuses the whole batch with
/// [`Error::SchemaRejected`], and nothing of it is sent.
pub struct SchemaCheck {
    source: Source,
    refresh: Duration,
    cache: Mutex<HashMap<Lookup, Cached>>,
}

enum Source {
    Registry(Arc<Registry>),
    Server(Box<Client>),
}

#[derive(Clone)]
struct Cached {
    found: Option<Found>,
    fetched: Instant,
}

impl std::fmt::Debug for SchemaCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            Source::Registry(r) => format!("{r:?}"),
            Source::Server(c) => c.server().to_owned(),
        };
        f.debug_struct("SchemaCheck")
            .field("source", &source)
            .finish()
    }
}

/// The cache as the check reads it: a lookup not in it (or gone stale) is
/// noted, so it can be fetched and the check run again.
struct View<'a> {
    cache: &'a HashMap<Lookup, Cached>,
    /// Fetched during this check: current, whatever the refresh interval.
    fetched_now: &'a [Lookup],
    refresh: Duration,
    missing: std::cell::RefCell<Option<Lookup>>,
}

impl Schemas for View<'_> {
    fn find(&self, lookup: &Lookup) -> Option<Found> {
        match self.cache.get(lookup) {
            Some(c) if self.fetched_now.contains(lookup) || !stale(lookup, c, self.refresh) => {
                c.found.clone()
            }
            _ => {
                self.missing
                    .borrow_mut()
                    .get_or_insert_with(|| lookup.clone());
                None
            }
        }
    }
}

/// Whether a cached answer must be asked again: never for a schema by id or
/// a numbered version once found; after `refresh` for the rest.
fn stale(lookup: &Lookup, cached: &Cached, refresh: Duration) -> bool {
    let fixed = cached.found.is_some()
        && match lookup {
            Lookup::Id(_) => true,
            Lookup::Version(_, v) => v != "latest",
        };
    !fixed && cached.fetched.elapsed() >= refresh
}

impl SchemaCheck {
    /// Checks against `registry`, in this process (an embedded engine's).
    pub fn registry(registry: Arc<Registry>) -> SchemaCheck {
        SchemaCheck::with_source(Source::Registry(registry))
    }

    /// Checks against the registry of the `tidings serve` at `server`
    /// (`http://host:port`).
    pub fn server(server: &str) -> Result<SchemaCheck, Error> {
        let client = Client::new(server).map_err(|e| Error::Config(e.to_string()))?;
        Ok(SchemaCheck::with_source(Source::Server(Box::new(client))))
    }

    fn with_source(source: Source) -> SchemaCheck {
        SchemaCheck {
            source,
            refresh: REFRESH_DEFAULT,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps a server's answers about latest versions and missing schemas
    /// for `refresh` instead of [`REFRESH_DEFAULT`].
    #[must_use]
    pub fn with_refresh(mut self, refresh: Duration) -> SchemaCheck {
        self.refresh = refresh;
        self
    }

    /// Checks one event bound for `topic`: the id of the schema it matches.
    pub async fn check(&self, topic: &str, event: &CloudEvent) -> Result<u32, Error> {
        let event_ref = EventRef {
            ty: event.ty(),
            dataschema: event.dataschema(),
            data: event.data().map(|d| &d[..]),
        };
        let client = match &self.source {
            Source::Registry(r) => {
                return r
                    .check_event(topic, event_ref)
                    .map_err(|why| Error::SchemaRejected(format!("event {}: {why}", event.id())))
            }
            Source::Server(client) => client,
        };
        // Each round either decides or fetches one more lookup; there are at
        // most as many lookups as the resolution order has steps.
        let mut fetched_now = Vec::new();
        for _ in 0..=enforce::lookups(topic, event_ref).len() {
            let (outcome, missing) = {
                let cache = self.cache.lock().expect("schema cache");
                let view = View {
                    cache: &cache,
                    fetched_now: &fetched_now,
                    refresh: self.refresh,
                    missing: std::cell::RefCell::new(None),
                };
                let outcome = enforce::check_event(&view, topic, event_ref);
                (outcome, view.missing.into_inner())
            };
            match (outcome, missing) {
                (Ok(id), _) => return Ok(id),
                (Err(why), None) => {
                    return Err(Error::SchemaRejected(format!(
                        "event {}: {why}",
                        event.id()
                    )))
                }
                (Err(_), Some(lookup)) => {
                    let found = fetch(client, &lookup).await?;
                    fetched_now.push(lookup.clone());
                    self.cache.lock().expect("schema cache").insert(
                        lookup,
                        Cached {
                            found,
                            fetched: Instant::now(),
                        },
                    );
                }
            }
        }
        Err(Error::backend(
            "schemas",
            "the schema lookups did not settle; the registry changed while they ran",
        ))
    }
}

/// Asks the server's registry for one lookup.
async fn fetch(client: &Client, lookup: &Lookup) -> Result<Option<Found>, Error> {
    let unreachable = |e: tidings_client::ClientError| {
        Error::transient(
            "schemas",
            format!("the schema registry at {}: {e}", client.server()),
        )
    };
    let (id, text) = match lookup {
        Lookup::Id(id) => match client.registry_schema(*id).await.map_err(unreachable)? {
            Some(s) => (*id, s.schema),
            None => return Ok(None),
        },
        Lookup::Version(subject, version) => {
            match client
                .registry_version(subject, version)
                .await
                .map_err(unreachable)?
            {
                Some(v) => (v.id, v.schema),
                None => return Ok(None),
            }
        }
    };
    let schema = JsonSchema::parse(&text).map_err(|e| {
        Error::backend(
            "schemas",
            format!("schema {id} from the registry does not compile: {e}"),
        )
    })?;
    Ok(Some(Found {
        id,
        schema: Arc::new(schema),
    }))
}

impl PublishHook for SchemaCheck {
    fn before_publish<'a>(
        &'a self,
        topic: &'a str,
        events: &'a mut [CloudEvent],
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            for event in events.iter() {
                self.check(topic, event).await?;
            }
            Ok(())
        })
    }
}
