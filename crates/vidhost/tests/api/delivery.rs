use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::Value;

async fn original_url(s: &TestServer, token: &str, id: &str) -> String {
    let pb: Value = s
        .get_json(&format!("/api/v1/videos/{id}/playback"), Some(token))
        .await;
    for f in ["hls", "dash", "mp4", "poster", "storyboard_vtt"] {
        assert!(pb[f].is_null(), "{f} is null until its output exists");
    }
    assert!(pb["expires_at"].is_string());
    pb["original"]
        .as_str()
        .expect("owner grant has original")
        .to_owned()
}

/// A server with one user who uploaded `big_avi()`: the server, the
/// user's token and the play URL of the original.
async fn with_big_original() -> (TestServer, String, String) {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let (_, url) = upload_big(&s, &t).await;
    (s, t, url)
}

/// Uploads `big_avi()` as the user `t`: the video's id and original's URL.
async fn upload_big(s: &TestServer, t: &str) -> (String, String) {
    let r = s.upload_form(t, big_avi().to_vec(), "big.avi", &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let id = v["id"].as_str().unwrap().to_owned();
    let url = original_url(s, t, &id).await;
    (id, url)
}

#[tokio::test]
async fn ranges_return_exact_slices() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let file = big_avi();
    let r = s.upload_form(&t, file.to_vec(), "big.avi", &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let url = original_url(&s, &t, v["id"].as_str().unwrap()).await;
    assert!(url.starts_with("/play/") && url.ends_with("/original"));
    let len = file.len();

    let full = s.get(&url, None).await;
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.headers()["content-type"], "video/x-msvideo");
    assert_eq!(full.headers()["content-length"], len.to_string().as_str());
    let etag = full.headers()["etag"].to_str().unwrap().to_owned();
    let last_modified = full.headers()["last-modified"].to_str().unwrap().to_owned();
    assert!(full.headers().contains_key("cache-control"));
    assert_eq!(sha256(&full.bytes().await.unwrap()), sha256(file));

    let cases: Vec<(String, usize, usize)> = vec![
        ("bytes=0-99".into(), 0, 99),
        ("bytes=1000000-2000000".into(), 1_000_000, 2_000_000),
        ("bytes=-500".into(), len - 500, len - 1),
        // A suffix longer than the file is all of it (RFC 9110 §14.1.3).
        (format!("bytes=-{}", len + 5000), 0, len - 1),
        (format!("bytes=0-0,{}-", len + 10), 0, 0),
        (format!("bytes={}-", len - 1234), len - 1234, len - 1),
        (
            format!("bytes={}-{}", len - 10, len + 100),
            len - 10,
            len - 1,
        ),
    ];
    for (range, a, z) in cases {
        let r = s
            .http
            .get(s.url(&url))
            .header("range", &range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {a}-{z}/{len}").as_str(),
            "{range}"
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &file[a..=z], "{range}");
    }
    let r = s
        .http
        .get(s.url(&url))
        .header("range", format!("bytes={len}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{len}").as_str()
    );

    // If-Range: a current validator keeps the range, a stale one gets the whole file.
    let r = s
        .http
        .get(s.url(&url))
        .header("range", "bytes=0-9")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    let r = s
        .http
        .get(s.url(&url))
        .header("range", "bytes=0-9")
        .header("if-range", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .http
        .get(s.url(&url))
        .header("range", "bytes=0-9")
        .header("if-range", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    // Conditional GET.
    let r = s
        .http
        .get(s.url(&url))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    // HEAD: headers, no body.
    let r = s
        .http
        .head(s.url(&url))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-length"], "10");
    assert!(r.bytes().await.unwrap().is_empty());
}

/// Status, headers (names in lower case) and body of a response.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// One HTTP/1.1 response read off a raw connection (failing after 30 s
/// rather than waiting for an answer that never comes).
async fn read_response(
    conn: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    head_request: bool,
) -> Answer {
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        read_response_now(conn, head_request),
    )
    .await
    .expect("an answer within 30 s")
}

async fn read_response_now(
    conn: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    head_request: bool,
) -> Answer {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await.unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; if head_request { 0 } else { len }];
    conn.read_exact(&mut body).await.unwrap();
    (status, headers, body)
}

