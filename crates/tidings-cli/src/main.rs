//! The `tidings` command: `serve` runs the server; `users` keeps the users
//! in a stopped server's data directory; every other command is a client of
//! its HTTP API (`--server`, or `TIDINGS_URL`) through `tidings-client`, and
//! never touches storage itself; `credentials` says where the server and the
//! login come from (flags, environment, the client's configuration file).
//!
//! Modules: `publish` (publish, replay: events built from lines and copied),
//! `read` (tail, consume), `admin` (topics, groups, queues, dead letters),
//! `store` (the event store), all printing through `output::Output`.
//!
//! Errors are printed in plain words with a non-zero exit status; a closed
//! pipe (`tidings tail ... | head`) ends the command quietly.

use std::io;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tidings_client::Client;

mod acls;
mod admin;
mod catalog;
mod credentials;
mod output;
mod publish;
mod read;
mod sagas;
mod send;
mod signals;
mod store;
mod users;
mod values;

use output::{Mode, Output};

/// Tidings: an event platform. `tidings serve` runs the server; the other
/// commands talk to it over HTTP.
#[derive(Debug, Parser)]
#[command(name = "tidings", version, about)]
struct Cli {
    /// The server to talk to.
    #[arg(
        long,
        env = "TIDINGS_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// Print the server's JSON (one object per line for events), for scripts.
    #[arg(long, global = true)]
    json: bool,
    /// Log in as this user, for a server that has users; the password is
    /// read from TIDINGS_PASSWORD.
    #[arg(long, env = "TIDINGS_USER", global = true)]
    user: Option<String>,
    /// Log in with this API token (`tidings users token add`). Other users
    /// of the machine can see a flag in the process list: prefer
    /// TIDINGS_TOKEN or the client configuration file.
    #[arg(long, env = "TIDINGS_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// The client configuration file (TOML: server, token, or user and
    /// password); by default $XDG_CONFIG_HOME/tidings/client.toml, if it
    /// exists.
    #[arg(
        long,
        env = "TIDINGS_CLIENT_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    client_config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: the broker on the data directory, with its HTTP API.
    Serve(Box<tidings_server::ServeArgs>),
    /// Publish events: one per DATA argument, or one per line of --file or
    /// standard input. A line that is a JSON object with "specversion" is sent
    /// as a whole CloudEvent; anything else becomes the data of a new event.
    Publish(publish::Publish),
    /// Print a topic's events without a group; --follow keeps printing new ones.
    Tail(read::Tail),
    /// Consume as a member of a stream group (--group, committing as it goes) or
    /// from a queue group (--queue, acking each event once printed).
    Consume(read::Consume),
    /// Copy a topic's events, from a position up to its end now, into another topic.
    Replay(publish::Replay),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topics(admin::Topics),
    /// List stream groups, describe one with its lag, reset its offsets.
    #[command(subcommand)]
    Groups(admin::Groups),
    /// Create, list and describe queue groups.
    #[command(subcommand)]
    Queues(admin::Queues),
    /// Dead letters of a queue group: list, show, redrive, purge.
    #[command(subcommand)]
    Dlq(admin::Dlq),
    /// The event store: append to a stream with an expected version, read a
    /// stream, read or follow `$all` or a category.
    #[command(subcommand)]
    Streams(store::Streams),
    /// Instances of the application's sagas (the server needs
    /// --sagas-database): list them, show one with its history.
    #[command(subcommand)]
    Sagas(sagas::Sagas),
    /// The event catalog, from the schema registry and what the topics hold:
    /// a summary with the drift, or an AsyncAPI document and an EventCatalog
    /// folder.
    Catalog(catalog::CatalogArgs),
    /// The users clients log in as (SASL on the Kafka listener), kept in the
    /// data directory of a stopped server; once there is one, every client
    /// logs in.
    #[command(subcommand)]
    Users(users::Users),
    /// Who may do what (Kafka's ACLs: allow or deny an operation on a
    /// topic, group, stream or the server, by name or prefix), kept beside
    /// the users in a stopped server's data directory.
    #[command(subcommand)]
    Acls(acls::Acls),
}

