//! One typed, layered configuration: built-in defaults < `vidhost.toml` <
//! `VIDHOST_*` environment < command-line flags. The commented defaults file
//! at the repository root documents every setting.

use crate::domain::{RegistrationMode, Role, Visibility};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * MIB;
pub const TIB: u64 = 1024 * GIB;
/// S3's PutObject limit, and ours for the two single-request upload ways.
pub const SINGLE_REQUEST_MAX: u64 = 5 * GIB;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Where the embedded defaults keep their files.
    pub data_dir: PathBuf,
    /// Origin used in absolute URLs; by default taken from the request.
    pub public_url: Option<String>,
    /// `sqlite://…` or `postgres://…`; default: SQLite under `data_dir`.
    pub database_url: Option<String>,
    /// `file:///…` or `s3://bucket?endpoint=…&region=…`; default: `data_dir/objects`.
    pub storage_url: Option<String>,
    pub bootstrap_admin_email: Option<String>,
    pub bootstrap_admin_password: Option<String>,
    pub log: String,
    pub auth: AuthConfig,
    pub uploads: UploadConfig,
    pub delivery: DeliveryConfig,
    pub processing: ProcessingConfig,
    pub rate_limits: RateLimitConfig,
    pub cors: CorsConfig,
}

/// Which web pages (origins) may call the API from a browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// `scheme://host[:port]` each, or `"*"` for any origin (the default:
    /// the API takes bearer tokens, never cookies, so a page elsewhere
    /// cannot act as a signed-in user it holds no token of).
    pub allowed_origins: Vec<String>,
}

