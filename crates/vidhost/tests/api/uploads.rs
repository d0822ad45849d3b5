use crate::helpers::*;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn form_upload_stores_the_file_and_metadata() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let r = s
        .upload_form(
            &t,
            sample_mp4().to_vec(),
            "holiday.mp4",
            &[
                ("title", "Holiday"),
                ("tags", "sea, Sun ,sea"),
                ("tags", "beach"),
                ("visibility", "unlisted"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "uploaded");
    assert_eq!(v["title"], "Holiday");
    assert_eq!(v["tags"], json!(["sea", "Sun", "beach"]));
    assert_eq!(v["visibility"], "unlisted");
    assert_eq!(v["original_filename"], "holiday.mp4");
    assert_eq!(v["content_type"], "video/mp4");
    assert_eq!(v["size_bytes"], sample_mp4().len());
    for field in [
        "error",
        "ready_at",
        "duration_s",
        "width",
        "height",
        "thumbnail_url",
    ] {
        assert!(
            v.get(field).is_some_and(Value::is_null),
            "{field} present and null"
        );
    }
    assert_eq!(
        s.object_keys().await,
        vec![format!("videos/{}/original", v["id"].as_str().unwrap())]
    );

    // A blank title, before the file or after it, leaves the file name's.
    for title_first in [true, false] {
        let file =
            reqwest::multipart::Part::bytes(sample_mp4().to_vec()).file_name("beach day.mp4");
        let form = reqwest::multipart::Form::new();
        let form = if title_first {
            form.text("title", "   ").part("file", file)
        } else {
            form.part("file", file).text("title", "   ")
        };
        let r = s
            .http
            .post(s.url("/api/v1/upload"))
            .bearer_auth(&t)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["title"], "beach day", "title first: {title_first}");
    }
}

/// A form upload of the sample MP4 under `name`, declared as `mime`.
async fn upload_declared(s: &TestServer, t: &str, name: &str, mime: &str) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(sample_mp4().to_vec())
        .file_name(name.to_owned())
        .mime_str(mime)
        .unwrap();
    s.http
        .post(s.url("/api/v1/upload"))
        .bearer_auth(t)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn bad_form_uploads_leave_nothing_behind() {
    let s = TestServer::start_with(&[("VIDHOST_UPLOADS__MAX_SIZE_BYTES", "100000")]).await;
    let t = s.user("u@example.com").await;
    // Not a video: 422, and neither the video nor its bytes remain.
    let r = s
        .upload_form(
            &t,
            b"just some text, not a video at all".to_vec(),
            "fake.mp4",
            &[],
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_media").await;
    // Text that spells `ftyp` where an MP4's first box names itself (a DASH
    // manifest behind an XML comment, which ffmpeg would read as one): no box.
    let posing = b"<!--ftypjp2 -->\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\"></MPD>";
    let r = s.upload_form(&t, posing.to_vec(), "posing.mp4", &[]).await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_media").await;
    // A declared type that is no video: 415.
    let r = upload_declared(&s, &t, "a.png", "image/png").await;
    problem(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    // A video declared as another kind of video is stored as what it is
    // (its `original` is served with that type).
    let r = upload_declared(&s, &t, "a.webm", "video/webm").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["content_type"], "video/mp4");
    s.http
        .delete(s.url(&format!("/api/v1/videos/{}", v["id"].as_str().unwrap())))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    // Over the maximum: 413, whether announced or discovered while streaming.
    let big = vec![0u8; 200_000];
    let r = s.upload_form(&t, big, "big.mp4", &[]).await;
    let p = problem(r, StatusCode::PAYLOAD_TOO_LARGE, "file_too_large").await;
    assert!(p["detail"].as_str().unwrap().contains("100000"));
    let mut body = sample_mp4().to_vec();
    body.resize(150_000, 7);
    let stream = futures::stream::iter(
        body.chunks(10_000)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream))
        .file_name("chunked.mp4");
    let r = s
        .http
        .post(s.url("/api/v1/upload"))
        .bearer_auth(&t)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::PAYLOAD_TOO_LARGE, "file_too_large").await;
    // Bad metadata.
    let r = s
        .upload_form(
            &t,
            sample_mp4().to_vec(),
            "a.mp4",
            &[("visibility", "everyone")],
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let r = s
        .upload_form(
            &t,
            sample_mp4().to_vec(),
            "a.mp4",
            &[("tags", &"x".repeat(41))],
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_tags").await;
    // Tags parts by the thousand (each one tag) are refused, not collected.
    let many: Vec<String> = (0..5000).map(|i| format!("t{i}")).collect();
    let fields: Vec<(&str, &str)> = many.iter().map(|t| ("tags", t.as_str())).collect();
    let r = s
        .upload_form(&t, sample_mp4().to_vec(), "a.mp4", &fields)
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_tags").await;
    // A `file` part that never ends (no closing boundary): the form is
    // broken, not the server.
    let mut cut = b"--XB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.mp4\"\r\n\
        Content-Type: video/mp4\r\n\r\n"
        .to_vec();
    cut.extend_from_slice(sample_mp4());
    let r = s
        .http
        .post(s.url("/api/v1/upload"))
        .bearer_auth(&t)
        .header("content-type", "multipart/form-data; boundary=XB")
        .body(cut)
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::BAD_REQUEST, "invalid_form").await;
    // No file part at all.
    let r = s
        .http
        .post(s.url("/api/v1/upload"))
        .bearer_auth(&t)
        .multipart(reqwest::multipart::Form::new().text("title", "x"))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    assert!(s.object_keys().await.is_empty(), "no objects remain");
    let list: Value = s.get_json("/api/v1/videos", Some(&t)).await;
    assert_eq!(list["items"], json!([]), "no videos remain");
    let ups: Value = s.get_json("/api/v1/uploads", Some(&t)).await;
    assert_eq!(ups["items"], json!([]), "no uploads remain");
}

