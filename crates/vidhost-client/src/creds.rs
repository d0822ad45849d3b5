//! Tokens kept between runs in `$VIDHOST_CLIENT_DIR` (default
//! `$XDG_CONFIG_HOME/vidhost` or `~/.config/vidhost`), file mode 0600.

use crate::ApiFailure;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub server: String,
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds.
    pub access_expires_at: u64,
}

pub fn client_dir() -> anyhow::Result<PathBuf> {
    if let Ok(d) = std::env::var("VIDHOST_CLIENT_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Ok(d) = std::env::var("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(d).join("vidhost"));
    }
    let home = std::env::var("HOME").context("HOME is not set; set VIDHOST_CLIENT_DIR")?;
    Ok(PathBuf::from(home).join(".config").join("vidhost"))
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Writes `bytes` to `path` atomically with mode 0600 (state and tokens).
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().context("no parent directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn creds_path() -> anyhow::Result<PathBuf> {
    Ok(client_dir()?.join("credentials.json"))
}

fn token_pair(server: &str, v: &serde_json::Value) -> anyhow::Result<Credentials> {
    let s = |k: &str| {
        v[k].as_str()
            .map(str::to_owned)
            .with_context(|| format!("the server's answer lacks {k}"))
    };
    Ok(Credentials {
        server: server.to_owned(),
        access_token: s("access_token")?,
        refresh_token: s("refresh_token")?,
        access_expires_at: now_s() + v["expires_in"].as_u64().unwrap_or(900),
    })
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(120))
        .user_agent(concat!("vidhost-cli/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a TLS backend is compiled in")
}

pub fn normalize_server(server: &str) -> anyhow::Result<String> {
    let u = url::Url::parse(server)
        .with_context(|| format!("`{server}` is not a URL like http://host:8080"))?;
    if !matches!(u.scheme(), "http" | "https") {
        bail!("the server URL must be http:// or https://");
    }
    Ok(server.trim_end_matches('/').to_owned())
}

/// Signs in and stores the tokens. An account with two-factor sign-in
/// needs `totp_code` (an authenticator code or a recovery code); without
/// one the error is an [`ApiFailure`](crate::ApiFailure) with code
/// `mfa_required`.
pub async fn login(
    server: &str,
    email: &str,
    password: &str,
    totp_code: Option<&str>,
) -> anyhow::Result<Credentials> {
    let server = normalize_server(server)?;
    let mut body = serde_json::json!({"email": email, "password": password});
    if let Some(code) = totp_code {
        body["totp_code"] = code.into();
    }
    let resp = http_client()
        .post(format!("{server}/api/v1/auth/login"))
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    if !resp.status().is_success() {
        return Err(ApiFailure::from_response(resp).await.into());
    }
    let creds = token_pair(&server, &resp.json().await?)?;
    write_private(&creds_path()?, &serde_json::to_vec_pretty(&creds)?)?;
    Ok(creds)
}

/// A signed-in client: the stored tokens, refreshed when they run out.
pub struct Session {
    pub http: reqwest::Client,
    pub server: String,
    creds: tokio::sync::Mutex<Credentials>,
}

impl Session {
    /// Loads the stored tokens; `server` (if given) must match them.
    pub fn open(server: Option<&str>) -> anyhow::Result<Session> {
        let path = creds_path()?;
        let raw = std::fs::read(&path).map_err(|_| {
            anyhow::anyhow!("not signed in: run `vidhost login --server URL` first")
        })?;
        let creds: Credentials = serde_json::from_slice(&raw)
            .context("the stored credentials are unreadable; log in again")?;
        if let Some(s) = server {
            let s = normalize_server(s)?;
            if s != creds.server {
                bail!(
                    "signed in to {} but --server is {s}: run `vidhost login --server {s}`",
                    creds.server
                );
            }
        }
        Ok(Session {
            http: http_client(),
            server: creds.server.clone(),
            creds: tokio::sync::Mutex::new(creds),
        })
    }

    /// The account the stored tokens are of (the access token's `sub`; read,
    /// not verified: the server verifies it).
    pub async fn account(&self) -> String {
        use base64::Engine;
        let c = self.creds.lock().await;
        c.access_token
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
            .and_then(|claims| claims["sub"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// A valid access token, refreshing it first if it expires within a minute.
    pub async fn token(&self) -> anyhow::Result<String> {
        let c = self.creds.lock().await;
        if c.access_expires_at > now_s() + 60 {
            return Ok(c.access_token.clone());
        }
        drop(c);
        self.refresh().await
    }

    /// Rotates the refresh token (after a 401 or near expiry) and stores the new pair.
    pub async fn refresh(&self) -> anyhow::Result<String> {
        let mut c = self.creds.lock().await;
        let resp = self
            .http
            .post(format!("{}/api/v1/auth/refresh", self.server))
            .json(&serde_json::json!({"refresh_token": c.refresh_token}))
            .send()
            .await?;
        if !resp.status().is_success() {
            let f = ApiFailure::from_response(resp).await;
            bail!(
                "{f}; sign in again with `vidhost login --server {}`",
                self.server
            );
        }
        *c = token_pair(&self.server, &resp.json().await?)?;
        write_private(&creds_path()?, &serde_json::to_vec_pretty(&*c)?)?;
        Ok(c.access_token.clone())
    }
}