/// Limits per client address (token buckets: `burst` requests at once,
/// refilled at `per_second`) and per account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Off: no limit at all (load tests, or a proxy in front that limits).
    pub enabled: bool,
    /// Sign-in, registration, token refresh and the MFA endpoints.
    pub auth_per_second: u32,
    pub auth_burst: u32,
    /// Every other API request; playback (`/play/`), upload bytes (signed
    /// PUTs, tus PATCHes) and the health and metrics endpoints are not limited.
    pub api_per_second: u32,
    pub api_burst: u32,
    /// Wrong passwords in a row, per account and client address, that lock
    /// that address out of that account for a minute, doubling with each
    /// lockout up to an hour.
    pub login_failures_per_lock: u32,
    /// Take the client address from the last `X-Forwarded-For` entry (only
    /// behind a proxy that sets it); else it is the connection's peer.
    /// Believes the header from every peer: only for a server nothing but
    /// the proxy can reach. `trusted_proxies` is the safer way.
    pub trust_forwarded_for: bool,
    /// The proxies (CIDRs, e.g. `10.0.0.0/8`) whose `X-Forwarded-For` is
    /// believed. When set, only requests from these peers have the header
    /// read, and the client is the last entry that is not one of them (so
    /// a chain of proxies counts its first one's client); a request straight
    /// from anywhere else counts as its connection's peer.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub access_token_ttl_s: u64,
    pub refresh_token_ttl_s: u64,
    pub registration: RegistrationMode,
    pub default_role: Role,
    /// Argon2id memory cost in KiB (OWASP: ≥ 19 MiB).
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadConfig {
    pub max_size_bytes: u64,
    pub presign_expiry_s: u64,
    /// How long an incomplete upload lives.
    pub expiry_s: u64,
    /// Smallest multipart part size the server hands out.
    pub min_part_size_bytes: u64,
    /// Visibility of a new video when the uploader names none.
    pub default_visibility: Visibility,
    /// How often each server looks for expired uploads to remove.
    pub sweep_interval_s: u64,
    /// How long past an upload's expiry what interrupted writes left
    /// behind (staging, temp files, S3 multipart uploads) is kept.
    pub leftovers_after_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessingConfig {
    /// Jobs one process runs at once (`serve` and `worker`); 0 turns the
    /// in-process workers of `serve` off.
    pub workers: usize,
    /// Attempts before a job goes to dead letters.
    pub max_attempts: u32,
    /// First retry delay; doubles with each attempt.
    pub retry_base_s: u64,
    /// A step's ffmpeg/ffprobe is killed after this long.
    pub step_timeout_s: u64,
    /// A worker's hold on its job, renewed by a heartbeat (every third of
    /// it, at most every 2 s); a job whose worker died runs again once its
    /// lease lapses.
    pub lease_s: u64,
    /// Threads per ffmpeg (0: ffmpeg decides).
    pub ffmpeg_threads: u32,
    /// Memory one ffmpeg/ffprobe may take (its data segment, `RLIMIT_DATA`),
    /// MiB. A file that needs more fails for good instead of taking the
    /// machine. (A 4K source's ladder took ~1.8 GiB on two cores.) 0: by
    /// the machine's cores, 512 MiB each and at least 8 GiB.
    pub tool_memory_mb: u64,
    /// x264 preset for the ladder.
    pub preset: String,
    /// Segment (and GOP) duration of HLS/DASH, seconds.
    pub segment_duration_s: u32,
    /// The ABR ladder: rungs by the short side of the picture, highest first.
    /// Rungs above the source are skipped (never upscale).
    pub ladder: Vec<RungConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RungConfig {
    pub name: String,
    /// Short side in pixels (720 for 1280x720 and for 720x1280).
    pub short_side: u32,
    /// Video bitrate of a 16:9 picture at 30 fps, bits/s; each rendition's is
    /// scaled by its pixels × frame rate and capped by the source's.
    pub bitrate: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    pub grant_ttl_s: u64,
    pub owner_grant_ttl_s: u64,
}

impl DeliveryConfig {
    /// The longest any play grant issued here lives.
    pub fn longest_grant_s(&self) -> u64 {
        self.grant_ttl_s.max(self.owner_grant_ttl_s)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            data_dir: PathBuf::from("./vidhost-data"),
            public_url: None,
            database_url: None,
            storage_url: None,
            bootstrap_admin_email: None,
            bootstrap_admin_password: None,
            log: "info".into(),
            auth: AuthConfig {
                access_token_ttl_s: 3600,
                refresh_token_ttl_s: 30 * 24 * 3600,
                registration: RegistrationMode::Open,
                default_role: Role::Uploader,
                argon2_memory_kib: 19 * 1024,
                argon2_iterations: 2,
            },
            uploads: UploadConfig {
                max_size_bytes: 5 * TIB,
                presign_expiry_s: 300,
                expiry_s: 24 * 3600,
                min_part_size_bytes: 8 * MIB,
                default_visibility: Visibility::Private,
                sweep_interval_s: 60,
                leftovers_after_s: 3600,
            },
            rate_limits: RateLimitConfig {
                enabled: true,
                auth_per_second: 10,
                auth_burst: 300,
                api_per_second: 200,
                api_burst: 2000,
                login_failures_per_lock: 10,
                trust_forwarded_for: false,
                trusted_proxies: Vec::new(),
            },
            delivery: DeliveryConfig {
                grant_ttl_s: 6 * 3600,
                owner_grant_ttl_s: 3600,
            },
            cors: CorsConfig {
                allowed_origins: vec!["*".into()],
            },
            processing: ProcessingConfig {
                workers: 1,
                max_attempts: 3,
                retry_base_s: 10,
                step_timeout_s: 4 * 3600,
                lease_s: 60,
                ffmpeg_threads: 0,
                tool_memory_mb: 0,
                preset: "veryfast".into(),
                segment_duration_s: 4,
                ladder: [
                    ("1080p", 1080, 5_000_000),
                    ("720p", 720, 2_800_000),
                    ("480p", 480, 1_400_000),
                    ("360p", 360, 800_000),
                    ("240p", 240, 400_000),
                ]
                .into_iter()
                .map(|(name, short_side, bitrate)| RungConfig {
                    name: name.into(),
                    short_side,
                    bitrate,
                })
                .collect(),
            },
        }
    }
}

/// Top-level settings; `VIDHOST_<KEY>` (and `VIDHOST_<SECTION>__<KEY>`) set them.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "public_url",
    "database_url",
    "storage_url",
    "bootstrap_admin_email",
    "bootstrap_admin_password",
    "log",
    "auth",
    "uploads",
    "delivery",
    "processing",
    "rate_limits",
    "cors",
];

