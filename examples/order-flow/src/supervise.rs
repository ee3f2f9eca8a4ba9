//! `--faults` and `--serve`: the services run in a process of their own
//! (this binary with `--services-only`), the server in another (`tidings
//! serve`, with `--serve`), both on fixed loopback ports so a process
//! started again is found where the last one was. The customers order
//! through it all; with `--faults N`, N times at random moments one of the
//! processes is killed with SIGKILL (no goodbye: what it had not written is
//! lost, what it acknowledged must not be) and started again. When every
//! order has settled the processes are stopped with SIGTERM and the check
//! runs on the store they leave.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use order_flow::board::RunCounts;
use order_flow::load;
use tokio::process::{Child, Command};

use crate::{load_options, mix, open_store, report, Args, Report, Store};
use order_flow::splitmix;

/// How long a process may take to answer on its port after it starts.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// A process the supervisor starts, kills and starts again.
struct Process {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Process {
    /// Starts it and waits until it answers on its port; a process that
    /// exits first (the services, while the server they need is down) is
    /// started again until the patience runs out.
    async fn start(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .with_context(|| format!("opening {}", self.log.display()))?;
            let mut child = Command::new(&self.program)
                .args(&self.args)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", self.program.display()))?;
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
                {
                    self.child = Some(child);
                    return Ok(());
                }
                if let Some(status) = child.try_wait()? {
                    if Instant::now() >= deadline {
                        bail!(
                            "the {} exited with {status} before it answered; see {}",
                            self.name,
                            self.log.display()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    break;
                }
                if Instant::now() >= deadline {
                    bail!(
                        "the {} did not answer on port {} within {START_PATIENCE:?}; see {}",
                        self.name,
                        self.port,
                        self.log.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Whether it exited on its own.
    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_)) | Err(_)))
    }

    /// SIGKILL, and waits until it is gone.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, and waits for it to finish (SIGKILL after 30 s).
    async fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let pid = rustix::process::Pid::from_raw(pid as i32).context("a child's pid")?;
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!(
                        "the {} stopped with {status}; see {}",
                        self.name,
                        self.log.display()
                    );
                }
            }
            Err(_) => {
                let _ = child.kill().await;
                bail!("the {} did not stop within 30 s of SIGTERM", self.name);
            }
        }
        Ok(())
    }
}

/// A free loopback port (the kernel's pick, let go at once).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The arguments of the services' process: the flow's own, with the
/// server's address and a fixed port.
fn services_args(args: &Args, url: Option<&str>, port: u16, seed: u64) -> Vec<String> {
    let mut out: Vec<String> = vec![
        "--services-only".into(),
        "--quiet".into(),
        "--backend".into(),
        args.backend.name().into(),
        "--data".into(),
        args.data.display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--prefix".into(),
        args.prefix.clone(),
        "--seed".into(),
        seed.to_string(),
        "--partitions".into(),
        args.partitions.to_string(),
        "--concurrency".into(),
        args.concurrency.to_string(),
        "--transient-percent".into(),
        args.transient_percent.to_string(),
    ];
    if let Some(url) = url.or(args.url.as_deref()) {
        out.extend(["--url".into(), url.to_owned()]);
    }
    if let Some(store) = &args.store_url {
        out.extend(["--store-url".into(), store.clone()]);
    }
    #[cfg(feature = "otlp")]
    if let Some(endpoint) = &args.otlp_endpoint {
        out.extend(["--otlp-endpoint".into(), endpoint.clone()]);
    }
    out
}

fn server_process(bin: &Path, data: &Path) -> anyhow::Result<Process> {
    let port = free_port()?;
    Ok(Process {
        name: "server",
        program: bin.to_owned(),
        args: vec![
            "serve".into(),
            "--data-dir".into(),
            data.join("server").display().to_string(),
            "--http-addr".into(),
            format!("127.0.0.1:{port}"),
            "--kafka-addr".into(),
            "127.0.0.1:0".into(),
        ],
        log: data.join("server.log"),
        port,
        child: None,
    })
}

/// The flow with the services (and the server) in processes of their own,
/// killed `args.faults` times.
pub(crate) async fn run(args: &Args, seed: u64) -> anyhow::Result<Report> {
    let mut server = match &args.serve {
        Some(bin) => Some(server_process(bin, &args.data)?),
        None => None,
    };
    if let Some(server) = &mut server {
        server.start().await?;
    }
    let url = server
        .as_ref()
        .map(|s| format!("http://127.0.0.1:{}", s.port));
    let port = free_port()?;
    let mut services = Process {
        name: "services",
        program: std::env::current_exe().context("finding this binary")?,
        args: services_args(args, url.as_deref(), port, seed),
        log: args.data.join("services.log"),
        port,
        child: None,
    };
    services.start().await?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if !args.quiet {
        eprintln!(
            "order-flow on {}: services at http://{addr}/orders{}, {} faults to come; logs in {}",
            args.backend.name(),
            url.as_ref()
                .map_or_else(String::new, |u| format!(", server at {u}")),
            args.faults,
            args.data.display()
        );
    }

    let mix = mix(args, seed);
    let run = mix.run.clone();
    let started = Instant::now();
    let mut customers = tokio::spawn(load::place(addr, mix, load_options(args)));
    let mut dice = splitmix(seed ^ 0xFA17);
    let mut faults = 0;
    let mut placed = None;
    let deadline = started + Duration::from_secs(args.timeout);
    loop {
        if placed.is_none() && customers.is_finished() {
            placed = Some((&mut customers).await??);
        }
        if faults < args.faults {
            // The next fault 200 ms to 1.2 s from now.
            dice = splitmix(dice);
            tokio::time::sleep(Duration::from_millis(200 + dice % 1000)).await;
            dice = splitmix(dice);
            let victim = match &mut server {
                Some(server) if dice.is_multiple_of(3) => server,
                _ => &mut services,
            };
            victim.kill().await;
            faults += 1;
            if !args.quiet {
                eprintln!(
                    "fault {faults}/{}: killed the {} (SIGKILL) at {:.1} s",
                    args.faults,
                    victim.name,
                    started.elapsed().as_secs_f64()
                );
            }
            victim.start().await?;
            continue;
        }
        if services.exited() {
            services.start().await?;
        }
        if let Some(placed) = &placed {
            let counts = run_counts(addr, &run).await;
            if counts.is_some_and(|c| c.settled >= placed.orders.len() as u64)
                || Instant::now() >= deadline
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let placed = placed.expect("the loop ends once the customers are done");
    let seconds = started.elapsed().as_secs_f64();
    services.terminate().await?;
    if let Some(server) = &mut server {
        server.terminate().await?;
    }
    let store = open_store(args).await?;
    let backend = args.backend.name();
    with_store!(store, s => report(backend, seed, &placed, seconds, &s, faults).await)
}

/// The run's counts from the services' read model; `None` while they do
/// not answer.
async fn run_counts(addr: SocketAddr, run: &str) -> Option<RunCounts> {
    match load::get(addr, &format!("/runs/{run}")).await {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}