#[tokio::test]
async fn presigned_put_then_complete() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let bytes = sample_mp4().to_vec();
    let r = s.post_json("/api/v1/uploads/presigned", Some(&t), json!({"filename": "p.mp4", "content_type": "video/mp4", "size": bytes.len(), "title": "Pre"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["method"], "PUT");
    let vid = p["video_id"].as_str().unwrap();
    let url = p["upload_url"].as_str().unwrap();

    // Visible as an incomplete upload meanwhile.
    let ups: Value = s.get_json("/api/v1/uploads", Some(&t)).await;
    assert_eq!(ups["items"][0]["video_id"], vid);
    assert_eq!(ups["items"][0]["method"], "presigned");
    assert_eq!(ups["items"][0]["received_bytes"], 0);

    // Completing before the bytes arrived is refused and changes nothing.
    let r = s
        .post_json(
            &format!("/api/v1/uploads/presigned/{vid}/complete"),
            Some(&t),
            json!({}),
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "size_mismatch").await;

    let r = s.http.put(url).body(bytes.clone()).send().await.unwrap();
    assert!(r.status().is_success(), "PUT {}", r.status());
    assert!(r.headers().get("etag").is_some());
    let r = s
        .post_json(
            &format!("/api/v1/uploads/presigned/{vid}/complete"),
            Some(&t),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "uploaded");
    assert_eq!(v["title"], "Pre");
    assert_eq!(v["size_bytes"], bytes.len());
    // Completing again (the first answer lost, say) answers the same video
    // and changes nothing; to anyone else the upload does not exist.
    let complete_url = format!("/api/v1/uploads/presigned/{vid}/complete");
    let r = s.post_json(&complete_url, Some(&t), json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["id"], v["id"]);
    assert_eq!(again["status"], "uploaded");
    let other = s.user("other@example.com").await;
    let r = s.post_json(&complete_url, Some(&other), json!({})).await;
    problem(r, StatusCode::NOT_FOUND, "upload_not_found").await;
    let jobs = format!("SELECT COUNT(*) FROM jobs WHERE video_id = '{vid}'");
    assert_eq!(sql_count(&s.database_url, &jobs).await, 1);
    assert_eq!(
        s.object_keys().await,
        vec![format!("videos/{vid}/original")]
    );

    // The URL is still valid, but nothing replaces the checked original:
    // our endpoint finds no upload any more; S3 takes the bytes, beside it.
    let mut other = bytes.clone();
    other[..8].copy_from_slice(b"notvideo");
    let r = s.http.put(url).body(other).send().await.unwrap();
    if s.is_s3() {
        assert!(r.status().is_success(), "PUT {}", r.status());
    } else {
        problem(r, StatusCode::NOT_FOUND, "upload_not_found").await;
    }
    assert!(s.original_of(&t, vid).await == bytes, "the checked bytes");
    let r = s.delete(&format!("/api/v1/videos/{vid}"), &t).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(s.object_keys().await.is_empty(), "nothing remains");

    // Nor is a video its owner uploaded another way a presigned upload.
    let r = s.upload_form(&t, sample_mp4().to_vec(), "f.mp4", &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let form: Value = r.json().await.unwrap();
    let url_of_form = format!(
        "/api/v1/uploads/presigned/{}/complete",
        form["id"].as_str().unwrap()
    );
    let r = s.post_json(&url_of_form, Some(&t), json!({})).await;
    problem(r, StatusCode::NOT_FOUND, "upload_not_found").await;
}

/// Runs one statement on the server's database, SQLite or PostgreSQL.
async fn sql(s: &TestServer, statement: &str) {
    use sqlx::Connection;
    if s.database_url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(&s.database_url)
            .await
            .unwrap();
        sqlx::query(statement).execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(&s.database_url).await.unwrap();
        sqlx::query(statement).execute(&mut c).await.unwrap();
    }
}

/// One presigned completion at a time: while another holds the upload's
/// lease, a completion answers 423 with Retry-After and moves nothing (two
/// at once could move bytes a late PUT left over a checked original).
#[tokio::test]
async fn a_presigned_completion_waits_for_one_running_beside_it() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let bytes = sample_mp4().to_vec();
    let r = s
        .post_json(
            "/api/v1/uploads/presigned",
            Some(&t),
            json!({"filename": "p.mp4", "size": bytes.len()}),
        )
        .await;
    let p: Value = r.json().await.unwrap();
    let vid = p["video_id"].as_str().unwrap().to_owned();
    let r = s
        .http
        .put(p["upload_url"].as_str().unwrap())
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "PUT {}", r.status());
    let far = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64)
        + 600_000;
    sql(&s, &format!("UPDATE uploads SET lease_owner = 'another', lease_expires = {far} WHERE video_id = '{vid}'")).await;
    let complete = format!("/api/v1/uploads/presigned/{vid}/complete");
    let r = s.post_json(&complete, Some(&t), json!({})).await;
    assert!(r.headers().contains_key("retry-after"));
    problem(r, StatusCode::LOCKED, "upload_locked").await;
    assert_eq!(
        s.object_keys().await,
        vec![format!("videos/{vid}/upload")],
        "nothing moved"
    );
    sql(
        &s,
        &format!("UPDATE uploads SET lease_owner = NULL WHERE video_id = '{vid}'"),
    )
    .await;
    let r = s.post_json(&complete, Some(&t), json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(s.original_of(&t, &vid).await == bytes);
}

