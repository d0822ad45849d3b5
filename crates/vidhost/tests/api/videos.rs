use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn visibility_rules_hide_what_a_caller_may_not_see() {
    let s = TestServer::start().await;
    let owner = s.user("owner@example.com").await;
    let other = s.user("other@example.com").await;
    let admin = s.admin().await;
    let v = s.upload_sample(&owner, "Mine").await;
    let id = v["id"].as_str().unwrap();
    let path = format!("/api/v1/videos/{id}");

    assert_eq!(s.get(&path, Some(&owner)).await.status(), StatusCode::OK);
    assert_eq!(s.get(&path, Some(&admin)).await.status(), StatusCode::OK);
    // Not ready yet, and private: others and anonymous callers get 404.
    problem(
        s.get(&path, Some(&other)).await,
        StatusCode::NOT_FOUND,
        "video_not_found",
    )
    .await;
    problem(
        s.get(&path, None).await,
        StatusCode::NOT_FOUND,
        "video_not_found",
    )
    .await;
    problem(
        s.get(&format!("{path}/playback"), Some(&other)).await,
        StatusCode::NOT_FOUND,
        "video_not_found",
    )
    .await;
    // Even making it public does not show an unprocessed video to others.
    let r = s
        .http
        .patch(s.url(&path))
        .bearer_auth(&owner)
        .json(&json!({"visibility": "public"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    problem(
        s.get(&path, None).await,
        StatusCode::NOT_FOUND,
        "video_not_found",
    )
    .await;
    let anon: Value = s.get_json("/api/v1/videos", None).await;
    assert_eq!(anon["items"], json!([]));
    let theirs: Value = s.get_json("/api/v1/videos", Some(&other)).await;
    assert_eq!(theirs["items"], json!([]));
    // Others cannot edit or delete it.
    let r = s
        .http
        .patch(s.url(&path))
        .bearer_auth(&other)
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND, "video_not_found").await;
    let r = s
        .http
        .delete(s.url(&path))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND, "video_not_found").await;
    problem(
        s.get("/api/v1/videos/not-an-id", None).await,
        StatusCode::NOT_FOUND,
        "video_not_found",
    )
    .await;
}

#[tokio::test]
async fn edit_metadata() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let v = s.upload_sample(&t, "Before").await;
    let path = format!("/api/v1/videos/{}", v["id"].as_str().unwrap());
    let r = s
        .http
        .patch(s.url(&path))
        .bearer_auth(&t)
        .json(&json!({"title": "After", "description": "Long text", "tags": [" a", "B", "b"], "visibility": "unlisted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (
            v["title"].as_str(),
            v["description"].as_str(),
            v["visibility"].as_str()
        ),
        (Some("After"), Some("Long text"), Some("unlisted"))
    );
    assert_eq!(v["tags"], json!(["a", "B"]));
    let too_many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
    let r = s
        .http
        .patch(s.url(&path))
        .bearer_auth(&t)
        .json(&json!({"tags": too_many}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_tags").await;
    let r = s
        .http
        .patch(s.url(&path))
        .bearer_auth(&t)
        .json(&json!({"tags": ["a\nb"]}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_tags").await;
    let r = s
        .http
        .patch(s.url(&path))
        .bearer_auth(&t)
        .json(&json!({"title": "two\nlines"}))
        .send()
        .await
        .unwrap();
    let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(p["detail"].as_str().unwrap().contains("one line"), "{p}");
    let r = s
        .http
        .patch(s.url(&path))
        .bearer_auth(&t)
        .json(&json!({"visibility": "world"}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    for blank in ["", "   "] {
        let r = s
            .http
            .patch(s.url(&path))
            .bearer_auth(&t)
            .json(&json!({"title": blank}))
            .send()
            .await
            .unwrap();
        problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
    let kept: Value = s.get_json(&path, Some(&t)).await;
    assert_eq!(kept["title"], "After");
    let r = s
        .http
        .patch(s.url(&path))
        .bearer_auth(&t)
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    let after: Value = s.get_json(&path, Some(&t)).await;
    assert_eq!(after["title"], "After", "refused edits changed nothing");
}

#[tokio::test]
async fn delete_removes_every_object() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let keep = s.upload_sample(&t, "Keep").await;
    let gone = s.upload_sample(&t, "Gone").await;
    let gone_id = gone["id"].as_str().unwrap();
    let pb: Value = s
        .get_json(&format!("/api/v1/videos/{gone_id}/playback"), Some(&t))
        .await;
    let r = s.delete(&format!("/api/v1/videos/{gone_id}"), &t).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    problem(
        s.get(&format!("/api/v1/videos/{gone_id}"), Some(&t)).await,
        StatusCode::NOT_FOUND,
        "video_not_found",
    )
    .await;
    assert_eq!(
        s.get(pb["original"].as_str().unwrap(), None).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.object_keys().await,
        vec![format!("videos/{}/original", keep["id"].as_str().unwrap())]
    );

    // Deleting a video whose multipart upload is in flight aborts that upload.
    let m: Value = s
        .post_json(
            "/api/v1/uploads/multipart",
            Some(&t),
            json!({"filename": "x.avi", "size": 6 << 20}),
        )
        .await
        .json()
        .await
        .unwrap();
    let parts: Value = s
        .post_json(
            &format!(
                "/api/v1/uploads/multipart/{}/parts",
                m["upload_id"].as_str().unwrap()
            ),
            Some(&t),
            json!({"part_numbers": [1]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let r = s
        .http
        .put(parts["parts"][0]["url"].as_str().unwrap())
        .body(big_avi()[..5 << 20].to_vec())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = s
        .http
        .delete(s.url(&format!(
            "/api/v1/videos/{}",
            m["video_id"].as_str().unwrap()
        )))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.pending_multipart_count().await, 0);
    let ups: Value = s.get_json("/api/v1/uploads", Some(&t)).await;
    assert_eq!(ups["items"], json!([]));
    // And it counts as one.
    let text = s.get("/metrics", None).await.text().await.unwrap();
    assert!(
        text.contains(r#"vidhost_uploads_total{method="multipart",outcome="aborted"} 1"#),
        "{text}"
    );

    if s.is_s3() {
        // A form upload the store failed midway leaves an S3 multipart
        // upload no row names, if the store could not take its abort then:
        // deleting the video aborts it too.
        let v = s.upload_sample(&t, "Stray parts").await;
        let id = v["id"].as_str().unwrap();
        s.start_stray_multipart(&format!("videos/{id}/original"))
            .await;
        assert_eq!(s.pending_multipart_count().await, 1);
        let r = s.delete(&format!("/api/v1/videos/{id}"), &t).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(s.pending_multipart_count().await, 0);
    }
}

#[tokio::test]
async fn list_filters_and_cursor_pagination() {
    let s = TestServer::start().await;
    let t = s.user("u@example.com").await;
    let other = s.user("o@example.com").await;
    let mut ids = Vec::new();
    for (i, tags) in [("One", "cats"), ("Two", "dogs"), ("Three", "cats,dogs")]
        .iter()
        .enumerate()
    {
        let r = s
            .upload_form(
                &t,
                sample_mp4().to_vec(),
                "v.mp4",
                &[
                    ("title", tags.0),
                    ("tags", tags.1),
                    ("description", &format!("number {i}")),
                ],
            )
            .await;
        let v: Value = r.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    s.upload_sample(&other, "Theirs").await;

    let page1: Value = s.get_json("/api/v1/videos?limit=2", Some(&t)).await;
    let got: Vec<&str> = page1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[2].as_str(), ids[1].as_str()], "newest first");
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2: Value = s
        .get_json(&format!("/api/v1/videos?limit=2&cursor={cursor}"), Some(&t))
        .await;
    let got: Vec<&str> = page2["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[0].as_str()]);
    assert!(page2["next_cursor"].is_null());
    // A last page that is full says so too: no cursor to an empty page.
    let all: Value = s.get_json("/api/v1/videos?limit=3", Some(&t)).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    assert!(all["next_cursor"].is_null(), "{all}");

    let cats: Value = s.get_json("/api/v1/videos?tag=CATS", Some(&t)).await;
    assert_eq!(cats["items"].as_array().unwrap().len(), 2);
    let q: Value = s.get_json("/api/v1/videos?q=three", Some(&t)).await;
    assert_eq!(q["items"][0]["title"], "Three");
    let q: Value = s.get_json("/api/v1/videos?q=number%201", Some(&t)).await;
    assert_eq!(q["items"][0]["title"], "Two");
    let admin = s.admin().await;
    let all: Value = s
        .get_json("/api/v1/videos?status=uploaded&limit=100", Some(&admin))
        .await;
    assert_eq!(all["items"].as_array().unwrap().len(), 4);
    // The admin's own list is empty; by owner id, or `me`, the owner's.
    let mine = s
        .all_pages("/api/v1/videos?owner=me", Some(&admin), "id")
        .await;
    assert!(mine.is_empty(), "{mine:?}");
    let owner_id = s.get_json("/api/v1/me", Some(&t)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut by_id = s
        .all_pages(
            &format!("/api/v1/videos?owner={owner_id}"),
            Some(&admin),
            "id",
        )
        .await;
    let mut mine = s.all_pages("/api/v1/videos?owner=me", Some(&t), "id").await;
    by_id.sort();
    mine.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!((by_id, mine), (expected.clone(), expected));
    problem(
        s.get("/api/v1/videos?owner=me", None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    problem(
        s.get("/api/v1/videos?limit=101", None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    problem(
        s.get("/api/v1/videos?cursor=bogus", None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    problem(
        s.get("/api/v1/videos?status=nope", None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

/// Waits (at most `secs`) until `done` holds; false if it never did.
async fn eventually<F, Fut>(secs: u64, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if done().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    done().await
}

#[tokio::test]
async fn a_deleted_videos_objects_go_even_when_their_removal_was_interrupted() {
    let s = TestServer::start_with(&[("VIDHOST_UPLOADS__SWEEP_INTERVAL_S", "1")]).await;
    let t = s.user("u@example.com").await;
    let pending = "SELECT COUNT(*) FROM store_cleanup";

    // A delete that finishes leaves nothing queued.
    let v = s.upload_sample(&t, "Deleted").await;
    let id = v["id"].as_str().unwrap();
    let r = s.delete(&format!("/api/v1/videos/{id}"), &t).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(s.object_keys().await.is_empty());
    assert_eq!(sql_count(&s.database_url, pending).await, 0);

    // A process killed right after a delete's commit leaves the video's rows
    // gone and its removal queued: the sweeper removes the objects.
    let v = s.upload_sample(&t, "Killed midway").await;
    let id = v["id"].as_str().unwrap();
    assert_eq!(s.object_keys().await, vec![format!("videos/{id}/original")]);
    sql(
        &s.database_url,
        &format!("DELETE FROM videos WHERE id = '{id}'"),
    )
    .await;
    sql(
        &s.database_url,
        &format!(
            "INSERT INTO store_cleanup (video_id, store_upload_id, attempts, next_at, created_at) \
             VALUES ('{id}', NULL, 0, 0, 0)"
        ),
    )
    .await;
    assert!(
        eventually(30, || async { s.object_keys().await.is_empty() }).await,
        "the sweeper removed the objects: {:?}",
        s.object_keys().await
    );
    assert!(
        eventually(10, || async {
            sql_count(&s.database_url, pending).await == 0
        })
        .await
    );
}

/// A store that stops answering (it accepts connections, says nothing):
/// requests that need it fail with 503 within its timeout, a failed upload
/// leaves no video or upload listed, and a delete answers at once for the
/// catalog and removes the objects once the store is back.
#[tokio::test]
async fn a_store_that_stops_answering_fails_requests_and_deletes_finish_later() {
    // The sweeper takes a failed removal over two intervals (6 s) later.
    let env = [("VIDHOST_UPLOADS__SWEEP_INTERVAL_S", "3")];
    let Some((proxy, s)) = TestServer::start_behind_store_proxy(2, &env).await else {
        // On local disk there is no store process to hang; the sweeper's
        // part is the test above.
        assert!(std::env::var("VIDHOST_TEST_S3_ENDPOINT").is_err());
        return;
    };
    let t = s.user("u@example.com").await;
    let kept = s.upload_sample(&t, "Stored before").await;
    let kept_id = kept["id"].as_str().unwrap().to_owned();
    let pb = s
        .get_json(&format!("/api/v1/videos/{kept_id}/playback"), Some(&t))
        .await;
    let original = pb["original"].as_str().unwrap().to_owned();
    assert_eq!(s.get(&original, None).await.status(), StatusCode::OK);

    proxy.set_hung(true);
    let r = s
        .upload_form(
            &t,
            sample_mp4().to_vec(),
            "during.mp4",
            &[("title", "During")],
        )
        .await;
    problem(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let uploads = s.get_json("/api/v1/uploads", Some(&t)).await;
    assert_eq!(
        uploads["items"],
        json!([]),
        "the failed upload is not listed"
    );
    let ids = s.all_pages("/api/v1/videos?limit=50", Some(&t), "id").await;
    assert_eq!(ids, vec![kept_id.clone()], "nor is its video");

    let r = s.delete(&format!("/api/v1/videos/{kept_id}"), &t).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    problem(
        s.get(&format!("/api/v1/videos/{kept_id}"), Some(&t)).await,
        StatusCode::NOT_FOUND,
        "video_not_found",
    )
    .await;
    assert_eq!(
        s.object_keys().await,
        vec![format!("videos/{kept_id}/original")],
        "the store did not answer: the objects are still there"
    );

    proxy.set_hung(false);
    // The store answers again and still holds the objects (the sweeper has
    // not come round yet), but a grant issued before the delete no longer
    // reaches them.
    assert!(!s.object_keys().await.is_empty());
    problem(
        s.get(&original, None).await,
        StatusCode::NOT_FOUND,
        "video_not_found",
    )
    .await;
    assert!(
        eventually(60, || async { s.object_keys().await.is_empty() }).await,
        "removed once the store answered again: {:?}",
        s.object_keys().await
    );
    let pending = "SELECT COUNT(*) FROM store_cleanup";
    assert!(
        eventually(30, || async {
            sql_count(&s.database_url, pending).await == 0
        })
        .await
    );
}
