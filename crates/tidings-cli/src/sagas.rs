//! `tidings sagas`: instances of the application's sagas, as the server
//! reads them from the database `--sagas-database` names.

use anyhow::Result;
use clap::Subcommand;
use tidings_api::{SagaInstance, SagaListQuery};

use crate::output::json;
use crate::Ctx;

#[derive(Debug, Subcommand)]
pub(crate) enum Sagas {
    /// List a saga's instances, most recently changed first.
    List {
        /// The saga's name.
        saga: String,
        /// Only instances with this status: running, completed,
        /// compensating, compensated or failed.
        #[arg(long)]
        status: Option<String>,
        /// At most this many (100 by default, at most 1000).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show one instance: state, history, pending timeouts, compensations
    /// left.
    Show {
        /// The saga's name.
        saga: String,
        /// The instance's key.
        key: String,
    },
}

pub(crate) async fn sagas(ctx: &mut Ctx, s: Sagas) -> Result<()> {
    match s {
        Sagas::List {
            saga,
            status,
            limit,
        } => {
            let answer = ctx
                .client
                .saga_instances(&saga, &SagaListQuery { status, limit })
                .await?;
            ctx.out.answer(&answer, |a| {
                if a.instances.is_empty() {
                    return format!("saga {} has no such instances", a.saga);
                }
                a.instances
                    .iter()
                    .map(|i| {
                        format!(
                            "{}  {}  version {}  changed {}",
                            i.key,
                            i.status,
                            i.version,
                            when(i.updated_ms)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Sagas::Show { saga, key } => {
            let answer = ctx.client.saga_instance(&saga, &key).await?;
            ctx.out.answer(&answer, instance_text)
        }
    }
}

fn instance_text(i: &SagaInstance) -> String {
    let mut s = format!(
        "saga {} instance {}: {} at version {}\nstarted {}, changed {}, correlation {}\nstate {}",
        i.saga,
        i.key,
        i.status,
        i.version,
        when(i.started_ms),
        when(i.updated_ms),
        i.correlation,
        json(&i.state)
    );
    s.push_str("\nhistory:");
    for h in &i.history {
        s.push_str(&format!(
            "\n  {:>3}  {}  {} -> {}",
            h.version,
            when(h.at_ms),
            h.input,
            h.status
        ));
        if let Some(note) = &h.note {
            s.push_str(&format!(" ({note})"));
        }
    }
    if i.timeouts.is_empty() {
        s.push_str("\nno pending timeouts");
    } else {
        s.push_str("\npending timeouts:");
        for t in &i.timeouts {
            s.push_str(&format!("\n  {}  due {}", t.name, when(t.due_ms)));
        }
    }
    if !i.compensations.is_empty() {
        s.push_str("\ncompensations, run last first on failure:");
        for c in &i.compensations {
            s.push_str(&format!("\n  {}  {}", c.name, json(&c.data)));
        }
    }
    s
}

/// Milliseconds since the epoch as an RFC 3339 time (UTC).
fn when(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}