#[tokio::test]
async fn presigned_validation_and_refused_urls() {
    let s = TestServer::start_with(&[("VIDHOST_UPLOADS__PRESIGN_EXPIRY_S", "2")]).await;
    let t = s.user("u@example.com").await;
    let r = s
        .post_json(
            "/api/v1/uploads/presigned",
            Some(&t),
            json!({"filename": "p.mp4", "size": 6u64 << 30}),
        )
        .await;
    let p = problem(r, StatusCode::PAYLOAD_TOO_LARGE, "file_too_large").await;
    assert!(
        p["detail"].as_str().unwrap().contains("multipart"),
        "points to multipart: {p}"
    );
    let r = s
        .post_json(
            "/api/v1/uploads/presigned",
            Some(&t),
            json!({"filename": "p.gif", "content_type": "image/gif", "size": 10}),
        )
        .await;
    problem(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let r = s
        .post_json(
            "/api/v1/uploads/presigned",
            Some(&t),
            json!({"filename": "p.mp4", "size": 0}),
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let r = s
        .post_json(
            "/api/v1/uploads/presigned",
            None,
            json!({"filename": "p.mp4", "size": 10}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let bytes = sample_mp4().to_vec();
    let p: Value = s
        .post_json(
            "/api/v1/uploads/presigned",
            Some(&t),
            json!({"filename": "p.mp4", "size": bytes.len()}),
        )
        .await
        .json()
        .await
        .unwrap();
    let url = p["upload_url"].as_str().unwrap().to_owned();
    // A tampered URL is refused.
    let tampered = tamper(&url);
    let r = s
        .http
        .put(&tampered)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "tampered URL");
    // Bytes of the wrong size are refused at the PUT: local storage checks
    // them; on S3 the declared length is signed into the URL, so the store
    // refuses any other (and nothing of it is stored).
    for wrong in [bytes[..100].to_vec(), [bytes.as_slice(), b"more"].concat()] {
        let r = s.http.put(&url).body(wrong).send().await;
        if s.is_s3() {
            // Garage answers 403 at once, before reading the body, and
            // closes: the client sees that answer or, when the close comes
            // first, a failed send (broken pipe, incomplete message).
            match r {
                Ok(r) => assert_eq!(r.status(), StatusCode::FORBIDDEN, "other size on S3"),
                Err(e) => assert!(e.is_request(), "{e:?}"),
            }
        } else {
            let r = r.unwrap();
            problem(r, StatusCode::UNPROCESSABLE_ENTITY, "size_mismatch").await;
        }
        assert!(s.object_keys().await.is_empty(), "nothing stored");
    }
    // An expired URL is refused (Garage answers 400 "Date is too old"
    // where AWS answers 403; vidhost's own endpoint answers 403).
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let r = s.http.put(&url).body(bytes.clone()).send().await.unwrap();
    if s.is_s3() {
        assert!(
            matches!(r.status().as_u16(), 400 | 403),
            "expired URL: {}",
            r.status()
        );
    } else {
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "expired URL");
    }
    assert!(s.object_keys().await.is_empty());
}

/// Flips one character of the signature part of a URL.
fn tamper(url: &str) -> String {
    let mut u = url.to_owned();
    let idx = if let Some(i) = u.find("X-Amz-Signature=") {
        i + "X-Amz-Signature=".len() + 3
    } else {
        u.len() - 5
    };
    let c = u.as_bytes()[idx];
    let new = if c == b'a' { 'b' } else { 'a' };
    u.replace_range(idx..idx + 1, &new.to_string());
    u
}

async fn start_multipart(s: &TestServer, t: &str, size: usize) -> Value {
    let r = s.post_json("/api/v1/uploads/multipart", Some(t), json!({"filename": "big.avi", "content_type": "video/x-msvideo", "size": size, "title": "Big"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

async fn part_urls(s: &TestServer, t: &str, upload_id: &str, numbers: &[u32]) -> Vec<String> {
    let r = s
        .post_json(
            &format!("/api/v1/uploads/multipart/{upload_id}/parts"),
            Some(t),
            json!({"part_numbers": numbers}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    v["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["url"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn multipart_parallel_parts_in_any_order() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let file = big_avi();
    let m = start_multipart(&s, &t, file.len()).await;
    let upload_id = m["upload_id"].as_str().unwrap();
    let part_size = m["part_size"].as_u64().unwrap() as usize;
    let count = m["part_count"].as_u64().unwrap() as u32;
    assert_eq!(part_size, 5 << 20);
    assert_eq!(count as usize, file.len().div_ceil(part_size));
    assert!(count >= 3);

    // All parts but the first, in reverse order and in parallel.
    let numbers: Vec<u32> = (2..=count).rev().collect();
    let urls = part_urls(&s, &t, upload_id, &numbers).await;
    let puts = numbers.iter().zip(urls).map(|(&n, url)| {
        let start = (n as usize - 1) * part_size;
        let chunk = file[start..(start + part_size).min(file.len())].to_vec();
        let http = s.http.clone();
        async move {
            let r = http.put(url).body(chunk).send().await.unwrap();
            assert!(r.status().is_success(), "part {n}: {}", r.status());
            (
                n,
                r.headers()
                    .get("etag")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned(),
            )
        }
    });
    let mut etags: Vec<(u32, String)> = join_all(puts).await;

    // What was received so far, for resuming.
    let got: Value = s
        .get_json(&format!("/api/v1/uploads/multipart/{upload_id}"), Some(&t))
        .await;
    let listed: Vec<u64> = got["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["part_number"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, (2..=count as u64).collect::<Vec<_>>());
    assert_eq!(got["video_id"], m["video_id"]);
    let ups: Value = s.get_json("/api/v1/uploads", Some(&t)).await;
    assert_eq!(ups["items"][0]["upload_id"], upload_id);
    assert_eq!(ups["items"][0]["received_bytes"], file.len() - part_size);

    // Completing with a part missing is refused.
    let parts: Vec<Value> = etags
        .iter()
        .map(|(n, e)| json!({"part_number": n, "etag": e}))
        .collect();
    let r = s
        .post_json(
            &format!("/api/v1/uploads/multipart/{upload_id}/complete"),
            Some(&t),
            json!({"parts": parts}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let url = part_urls(&s, &t, upload_id, &[1]).await.remove(0);
    if !s.is_s3() {
        // On local storage a wrongly sized part is refused at the PUT.
        let r = s
            .http
            .put(&url)
            .body(file[..1000].to_vec())
            .send()
            .await
            .unwrap();
        problem(r, StatusCode::BAD_REQUEST, "invalid_part_size").await;
    }
    let r = s
        .http
        .put(&url)
        .body(file[..part_size].to_vec())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    etags.push((
        1,
        r.headers()
            .get("etag")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned(),
    ));
    etags.sort();

    // A wrong ETag is refused; the right ones (quotes or not) complete it.
    let mut parts: Vec<Value> = etags
        .iter()
        .map(|(n, e)| json!({"part_number": n, "etag": e}))
        .collect();
    parts[0]["etag"] = json!("\"0123456789abcdef0123456789abcdef\"");
    let r = s
        .post_json(
            &format!("/api/v1/uploads/multipart/{upload_id}/complete"),
            Some(&t),
            json!({"parts": parts}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Each part once: a second entry is refused, even after a right first.
    let mut twice: Vec<Value> = etags
        .iter()
        .map(|(n, e)| json!({"part_number": n, "etag": e}))
        .collect();
    twice.push(json!({"part_number": 1, "etag": "0123456789abcdef0123456789abcdef"}));
    let r = s
        .post_json(
            &format!("/api/v1/uploads/multipart/{upload_id}/complete"),
            Some(&t),
            json!({"parts": twice}),
        )
        .await;
    let p = problem(r, StatusCode::BAD_REQUEST, "invalid_part").await;
    assert!(p["detail"].as_str().unwrap().contains("twice"), "{p}");
    // Every part must be listed: an empty list says which one is missing.
    let r = s
        .post_json(
            &format!("/api/v1/uploads/multipart/{upload_id}/complete"),
            Some(&t),
            json!({"parts": []}),
        )
        .await;
    let p = problem(r, StatusCode::BAD_REQUEST, "invalid_part").await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("part 1 is not listed"),
        "{p}"
    );
    // Listed in any order (here backwards), with quotes or without.
    let parts: Vec<Value> = etags
        .iter()
        .rev()
        .map(|(n, e)| json!({"part_number": n, "etag": e.trim_matches('"')}))
        .collect();
    let r = s
        .post_json(
            &format!("/api/v1/uploads/multipart/{upload_id}/complete"),
            Some(&t),
            json!({"parts": parts}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "uploaded");
    assert_eq!(v["size_bytes"], file.len());
    assert_eq!(v["content_type"], "video/x-msvideo");

    // The stored original is byte-identical.
    let body = s.original_of(&t, v["id"].as_str().unwrap()).await;
    assert_eq!(sha256(&body), sha256(file));
    assert_eq!(s.pending_multipart_count().await, 0);
    let ups: Value = s.get_json("/api/v1/uploads", Some(&t)).await;
    assert_eq!(ups["items"], json!([]));
}

#[tokio::test]
async fn multipart_abort_and_invalid_media_leave_nothing() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let other = s.user("o@example.com").await;
    let file = big_avi();
    let m = start_multipart(&s, &t, file.len()).await;
    let upload_id = m["upload_id"].as_str().unwrap();
    let url = part_urls(&s, &t, upload_id, &[1]).await.remove(0);
    assert!(s
        .http
        .put(&url)
        .body(file[..5 << 20].to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .is_success());

    // Someone else can neither see nor abort it.
    let r = s
        .get(
            &format!("/api/v1/uploads/multipart/{upload_id}"),
            Some(&other),
        )
        .await;
    problem(r, StatusCode::NOT_FOUND, "upload_not_found").await;
    let r = s
        .http
        .delete(s.url(&format!("/api/v1/uploads/multipart/{upload_id}")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND, "upload_not_found").await;

    let r = s
        .http
        .delete(s.url(&format!("/api/v1/uploads/multipart/{upload_id}")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s
        .get(&format!("/api/v1/uploads/multipart/{upload_id}"), Some(&t))
        .await;
    problem(r, StatusCode::NOT_FOUND, "upload_not_found").await;
    let r = s
        .get(
            &format!("/api/v1/videos/{}", m["video_id"].as_str().unwrap()),
            Some(&t),
        )
        .await;
    problem(r, StatusCode::NOT_FOUND, "video_not_found").await;
    assert_eq!(s.pending_multipart_count().await, 0);

    // Bytes that are not a video: refused at completion, nothing remains.
    let junk = vec![0x55u8; 6 << 20];
    let m = start_multipart(&s, &t, junk.len()).await;
    let upload_id = m["upload_id"].as_str().unwrap();
    let urls = part_urls(&s, &t, upload_id, &[1, 2]).await;
    let mut parts = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let chunk = if i == 0 {
            junk[..5 << 20].to_vec()
        } else {
            junk[5 << 20..].to_vec()
        };
        let r = s.http.put(url).body(chunk).send().await.unwrap();
        parts.push(json!({"part_number": i + 1, "etag": r.headers().get("etag").unwrap().to_str().unwrap()}));
    }
    let r = s
        .post_json(
            &format!("/api/v1/uploads/multipart/{upload_id}/complete"),
            Some(&t),
            json!({"parts": parts}),
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_media").await;
    assert!(s.object_keys().await.is_empty());
    assert_eq!(s.pending_multipart_count().await, 0);
    let list: Value = s.get_json("/api/v1/videos", Some(&t)).await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn multipart_validation() {
    let s = TestServer::start_with(&[("VIDHOST_UPLOADS__MAX_SIZE_BYTES", "100000000")]).await;
    let t = s.user("u@example.com").await;
    let r = s
        .post_json(
            "/api/v1/uploads/multipart",
            Some(&t),
            json!({"filename": "a.mp4", "size": 100_000_001u64}),
        )
        .await;
    problem(r, StatusCode::PAYLOAD_TOO_LARGE, "file_too_large").await;
    let r = s
        .post_json(
            "/api/v1/uploads/multipart",
            Some(&t),
            json!({"filename": "a.txt", "content_type": "text/plain", "size": 10}),
        )
        .await;
    problem(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let r = s
        .post_json(
            "/api/v1/uploads/multipart",
            Some(&t),
            json!({"filename": "a.mp4", "size": 10, "tags": ["", "x"]}),
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_tags").await;
    let r = s
        .post_json("/api/v1/uploads/multipart", Some(&t), json!({"size": 10}))
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    let m = start_multipart(&s, &t, 12 << 20).await;
    let upload_id = m["upload_id"].as_str().unwrap();
    for bad in [json!([0]), json!([4]), json!([])] {
        let r = s
            .post_json(
                &format!("/api/v1/uploads/multipart/{upload_id}/parts"),
                Some(&t),
                json!({"part_numbers": bad}),
            )
            .await;
        problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
}

/// Lists the upload ids of the caller's incomplete uploads.
async fn incomplete_upload_ids(s: &TestServer, t: &str) -> std::collections::BTreeSet<String> {
    let listed = s.get_json("/api/v1/uploads", Some(t)).await;
    listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["upload_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_acknowledged_creation_is_kept_across_a_crash() {
    // Some 2,450 creations as fast as the server takes them: more than the
    // per-address API limit allows, which is not what this test is about.
    let mut s = TestServer::start_with(&[("VIDHOST_RATE_LIMITS__ENABLED", "false")]).await;
    let t = s.user("many@example.com").await;
    let body = json!({"filename": "a.mp4", "content_type": "video/mp4", "size": 100_000_000});
    let create = |s: &TestServer| {
        let req = s
            .http
            .post(s.url("/api/v1/uploads/multipart"))
            .bearer_auth(&t)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            let v: Value = r.json().await.unwrap();
            v["upload_id"].as_str().unwrap().to_owned()
        }
    };
    // Concurrent creations share transactions (batch.rs); each is answered
    // only once its own rows are committed.
    let mut ids: std::collections::BTreeSet<String> = join_all((0..48).map(|_| create(&s)))
        .await
        .into_iter()
        .collect();
    assert_eq!(ids.len(), 48);

    if let Some(path) = s.database_url.strip_prefix("sqlite://") {
        use sqlx::Connection;
        let path = path.split('?').next().unwrap().to_owned();
        // Another connection holds SQLite's write lock: a creation waits
        // for it instead of failing.
        let mut other = sqlx::SqliteConnection::connect(&s.database_url)
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap();
        let waiting = tokio::spawn(create(&s));
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        assert!(
            !waiting.is_finished(),
            "answered while the database was locked"
        );
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        ids.insert(waiting.await.unwrap());

        // The writer checkpoints its WAL: one creation after another (a
        // commit each) does not grow it without bound.
        let wal = || std::fs::metadata(format!("{path}-wal")).unwrap().len();
        for _ in 0..1200 {
            ids.insert(create(&s).await);
        }
        let after_many = wal();
        for _ in 0..1200 {
            ids.insert(create(&s).await);
        }
        // Without checkpoints: ~43 KiB a commit, 50 and then 100 MiB. With
        // them the size it levels off at depends on how fast checkpoints
        // run beside the writer (a slow fsync lets it grow for a while), but
        // never past the writer's bound (batch.rs `WAL_FRAMES_MAX`: 16 MiB,
        // then the writer waits for a checkpoint) and a batch or two.
        let after_more = wal();
        for (n, size) in [(1200, after_many), (2400, after_more)] {
            assert!(
                size < 24 << 20,
                "the WAL grew to {size} bytes after {n} creations"
            );
        }
    }

    s.crash_and_restart().await;
    assert_eq!(incomplete_upload_ids(&s, &t).await, ids);
}

/// PUTs `url` with a `Content-Length` of `declared` but only `sent` bytes,
/// then hangs up and waits until the server has dealt with it.
/// `host:port` and the path with its query, for a request written by hand.
fn host_and_path(url: &str) -> (String, String) {
    let u = reqwest::Url::parse(url).unwrap();
    let host = format!(
        "{}:{}",
        u.host_str().unwrap(),
        u.port_or_known_default().unwrap()
    );
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    };
    (host, path)
}

async fn broken_put(url: &str, declared: usize, sent: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, path) = host_and_path(url);
    let mut c = tokio::net::TcpStream::connect(&host).await.unwrap();
    let head = format!("PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {declared}\r\n\r\n");
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(sent).await.unwrap();
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), c.read_to_end(&mut rest))
        .await
        .expect("the server answers or closes a broken PUT");
}

async fn listed_parts(s: &TestServer, t: &str, upload_id: &str) -> Vec<(u64, String)> {
    let got: Value = s
        .get_json(&format!("/api/v1/uploads/multipart/{upload_id}"), Some(t))
        .await;
    got["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let etag = p["etag"].as_str().unwrap().trim_matches('"').to_owned();
            (p["part_number"].as_u64().unwrap(), etag)
        })
        .collect()
}

/// PUTs every part of `file` for multipart upload `m`, in order; answers the
/// part URLs, the part size and the part count.
async fn put_every_part(
    s: &TestServer,
    t: &str,
    m: &Value,
    file: &[u8],
) -> (Vec<String>, usize, u32) {
    let part_size = m["part_size"].as_u64().unwrap() as usize;
    let count = m["part_count"].as_u64().unwrap() as u32;
    let numbers: Vec<u32> = (1..=count).collect();
    let urls = part_urls(s, t, m["upload_id"].as_str().unwrap(), &numbers).await;
    for (&n, url) in numbers.iter().zip(&urls) {
        let start = (n as usize - 1) * part_size;
        let chunk = file[start..(start + part_size).min(file.len())].to_vec();
        let r = s.http.put(url).body(chunk).send().await.unwrap();
        assert!(r.status().is_success(), "part {n}: {}", r.status());
    }
    (urls, part_size, count)
}

#[tokio::test]
async fn a_broken_re_put_or_a_repeated_complete_keeps_the_bytes_right() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let file = big_avi();
    let m = start_multipart(&s, &t, file.len()).await;
    let upload_id = m["upload_id"].as_str().unwrap();
    let (urls, part_size, count) = put_every_part(&s, &t, &m, file).await;
    let before = listed_parts(&s, &t, upload_id).await;
    assert_eq!(before.len(), count as usize);

    // Part 1 again, other bytes, cut off after 1 MiB of its 5.
    broken_put(&urls[0], part_size, &vec![0xEE; 1 << 20]).await;

    // Never a completion over mixed bytes (checked at the end, on the bytes
    // of the original). Local disk drops the part being overwritten, so
    // completing with its old ETag is refused. S3 stores differ: AWS keeps
    // the old part, Garage lists it but refuses to complete until it is
    // sent again; both are fine, a mix is not.
    let after = listed_parts(&s, &t, upload_id).await;
    let with_old = json!({"parts": before.iter().map(|(n, e)| json!({"part_number": n, "etag": e})).collect::<Vec<_>>()});
    let complete_url = format!("/api/v1/uploads/multipart/{upload_id}/complete");
    let mut done = None;
    if s.is_s3() {
        assert_eq!(after, before);
        let r = s.post_json(&complete_url, Some(&t), with_old).await;
        if r.status() == StatusCode::OK {
            done = Some(r);
        } else {
            problem(r, StatusCode::BAD_REQUEST, "invalid_part").await;
        }
    } else {
        let part1 = after.iter().find(|(n, _)| *n == 1);
        assert_eq!(
            part1, None,
            "a part that was being overwritten is not listed"
        );
        let r = s.post_json(&complete_url, Some(&t), with_old).await;
        problem(r, StatusCode::BAD_REQUEST, "invalid_part").await;
    }
    let r = match done {
        Some(r) => r,
        None => {
            let r = s
                .http
                .put(&urls[0])
                .body(file[..part_size].to_vec())
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            let parts = listed_parts(&s, &t, upload_id).await;
            let complete = json!({"parts": parts.iter().map(|(n, e)| json!({"part_number": n, "etag": e})).collect::<Vec<_>>()});
            if let Storage::Disk(root) = &s.storage {
                // As if a `complete` had died right after moving the bytes
                // into place (the database unavailable, the process killed):
                // the staging is gone and the upload still listed. Sending
                // it again must work.
                let staging: Vec<_> = std::fs::read_dir(root.join(".multipart"))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                assert_eq!(staging.len(), 1);
                let video_id = m["video_id"].as_str().unwrap();
                let dest = root.join("videos").join(video_id).join("original");
                std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                std::fs::rename(staging[0].join("data"), &dest).unwrap();
                std::fs::remove_dir_all(&staging[0]).unwrap();
            }
            s.post_json(&complete_url, Some(&t), complete).await
        }
    };
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let body = s.original_of(&t, v["id"].as_str().unwrap()).await;
    assert_eq!(sha256(&body), sha256(file));

    // A complete sent again after the upload completed (its answer lost)
    // answers the same video, as S3 answers a repeated
    // CompleteMultipartUpload, and queues no second job; anyone else still
    // finds no such upload.
    let r = s
        .post_json(&complete_url, Some(&t), json!({"parts": []}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["id"], v["id"]);
    assert_ne!(again["status"], "awaiting_upload");
    let other = s.user("other@example.com").await;
    let r = s
        .post_json(&complete_url, Some(&other), json!({"parts": []}))
        .await;
    problem(r, StatusCode::NOT_FOUND, "upload_not_found").await;
    let jobs = format!(
        "SELECT COUNT(*) FROM jobs WHERE video_id = '{}'",
        v["id"].as_str().unwrap()
    );
    assert_eq!(sql_count(&s.database_url, &jobs).await, 1);
    assert_eq!(
        sha256(&s.original_of(&t, v["id"].as_str().unwrap()).await),
        sha256(file)
    );
}

#[tokio::test]
async fn completes_sent_at_once_all_answer_the_one_video() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let file = big_avi();
    let m = start_multipart(&s, &t, file.len()).await;
    let upload_id = m["upload_id"].as_str().unwrap();
    put_every_part(&s, &t, &m, file).await;
    let parts = listed_parts(&s, &t, upload_id).await;
    let body = json!({"parts": parts.iter().map(|(n, e)| json!({"part_number": n, "etag": e})).collect::<Vec<_>>()});
    let complete_url = format!("/api/v1/uploads/multipart/{upload_id}/complete");

    // A client that timed out and retried while its first `complete` was
    // still running: every answer is the video, or "locked, retry" (one
    // completion at a time on disk), never "no such upload".
    let sent = (0..4).map(|_| s.post_json(&complete_url, Some(&t), body.clone()));
    let mut ids = std::collections::BTreeSet::new();
    let mut locked = 0;
    for r in futures::future::join_all(sent).await {
        match r.status() {
            StatusCode::OK => {
                let v: Value = r.json().await.unwrap();
                ids.insert(v["id"].as_str().unwrap().to_owned());
            }
            StatusCode::LOCKED => {
                assert!(r.headers().contains_key("retry-after"));
                locked += 1;
            }
            other => panic!("complete answered {other}: {}", r.text().await.unwrap()),
        }
    }
    assert!(locked < 4, "one of them completed");
    for _ in 0..locked {
        let r = s.post_json(&complete_url, Some(&t), body.clone()).await;
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        ids.insert(v["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "one video: {ids:?}");
    let id = ids.into_iter().next().unwrap();
    assert_eq!(id, m["video_id"].as_str().unwrap());
    let jobs = format!("SELECT COUNT(*) FROM jobs WHERE video_id = '{id}'");
    assert_eq!(sql_count(&s.database_url, &jobs).await, 1);
    assert_eq!(sha256(&s.original_of(&t, &id).await), sha256(file));
    assert_eq!(s.object_keys().await, vec![format!("videos/{id}/original")]);
}

/// Starts a PUT of `body` that sends its first `split` bytes at once and
/// the rest when `go` fires; answers the status code.
fn put_in_two(
    url: &str,
    body: Vec<u8>,
    split: usize,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<u16>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, path) = host_and_path(url);
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut c = tokio::net::TcpStream::connect(&host).await.unwrap();
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        c.write_all(head.as_bytes()).await.unwrap();
        c.write_all(&body[..split]).await.unwrap();
        let _ = wait.await;
        c.write_all(&body[split..]).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            c.read_to_end(&mut answer),
        )
        .await
        .expect("answered")
        .unwrap();
        let line = String::from_utf8_lossy(&answer);
        line.split(' ').nth(1).unwrap().parse().unwrap()
    });
    (go, task)
}

#[tokio::test]
async fn puts_of_one_part_at_once_never_mix_and_complete_waits_for_none() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let file = big_avi();
    let m = start_multipart(&s, &t, file.len()).await;
    let upload_id = m["upload_id"].as_str().unwrap();
    let video_id = m["video_id"].as_str().unwrap();
    let part_size = m["part_size"].as_u64().unwrap() as usize;
    let count = m["part_count"].as_u64().unwrap() as u32;
    assert!(count >= 2, "the file has a second part");
    let numbers: Vec<u32> = (1..=count).collect();
    let urls = part_urls(&s, &t, upload_id, &numbers).await;
    for (&n, url) in numbers.iter().zip(&urls) {
        let start = (n as usize - 1) * part_size;
        let chunk = file[start..(start + part_size).min(file.len())].to_vec();
        let r = s.http.put(url).body(chunk).send().await.unwrap();
        assert!(r.status().is_success(), "part {n}: {}", r.status());
    }
    let old = listed_parts(&s, &t, upload_id).await;
    let part2 = part_size..(2 * part_size).min(file.len());
    let a = vec![0x11u8; part2.len()];
    let b = vec![0x22u8; part2.len()];

    // Part 2 again (a client retrying, say): A sends half and stalls.
    let (go_a, put_a) = put_in_two(&urls[1], a.clone(), a.len() / 2);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let complete_url = format!("/api/v1/uploads/multipart/{upload_id}/complete");
    let body_of = |parts: &[(u64, String)]| json!({"parts": parts.iter().map(|(n, e)| json!({"part_number": n, "etag": e})).collect::<Vec<_>>()});
    if !s.is_s3() {
        // A completion while a part is being written would rename the file
        // under that write: it is refused at once, and changes nothing.
        let r = s.post_json(&complete_url, Some(&t), body_of(&old)).await;
        let retry = r.headers().get("retry-after").cloned();
        problem(r, StatusCode::LOCKED, "upload_locked").await;
        assert!(retry.is_some());
        assert_eq!(incomplete_upload_ids(&s, &t).await.len(), 1);
    }
    // B, the same part with other bytes, whole, while A is in flight.
    let http = s.http.clone();
    let url_b = urls[1].clone();
    let put_b =
        tokio::spawn(async move { http.put(&url_b).body(b).send().await.unwrap().status() });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    go_a.send(()).unwrap();
    assert_eq!(put_a.await.unwrap(), 200);
    assert!(put_b.await.unwrap().is_success());

    // Whatever the part list says is what completing gives: all of A or
    // all of B (disk: B, which waited for A), never a mix.
    let now = listed_parts(&s, &t, upload_id).await;
    let r = s.post_json(&complete_url, Some(&t), body_of(&now)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = s.original_of(&t, video_id).await;
    assert_eq!(body.len(), file.len());
    assert_eq!(sha256(&body[..part2.start]), sha256(&file[..part2.start]));
    assert_eq!(sha256(&body[part2.end..]), sha256(&file[part2.end..]));
    let got = &body[part2.clone()];
    if s.is_s3() {
        assert!(got.iter().all(|&x| x == 0x11) || got.iter().all(|&x| x == 0x22));
    } else {
        assert!(got.iter().all(|&x| x == 0x22), "B's bytes, whole");
    }
}

#[tokio::test]
async fn a_declared_size_takes_no_disk_until_bytes_arrive() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    // 8 GiB declared; only the last part (2 MiB) is sent.
    let size: u64 = 8 << 30;
    let m = start_multipart(&s, &t, size as usize).await;
    let upload_id = m["upload_id"].as_str().unwrap();
    let part_size = m["part_size"].as_u64().unwrap();
    let count = m["part_count"].as_u64().unwrap() as u32;
    let last = size - (count as u64 - 1) * part_size;
    let url = part_urls(&s, &t, upload_id, &[count]).await.remove(0);
    let r = s
        .http
        .put(&url)
        .body(vec![7u8; last as usize])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let used = match &s.storage {
        Storage::Disk(root) => {
            use std::os::unix::fs::MetadataExt;
            let mut used = 0;
            for e in std::fs::read_dir(root.join(".multipart")).unwrap() {
                let data = e.unwrap().path().join("data");
                used += std::fs::metadata(data).unwrap().blocks() * 512;
            }
            used
        }
        // On S3 the store holds the part (this server's disk nothing), and
        // counts exactly what was sent.
        Storage::S3 { .. } => {
            let ups: Value = s.get_json("/api/v1/uploads", Some(&t)).await;
            assert_eq!(ups["items"][0]["received_bytes"].as_u64(), Some(last));
            0
        }
    };
    assert!(
        used < last + (1 << 20),
        "{used} bytes of disk taken for {last} bytes received"
    );
    let r = s
        .delete(&format!("/api/v1/uploads/multipart/{upload_id}"), &t)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.pending_multipart_count().await, 0);
}

/// Sets the modification time of `path` (file or directory) to `ago` back.
fn age(path: &std::path::Path, ago: std::time::Duration) {
    let t = std::time::SystemTime::now() - ago;
    std::fs::File::open(path).unwrap().set_modified(t).unwrap();
}

async fn sweep_leftovers_on_disk(root: &std::path::Path) {
    // Leftovers: a completion killed before it tidied up (parts, no data),
    // a staging nobody refers to, a temp file of a killed write: all idle
    // for longer than the expiry (24 h) plus an hour. And a fresh one,
    // which may still be in use.
    let day = std::time::Duration::from_secs(26 * 3600);
    let staging = root.join(".multipart");
    let tidy = staging.join("0".repeat(32));
    std::fs::create_dir_all(tidy.join("parts")).unwrap();
    std::fs::write(tidy.join("parts/1"), b"{}").unwrap();
    age(&tidy.join("parts"), day);
    age(&tidy, day);
    let orphan = staging.join("1".repeat(32));
    std::fs::create_dir_all(orphan.join("parts")).unwrap();
    std::fs::write(orphan.join("data"), vec![0u8; 4096]).unwrap();
    for p in [orphan.join("data"), orphan.join("parts"), orphan.clone()] {
        age(&p, day);
    }
    let tmp = root.join(".tmp").join("2".repeat(32));
    std::fs::write(&tmp, b"half a file").unwrap();
    age(&tmp, day);
    let fresh = staging.join("3".repeat(32));
    std::fs::create_dir_all(fresh.join("parts")).unwrap();

    let gone = |p: &std::path::Path| !p.exists();
    for _ in 0..100 {
        if gone(&tidy) && gone(&orphan) && gone(&tmp) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        gone(&tidy) && gone(&orphan) && gone(&tmp),
        "leftovers swept"
    );
    assert!(fresh.exists(), "what may be in use stays");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 2);
}

#[tokio::test]
async fn leftovers_of_interrupted_writes_are_swept_and_live_uploads_kept() {
    let s = TestServer::start_with(&[("VIDHOST_UPLOADS__SWEEP_INTERVAL_S", "1")]).await;
    let t = s.user("u@example.com").await;
    // A live upload with one part in: kept, and completes afterwards.
    let file = big_avi();
    let m = start_multipart(&s, &t, file.len()).await;
    let upload_id = m["upload_id"].as_str().unwrap();
    let part_size = m["part_size"].as_u64().unwrap() as usize;
    let count = m["part_count"].as_u64().unwrap() as u32;
    let numbers: Vec<u32> = (1..=count).collect();
    let urls = part_urls(&s, &t, upload_id, &numbers).await;
    let r = s
        .http
        .put(&urls[0])
        .body(file[..part_size].to_vec())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    // S3 keeps its own staging (incomplete multipart uploads; its sweep is
    // the next test, which needs a short expiry); here the live upload
    // below must simply come through the sweeps whole.
    if let Storage::Disk(root) = &s.storage {
        sweep_leftovers_on_disk(root).await;
    } else {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }

    for (&n, url) in numbers.iter().zip(&urls).skip(1) {
        let start = (n as usize - 1) * part_size;
        let chunk = file[start..(start + part_size).min(file.len())].to_vec();
        let r = s.http.put(url).body(chunk).send().await.unwrap();
        assert!(r.status().is_success(), "part {n}: {}", r.status());
    }
    let parts = listed_parts(&s, &t, upload_id).await;
    let body = json!({"parts": parts.iter().map(|(n, e)| json!({"part_number": n, "etag": e})).collect::<Vec<_>>()});
    let r = s
        .post_json(
            &format!("/api/v1/uploads/multipart/{upload_id}/complete"),
            Some(&t),
            body,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let got = s.original_of(&t, v["id"].as_str().unwrap()).await;
    assert_eq!(sha256(&got), sha256(file));
}

/// On S3, what a killed write leaves is an incomplete multipart upload in
/// the bucket: the sweep aborts those older than the expiry plus
/// `leftovers_after_s`, under the server's own prefix only.
#[tokio::test]
async fn stray_s3_multipart_uploads_are_aborted_by_the_sweep() {
    let s = TestServer::start_with(&[
        ("VIDHOST_UPLOADS__SWEEP_INTERVAL_S", "1"),
        ("VIDHOST_UPLOADS__EXPIRY_S", "1"),
        ("VIDHOST_UPLOADS__LEFTOVERS_AFTER_S", "0"),
    ])
    .await;
    let Storage::S3 { .. } = &s.storage else {
        // On disk the same sweep's staging and temp files are the test above.
        assert!(s.disk_root().is_some());
        return;
    };
    let ours = s
        .start_stray_multipart("videos/01JSTRAYFORMUPLOAD0000000/original")
        .await;
    let not_ours = s.start_stray_multipart("elsewhere/backup.bin").await;
    assert!(!ours.is_empty() && !not_ours.is_empty());
    assert_eq!(s.pending_multipart_count().await, 2);
    let mut left = 2;
    for _ in 0..100 {
        left = s.pending_multipart_count().await;
        if left == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left, 1, "ours aborted, the one outside videos/ kept");
}

/// An upload refused before its body is read (here: no token) is answered
/// while the client is still sending, and the connection closes. The client
/// must be able to send the rest and then read that answer, not find the
/// connection reset under it.
#[tokio::test]
async fn an_upload_refused_before_its_body_is_read_still_gets_its_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let url = url::Url::parse(&s.url("/")).unwrap();
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let body = vec![0u8; 32 << 20];
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/upload HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body)
        .await
        .expect("the server reads what is still sent after its answer");
    tcp.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.expect("no reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}