/// The command line: `--server`, `--json` and the login are global, for every client
/// command wherever they are written, but `serve` has no use for them, so its
/// help leaves them out (and refuses them, below).
fn command() -> clap::Command {
    // A subcommand's own argument of a global's name keeps the global out.
    Cli::command().mut_subcommand("serve", |serve| {
        serve
            .arg(clap::Arg::new("server").long("server").hide(true))
            .arg(clap::Arg::new("user").long("user").hide(true))
            .arg(clap::Arg::new("token").long("token").hide(true))
            .arg(
                clap::Arg::new("client_config")
                    .long("client-config")
                    .hide(true),
            )
            .arg(
                clap::Arg::new("json")
                    .long("json")
                    .hide(true)
                    .action(clap::ArgAction::SetTrue),
            )
    })
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Command::Serve(args) = cli.command {
        // The matches tell the configuration a flag from a default.
        let serve = matches
            .subcommand_matches("serve")
            .expect("the serve command");
        let given = |id: &str| {
            matches!(
                serve.value_source(id),
                Some(clap::parser::ValueSource::CommandLine)
            )
        };
        if ["server", "json", "user", "token", "client_config"]
            .into_iter()
            .any(given)
        {
            eprintln!("error: --server, --json, --user, --token and --client-config are for the client commands; serve takes --http-addr and --log-format");
            return ExitCode::from(2);
        }
        return match tidings_server::Config::load(&args, serve).and_then(tidings_server::run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let mode = if cli.json { Mode::Json } else { Mode::Text };
    if matches!(cli.command, Command::Users(_) | Command::Acls(_)) {
        let done = match cli.command {
            Command::Users(command) => users::users(command, mode),
            Command::Acls(command) => acls::acls(command, mode),
            _ => unreachable!("matched above"),
        };
        return match done {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let server_from = match matches.value_source("server") {
        Some(clap::parser::ValueSource::EnvVariable) => Some("TIDINGS_URL"),
        Some(clap::parser::ValueSource::CommandLine) => Some("--server"),
        _ => None,
    };
    let flag = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(clap::parser::ValueSource::CommandLine)
        )
    };
    let flags = (flag("token"), flag("user"));
    match run(cli, server_from, flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        // Stopped by Ctrl-C or SIGTERM, after cleaning up: the status an
        // interrupted command has.
        Err(e) if e.downcast_ref::<signals::Interrupted>().is_some() => {
            let signals::Interrupted(n) = e.downcast_ref().expect("checked");
            ExitCode::from(u8::try_from(128 + n).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// What every client command gets: the client and where to print.
pub(crate) struct Ctx {
    pub(crate) client: Client,
    pub(crate) out: Output<io::StdoutLock<'static>>,
}

/// `flags`: whether the token and the user were given as flags (rather
/// than in the environment).
fn run(cli: Cli, server_from: Option<&'static str>, flags: (bool, bool)) -> Result<()> {
    let client = credentials::client(&credentials::Given {
        server: (&cli.server, server_from),
        token: cli.token.as_deref().map(|t| (t, flags.0)),
        user: cli.user.as_deref().map(|u| (u, flags.1)),
        client_config: cli.client_config.as_deref(),
    })?;
    let mode = if cli.json { Mode::Json } else { Mode::Text };
    let mut ctx = Ctx {
        client,
        out: Output::new(io::stdout().lock(), mode),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(_) | Command::Users(_) | Command::Acls(_) => {
                unreachable!("run in main")
            }
            Command::Publish(p) => publish::publish(&mut ctx, p).await,
            Command::Tail(t) => read::tail(&mut ctx, t).await,
            Command::Consume(c) => read::consume(&mut ctx, c).await,
            Command::Replay(r) => publish::replay(&mut ctx, r).await,
            Command::Topics(t) => admin::topics(&mut ctx, t).await,
            Command::Groups(g) => admin::groups(&mut ctx, g).await,
            Command::Queues(q) => admin::queues(&mut ctx, q).await,
            Command::Sagas(s) => sagas::sagas(&mut ctx, s).await,
            Command::Catalog(c) => catalog::catalog(&mut ctx, c).await,
            Command::Dlq(d) => admin::dlq(&mut ctx, d).await,
            Command::Streams(s) => store::streams(&mut ctx, s).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::command;

    /// Checks `cmd` and its subcommands: every positional argument is
    /// described, and every `--flag` a help text names is one the command takes.
    fn check(cmd: &clap::Command, path: &str, problems: &mut Vec<String>) {
        let flags: BTreeSet<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long())
            .map(|l| format!("--{l}"))
            .collect();
        let mut texts: Vec<String> = [cmd.get_about(), cmd.get_long_about()]
            .into_iter()
            .flatten()
            .map(|t| t.to_string())
            .collect();
        for arg in cmd.get_arguments() {
            if arg.is_positional() && arg.get_help().is_none() {
                problems.push(format!("{path}: <{}> has no description", arg.get_id()));
            }
            texts.extend(
                [arg.get_help(), arg.get_long_help()]
                    .into_iter()
                    .flatten()
                    .map(|t| t.to_string()),
            );
        }
        for text in &texts {
            let words = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'));
            for flag in words.filter(|w| w.starts_with("--") && w.len() > 2) {
                // The subcommands' own help (`tidings serve`'s about) may name
                // the flags of a subcommand.
                if !flags.contains(flag) && cmd.get_subcommands().next().is_none() {
                    problems.push(format!(
                        "{path}: its help names {flag}, which it does not take"
                    ));
                }
            }
        }
        // clap's own `help` subcommands repeat the abouts without the flags.
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            check(sub, &format!("{path} {}", sub.get_name()), problems);
        }
    }

    #[test]
    fn every_positional_is_described_and_help_names_only_flags_that_exist() {
        let mut cmd = command();
        cmd.build();
        let mut problems = Vec::new();
        check(&cmd, "tidings", &mut problems);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn serve_help_lists_only_the_servers_settings() {
        let mut cmd = command();
        cmd.build();
        let serve = cmd.find_subcommand("serve").unwrap();
        let shown: Vec<&str> = serve
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long())
            .collect();
        assert!(shown.contains(&"http-addr") && shown.contains(&"kafka-advertised-addr"));
        assert!(
            !shown.contains(&"server") && !shown.contains(&"json") && !shown.contains(&"user"),
            "{shown:?}"
        );
    }
}
