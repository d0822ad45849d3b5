//! `vidhost login` and `vidhost upload`, run as a user would, against a
//! real server — through a fault-injecting proxy where the story needs one.
//! The CLI runs as a blocking child process while the proxy runs on the
//! test runtime, hence multi-threaded runtimes.

use crate::helpers::*;
use crate::proxy::{Faults, Proxy};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        Cli {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vidhost"));
        cmd.args(args)
            .env("VIDHOST_CLIENT_DIR", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self.command(args).spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn login(&self, server: &str, email: &str) {
        let out = self.run(
            &["login", "--server", server, "--email", email],
            &format!("{PASSWORD}\n"),
        );
        assert!(
            out.status.success(),
            "login: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn field(out: &Output, name: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| {
            panic!(
                "no {name} in {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_owned()
}

async fn original_sha(s: &TestServer, t: &str, id: &str) -> String {
    let pb: Value = s
        .get_json(&format!("/api/v1/videos/{id}/playback"), Some(t))
        .await;
    sha256(
        &s.get(pb["original"].as_str().unwrap(), None)
            .await
            .bytes()
            .await
            .unwrap(),
    )
}

/// A file of `mib` MiB that starts like a real video.
fn video_file(dir: &Path, mib: usize) -> (std::path::PathBuf, Vec<u8>) {
    let mut data = sample_mp4().to_vec();
    let mut rng = 0x9e3779b97f4a7c15u64;
    while data.len() < mib << 20 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        data.extend_from_slice(&rng.to_le_bytes());
    }
    data.truncate(mib << 20);
    let path = dir.join(format!("clip-{mib}.mp4"));
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// Clients reach parts through the API (local storage) or straight at the
/// store (S3): put the proxy where the part bytes flow.
async fn server_behind(faults: Faults) -> (TestServer, Proxy, String) {
    if let Ok(s3) = std::env::var("VIDHOST_TEST_S3_ENDPOINT") {
        let store_proxy = Proxy::start(&s3, faults).await;
        let s = TestServer::start_with(&[("VIDHOST_TEST_PUBLIC_ENDPOINT", &store_proxy.url)]).await;
        let base = s.base.clone();
        (s, store_proxy, base)
    } else {
        let s = TestServer::start().await;
        let p = Proxy::start(&s.base, faults).await;
        let url = p.url.clone();
        (s, p, url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_asks_for_the_second_factor_when_the_account_has_one() {
    use crate::mfa::{enrol, step_now, totp};
    let s = TestServer::start().await;
    let t = s.user("two@example.com").await;
    let (secret, recovery) = enrol(&s, &t).await;
    let cli = Cli::new();
    let args = ["login", "--server", &s.base, "--email", "two@example.com"];
    let out = cli.run(&args, &format!("{PASSWORD}\n"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--totp-code"), "{err}");
    assert!(!cli.dir.path().join("credentials.json").exists());

    // The code as a second line of stdin, then as a flag (a recovery code).
    let code = totp(&secret, step_now() + 1);
    let out = cli.run(&args, &format!("{PASSWORD}\n{code}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut with_flag = args.to_vec();
    with_flag.extend(["--totp-code", &recovery[0]]);
    let out = cli.run(&with_flag, &format!("{PASSWORD}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A used code is refused, with the server's reason.
    let out = cli.run(&with_flag, &format!("{PASSWORD}\n"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_totp"));

    // The stored tokens work: an upload goes through.
    let (path, _) = video_file(cli.dir.path(), 6);
    let out = cli.run(&["upload", path.to_str().unwrap()], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_then_upload_with_both_protocols() {
    let s = TestServer::start().await;
    let t = s.user("cli@example.com").await;
    let cli = Cli::new();
    cli.login(&s.base, "cli@example.com");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cli.dir.path().join("credentials.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let (path, data) = video_file(cli.dir.path(), 12);
    let out = cli.run(
        &[
            "upload",
            path.to_str().unwrap(),
            "--title",
            "From the CLI",
            "--visibility",
            "unlisted",
            "--parallel",
            "3",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = field(&out, "video_id");
    assert_eq!(field(&out, "watch_url"), format!("{}/watch/{id}", s.base));
    let v: Value = s.get_json(&format!("/api/v1/videos/{id}"), Some(&t)).await;
    assert_eq!(
        (
            v["title"].as_str(),
            v["visibility"].as_str(),
            v["status"].as_str()
        ),
        (Some("From the CLI"), Some("unlisted"), Some("uploaded"))
    );
    assert_eq!(original_sha(&s, &t, &id).await, sha256(&data));

    let out = cli.run(&["upload", path.to_str().unwrap(), "--protocol", "tus"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id2 = field(&out, "video_id");
    assert_ne!(id, id2);
    assert_eq!(original_sha(&s, &t, &id2).await, sha256(&data));
    // No state is left behind once an upload is done.
    assert_eq!(
        std::fs::read_dir(cli.dir.path().join("uploads"))
            .unwrap()
            .count(),
        0
    );

    let out = Cli::new().run(&["upload", path.to_str().unwrap()], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("vidhost login"));
}

fn count_in_metrics(text: &str, route: &str, status: u16) -> u64 {
    let needle = format!("vidhost_http_requests_total{{route=\"{route}\",status=\"{status}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_with_sigint_then_resumed_without_resending() {
    // Slow link (8 MiB/s), so that Ctrl-C lands mid-upload.
    let (s, _proxy, server) = server_behind(Faults {
        throttle_bps: 8 << 20,
        drop_once_after: None,
    })
    .await;
    let t = s.user("int@example.com").await;
    let cli = Cli::new();
    cli.login(&server, "int@example.com");
    let (path, data) = video_file(cli.dir.path(), 40);
    let upload_id = upload_then_ctrl_c(&s, &t, &cli, &path).await;
    let got: Value = s
        .get_json(&format!("/api/v1/uploads/multipart/{upload_id}"), Some(&t))
        .await;
    let acked = got["parts"].as_array().unwrap().len();
    assert!(
        acked >= 2 && acked < got["part_count"].as_u64().unwrap() as usize,
        "{got}"
    );

    let out = cli.run(&["upload", path.to_str().unwrap(), "--parallel", "2"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resumed"));
    let id = field(&out, "video_id");
    assert_eq!(
        id,
        got["video_id"].as_str().unwrap(),
        "the same upload was finished"
    );
    assert_eq!(original_sha(&s, &t, &id).await, sha256(&data));
    if !s.is_s3() {
        // Every part was stored exactly once: acknowledged ones were not sent again.
        let m = s.get("/metrics", None).await.text().await.unwrap();
        assert_eq!(
            count_in_metrics(&m, "/api/v1/uploads/direct/{token}", 200),
            got["part_count"].as_u64().unwrap()
        );
    }
}

/// Starts `vidhost upload` of `path` and presses Ctrl-C once the server
/// holds two of its parts; answers the upload's id.
async fn upload_then_ctrl_c(s: &TestServer, t: &str, cli: &Cli, path: &Path) -> String {
    let mut child = cli
        .command(&["upload", path.to_str().unwrap(), "--parallel", "2"])
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    // Wait until the server holds at least two parts, then press Ctrl-C.
    let state_dir = cli.dir.path().join("uploads");
    let mut upload_id = String::new();
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(state) = std::fs::read_dir(&state_dir).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "json"))
        }) else {
            continue;
        };
        let st: Value = std::fs::read(state)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .unwrap_or_default();
        let Some(id) = st["upload_id"].as_str() else {
            continue;
        };
        upload_id = id.to_owned();
        let got: Value = s
            .get_json(&format!("/api/v1/uploads/multipart/{id}"), Some(t))
            .await;
        if got["parts"].as_array().is_some_and(|p| p.len() >= 2) {
            break;
        }
    }
    assert!(!upload_id.is_empty(), "the upload started");
    unsafe_sigint(child.id());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resume"));
    upload_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_since_an_interrupted_upload_is_sent_anew() {
    let (s, _proxy, server) = server_behind(Faults {
        throttle_bps: 8 << 20,
        drop_once_after: None,
    })
    .await;
    let t = s.user("chg@example.com").await;
    let cli = Cli::new();
    cli.login(&server, "chg@example.com");
    let (path, mut data) = video_file(cli.dir.path(), 40);
    let old = upload_then_ctrl_c(&s, &t, &cli, &path).await;
    // Edited since: the parts on the server are of another file.
    let at = data.len() / 2;
    data[at..at + 1000].fill(0x5a);
    std::fs::write(&path, &data).unwrap();
    let out = cli.run(&["upload", path.to_str().unwrap(), "--parallel", "2"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = field(&out, "video_id");
    assert_eq!(original_sha(&s, &t, &id).await, sha256(&data));
    // The earlier upload was aborted, not left to expire; no state is left.
    let r = s
        .get(&format!("/api/v1/uploads/multipart/{old}"), Some(&t))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let ups: Value = s.get_json("/api/v1/uploads", Some(&t)).await;
    assert_eq!(ups["items"], json!([]));
    let states = std::fs::read_dir(cli.dir.path().join("uploads")).unwrap();
    assert_eq!(states.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_upload_of_a_file_being_sent_is_refused() {
    let (s, _proxy, server) = server_behind(Faults {
        throttle_bps: 4 << 20,
        drop_once_after: None,
    })
    .await;
    s.user("two@example.com").await;
    let cli = Cli::new();
    cli.login(&server, "two@example.com");
    let (path, _) = video_file(cli.dir.path(), 24);
    let mut first = cli
        .command(&["upload", path.to_str().unwrap()])
        .spawn()
        .unwrap();
    drop(first.stdin.take());
    let state_dir = cli.dir.path().join("uploads");
    let started = || {
        std::fs::read_dir(&state_dir)
            .map(|d| {
                d.flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
            .unwrap_or(false)
    };
    for _ in 0..100 {
        if started() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started(), "the first upload started");
    let out = cli.run(&["upload", path.to_str().unwrap()], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is running"), "{err}");
    first.kill().unwrap();
    first.wait().unwrap();
}

fn unsafe_sigint(pid: u32) {
    let ok = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_part_is_retried() {
    let (s, proxy, server) = server_behind(Faults {
        throttle_bps: 0,
        drop_once_after: Some(3 << 20),
    })
    .await;
    let t = s.user("drop@example.com").await;
    let cli = Cli::new();
    cli.login(&server, "drop@example.com");
    let (path, data) = video_file(cli.dir.path(), 16);
    let out = cli.run(&["upload", path.to_str().unwrap(), "--parallel", "2"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(proxy.drops(), 1, "the proxy cut a connection mid-part");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("retrying"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = field(&out, "video_id");
    assert_eq!(original_sha(&s, &t, &id).await, sha256(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_reported_and_not_retried() {
    let s = TestServer::start_with(&[("VIDHOST_UPLOADS__MAX_SIZE_BYTES", "1000000")]).await;
    s.user("big@example.com").await;
    let cli = Cli::new();
    cli.login(&s.base, "big@example.com");
    let (path, _) = video_file(cli.dir.path(), 2);
    let started = std::time::Instant::now();
    let out = cli.run(&["upload", path.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("file_too_large") && err.contains("413"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let m = s.get("/metrics", None).await.text().await.unwrap();
    assert_eq!(
        count_in_metrics(&m, "/api/v1/uploads/multipart", 413),
        1,
        "asked once, not retried"
    );
    let r = s
        .post_json(
            "/api/v1/auth/login",
            None,
            serde_json::json!({"email": "big@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// A file the server refuses for good at completion (not a video) leaves no
/// state behind: the server removed that upload, so there is nothing to
/// resume, and a later run starts afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_no_video_leaves_no_state_behind() {
    let s = TestServer::start().await;
    s.user("text@example.com").await;
    let cli = Cli::new();
    cli.login(&s.base, "text@example.com");
    let path = cli.dir.path().join("notes.mp4");
    std::fs::write(&path, "not a video, just words\n".repeat(10_000)).unwrap();
    for protocol in ["multipart", "tus"] {
        let out = cli.run(
            &["upload", path.to_str().unwrap(), "--protocol", protocol],
            "",
        );
        assert_eq!(out.status.code(), Some(1), "{protocol}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid_media"), "{protocol}: {err}");
        let left: Vec<_> = std::fs::read_dir(cli.dir.path().join("uploads"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{protocol}: {left:?}");
    }
}
