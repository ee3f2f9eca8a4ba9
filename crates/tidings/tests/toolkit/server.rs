//! The conformance suite on the server backend (a real `tidings serve`
//! child process per check), in both modes.

use std::sync::{Arc, Mutex};

use tidings::server::Server;
use tidings::{Backend, Mode};

use crate::conformance::conformance;
use crate::support::{Harness, ServerProcess};

/// A server on a fresh data directory, and the backend that reaches it.
pub(crate) struct ServerHarness {
    backend: Arc<dyn Backend>,
    mode: Mode,
    process: Mutex<ServerProcess>,
    dir: tempfile::TempDir,
}

impl Harness for ServerHarness {
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }

    fn mode(&self) -> Mode {
        self.mode
    }

    fn attempts_are_durable(&self) -> bool {
        self.mode == Mode::Queue
    }

    async fn restart(&self) -> bool {
        tokio::task::block_in_place(|| self.process.lock().unwrap().restart(self.dir.path()));
        true
    }
}

pub(crate) async fn server(mode: Mode) -> Option<ServerHarness> {
    let dir = tempfile::tempdir().unwrap();
    let process = ServerProcess::start(dir.path(), None);
    let backend = Server::connect(&format!("http://{}", process.http)).unwrap();
    Some(ServerHarness {
        backend: Arc::new(backend),
        mode,
        process: Mutex::new(process),
        dir,
    })
}

/// A server with a user, and permissions for everything it does (so the
/// permissions are checked, not open), and the backend logged in as it.
pub(crate) async fn logged_in_server(mode: Mode) -> Option<ServerHarness> {
    let dir = tempfile::tempdir().unwrap();
    let tidings = |args: &[&str], stdin: &str| {
        use std::io::Write as _;
        let mut child = std::process::Command::new(crate::support::tidings_bin())
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("TIDINGS_NEW_PASSWORD")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "tidings {args:?}");
    };
    tidings(&["users", "add", "app"], "app-pw\n");
    for resource in [&["--topic", "*"][..], &["--group", "*"], &["--cluster"]] {
        let mut args = vec!["acls", "add", "--principal", "app", "--operation", "All"];
        args.extend_from_slice(resource);
        tidings(&args, "");
    }
    let process = ServerProcess::start(dir.path(), None);
    let url = format!("http://{}", process.http);
    // Without logging in, nothing is done.
    let anonymous = Server::connect(&url).unwrap();
    let refused = anonymous
        .publish("t", vec![tidings_types::CloudEvent::new("/t", "x")])
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("log in"), "{refused}");
    let backend = Server::connect_as(&url, "app", "app-pw").unwrap();
    Some(ServerHarness {
        backend: Arc::new(backend),
        mode,
        process: Mutex::new(process),
        dir,
    })
}

mod queue {
    use super::*;
    conformance!(server(Mode::Queue));
}

/// Logged in with permissions: the checks that between them make every
/// kind of request the backend sends (publish, receive, ack, nack, reject
/// to dead letters, stream groups, a server restart). The others
/// test logic the queue module above already runs on the same routes.
mod logged_in {
    use super::*;
    conformance!(@each logged_in_server(Mode::Queue);
        events_round_trip_with_their_attributes,
        groups_share_the_load_and_fan_out,
        a_subscriber_that_restarts_resumes_where_it_left,
        a_reject_dead_letters_at_once,
        a_nack_is_delivered_again_after_its_delay,
        a_dropped_delivery_is_given_back_uncounted,
        a_backend_restart_loses_nothing_acknowledged,
        a_new_group_starts_where_it_is_asked
    );
}

mod stream {
    use super::*;
    conformance!(server(Mode::Stream));
}
