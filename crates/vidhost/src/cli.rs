use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use vidhost_api::App;
use vidhost_core::config::Config;
use vidhost_core::domain::Role;

#[derive(Parser)]
#[command(
    name = "vidhost",
    version,
    about = "Self-hosted video platform: upload, process, deliver"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// HTTP API server (zero config: 127.0.0.1:8080, data under ./vidhost-data)
    Serve(ServeArgs),
    /// Processing workers only (scale-out: many workers, one database and store)
    Worker(WorkerArgs),
    /// Apply database migrations and exit
    Migrate(CommonArgs),
    /// Administrative tasks
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Client: sign in to a server and keep the tokens for `upload`
    Login {
        #[arg(long)]
        server: String,
        /// Account e-mail (prompted for when omitted)
        #[arg(long)]
        email: Option<String>,
        /// Authenticator (or recovery) code, for accounts with two-factor
        /// sign-in; asked for when the server wants one. With the password
        /// on stdin, a second line is the code.
        #[arg(long)]
        totp_code: Option<String>,
    },
    /// Client: upload files (resumable, parallel); rerun the same command to resume
    Upload(UploadArgs),
}

#[derive(Args)]
struct UploadArgs {
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Server (default: the one `vidhost login` signed in to)
    #[arg(long)]
    server: Option<String>,
    #[arg(long)]
    title: Option<String>,
    /// public, unlisted or private
    #[arg(long)]
    visibility: Option<String>,
    /// Parts in flight at once (multipart)
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    #[arg(long, value_enum, default_value_t = ProtocolArg::Multipart)]
    protocol: ProtocolArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProtocolArg {
    Multipart,
    Tus,
}

#[derive(Args)]
struct CommonArgs {
    /// Configuration file (default: ./vidhost.toml when present)
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory for the embedded defaults
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port)
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(Args)]
struct WorkerArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Also answer GET /metrics (this process's job counters and durations)
    /// and /healthz on this address, e.g. 127.0.0.1:9464 (port 0 picks one)
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a user; the password is read from stdin (or prompted for)
    CreateUser {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long)]
        email: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long, default_value = "uploader")]
        role: String,
    },
    /// Add new token-signing keys: they sign from now on (running nodes
    /// switch within a sweep interval); older keys still verify until what
    /// they signed has expired, then they are retired
    RotateKeys {
        #[command(flatten)]
        common: CommonArgs,
        /// Which keys: access tokens (jwt), playback and upload grants (grant), or all
        #[arg(long, default_value = "all", value_parser = ["all", "jwt", "grant"])]
        purpose: String,
        /// Retire the older keys now (a key leaked): what they signed stops
        /// working on every node within a sweep interval, so users sign in
        /// again and players fetch new playback URLs
        #[arg(long)]
        retire_old: bool,
    },
}

