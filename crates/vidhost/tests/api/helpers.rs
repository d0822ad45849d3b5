//! Spawns the real `vidhost` binary on a loopback port and talks to it over
//! HTTP, as a client would. The backend comes from the environment:
//! `VIDHOST_TEST_PG_URL` (a PostgreSQL server: each server gets a fresh
//! database on it) and `VIDHOST_TEST_S3_ENDPOINT` (an S3-compatible server:
//! each server gets a fresh bucket). Without them: SQLite + local disk.

use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const ADMIN_EMAIL: &str = "root@example.com";
pub const PASSWORD: &str = "correct horse battery staple 42";

pub struct TestServer {
    pub base: String,
    pub http: Client,
    pub data_dir: tempfile::TempDir,
    pub storage: Storage,
    pub database_url: String,
    envs: Vec<(String, String)>,
    /// Killed when the test drops the server.
    _child: Child,
}

#[derive(Clone)]
pub enum Storage {
    Disk(PathBuf),
    S3 { endpoint: String, bucket: String },
}

fn rand_suffix() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

async fn fresh_pg_database(base: &str) -> String {
    use sqlx::Connection;
    let name = format!("t_{}", rand_suffix());
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create database");
    let mut url = url::Url::parse(base).expect("pg url");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// The test server's bucket `name`, path-style.
fn test_bucket(endpoint: &str, name: &str) -> rusty_s3::Bucket {
    rusty_s3::Bucket::new(
        endpoint.parse().unwrap(),
        rusty_s3::UrlStyle::Path,
        name.to_owned(),
        region(),
    )
    .unwrap()
}

async fn fresh_bucket(endpoint: &str) -> String {
    let name = format!("t-{}", rand_suffix());
    let bucket = test_bucket(endpoint, &name);
    let creds = creds();
    let url = rusty_s3::S3Action::sign(&bucket.create_bucket(&creds), Duration::from_secs(60));
    let r = Client::new()
        .put(url)
        .header("content-length", "0")
        .send()
        .await
        .expect("create bucket");
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    name
}

fn region() -> String {
    std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into())
}

