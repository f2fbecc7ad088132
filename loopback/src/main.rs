//! `loopback serve`: run a loopback cluster on its own, for kubectl, curl and the harness.
//!
//! Prints the kubeconfig path and the proxy address, then runs until Ctrl-C or SIGTERM, when
//! it stops every backend process and removes its files.

use std::path::PathBuf;
use std::process::ExitCode;

use loopback::config::{ControllerKind, DataPlaneKind};
use loopback::{Disruption, Fault, Loopback, LoopbackConfig};

const USAGE: &str = "usage: loopback serve [--config FILE] [--controller reference|contour]
                      [--contour-version VERSION]
                      [--contour-settings-from config-file|contour-configuration]
                      [--data-plane loopback|envoy] [--envoy-version VERSION]
                      [--fault NAME]... [--disrupt NAME]...
       loopback faults        (the fault table, in Markdown)
       loopback disruptions   (the disruption table, in Markdown)

Starts a loopback cluster (Kubernetes API, kubelet running nginx backends, an HTTPProxy
controller and its proxy) on 127.0.0.0/8 and prints how to reach it.

  --config FILE              loopback config file (faults, nginx path, work directory,
                             Contour-shaped install-wide settings)
  --controller KIND          reference (default): loopback's own model of Contour;
                             contour: the real Contour, built by scripts/ensure-contour
  --contour-version VERSION  the Contour release to run (default: the first line of
                             loopback/contour-versions)
  --contour-settings-from S  where the real Contour reads the install-wide settings:
                             config-file (default) or contour-configuration (an object)
  --data-plane KIND          loopback (default): loopback's own proxy; envoy: Envoy,
                             fetched by scripts/ensure-envoy and programmed by the real
                             Contour (implies --controller contour)
  --envoy-version VERSION    the Envoy release to run (default: the one
                             loopback/contour-versions pairs with the Contour release)
  --disrupt NAME             make trouble for clients (repeatable): API errors, slow answers,
                             cut connections, crashing backends; `loopback disruptions` lists them
  --fault NAME               switch on a fault of the reference controller (repeatable); one of:";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LOOPBACK_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if std::env::args().nth(1).as_deref() == Some("faults") {
        print!("{}", loopback::config::fault_table());
        return ExitCode::SUCCESS;
    }
    if std::env::args().nth(1).as_deref() == Some("disruptions") {
        print!("{}", loopback::disruption::disruption_table());
        return ExitCode::SUCCESS;
    }
    let config = match parse_args(std::env::args().skip(1).collect()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    runtime.block_on(serve(config))
}

fn parse_args(args: Vec<String>) -> Result<LoopbackConfig, String> {
    let usage = || {
        let width = Fault::ALL.iter().map(|f| f.name().len()).max().unwrap_or(0);
        let faults: Vec<String> = Fault::ALL.iter().map(|f| format!("    {f:<width$}  {}", f.description())).collect();
        format!("{USAGE}\n{}", faults.join("\n"))
    };
    let mut args = args.into_iter();
    if args.next().as_deref() != Some("serve") {
        return Err(usage());
    }
    let mut config = LoopbackConfig::default();
    let mut faults = Vec::new();
    let mut disruptions = Vec::new();
    // Flags win over the config file wherever they stand.
    let (mut controller, mut contour_version, mut settings_from) = (None, None, None);
    let (mut data_plane, mut envoy_version) = (None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => {
                let path = PathBuf::from(args.next().ok_or("--config needs a file")?);
                config = LoopbackConfig::from_file(&path).map_err(|e| format!("error: {e}"))?;
            }
            "--controller" => {
                let kind = args.next().ok_or("--controller needs reference or contour")?;
                controller = Some(kind.parse().map_err(|e| format!("error: {e}"))?);
            }
            "--contour-version" => {
                contour_version = Some(args.next().ok_or("--contour-version needs a release tag")?);
            }
            "--contour-settings-from" => {
                let source = args.next().ok_or("--contour-settings-from needs config-file or contour-configuration")?;
                settings_from = Some(source.parse().map_err(|e| format!("error: {e}"))?);
            }
            "--data-plane" => {
                let kind = args.next().ok_or("--data-plane needs loopback or envoy")?;
                data_plane = Some(kind.parse().map_err(|e| format!("error: {e}"))?);
            }
            "--envoy-version" => {
                envoy_version = Some(args.next().ok_or("--envoy-version needs a release, such as 1.38.3")?);
            }
            "--fault" => {
                let name = args.next().ok_or("--fault needs a name")?;
                faults.push(name.parse::<Fault>().map_err(|e| format!("error: {e}"))?);
            }
            "--disrupt" => {
                let name = args.next().ok_or("--disrupt needs a name")?;
                disruptions.push(name.parse::<Disruption>().map_err(|e| format!("error: {e}"))?);
            }
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("error: unexpected argument {other:?}\n\n{}", usage())),
        }
    }
    config.faults.extend(faults);
    config.disruptions.extend(disruptions);
    config.data_plane = data_plane.unwrap_or(config.data_plane);
    // Envoy is programmed by the real Contour: asking for it asks for Contour too.
    let implied = match config.data_plane {
        DataPlaneKind::Envoy => ControllerKind::Contour,
        DataPlaneKind::Loopback => config.controller,
    };
    config.controller = controller.unwrap_or(implied);
    config.contour.version = contour_version.or(config.contour.version);
    config.contour.settings_from = settings_from.unwrap_or(config.contour.settings_from);
    config.envoy.version = envoy_version.or(config.envoy.version);
    Ok(config)
}

async fn serve(config: LoopbackConfig) -> ExitCode {
    let loopback = match Loopback::start(config).await {
        Ok(loopback) => loopback,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(3);
        }
    };
    println!("kubeconfig: {}", loopback.kubeconfig().display());
    println!("proxy:      {}", loopback.proxy_address());
    println!("tls proxy:  {}", loopback.tls_proxy_address());
    println!("api:        https://{}", loopback.api_address());
    if let Some(log) = loopback.contour_log() {
        println!("contour:    log in {}", log.display());
    }
    if let Some(envoy) = loopback.envoy() {
        println!("envoy:      {}, log in {}", envoy.version(), envoy.log_path().display());
        // The read-only admin listener Contour gives Envoy (9001 on a real installation).
        println!("envoy admin: 127.0.0.1:{}", envoy.listeners().admin_port);
    }
    println!("Press Ctrl-C to stop.");
    wait_for_signal().await;
    eprintln!("stopping...");
    loopback.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
