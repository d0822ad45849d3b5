use crate::helpers::*;
use base64::Engine;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;
use std::time::Duration;

const OCTETS: &str = "application/offset+octet-stream";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn tus(r: RequestBuilder, token: &str) -> RequestBuilder {
    r.bearer_auth(token).header("Tus-Resumable", "1.0.0")
}

async fn create(s: &TestServer, t: &str, len: usize, meta: &str) -> String {
    let r = tus(s.http.post(s.url("/api/v1/tus")), t)
        .header("Upload-Length", len)
        .header("Upload-Metadata", meta)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["tus-resumable"], "1.0.0");
    assert_eq!(r.headers()["upload-offset"], "0");
    assert!(r.headers().contains_key("upload-expires"));
    r.headers()["location"].to_str().unwrap().to_owned()
}

async fn patch(s: &TestServer, t: &str, url: &str, offset: usize, body: Vec<u8>) -> Response {
    tus(s.http.patch(url), t)
        .header("Upload-Offset", offset)
        .header("Content-Type", OCTETS)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn offset(s: &TestServer, t: &str, url: &str) -> usize {
    let r = tus(s.http.head(url), t).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn original_of(s: &TestServer, t: &str, video_id: &str) -> Vec<u8> {
    let pb: Value = s
        .get_json(&format!("/api/v1/videos/{video_id}/playback"), Some(t))
        .await;
    s.get(pb["original"].as_str().unwrap(), None)
        .await
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

fn id_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

#[tokio::test]
async fn protocol_core_creation_checksum_and_termination() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let r = s
        .http
        .request(reqwest::Method::OPTIONS, s.url("/api/v1/tus"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["tus-version"], "1.0.0");
    let ext = r.headers()["tus-extension"].to_str().unwrap();
    for e in [
        "creation",
        "creation-with-upload",
        "termination",
        "expiration",
        "checksum",
    ] {
        assert!(ext.split(',').any(|x| x == e), "{e} in {ext}");
    }
    assert_eq!(r.headers()["tus-checksum-algorithm"], "sha1,sha256");
    assert!(r.headers().contains_key("tus-max-size"));

    let file = sample_mp4().to_vec();
    let meta = format!(
        "filename {},filetype {},title {},tags {},visibility {}",
        b64("a.mp4"),
        b64("video/mp4"),
        b64("Tus title"),
        b64("x, y"),
        b64("unlisted")
    );
    // Missing Tus-Resumable → 412.
    let r = s
        .http
        .post(s.url("/api/v1/tus"))
        .bearer_auth(&t)
        .header("Upload-Length", file.len())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.headers()["tus-version"], "1.0.0");
    let url = create(&s, &t, file.len(), &meta).await;
    assert!(url.starts_with("http://") && url.contains("/api/v1/tus/"));
    let video_id = id_of(&url).to_owned();

    let r = patch(&s, &t, &url, 0, file[..1000].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["upload-offset"], "1000");
    assert_eq!(r.headers()["tus-resumable"], "1.0.0");
    // Wrong offset → 409; wrong Content-Type → 415; nothing changes.
    let r = patch(&s, &t, &url, 999, file[999..2000].to_vec()).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = tus(s.http.patch(&url), &t)
        .header("Upload-Offset", 1000)
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A checksum that does not match → 460, nothing appended.
    let chunk = file[1000..3000].to_vec();
    let wrong = base64::engine::general_purpose::STANDARD.encode(sha1_of(b"something else"));
    let r = tus(s.http.patch(&url), &t)
        .header("Upload-Offset", 1000)
        .header("Content-Type", OCTETS)
        .header("Upload-Checksum", format!("sha1 {wrong}"))
        .body(chunk.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 460);
    assert_eq!(offset(&s, &t, &url).await, 1000);
    let r = tus(s.http.patch(&url), &t)
        .header("Upload-Offset", 1000)
        .header("Content-Type", OCTETS)
        .header("Upload-Checksum", "md5 AAAA")
        .body(chunk.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // The right checksums (sha1, then sha256) append.
    let good = base64::engine::general_purpose::STANDARD.encode(sha1_of(&chunk));
    let r = tus(s.http.patch(&url), &t)
        .header("Upload-Offset", 1000)
        .header("Content-Type", OCTETS)
        .header("Upload-Checksum", format!("sha1 {good}"))
        .body(chunk)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let rest = file[3000..].to_vec();
    let good =
        base64::engine::general_purpose::STANDARD.encode(hex::decode(sha256(&rest)).unwrap());
    // More than Upload-Length → 413, nothing appended.
    let mut too_much = rest.clone();
    too_much.push(0);
    let r = patch(&s, &t, &url, 3000, too_much).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(offset(&s, &t, &url).await, 3000);
    // The list of incomplete uploads (to resume elsewhere) says so too.
    let listed = s.get_json("/api/v1/uploads", Some(&t)).await;
    assert_eq!(listed["items"][0]["method"], "tus", "{listed}");
    assert_eq!(listed["items"][0]["received_bytes"], 3000, "{listed}");
    assert_eq!(listed["items"][0]["size"], file.len(), "{listed}");
    // HEAD echoes the metadata; someone else's HEAD is 404.
    let r = tus(s.http.head(&url), &t).send().await.unwrap();
    assert_eq!(
        r.headers()["upload-length"],
        file.len().to_string().as_str()
    );
    assert_eq!(r.headers()["upload-metadata"], meta.as_str());
    let other = s.user("o@example.com").await;
    assert_eq!(
        tus(s.http.head(&url), &other)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        patch(&s, &other, &url, 3000, rest.clone()).await.status(),
        StatusCode::NOT_FOUND
    );

    let r = tus(s.http.patch(&url), &t)
        .header("Upload-Offset", 3000)
        .header("Content-Type", OCTETS)
        .header("Upload-Checksum", format!("sha256 {good}"))
        .body(rest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        r.headers()["upload-offset"],
        file.len().to_string().as_str()
    );
    // Complete: a video with the metadata, byte-identical.
    let v: Value = s
        .get_json(&format!("/api/v1/videos/{video_id}"), Some(&t))
        .await;
    assert_eq!(v["status"], "uploaded");
    assert_eq!(v["title"], "Tus title");
    assert_eq!(v["tags"], serde_json::json!(["x", "y"]));
    assert_eq!(v["visibility"], "unlisted");
    assert_eq!(v["original_filename"], "a.mp4");
    assert_eq!(sha256(&original_of(&s, &t, &video_id).await), sha256(&file));
    // A finished upload still reports its offset; a video uploaded another
    // way was never a tus upload.
    assert_eq!(offset(&s, &t, &url).await, file.len());
    let form: Value = s
        .upload_form(&t, file.clone(), "f.mp4", &[])
        .await
        .json()
        .await
        .unwrap();
    let form_url = url.replace(video_id.as_str(), form["id"].as_str().unwrap());
    let r = tus(s.http.head(&form_url), &t).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let form_path = format!("/api/v1/videos/{}", form["id"].as_str().unwrap());
    assert_eq!(
        s.delete(&form_path, &t).await.status(),
        StatusCode::NO_CONTENT
    );

    // Termination: 204, then 404, and nothing of it remains.
    let url2 = create(&s, &t, 10_000, &format!("filename {}", b64("b.mp4"))).await;
    assert_eq!(
        patch(&s, &t, &url2, 0, file[..5000].to_vec())
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let r = tus(s.http.delete(&url2), &t).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        tus(s.http.head(&url2), &t).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(s.pending_multipart_count().await, 0);
    assert_eq!(
        s.object_keys().await,
        vec![format!("videos/{video_id}/original")]
    );
}

/// A last PATCH whose completion fails after every byte is stored loses
/// nothing: the client gets an error, the HEAD it sends to resume finds
/// every byte in, and the server completes the upload then, with the same
/// bytes. The failure is made on the disk store (a file where the video's
/// directory must go, so the staged bytes cannot be renamed into place);
/// S3 has no such way to fail, so there the upload simply completes.
#[tokio::test]
async fn a_failed_completion_is_finished_by_the_next_head() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let file = sample_mp4().to_vec();
    let url = create(&s, &t, file.len(), &format!("filename {}", b64("a.mp4"))).await;
    let video_id = id_of(&url).to_owned();
    let blocker = s
        .disk_root()
        .map(|root| root.join("videos").join(&video_id));
    if let Some(b) = &blocker {
        std::fs::create_dir_all(b.parent().unwrap()).unwrap();
        std::fs::write(b, b"in the way").unwrap();
    }
    let r = patch(&s, &t, &url, 0, file.clone()).await;
    if let Some(b) = &blocker {
        assert!(r.status().is_server_error(), "{}", r.status());
        // Still an upload with every byte in, not a video.
        let v = s
            .get_json(&format!("/api/v1/videos/{video_id}"), Some(&t))
            .await;
        assert_eq!(v["status"], "awaiting_upload", "{v}");
        // While completing still fails, HEAD says "retry", keeping the bytes.
        let r = tus(s.http.head(&url), &t).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::LOCKED);
        assert!(r.headers().contains_key("retry-after"));
        std::fs::remove_file(b).unwrap();
    } else {
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(offset(&s, &t, &url).await, file.len());
    let v = s
        .get_json(&format!("/api/v1/videos/{video_id}"), Some(&t))
        .await;
    assert_ne!(v["status"], "awaiting_upload", "{v}");
    assert_eq!(v["size_bytes"], file.len(), "{v}");
    assert!(
        original_of(&s, &t, &video_id).await == file,
        "the same bytes"
    );
    let listed = s.get_json("/api/v1/uploads", Some(&t)).await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
}

fn sha1_of(b: &[u8]) -> Vec<u8> {
    use sha1::Digest;
    sha1::Sha1::digest(b).to_vec()
}

#[tokio::test]
async fn creation_with_upload_limits_and_bad_media() {
    let s = TestServer::start_with(&[("VIDHOST_UPLOADS__MAX_SIZE_BYTES", "1000000")]).await;
    let t = s.user("u@example.com").await;
    let file = sample_mp4().to_vec();
    let r = tus(s.http.post(s.url("/api/v1/tus")), &t)
        .header("Upload-Length", file.len())
        .header("Content-Type", OCTETS)
        .body(file.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()["upload-offset"],
        file.len().to_string().as_str()
    );
    let id = id_of(r.headers()["location"].to_str().unwrap()).to_owned();
    let v: Value = s.get_json(&format!("/api/v1/videos/{id}"), Some(&t)).await;
    assert_eq!(v["status"], "uploaded");

    // A body that is not kept (its checksum does not match): the upload is
    // created all the same, so the client gets where to resume from.
    let wrong = base64::engine::general_purpose::STANDARD.encode(sha1_of(b"something else"));
    let r = tus(s.http.post(s.url("/api/v1/tus")), &t)
        .header("Upload-Length", file.len())
        .header("Content-Type", OCTETS)
        .header("Upload-Checksum", format!("sha1 {wrong}"))
        .body(file.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["upload-offset"], "0");
    let again = r.headers()["location"].to_str().unwrap().to_owned();
    // A body longer than the upload is refused as a whole, as before.
    let r = tus(s.http.post(s.url("/api/v1/tus")), &t)
        .header("Upload-Length", 10)
        .header("Content-Type", OCTETS)
        .body(vec![0u8; 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(offset(&s, &t, &again).await, 0);
    let r = patch(&s, &t, &again, 0, file.clone()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let v: Value = s
        .get_json(&format!("/api/v1/videos/{}", id_of(&again)), Some(&t))
        .await;
    assert_eq!(v["status"], "uploaded");

    let r = tus(s.http.post(s.url("/api/v1/tus")), &t)
        .header("Upload-Length", 1_000_001)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = tus(s.http.post(s.url("/api/v1/tus")), &t)
        .header("Upload-Length", 10)
        .header("Upload-Metadata", format!("filetype {}", b64("text/plain")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = tus(s.http.post(s.url("/api/v1/tus")), &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = tus(s.http.post(s.url("/api/v1/tus")), &t)
        .header("Upload-Length", 10)
        .header("Upload-Metadata", "filename !!!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Bytes that are no video: refused when the last byte arrives; nothing remains.
    let junk = vec![b'x'; 4000];
    let url = create(&s, &t, junk.len(), "").await;
    let r = patch(&s, &t, &url, 0, junk).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        tus(s.http.head(&url), &t).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let mut want = vec![
        format!("videos/{id}/original"),
        format!("videos/{}/original", id_of(&again)),
    ];
    want.sort();
    let mut got = s.object_keys().await;
    got.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn expired_uploads_are_gone_with_their_bytes() {
    let s = TestServer::start_with(&[
        ("VIDHOST_UPLOADS__EXPIRY_S", "2"),
        ("VIDHOST_UPLOADS__SWEEP_INTERVAL_S", "1"),
    ])
    .await;
    let t = s.user("u@example.com").await;
    let url = create(&s, &t, 6 << 20, "").await;
    // Neither a title nor a file name: still a title to show.
    let v: Value = s
        .get_json(&format!("/api/v1/videos/{}", id_of(&url)), Some(&t))
        .await;
    assert_eq!(v["title"], "Untitled");
    assert_eq!(
        patch(&s, &t, &url, 0, big_avi()[..(5 << 20) + 100].to_vec())
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let mp: Value = s
        .post_json(
            "/api/v1/uploads/multipart",
            Some(&t),
            serde_json::json!({"filename": "m.avi", "size": 6 << 20}),
        )
        .await
        .json()
        .await
        .unwrap();
    let pre: Value = s
        .post_json(
            "/api/v1/uploads/presigned",
            Some(&t),
            serde_json::json!({"filename": "p.mp4", "size": 100}),
        )
        .await
        .json()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // Expired but perhaps not swept yet: 410 or 404, never usable.
    let r = tus(s.http.head(&url), &t).send().await.unwrap();
    assert!(matches!(r.status().as_u16(), 404 | 410), "{}", r.status());
    let r = patch(&s, &t, &url, (5 << 20) + 100, vec![0; 10]).await;
    assert!(matches!(r.status().as_u16(), 404 | 410), "{}", r.status());
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        tus(s.http.head(&url), &t).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let ups: Value = s.get_json("/api/v1/uploads", Some(&t)).await;
    assert_eq!(ups["items"], serde_json::json!([]));
    for id in [
        id_of(&url),
        mp["video_id"].as_str().unwrap(),
        pre["video_id"].as_str().unwrap(),
    ] {
        assert_eq!(
            s.get(&format!("/api/v1/videos/{id}"), Some(&t))
                .await
                .status(),
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(s.pending_multipart_count().await, 0);
    assert!(s.object_keys().await.is_empty());
    let metrics = s.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains(r#"vidhost_uploads_total{method="tus",outcome="expired"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn racing_patches_never_corrupt_or_double_count() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let file = big_avi()[..(7 << 20)].to_vec();
    let mut file = file;
    file[..sample_mp4().len()].copy_from_slice(sample_mp4());
    let url = create(&s, &t, file.len(), "").await;
    // A first request sends 3 MiB, then stalls with its connection open.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let first_part = file[..3 << 20].to_vec();
    tx.send(Ok(first_part)).await.unwrap();
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let stalled = tokio::spawn({
        let (http, url, t) = (s.http.clone(), url.clone(), t.clone());
        async move {
            tus(http.patch(&url), &t)
                .header("Upload-Offset", 0)
                .header("Content-Type", OCTETS)
                .body(body)
                .send()
                .await
        }
    });
    // Let it start writing (it now holds the upload's lease).
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The client gives up on it and resumes through a new connection: the new
    // request takes the upload over at once instead of waiting for a timeout.
    let started = std::time::Instant::now();
    let r = patch(&s, &t, &url, 0, file.clone()).await;
    // The stalled request let go and kept what it had received; the racer
    // learns that the offset moved (409) and goes on from there.
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let at = offset(&s, &t, &url).await;
    assert_eq!(at, 3 << 20);
    let r = patch(&s, &t, &url, at, file[at..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    drop(tx);
    let _ = stalled.await;
    assert_eq!(offset(&s, &t, &url).await, file.len());
    assert_eq!(
        sha256(&original_of(&s, &t, id_of(&url)).await),
        sha256(&file),
        "byte-identical, no bytes counted twice"
    );
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn acknowledged_bytes_survive_kill_9() {
    let mut s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let mut file = big_avi().to_vec();
    file.truncate(11 << 20);
    let url = create(&s, &t, file.len(), &format!("filename {}", b64("k.avi"))).await;
    let path = url
        .split_once("/api/")
        .map(|(_, p)| format!("/api/{p}"))
        .unwrap();
    let mut acked = 0;
    for chunk in [3 << 20, 3 << 20] {
        let r = patch(&s, &t, &url, acked, file[acked..acked + chunk].to_vec()).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        acked = r.headers()["upload-offset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
    }
    // Mid-PATCH: part of a third chunk is on its way when the server dies.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tx.send(Ok(file[acked..acked + (1 << 20)].to_vec()))
        .await
        .unwrap();
    let inflight = tokio::spawn({
        let (http, url, t) = (s.http.clone(), url.clone(), t.clone());
        let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
        async move {
            tus(http.patch(&url), &t)
                .header("Upload-Offset", acked)
                .header("Content-Type", OCTETS)
                .body(body)
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.crash_and_restart().await;
    drop(tx);
    let _ = inflight.await;

    let url = s.url(&path);
    let t = s.login("u@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let at = offset(&s, &t, &url).await;
    assert!(at >= acked, "offset {at} is below the acknowledged {acked}");
    assert!(at <= acked + (1 << 20), "offset {at} beyond what was sent");
    let r = patch(&s, &t, &url, at, file[at..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        sha256(&original_of(&s, &t, id_of(&url)).await),
        sha256(&file)
    );
}

fn write_sample(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    // 1.5 MiB: a real video header, then filler.
    let mut file = sample_mp4().to_vec();
    file.resize(1536 * 1024, 0x42);
    let path = dir.join("upload.mp4");
    std::fs::write(&path, &file).unwrap();
    (path, file)
}

#[tokio::test]
async fn tuspy_interrupted_and_resumed_by_a_fresh_client() {
    let s = TestServer::start().await;
    let t = s.user("py@example.com").await;
    let tmp = tempfile::tempdir().unwrap();
    let (path, file) = write_sample(tmp.path());
    let storage = tmp.path().join("tuspy-urls.json");
    let endpoint = s.url("/api/v1/tus");
    let script = clients_dir().join("tuspy_client.py");
    let args = |mode: &'static str| {
        vec![
            script.to_str().unwrap().to_owned(),
            endpoint.clone(),
            t.clone(),
            path.to_str().unwrap().to_owned(),
            storage.to_str().unwrap().to_owned(),
            mode.to_owned(),
        ]
    };
    let a = args("interrupt");
    let first = run_client(
        "python3",
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        tmp.path(),
    );
    let url = first["url"].as_str().unwrap().to_owned();
    let half = offset(&s, &t, &url).await;
    assert!(
        half >= file.len() / 2 && half < file.len(),
        "stopped half way: {half}"
    );
    let a = args("resume");
    let second = run_client(
        "python3",
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        tmp.path(),
    );
    assert_eq!(
        second["url"],
        url.as_str(),
        "the fresh client found the same upload"
    );
    assert_eq!(
        second["offset_before"].as_u64().unwrap() as usize,
        half,
        "it resumed, not restarted"
    );
    let v: Value = s
        .get_json(&format!("/api/v1/videos/{}", id_of(&url)), Some(&t))
        .await;
    assert_eq!(v["title"], "From tuspy");
    assert_eq!(v["tags"], serde_json::json!(["py", "tus"]));
    assert_eq!(
        sha256(&original_of(&s, &t, id_of(&url)).await),
        sha256(&file)
    );
}

#[tokio::test]
async fn tus_js_client_interrupted_and_resumed_by_a_fresh_client() {
    let s = TestServer::start().await;
    let t = s.user("js@example.com").await;
    let tmp = tempfile::tempdir().unwrap();
    let (path, file) = write_sample(tmp.path());
    let node_dir = clients_dir().join("node");
    let endpoint = s.url("/api/v1/tus");
    let p = path.to_str().unwrap();
    let first = run_client(
        "node",
        &["tus_js_client.mjs", &endpoint, &t, p, "interrupt"],
        &node_dir,
    );
    let url = first["url"].as_str().unwrap().to_owned();
    let half = offset(&s, &t, &url).await;
    assert!(
        half > 0 && half < file.len(),
        "interrupted part way: {half}"
    );
    let second = run_client(
        "node",
        &["tus_js_client.mjs", &endpoint, &t, p, "resume", &url],
        &node_dir,
    );
    assert!(
        second["first_progress"].as_u64().unwrap() as usize >= half,
        "resumed from the server's offset"
    );
    let v: Value = s
        .get_json(&format!("/api/v1/videos/{}", id_of(&url)), Some(&t))
        .await;
    assert_eq!(v["title"], "From tus-js-client");
    assert_eq!(v["visibility"], "unlisted");
    assert_eq!(
        sha256(&original_of(&s, &t, id_of(&url)).await),
        sha256(&file)
    );
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_patch_of_big_parts_keeps_server_memory_small() {
    // Parts of 48 MiB (on S3 a 5 TiB upload has parts of 525 MiB).
    let part: usize = 48 << 20;
    let s = TestServer::start_with(&[("VIDHOST_UPLOADS__MIN_PART_SIZE_BYTES", &part.to_string())])
        .await;
    let t = s.user("u@example.com").await;
    let mut file = sample_mp4().to_vec();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while file.len() < part + (9 << 20) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        file.extend_from_slice(&x.to_le_bytes());
    }
    let url = create(&s, &t, file.len(), "").await;
    // The whole file, then (on a second upload) all but 3 MiB: on S3 a
    // whole part, then a tail of 8+ MiB to spool, then the last part.
    let pid = s.pid();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let rss = vm_kib(pid, "VmRSS:");
    let r = patch(&s, &t, &url, 0, file.clone()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let second = create(&s, &t, file.len(), "").await;
    let cut = file.len() - (3 << 20);
    let r = patch(&s, &t, &second, 0, file[..cut].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = patch(&s, &t, &second, cut, file[cut..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let grown = vm_kib(pid, "VmHWM:").saturating_sub(rss) >> 10;
    assert!(
        grown < 24,
        "the server's peak RSS grew by {grown} MiB for parts of {} MiB",
        part >> 20
    );
    for u in [&url, &second] {
        let id = id_of(u);
        let body = s.original_of(&t, id).await;
        assert_eq!(sha256(&body), sha256(&file), "{id}");
    }
}