fn creds() -> rusty_s3::Credentials {
    rusty_s3::Credentials::new(
        std::env::var("AWS_ACCESS_KEY_ID").expect("AWS_ACCESS_KEY_ID for the S3 test server"),
        std::env::var("AWS_SECRET_ACCESS_KEY")
            .expect("AWS_SECRET_ACCESS_KEY for the S3 test server"),
    )
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(&[]).await
    }

    /// Starts a server with extra `VIDHOST_*` settings.
    pub async fn start_with(env: &[(&str, &str)]) -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        let mut envs: Vec<(String, String)> = vec![
            ("RUST_LOG".into(), "warn".into()),
            ("VIDHOST_BOOTSTRAP_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
            ("VIDHOST_BOOTSTRAP_ADMIN_PASSWORD".into(), PASSWORD.into()),
            // Cheap hashing keeps the suite fast; the defaults are unit-tested.
            ("VIDHOST_AUTH__ARGON2_MEMORY_KIB".into(), "8192".into()),
            ("VIDHOST_AUTH__ARGON2_ITERATIONS".into(), "1".into()),
            (
                "VIDHOST_UPLOADS__MIN_PART_SIZE_BYTES".into(),
                (5 * 1024 * 1024).to_string(),
            ),
            // Processing runs only where a test asks for it (pipeline tests),
            // so upload tests see their videos stay `uploaded`.
            ("VIDHOST_PROCESSING__WORKERS".into(), "0".into()),
        ];
        for k in [
            "PATH",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
        ] {
            if let Ok(v) = std::env::var(k) {
                envs.push((k.into(), v));
            }
        }
        let mut database_url = match std::env::var("VIDHOST_TEST_PG_URL") {
            Ok(pg) => fresh_pg_database(&pg).await,
            Err(_) => format!(
                "sqlite://{}?mode=rwc",
                data_dir.path().join("vidhost.db").display()
            ),
        };
        envs.push(("VIDHOST_DATABASE_URL".into(), database_url.clone()));
        let storage = match std::env::var("VIDHOST_TEST_S3_ENDPOINT") {
            Ok(endpoint) => {
                let bucket = fresh_bucket(&endpoint).await;
                envs.push((
                    "VIDHOST_STORAGE_URL".into(),
                    format!("s3://{bucket}?endpoint={endpoint}&region={}", region()),
                ));
                Storage::S3 { endpoint, bucket }
            }
            Err(_) => Storage::Disk(data_dir.path().join("objects")),
        };
        for (k, v) in env {
            // Test-only: clients reach the S3 store at another address.
            if *k == "VIDHOST_TEST_PUBLIC_ENDPOINT" {
                let url = envs
                    .iter_mut()
                    .find(|(k, _)| k == "VIDHOST_STORAGE_URL")
                    .expect("S3 storage");
                url.1.push_str(&format!("&public_endpoint={v}"));
                continue;
            }
            // Test-only: the server reaches the S3 store through `v` (a
            // proxy), with `VIDHOST_TEST_STORAGE_PARAMS` added to its URL.
            if *k == "VIDHOST_TEST_SERVER_ENDPOINT" || *k == "VIDHOST_TEST_STORAGE_PARAMS" {
                let Storage::S3 { endpoint, .. } = &storage else {
                    panic!("{k} needs S3 storage");
                };
                let url = envs
                    .iter_mut()
                    .find(|(k, _)| k == "VIDHOST_STORAGE_URL")
                    .expect("S3 storage");
                url.1 = if *k == "VIDHOST_TEST_SERVER_ENDPOINT" {
                    url.1
                        .replace(&format!("endpoint={endpoint}"), &format!("endpoint={v}"))
                } else {
                    format!("{}&{v}", url.1)
                };
                continue;
            }
            envs.push((k.to_string(), v.to_string()));
            if *k == "VIDHOST_DATABASE_URL" {
                database_url = v.to_string();
            }
        }
        let (child, base) = spawn(data_dir.path(), &envs).await;
        let http = Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        TestServer {
            base,
            http,
            data_dir,
            storage,
            database_url,
            envs,
            _child: child,
        }
    }

    /// A server whose S3 store it reaches through a fault-injecting proxy
    /// (`Proxy::set_hung`), with requests to the store timing out after a
    /// second or two (`timeout_s`) and `env` added. None on local disk, which
    /// has no store process to fail.
    pub async fn start_behind_store_proxy(
        timeout_s: u64,
        env: &[(&str, &str)],
    ) -> Option<(crate::proxy::Proxy, TestServer)> {
        let endpoint = std::env::var("VIDHOST_TEST_S3_ENDPOINT").ok()?;
        let proxy = crate::proxy::Proxy::start(&endpoint, Default::default()).await;
        let params = format!("timeout_s={timeout_s}");
        let mut all = vec![
            ("VIDHOST_TEST_SERVER_ENDPOINT", proxy.url.as_str()),
            ("VIDHOST_TEST_STORAGE_PARAMS", params.as_str()),
        ];
        all.extend_from_slice(env);
        let s = TestServer::start_with(&all).await;
        Some((proxy, s))
    }

    /// Starts a `vidhost worker` process on this server's database and store.
    /// A `vidhost worker` process with `workers` concurrent workers.
    pub fn spawn_worker(&self, workers: usize) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vidhost"));
        cmd.arg("worker")
            .arg("--data-dir")
            .arg(self.data_dir.path());
        cmd.env_clear().envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.env("VIDHOST_PROCESSING__WORKERS", workers.to_string());
        cmd.stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        cmd.spawn().expect("spawn vidhost worker")
    }

    /// A `vidhost worker` that also answers /metrics; returns it and its
    /// base URL.
    pub async fn spawn_worker_with_metrics(&self, workers: usize) -> (Child, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vidhost"));
        cmd.arg("worker")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--metrics-listen")
            .arg("127.0.0.1:0");
        cmd.env_clear().envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.env("VIDHOST_PROCESSING__WORKERS", workers.to_string());
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn vidhost worker");
        let base = announced(&mut child, "vidhost worker metrics on ").await;
        (child, base)
    }

    /// Kills the server with SIGKILL (no chance to clean up) and starts it
    /// again on the same data, database and store, on a new port.
    pub async fn crash_and_restart(&mut self) {
        self._child.start_kill().unwrap();
        self._child.wait().await.unwrap();
        let (child, base) = spawn(self.data_dir.path(), &self.envs).await;
        self._child = child;
        self.base = base;
    }

    /// Stops the server as a deploy does (SIGTERM, waiting for it to exit,
    /// at most 30 s) and leaves it stopped until `restart`.
    pub async fn stop_gracefully(&mut self) {
        let pid = self.pid().to_string();
        let term = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(term.success());
        let exited = tokio::time::timeout(Duration::from_secs(30), self._child.wait()).await;
        assert!(exited.is_ok(), "the server exits within 30 s of SIGTERM");
    }

    pub async fn restart(&mut self) {
        let (child, base) = spawn(self.data_dir.path(), &self.envs).await;
        self._child = child;
        self.base = base;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn register(&self, email: &str) -> Value {
        let r = self
            .post_json(
                "/api/v1/auth/register",
                None,
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "register {email}");
        r.json().await.unwrap()
    }

    pub async fn login(&self, email: &str) -> Value {
        let r = self
            .post_json(
                "/api/v1/auth/login",
                None,
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "login {email}");
        r.json().await.unwrap()
    }

    /// Registers `email` and returns an access token.
    pub async fn user(&self, email: &str) -> String {
        self.register(email).await;
        self.access_token(email).await
    }

    /// Signs `email` in and returns the access token.
    pub async fn access_token(&self, email: &str) -> String {
        self.login(email).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn admin(&self) -> String {
        self.access_token(ADMIN_EMAIL).await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        let mut r = self.http.post(self.url(path)).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap()
    }

    /// An admin's change to a user (`PATCH /api/v1/admin/users/{id}`).
    pub async fn set_user(&self, admin: &str, user_id: &str, change: Value) -> Response {
        self.http
            .patch(self.url(&format!("/api/v1/admin/users/{user_id}")))
            .bearer_auth(admin)
            .json(&change)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut r = self.http.get(self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap()
    }

    /// GET `path` and its JSON body.
    /// Every item of a paged list, following `next_cursor` from `path`
    /// (which has a query already); each item is `field` of the item.
    pub async fn all_pages(&self, path: &str, token: Option<&str>, field: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let mut url = path.to_owned();
        loop {
            let page = self.get_json(&url, token).await;
            for e in page["items"].as_array().unwrap() {
                seen.push(e[field].as_str().unwrap().to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(c) => url = format!("{path}&cursor={c}"),
                None => return seen,
            }
        }
    }

    pub async fn get_json(&self, path: &str, token: Option<&str>) -> Value {
        self.get(path, token).await.json().await.unwrap()
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        let r = self.http.delete(self.url(path)).bearer_auth(token);
        r.send().await.unwrap()
    }

    /// The stored original of a video, fetched as its owner would: through
    /// the `original` URL of a playback grant.
    pub async fn original_of(&self, token: &str, video_id: &str) -> Vec<u8> {
        let pb = self
            .get_json(&format!("/api/v1/videos/{video_id}/playback"), Some(token))
            .await;
        let r = self.get(pb["original"].as_str().unwrap(), None).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.bytes().await.unwrap().to_vec()
    }

    /// One-request upload of `bytes` as `filename`.
    pub async fn upload_form(
        &self,
        token: &str,
        bytes: Vec<u8>,
        filename: &str,
        fields: &[(&str, &str)],
    ) -> Response {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(filename.to_owned()),
        );
        self.http
            .post(self.url("/api/v1/upload"))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Uploads a small real video and returns the video JSON.
    pub async fn upload_sample(&self, token: &str, title: &str) -> Value {
        let r = self
            .upload_form(
                token,
                sample_mp4().to_vec(),
                "sample.mp4",
                &[("title", title)],
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }

    /// Every object key the store holds (not counting in-flight scratch space).
    pub async fn object_keys(&self) -> Vec<String> {
        match &self.storage {
            Storage::Disk(root) => {
                let mut out = Vec::new();
                walk(root, root, &mut out);
                out
            }
            Storage::S3 { endpoint, bucket } => {
                let b = test_bucket(endpoint, bucket);
                let c = creds();
                let url =
                    rusty_s3::S3Action::sign(&b.list_objects_v2(Some(&c)), Duration::from_secs(60));
                let text = text_of(Client::new().get(url)).await;
                let parsed = rusty_s3::actions::ListObjectsV2::parse_response(&text).unwrap();
                parsed
                    .contents
                    .into_iter()
                    .map(|o| {
                        percent_encoding::percent_decode_str(&o.key)
                            .decode_utf8_lossy()
                            .into_owned()
                    })
                    .collect()
            }
        }
    }

    /// Puts `bytes` at `key` behind the server's back, the way the store
    /// writes a new version: on disk a new file renamed over the old one.
    pub async fn replace_object(&self, key: &str, bytes: &[u8]) {
        match &self.storage {
            Storage::Disk(root) => {
                let path = root.join(key);
                let tmp = path.with_extension("replacing");
                std::fs::write(&tmp, bytes).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            }
            Storage::S3 { endpoint, bucket } => {
                let b = test_bucket(endpoint, bucket);
                let c = creds();
                let url =
                    rusty_s3::S3Action::sign(&b.put_object(Some(&c), key), Duration::from_secs(60));
                let r = Client::new()
                    .put(url)
                    .body(bytes.to_vec())
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "replace {key}: {}", r.status());
            }
        }
    }

    /// Bytes held in incomplete uploads (multipart staging or S3 multipart uploads).
    pub async fn pending_multipart_count(&self) -> usize {
        match &self.storage {
            Storage::Disk(root) => std::fs::read_dir(root.join(".multipart"))
                .map(|d| d.count())
                .unwrap_or(0),
            Storage::S3 { endpoint, bucket } => {
                let b = test_bucket(endpoint, bucket);
                let c = creds();
                let mut action = b.list_objects_v2(Some(&c));
                rusty_s3::S3Action::query_mut(&mut action).insert("uploads", "");
                let url = rusty_s3::S3Action::sign(&action, Duration::from_secs(60));
                let text = text_of(Client::new().get(url)).await;
                text.matches("<UploadId>").count()
            }
        }
    }

    /// Starts an S3 multipart upload at `key` behind the server's back, as a
    /// process killed mid-write leaves one; returns its upload id.
    pub async fn start_stray_multipart(&self, key: &str) -> String {
        let Storage::S3 { endpoint, bucket } = &self.storage else {
            panic!("S3 storage only");
        };
        let b = test_bucket(endpoint, bucket);
        let c = creds();
        let url = rusty_s3::S3Action::sign(
            &b.create_multipart_upload(Some(&c), key),
            Duration::from_secs(60),
        );
        let text = text_of(Client::new().post(url).header("content-length", "0")).await;
        rusty_s3::actions::CreateMultipartUpload::parse_response(&text)
            .unwrap()
            .upload_id()
            .to_owned()
    }

    /// The server's process id (to signal it).
    pub fn pid(&self) -> u32 {
        self._child.id().expect("running")
    }

    /// Where a disk store keeps its objects (None on S3).
    pub fn disk_root(&self) -> Option<&Path> {
        match &self.storage {
            Storage::Disk(root) => Some(root),
            Storage::S3 { .. } => None,
        }
    }

    pub fn is_s3(&self) -> bool {
        matches!(self.storage, Storage::S3 { .. })
    }
}

async fn spawn(data_dir: &Path, envs: &[(String, String)]) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vidhost"));
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir);
    cmd.env_clear().envs(envs.iter().map(|(k, v)| (k, v)));
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn vidhost");
    let base = announced(&mut child, "vidhost listening on ").await;
    (child, base)
}

/// The URL a starting vidhost prints on its first stdout line after
/// `prefix`; the rest of its stdout is drained so it never blocks on a
/// full pipe.
async fn announced(child: &mut Child, prefix: &str) -> String {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("vidhost did not start within 60 s")
        .unwrap()
        .expect("vidhost exited before listening");
    let base = line
        .trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("`{prefix}…` expected, got `{line}`"))
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    base
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel.starts_with(".tmp") || rel.starts_with(".multipart") {
            continue;
        }
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            out.push(rel);
        }
    }
}