/// Many requests written at once on one keep-alive connection (pipelined):
/// each answer carries exactly its own bytes, whatever mix of files, full
/// bodies, ranges, HEADs and errors precedes it. Bodies from disk go out by
/// sendfile, queued per connection in request order, so this is what
/// would catch one response's bytes landing in another's.
#[tokio::test]
async fn pipelined_requests_get_their_own_bytes() {
    use tokio::io::AsyncWriteExt;
    let (s, t, big_url) = with_big_original().await;
    let big = big_avi();
    let small = sample_mp4();
    let v = s.upload_sample(&t, "small").await;
    let small_url = original_url(&s, &t, v["id"].as_str().unwrap()).await;
    let len = big.len();

    // (method, path, range, expected status, expected body)
    type Case<'a> = (&'a str, &'a str, Option<String>, u16, &'a [u8]);
    let cases: Vec<Case> = vec![
        ("GET", &big_url, None, 200, big),
        (
            "GET",
            &small_url,
            Some("bytes=10-1009".into()),
            206,
            &small[10..=1009],
        ),
        ("HEAD", &big_url, Some("bytes=0-99".into()), 206, b""),
        (
            "GET",
            &big_url,
            Some(format!("bytes={}-", len - 70_000)),
            206,
            &big[len - 70_000..],
        ),
        ("GET", &big_url, Some(format!("bytes={len}-")), 416, b""),
        ("GET", &small_url, None, 200, small),
        ("GET", "/play/not-a-token/original", None, 403, b""),
        ("GET", &big_url, Some("bytes=1-1".into()), 206, &big[1..=1]),
        (
            "GET",
            &big_url,
            Some("bytes=123456-1123455".into()),
            206,
            &big[123_456..=1_123_455],
        ),
    ];
    let host = s.base.trim_start_matches("http://").to_owned();
    let mut raw = Vec::new();
    for (method, path, range, _, _) in &cases {
        raw.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
        if let Some(r) = range {
            raw.extend_from_slice(format!("Range: {r}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
    }
    let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
    let mut conn = tokio::io::BufReader::new(tcp);
    conn.get_mut().write_all(&raw).await.unwrap();
    for (i, (method, _, range, status, body)) in cases.iter().enumerate() {
        let (got_status, headers, got_body) = read_response(&mut conn, *method == "HEAD").await;
        assert_eq!(got_status, *status, "request {i} ({method} {range:?})");
        if *status == 200 || *status == 206 {
            assert!(
                got_body.len() == body.len() && got_body == *body,
                "request {i} ({method} {range:?}): {} bytes, not its own {}",
                got_body.len(),
                body.len()
            );
        }
        if *method == "HEAD" {
            let cl = headers.iter().find(|(k, _)| k == "content-length").unwrap();
            assert_eq!(cl.1, "100");
        }
    }
}

/// The value of an unlabelled counter on /metrics (0 before it exists).
async fn counter(s: &TestServer, name: &str) -> f64 {
    let text = s.get("/metrics", None).await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Plain play GETs on a fresh connection are answered by the connection
/// itself (fastpath.rs) when objects are on local disk; once a connection
/// has carried any other request, its play requests go through the router.
/// Both ways must give the same status, headers (but `Date`) and bytes, and
/// the metrics must show which way each went. A connection answering one
/// request after another for the same path (from what it remembers of the
/// first, `QuickMemo`) must give the same answers too.
#[tokio::test]
async fn the_connection_and_the_router_answer_alike() {
    use tokio::io::AsyncWriteExt;
    let (s, _, url) = with_big_original().await;
    let big = big_avi();
    let etag = s.get(&url, None).await.headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let host = s.base.trim_start_matches("http://").to_owned();
    let len = big.len();
    let cases: Vec<(Vec<String>, u16, &[u8])> = vec![
        (vec![], 200, big),
        (vec!["Range: bytes=0-99".into()], 206, &big[..100]),
        (vec!["range: bytes=-500".into()], 206, &big[len - 500..]),
        (vec!["Range: bytes=1000-".into()], 206, &big[1000..]),
        (
            vec!["Range: bytes=0-9".into(), format!("If-Range: {etag}")],
            206,
            &big[..10],
        ),
        (
            vec!["Range: bytes=0-9".into(), "If-Range: \"stale\"".into()],
            200,
            big,
        ),
        (
            vec!["Range: bytes=5-6".into(), "Connection: keep-alive".into()],
            206,
            &big[5..=6],
        ),
    ];
    // Only a store on this machine's disk has files to send (S3: none).
    let expect_quick = if s.is_s3() { 0.0 } else { cases.len() as f64 };
    let mut quick_before = counter(&s, "vidhost_delivery_quick_answers_total").await;
    // 0: one fresh connection per request; 1: after a /healthz on the
    // connection (the router answers); 2: every request on one connection.
    let mut answers: [Vec<Answer>; 3] = Default::default();
    for (general, answers) in answers.iter_mut().enumerate() {
        let mut shared = None;
        for (headers, _, _) in &cases {
            if general != 2 || shared.is_none() {
                shared = Some(tokio::io::BufReader::new(
                    tokio::net::TcpStream::connect(&host).await.unwrap(),
                ));
            }
            let conn = shared.as_mut().unwrap();
            if general == 1 {
                let hz = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n");
                conn.get_mut().write_all(hz.as_bytes()).await.unwrap();
                assert_eq!(read_response(conn, false).await.0, 200);
            }
            let mut req = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n");
            for h in headers {
                req.push_str(&format!("{h}\r\n"));
            }
            req.push_str("\r\n");
            conn.get_mut().write_all(req.as_bytes()).await.unwrap();
            let (status, mut h, body) = read_response(conn, false).await;
            h.retain(|(k, _)| k != "date");
            h.sort();
            answers.push((status, h, body));
        }
        let quick = counter(&s, "vidhost_delivery_quick_answers_total").await;
        let expected = if general == 1 { 0.0 } else { expect_quick };
        assert_eq!(quick - quick_before, expected, "way {general}");
        quick_before = quick;
    }
    for (i, (headers, status, body)) in cases.iter().enumerate() {
        let (quick, general, remembered) = (&answers[0][i], &answers[1][i], &answers[2][i]);
        assert_eq!(quick.0, *status, "{headers:?}");
        assert!(quick.2 == *body, "{headers:?}: not the file's bytes");
        assert_eq!(quick, general, "{headers:?}: the two ways differ");
        assert_eq!(quick, remembered, "{headers:?}: on one connection");
    }
}

/// A connection that keeps fetching one path never serves a version of the
/// file it no longer holds: when the object is replaced (a new file renamed
/// over the key, as the store does) the next request on the same
/// connection gets the new bytes and validators, and when the video is
/// deleted, a 404.
#[tokio::test]
async fn one_connection_follows_the_object_through_replace_and_delete() {
    use tokio::io::AsyncWriteExt;
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let big = big_avi();
    let (id, url) = upload_big(&s, &t).await;
    // The router's answer teaches the node the original's type, which the
    // connection needs to answer by itself.
    assert_eq!(s.get(&url, None).await.status(), StatusCode::OK);
    let quick_before = counter(&s, "vidhost_delivery_quick_answers_total").await;
    let host = s.base.trim_start_matches("http://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
    let mut conn = tokio::io::BufReader::new(tcp);
    let get = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nRange: bytes=0-999\r\n\r\n");
    let etag = |h: &[(String, String)]| h.iter().find(|(k, _)| k == "etag").unwrap().1.clone();
    let mut first_etag = String::new();
    for _ in 0..3 {
        conn.get_mut().write_all(get.as_bytes()).await.unwrap();
        let (status, h, body) = read_response(&mut conn, false).await;
        assert_eq!((status, body.as_slice()), (206, &big[..1000]));
        first_etag = etag(&h);
    }
    // The same length and type, other bytes.
    let mut other = big.to_vec();
    for b in &mut other[..1000] {
        *b = !*b;
    }
    other[..4].copy_from_slice(&big[..4]);
    s.replace_object(&format!("videos/{id}/original"), &other)
        .await;
    conn.get_mut().write_all(get.as_bytes()).await.unwrap();
    let (status, h, body) = read_response(&mut conn, false).await;
    assert_eq!(status, 206);
    assert!(body == other[..1000], "the replaced file's bytes");
    assert_ne!(etag(&h), first_etag, "a new version has a new ETag");
    // On disk the connection answered all four itself (S3: the router).
    let quick = counter(&s, "vidhost_delivery_quick_answers_total").await - quick_before;
    assert_eq!(quick, if s.is_s3() { 0.0 } else { 4.0 });

    assert_eq!(
        s.delete(&format!("/api/v1/videos/{id}"), &t).await.status(),
        StatusCode::NO_CONTENT
    );
    conn.get_mut().write_all(get.as_bytes()).await.unwrap();
    let (status, _, _) = read_response(&mut conn, false).await;
    assert_eq!(status, 404, "a deleted video's original is gone");
}

/// The connection reads request heads itself before hyper does: a head
/// that arrives a few bytes at a time is answered once, and a request the
/// connection leaves to hyper (here a POST with a body, pipelined between
/// plain GETs) reaches hyper whole, with the GETs around it answered in order.
#[tokio::test]
async fn a_connection_hands_requests_over_mid_stream() {
    use tokio::io::AsyncWriteExt;
    let (s, t, url) = with_big_original().await;
    let big = big_avi();
    let host = s.base.trim_start_matches("http://").to_owned();
    let get = |a: usize, z: usize| {
        format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nRange: bytes={a}-{z}\r\n\r\n")
    };
    let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut conn = tokio::io::BufReader::new(tcp);

    // A head in 3-byte pieces.
    for piece in get(0, 99).as_bytes().chunks(3) {
        conn.get_mut().write_all(piece).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let (status, _, body) = read_response(&mut conn, false).await;
    assert_eq!((status, body.as_slice()), (206, &big[..100]));

    // GET, POST with a body, GET, all in one write.
    let create = serde_json::json!({
        "filename": "next.mp4", "content_type": "video/mp4", "size": 10_000_000
    })
    .to_string();
    let mut raw = get(100, 199);
    raw.push_str(&format!(
        "POST /api/v1/uploads/multipart HTTP/1.1\r\nHost: {host}\r\n\
         Authorization: Bearer {t}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{create}",
        create.len()
    ));
    raw.push_str(&get(200, 299));
    conn.get_mut().write_all(raw.as_bytes()).await.unwrap();
    let (status, _, body) = read_response(&mut conn, false).await;
    assert_eq!((status, body.as_slice()), (206, &big[100..200]));
    let (status, _, body) = read_response(&mut conn, false).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let created: Value = serde_json::from_slice(&body).unwrap();
    assert!(created["upload_id"].is_string(), "{created}");
    let (status, _, body) = read_response(&mut conn, false).await;
    assert_eq!((status, body.as_slice()), (206, &big[200..300]));
    let listed = s.get_json("/api/v1/uploads", Some(&t)).await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}

/// A graceful shutdown (SIGTERM) lets answers in flight finish, whichever
/// way they are sent: slow readers of a connection-answered GET and of a
/// router-answered GET both get every byte.
#[tokio::test]
async fn shutdown_lets_answers_in_flight_finish() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    // An AVI padded to 12 MB: more than the socket buffers hold, so the
    // answers are still being written when the signal comes.
    let mut file = big_avi().to_vec();
    file.resize(12_000_000, 0);
    let r = s.upload_form(&t, file.clone(), "big.avi", &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let url = original_url(&s, &t, v["id"].as_str().unwrap()).await;
    // The router learns the original's type; from then on fresh
    // connections answer it themselves.
    let warm = s.http.get(s.url(&url)).header("range", "bytes=0-0");
    assert_eq!(warm.send().await.unwrap().status(), 206);
    let host = s.base.trim_start_matches("http://").to_owned();
    let quick_before = counter(&s, "vidhost_delivery_quick_answers_total").await;
    let mut readers = Vec::new();
    for via_router in [false, true] {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(16 * 1024).unwrap();
        let tcp = sock.connect(host.parse().unwrap()).await.unwrap();
        let mut conn = tokio::io::BufReader::new(tcp);
        if via_router {
            let hz = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n");
            conn.get_mut().write_all(hz.as_bytes()).await.unwrap();
            assert_eq!(read_response(&mut conn, false).await.0, 200);
        }
        let get = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        conn.get_mut().write_all(get.as_bytes()).await.unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            conn.read_line(&mut line).await.unwrap();
            if line.trim_end().is_empty() {
                break;
            }
        }
        let mut first = vec![0; 65_536];
        conn.read_exact(&mut first).await.unwrap();
        readers.push((via_router, conn, first));
    }
    let quick = counter(&s, "vidhost_delivery_quick_answers_total").await;
    let expect_quick = if s.is_s3() { 0.0 } else { 1.0 };
    assert_eq!(
        quick - quick_before,
        expect_quick,
        "one answered by the connection"
    );
    let term = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for (via_router, mut conn, mut body) in readers {
        let rest = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            conn.read_to_end(&mut body),
        )
        .await
        .expect("the answer ends within 30 s");
        assert!(rest.is_ok(), "via router {via_router}: {rest:?}");
        assert!(
            body.len() == file.len() && body == file,
            "via router {via_router}: {} of {} bytes",
            body.len(),
            file.len()
        );
    }
}

#[tokio::test]
async fn tokens_are_checked() {
    let s = TestServer::start_with(&[("VIDHOST_DELIVERY__OWNER_GRANT_TTL_S", "2")]).await;
    let t = s.user("u@example.com").await;
    let v = s.upload_sample(&t, "x").await;
    let id = v["id"].as_str().unwrap();
    // The same video and grant kind yield the same token (cacheable URLs),
    // within a bucket of the expiry: here (a 2 s ttl) one second, so a pair
    // of requests may straddle a boundary; the next pair then does not.
    let mut url = original_url(&s, &t, id).await;
    let mut again = original_url(&s, &t, id).await;
    if again != url {
        url = again;
        again = original_url(&s, &t, id).await;
    }
    assert_eq!(url, again);
    let token = url
        .trim_start_matches("/play/")
        .trim_end_matches("/original");
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() - 3;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    problem(
        s.get(&format!("/play/{tampered}/original"), None).await,
        StatusCode::FORBIDDEN,
        "invalid_token",
    )
    .await;
    problem(
        s.get("/play/garbage/original", None).await,
        StatusCode::FORBIDDEN,
        "invalid_token",
    )
    .await;
    // Any signed-in viewer who could see the video gets no `original`.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    problem(
        s.get(&url, None).await,
        StatusCode::FORBIDDEN,
        "invalid_token",
    )
    .await;
}

/// A grant outlives what it points at: a file the video does not have yet
/// is `not_found`, any file of a deleted video `video_not_found`.
#[tokio::test]
async fn a_deleted_videos_urls_say_the_video_is_gone() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let v = s.upload_sample(&t, "x").await;
    let id = v["id"].as_str().unwrap();
    let url = original_url(&s, &t, id).await;
    let token = url
        .trim_start_matches("/play/")
        .trim_end_matches("/original");
    assert_eq!(s.get(&url, None).await.status(), StatusCode::OK);
    // No worker runs here: nothing is transcoded.
    let mp4 = format!("/play/{token}/mp4");
    problem(s.get(&mp4, None).await, StatusCode::NOT_FOUND, "not_found").await;
    let r = s.delete(&format!("/api/v1/videos/{id}"), &t).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for path in [&url, &mp4] {
        let r = s.get(path, None).await;
        problem(r, StatusCode::NOT_FOUND, "video_not_found").await;
    }
}

/// A web player on another origin: preflights pass, answers carry the CORS
/// headers it needs (range and validator headers exposed); requests without
/// an Origin still say `Vary: Origin`, so a shared cache keeps them apart.
#[tokio::test]
async fn browsers_on_other_origins_get_cors_and_caches_keep_them_apart() {
    let s = TestServer::start().await;
    let t = s.user("cors@example.com").await;
    let r = s.upload_form(&t, big_avi().to_vec(), "big.avi", &[]).await;
    let v: Value = r.json().await.unwrap();
    let url = s.url(&original_url(&s, &t, v["id"].as_str().unwrap()).await);
    let origin = "https://player.example.org";

    let pre = s
        .http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "range")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    let h = pre.headers();
    assert_eq!(h["access-control-allow-origin"], origin);
    assert!(h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("range"));

    let got = s
        .http
        .get(&url)
        .header("origin", origin)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::PARTIAL_CONTENT);
    let h = got.headers();
    assert_eq!(h["access-control-allow-origin"], origin);
    let exposed = h["access-control-expose-headers"].to_str().unwrap();
    assert!(
        exposed.contains("content-range") && exposed.contains("etag"),
        "{exposed}"
    );
    assert!(h["vary"].to_str().unwrap().contains("origin"));

    let plain = s
        .http
        .get(&url)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::PARTIAL_CONTENT);
    let h = plain.headers();
    assert!(!h.contains_key("access-control-allow-origin"));
    assert!(h["vary"].to_str().unwrap().contains("origin"), "{h:?}");

    // The tus capability request is a plain OPTIONS, not a preflight.
    let caps = s
        .http
        .request(reqwest::Method::OPTIONS, s.url("/api/v1/tus"))
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    assert!(
        caps.headers().contains_key("tus-version"),
        "{:?}",
        caps.headers()
    );
}