impl CommonArgs {
    fn load(&self, listen: Option<SocketAddr>) -> anyhow::Result<Config> {
        let mut overrides = figment::Figment::new();
        if let Some(d) = &self.data_dir {
            overrides = overrides.merge(("data_dir", d));
        }
        if let Some(l) = listen {
            overrides = overrides.merge(("listen", l.to_string()));
        }
        Ok(Config::load(self.config.as_deref(), overrides)?)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(filter: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = args.common.load(args.listen)?;
            init_tracing(&config.log);
            let listen = config.listen;
            let app = App::build(config).await?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let addr = listener.local_addr()?;
            // Tests and scripts read this line to find a port-0 server.
            println!("vidhost listening on http://{addr}");
            tracing::info!(%addr, db = app.state.db.backend(), store = app.state.store.kind(), "serving");
            app.run(listener, shutdown_signal()).await
        }
        Command::Worker(args) => {
            let config = args.common.load(None)?;
            init_tracing(&config.log);
            let app = App::build(config).await?;
            let metrics = match args.metrics_listen {
                Some(addr) => {
                    let l = tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("binding {addr}"))?;
                    println!("vidhost worker metrics on http://{}", l.local_addr()?);
                    Some(l)
                }
                None => None,
            };
            tracing::info!(
                workers = app.state.config.processing.workers.max(1),
                "processing"
            );
            app.run_workers(metrics, shutdown_signal()).await
        }
        Command::Migrate(common) => {
            let config = common.load(None)?;
            init_tracing(&config.log);
            App::build(config).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Login {
            server,
            email,
            totp_code,
        } => login(&server, email, totp_code).await,
        Command::Upload(args) => upload(args).await,
        Command::Admin {
            command:
                AdminCommand::CreateUser {
                    common,
                    email,
                    display_name,
                    role,
                },
        } => {
            let role: Role = role
                .parse()
                .map_err(|_| anyhow::anyhow!("--role must be admin, uploader or viewer"))?;
            let config = common.load(None)?;
            init_tracing("warn");
            let password = read_password()?;
            let app = App::build(config).await?;
            let user = vidhost_api::routes::accounts::create_user(
                &app.state,
                &email,
                &password,
                display_name.as_deref(),
                role,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{} ({})", e.detail, e.code))?;
            println!("created {} {} ({})", user.role, user.email, user.id);
            Ok(())
        }
        Command::Admin {
            command:
                AdminCommand::RotateKeys {
                    common,
                    purpose,
                    retire_old,
                },
        } => {
            let config = common.load(None)?;
            init_tracing("warn");
            let app = App::build(config).await?;
            let purposes = match purpose.as_str() {
                "all" => vec![vidhost_api::keys::JWT, vidhost_api::keys::GRANT],
                "jwt" => vec![vidhost_api::keys::JWT],
                _ => vec![vidhost_api::keys::GRANT],
            };
            for p in purposes {
                let kid = vidhost_api::keys::rotate(&app.state.db, p)
                    .await
                    .map_err(|e| anyhow::anyhow!("rotating the {p} key: {}", e.detail))?;
                let retired = if retire_old {
                    vidhost_api::keys::retire_older(&app.state.db, p)
                        .await
                        .map_err(|e| anyhow::anyhow!("retiring the old {p} keys: {}", e.detail))?
                } else {
                    0
                };
                vidhost_api::audit::record(
                    &app.state,
                    None,
                    None,
                    vidhost_api::audit::action::KEY_ROTATED,
                    Some(&kid),
                    serde_json::json!({"purpose": p, "via": "cli", "retired": retired}),
                )
                .await;
                let sweep = app.state.config.uploads.sweep_interval_s;
                if retire_old {
                    println!(
                        "{p}: new signing key {kid}; {retired} older key(s) retired: what they \
                         signed stops working on every node within {sweep} s"
                    );
                } else {
                    let keep = vidhost_api::keys::retention(&app.state.config, p).as_secs();
                    println!(
                        "{p}: new signing key {kid}; older keys still verify for {keep} s, \
                         then they are retired"
                    );
                }
            }
            Ok(())
        }
    }
}

async fn login(
    server: &str,
    email: Option<String>,
    totp_code: Option<String>,
) -> anyhow::Result<()> {
    let email = match email {
        Some(e) => e,
        None => {
            eprint!("E-mail: ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim().to_owned()
        }
    };
    let (password, second_line) = read_secret_lines()?;
    let totp_code = totp_code.or(second_line);
    let creds = match vidhost_client::login(server, &email, &password, totp_code.as_deref()).await {
        Err(e) if totp_code.is_none() && is_mfa_required(&e) => {
            let code = if std::io::stdin().is_terminal() {
                rpassword::prompt_password("Authentication code: ")
                    .context("reading the authentication code")?
            } else {
                anyhow::bail!(
                    "this account signs in with a second factor: give --totp-code, \
                     or the code as a second line on stdin"
                );
            };
            vidhost_client::login(server, &email, &password, Some(code.trim())).await?
        }
        other => other?,
    };
    println!("signed in to {} as {email}", creds.server);
    Ok(())
}

fn is_mfa_required(e: &anyhow::Error) -> bool {
    e.downcast_ref::<vidhost_client::ApiFailure>()
        .is_some_and(|f| f.code == "mfa_required")
}

/// Uploads each file in turn; Ctrl-C stops cleanly and leaves state to resume.
async fn upload(args: UploadArgs) -> anyhow::Result<()> {
    let session = vidhost_client::Session::open(args.server.as_deref())?;
    let opts = vidhost_client::UploadOptions {
        title: args.title,
        visibility: args.visibility,
        parallel: args.parallel.clamp(1, 64),
        protocol: match args.protocol {
            ProtocolArg::Multipart => vidhost_client::Protocol::Multipart,
            ProtocolArg::Tus => vidhost_client::Protocol::Tus,
        },
        progress: std::io::stderr().is_terminal(),
    };
    for file in &args.files {
        let work = vidhost_client::upload_file(&session, file, &opts);
        let done = tokio::select! {
            r = work => r.with_context(|| format!("uploading {}", file.display()))?,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: run the same command again to resume where it stopped");
                std::process::exit(130);
            }
        };
        if done.already_there > 0 {
            eprintln!(
                "resumed: {} bytes were already on the server",
                done.already_there
            );
        }
        println!("uploaded {}", file.display());
        println!("video_id: {}", done.video_id);
        println!("watch_url: {}", done.watch_url);
    }
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    Ok(read_secret_lines()?.0)
}

/// The password (prompted for on a terminal, else the first line of
/// stdin) and, from stdin, a non-empty second line if there is one.
fn read_secret_lines() -> anyhow::Result<(String, Option<String>)> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        let p = rpassword::prompt_password("Password: ").context("reading the password")?;
        return Ok((p, None));
    }
    let mut s = String::new();
    stdin
        .read_to_string(&mut s)
        .context("reading the password from stdin")?;
    let mut lines = s.lines();
    let p = lines.next().unwrap_or("").to_owned();
    anyhow::ensure!(!p.is_empty(), "no password on stdin");
    let second = lines.next().map(str::trim).filter(|l| !l.is_empty());
    Ok((p, second.map(str::to_owned)))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