/// A small real MP4 (2 s of test pattern), made once per test binary with ffmpeg.
pub fn sample_mp4() -> &'static [u8] {
    static CELL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    CELL.get_or_init(|| {
        make_media(
            "sample.mp4",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=25",
                "-t",
                "2",
                "-pix_fmt",
                "yuv420p",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
            ],
        )
    })
}

/// A ~11.5 MiB real video (uncompressed AVI): big enough for several 5 MiB parts.
pub fn big_avi() -> &'static [u8] {
    static CELL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    CELL.get_or_init(|| {
        make_media(
            "big.avi",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=25",
                "-t",
                "4",
                "-pix_fmt",
                "yuv420p",
                "-c:v",
                "rawvideo",
            ],
        )
    })
}

fn make_media(name: &str, args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(name);
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(&out)
        .status()
        .expect("ffmpeg must be installed (scripts/install-deps.sh)");
    assert!(status.success(), "ffmpeg failed to make {name}");
    std::fs::read(out).unwrap()
}

pub fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

pub async fn problem(r: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(r.status(), status, "expected {status} {code}");
    let ct = r
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(ct, "application/problem+json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["status"], status.as_u16());
    v
}

/// The number one query gives on a server's database.
pub async fn sql_count(database_url: &str, q: &str) -> i64 {
    use sqlx::Connection;
    if database_url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(database_url).await.unwrap();
        sqlx::query_scalar(q).fetch_one(&mut c).await.unwrap()
    } else {
        let mut c = sqlx::PgConnection::connect(database_url).await.unwrap();
        sqlx::query_scalar(q).fetch_one(&mut c).await.unwrap()
    }
}

/// The body of a request to the S3 test server.
async fn text_of(req: reqwest::RequestBuilder) -> String {
    req.send().await.unwrap().text().await.unwrap()
}

/// Runs one statement on a server's database, as an operator could.
pub async fn sql(database_url: &str, q: &str) {
    use sqlx::Connection;
    if database_url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(database_url).await.unwrap();
        sqlx::query(q).execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(database_url).await.unwrap();
        sqlx::query(q).execute(&mut c).await.unwrap();
    }
}

/// The third-party clients (and the browser test) under tests/clients.
pub fn clients_dir() -> std::path::PathBuf {
    // The test runner's own CARGO_MANIFEST_DIR first: a test binary reused
    // from a shared target dir may have been built in another checkout.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    dir.join("tests/clients")
}

/// Runs a client program; its last stdout line is JSON of what it saw.
pub fn run_client(program: &str, args: &[&str], dir: &std::path::Path) -> Value {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{program} printed {stdout}: {e}"))
}