/// With `cors.allowed_origins` set, only those pages get CORS answers: a
/// browser on any other origin is not let read what the API says.
#[tokio::test]
async fn cors_answers_only_the_allowed_origins_when_they_are_listed() {
    let s = TestServer::start_with(&[(
        "VIDHOST_CORS__ALLOWED_ORIGINS",
        r#"["https://app.example.org", "http://127.0.0.1:3000"]"#,
    )])
    .await;
    let preflight = |origin: &'static str| {
        s.http
            .request(reqwest::Method::OPTIONS, s.url("/api/v1/videos"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let get = |origin: &'static str| {
        s.http
            .get(s.url("/api/v1/videos"))
            .header("origin", origin)
            .send()
    };
    for origin in ["https://app.example.org", "http://127.0.0.1:3000"] {
        let r = preflight(origin).await.unwrap();
        assert_eq!(r.headers()["access-control-allow-origin"], origin);
        let r = get(origin).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["access-control-allow-origin"], origin);
    }
    for origin in [
        "https://evil.example.org",
        "https://app.example.org.evil.example",
    ] {
        let r = preflight(origin).await.unwrap();
        assert!(
            !r.headers().contains_key("access-control-allow-origin"),
            "{origin}"
        );
        let r = get(origin).await.unwrap();
        assert!(
            !r.headers().contains_key("access-control-allow-origin"),
            "{origin}"
        );
    }
}
