//! `hermeticd`: serve the Remote Execution API until SIGTERM or SIGINT.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use hermeticd::config::Config;
use hermeticd::{Daemon, Listener, systemd};

/// Command-line flags; each overrides the configuration file.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "REAPI v2 server running every action in the hermetic sandbox"
)]
struct Args {
    /// Configuration file (default: /etc/hermetic/hermeticd.toml when it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// State directory (CAS, action cache, work directories).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Address to serve on, `unix:///path` or `tcp://host:port`; repeatable.
    #[arg(long, value_name = "URI")]
    listen: Vec<String>,
    /// Image used when an action names none.
    #[arg(long, value_name = "DIGEST|ALIAS")]
    default_image: Option<String>,
    /// Actions run at once.
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Export spans to this OTLP/gRPC collector, `http://host:port`
    /// (`[tracing] otlp_endpoint`).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
}

fn load_config(args: &Args) -> anyhow::Result<Config> {
    let default_path = PathBuf::from("/etc/hermetic/hermeticd.toml");
    let mut config = match &args.config {
        Some(p) => Config::load(p)?,
        None if default_path.is_file() => Config::load(&default_path)?,
        None => Config::default(),
    };
    if let Some(d) = &args.state_dir {
        config.state_dir = Some(d.clone());
    }
    if !args.listen.is_empty() {
        config.listen = args.listen.clone();
    }
    if let Some(i) = &args.default_image {
        config.default_image = Some(i.clone());
    }
    if let Some(j) = args.jobs {
        config.jobs = j;
    }
    if let Some(e) = &args.otlp_endpoint {
        config.tracing.otlp_endpoint = Some(e.clone());
    }
    config.validate()?;
    Ok(config)
}

async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = load_config(&args)?;
    let telemetry = hermeticd::telemetry::init(config.log_format, &config.tracing)?;
    let addrs = config.listen_addrs()?;
    systemd::enter_delegated_leaf(config.cgroup_parent.as_deref());
    let daemon = Daemon::open(config).context("cannot start")?;
    // Sockets passed by systemd (hermeticd.socket) replace binding the
    // same configured address; any other passed socket is served as well.
    let activated = systemd::take_activated().context("socket activation")?;
    let mut listeners = Vec::new();
    for a in &addrs {
        if activated.iter().any(|s| &s.addr == a) {
            continue;
        }
        listeners.push(
            Listener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a}"))?,
        );
    }
    for s in activated {
        tracing::info!(name = %s.name, address = %s.addr, "socket activation: serving a passed socket");
        listeners.push(s.listener);
    }
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(addr) = daemon.ctx.config.metrics.address()? {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        tokio::spawn(hermeticd::metrics::serve(
            daemon.metrics_registry(),
            listener,
            async {
                let _ = metrics_stopped.await;
            },
        ));
    }
    let notifier = systemd::Notifier::from_env().context("NOTIFY_SOCKET")?;
    if let Some(n) = &notifier {
        let addresses: Vec<String> = listeners.iter().map(Listener::describe).collect();
        n.notify(&format!(
            "READY=1\nSTATUS=serving on {}",
            addresses.join(", ")
        ))
        .context("cannot notify readiness")?;
    }
    let shutdown = async {
        terminated().await;
        if let Some(n) = &notifier
            && let Err(e) = n.notify("STOPPING=1\nSTATUS=draining actions")
        {
            tracing::warn!(cause = %e, "cannot notify stopping");
        }
    };
    hermeticd::serve(&daemon, listeners, shutdown).await?;
    let _ = metrics_stop.send(());
    // The drained actions' spans are closed: send what is still queued.
    telemetry.shutdown().await;
    Ok(())
}
