//! `tidings catalog`: the event catalog the server generates from its schema
//! registry and from what its topics hold — a summary with the drift, the
//! whole catalog as JSON, an AsyncAPI 3.0 document, or an EventCatalog folder.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use tidings_api::Catalog;

use crate::Ctx;

#[derive(Debug, Args)]
pub(crate) struct CatalogArgs {
    /// Write the AsyncAPI 3.0 document to this file (`-` for standard output).
    #[arg(long, value_name = "FILE")]
    asyncapi: Option<PathBuf>,
    /// Write an EventCatalog folder (events/, services/, channels/) here.
    #[arg(long, value_name = "DIR")]
    eventcatalog: Option<PathBuf>,
}

pub(crate) async fn catalog(ctx: &mut Ctx, args: CatalogArgs) -> Result<()> {
    if let Some(file) = &args.asyncapi {
        let doc = ctx.client.catalog_asyncapi().await?;
        let text = serde_json::to_string_pretty(&doc)? + "\n";
        if file.as_os_str() == "-" {
            print!("{text}");
        } else {
            std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))?;
        }
    }
    let catalog = ctx.client.catalog().await?;
    if let Some(dir) = &args.eventcatalog {
        for (path, contents) in tidings_api::eventcatalog(&catalog) {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().expect("a folder"))
                .with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(&path, contents)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if args
        .asyncapi
        .as_deref()
        .is_some_and(|f| f.as_os_str() == "-")
    {
        return Ok(());
    }
    ctx.out.answer(&catalog, summary)
}

fn summary(c: &Catalog) -> String {
    let mut s = String::new();
    for t in &c.topics {
        s.push_str(&format!(
            "topic {} (schema validation {})",
            t.name, t.schema_validation
        ));
        if t.unscanned > 0 {
            s.push_str(&format!(", {} records not counted yet", t.unscanned));
        }
        s.push('\n');
        for e in &t.events {
            let documented = match &e.schema {
                Some(schema) => format!(
                    "schema {} v{} (id {})",
                    schema.subject, schema.version, schema.id
                ),
                None => "no schema".to_owned(),
            };
            s.push_str(&format!(
                "  {}  {} events  {}  from {}\n",
                e.ty.as_deref().unwrap_or("(not CloudEvents)"),
                e.count,
                documented,
                if e.sources.is_empty() {
                    "-".to_owned()
                } else {
                    e.sources.join(", ")
                }
            ));
        }
        for g in &t.consumers {
            s.push_str(&format!("  read by {} group {}\n", g.mode, g.group));
        }
    }
    if c.topics.is_empty() {
        s.push_str("no topics\n");
    }
    if c.drift.is_empty() {
        s.push_str("no drift: every event type has a schema");
    } else {
        s.push_str("drift:");
        for d in &c.drift {
            s.push_str(&format!("\n  {}: {}", d.kind, d.detail));
        }
    }
    s
}