/// `scheme://host[:port]` exactly as a browser sends it in `Origin`.
fn is_origin(o: &str) -> bool {
    url::Url::parse(o).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host_str().is_some()
            && u.origin().ascii_serialization() == o
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // Not its `source()` as well: the message already holds figment's,
    // which an error chain would then print twice.
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Layers defaults, the optional TOML file, the environment and `overrides`
    /// (already-parsed flags, as a partial table), then validates.
    pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Invalid(format!(
                        "config file {} does not exist",
                        path.display()
                    )));
                }
                fig = fig.merge(Toml::file(path));
            }
            None => fig = fig.merge(Toml::file("vidhost.toml")),
        }
        // Other tools may set VIDHOST_* variables of their own; only ours are read.
        let env = Env::prefixed("VIDHOST_").split("__").filter(|k| {
            let top = k
                .as_str()
                .split('.')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            TOP_LEVEL_KEYS.contains(&top.as_str())
        });
        let fig = fig.merge(env).merge(overrides);
        let cfg: Config = fig.extract().map_err(|e| ConfigError::Load(Box::new(e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        for o in &self.cors.allowed_origins {
            if o != "*" && !is_origin(o) {
                return bad(format!(
                    "cors.allowed_origins: `{o}` is not an origin; write scheme://host[:port] \
                     (no path, no trailing slash), or \"*\" for any"
                ));
            }
        }
        let ttl = self.auth.access_token_ttl_s;
        if !(900..=86400).contains(&ttl) {
            return bad(format!(
                "auth.access_token_ttl_s must be between 900 (15 min) and 86400 (24 h), got {ttl}"
            ));
        }
        if self.auth.argon2_memory_kib < 8 * 1024 {
            return bad("auth.argon2_memory_kib must be at least 8192".into());
        }
        if self.uploads.max_size_bytes == 0 || self.uploads.max_size_bytes > 5 * TIB {
            return bad("uploads.max_size_bytes must be between 1 and 5 TiB".into());
        }
        let mps = self.uploads.min_part_size_bytes;
        if !(5 * MIB..=5 * GIB).contains(&mps) {
            return bad(format!(
                "uploads.min_part_size_bytes must be 5 MiB..5 GiB, got {mps}"
            ));
        }
        if self.uploads.presign_expiry_s == 0 || self.uploads.presign_expiry_s > 7 * 24 * 3600 {
            return bad("uploads.presign_expiry_s must be 1..604800 (S3's limit)".into());
        }
        let r = &self.rate_limits;
        if r.enabled
            && [
                r.auth_per_second,
                r.auth_burst,
                r.api_per_second,
                r.api_burst,
                r.login_failures_per_lock,
            ]
            .contains(&0)
        {
            return bad("rate_limits: every rate, burst and login_failures_per_lock must be at least 1 (or set enabled = false)".into());
        }
        let p = &self.processing;
        if p.max_attempts == 0 {
            return bad("processing.max_attempts must be at least 1".into());
        }
        if p.ladder.is_empty()
            || p.ladder
                .iter()
                .any(|r| r.short_side < 16 || r.bitrate < 10_000)
        {
            return bad("processing.ladder needs at least one rung, each with short_side ≥ 16 and bitrate ≥ 10000".into());
        }
        if !(1..=20).contains(&p.segment_duration_s) {
            return bad("processing.segment_duration_s must be 1..20".into());
        }
        if p.lease_s < 3 {
            return bad("processing.lease_s must be at least 3".into());
        }
        if p.tool_memory_mb != 0 && p.tool_memory_mb < 256 {
            return bad(
                "processing.tool_memory_mb must be 0 (by the cores) or at least 256 (MiB)".into(),
            );
        }
        if p.step_timeout_s == 0 {
            return bad("processing.step_timeout_s must be at least 1".into());
        }
        if self.uploads.sweep_interval_s == 0 {
            return bad("uploads.sweep_interval_s must be at least 1".into());
        }
        if self.delivery.owner_grant_ttl_s > 3600 || self.delivery.owner_grant_ttl_s == 0 {
            return bad("delivery.owner_grant_ttl_s must be between 1 and 3600".into());
        }
        if self.delivery.grant_ttl_s == 0 {
            return bad("delivery.grant_ttl_s must be at least 1".into());
        }
        if let Some(u) = &self.public_url {
            let parsed = url::Url::parse(u)
                .map_err(|e| ConfigError::Invalid(format!("public_url `{u}`: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return bad(format!("public_url must be http(s), got `{u}`"));
            }
        }
        if let Some(db) = &self.database_url {
            if !(db.starts_with("sqlite:")
                || db.starts_with("postgres://")
                || db.starts_with("postgresql://"))
            {
                return bad(format!(
                    "database_url must start with sqlite: or postgres://, got `{}`",
                    redact_url(db)
                ));
            }
        }
        if let Some(st) = &self.storage_url {
            if !(st.starts_with("file://") || st.starts_with("s3://")) {
                return bad(format!(
                    "storage_url must start with file:// or s3://, got `{st}`"
                ));
            }
        }
        match (&self.bootstrap_admin_email, &self.bootstrap_admin_password) {
            (Some(_), None) | (None, Some(_)) => {
                return bad("bootstrap_admin_email and bootstrap_admin_password go together".into())
            }
            _ => {}
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("vidhost.db").display()
            )
        })
    }

    pub fn storage_url(&self) -> String {
        self.storage_url.clone().unwrap_or_else(|| {
            let dir = self.data_dir.join("objects");
            let abs = std::path::absolute(&dir).unwrap_or(dir);
            format!("file://{}", abs.display())
        })
    }
}

/// Hides a password in a URL for messages and logs.
pub fn redact_url(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_can_be_set_from_the_environment() {
        let v = serde_json::to_value(Config::default()).unwrap();
        let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut known = TOP_LEVEL_KEYS.to_vec();
        fields.sort();
        known.sort();
        assert_eq!(fields, known);
    }

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for good in [
            "https://app.example.org",
            "http://127.0.0.1:3000",
            "http://[::1]:8080",
        ] {
            assert!(super::is_origin(good), "{good}");
        }
        for bad in [
            "https://app.example.org/",
            "https://app.example.org/path",
            "app.example.org",
            "ftp://app.example.org",
            "https://APP.example.org",
            "https://app.example.org:443",
            "",
        ] {
            assert!(!super::is_origin(bad), "{bad}");
        }
    }

    #[test]
    fn bad_ttl_says_what_to_fix() {
        let mut c = Config::default();
        c.auth.access_token_ttl_s = 10;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("access_token_ttl_s"), "{e}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn environment_overrides_and_foreign_variables_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("VIDHOST_AUTH__ACCESS_TOKEN_TTL_S", "7200");
            jail.set_env("VIDHOST_TEST_SOMETHING", "x");
            jail.create_file(
                "vidhost.toml",
                "log = \"debug\"\n[uploads]\nexpiry_s = 60\n",
            )?;
            let c = Config::load(None, Figment::new()).expect("loads");
            assert_eq!(c.auth.access_token_ttl_s, 7200);
            assert_eq!(c.uploads.expiry_s, 60);
            assert_eq!(c.log, "debug");
            jail.set_env("VIDHOST_AUTH__NO_SUCH_SETTING", "1");
            assert!(
                Config::load(None, Figment::new()).is_err(),
                "typos in our own sections are errors"
            );
            Ok(())
        });
    }

    /// The commented defaults file in the repository documents every
    /// setting; it must parse and say exactly what the code defaults to.
    #[test]
    fn the_defaults_file_matches_the_code() {
        // Compiled in, so cargo tracks the file and a missing one cannot
        // read as an empty (all-defaults-missing) file.
        let text = include_str!("../../../vidhost.toml");
        let from_file: Config = Figment::from(Toml::string(text))
            .extract()
            .expect("vidhost.toml parses");
        assert_eq!(
            serde_json::to_value(&from_file).unwrap(),
            serde_json::to_value(Config::default()).unwrap()
        );
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:****@h/db"
        );
    }
}
