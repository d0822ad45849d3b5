//! Playback analytics as players and owners use them: view beacons, stats,
//! the most-viewed order and related videos.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Uploads a video with tags; `ready` ones are published as the pipeline
/// would leave them (processing is not what these tests are about).
async fn video(
    s: &TestServer,
    token: &str,
    title: &str,
    tags: &str,
    vis: &str,
    ready: bool,
) -> String {
    let r = s
        .upload_form(
            token,
            sample_mp4().to_vec(),
            "v.mp4",
            &[("title", title), ("tags", tags), ("visibility", vis)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    if ready {
        sql(
            &s.database_url,
            &format!("UPDATE videos SET status = 'ready' WHERE id = '{id}'"),
        )
        .await;
    }
    id
}

async fn beacon(
    s: &TestServer,
    id: &str,
    token: Option<&str>,
    ua: &str,
    body: Value,
) -> StatusCode {
    let mut r = s
        .http
        .post(s.url(&format!("/api/v1/videos/{id}/views")))
        .header("user-agent", ua)
        .json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap().status()
}

fn ev(session: &str, event: &str, watched: f64) -> Value {
    json!({"session_id": session, "event": event, "position_s": watched, "watched_s": watched, "rendition": "720p"})
}

#[tokio::test]
async fn beacons_become_stats_and_the_most_viewed_order() {
    let s = TestServer::start().await;
    let owner = s.user("owner@example.com").await;
    let viewer = s.user("viewer@example.com").await;
    let alps = video(&s, &owner, "Alps hike", "mountains,hiking", "public", true).await;
    let other = video(&s, &owner, "Cooking pasta", "food", "public", true).await;
    let private = video(&s, &owner, "Secret", "mountains", "private", true).await;

    // One browser, two sessions: two views, one viewer. Replays of `play`
    // within a session do not count again; watch time only grows.
    for b in [
        ev("s1", "play", 0.0),
        ev("s1", "progress", 4.0),
        ev("s1", "play", 4.0),
        ev("s1", "progress", 2.0),
    ] {
        assert_eq!(
            beacon(&s, &alps, None, "browser-a", b).await,
            StatusCode::ACCEPTED
        );
    }
    assert_eq!(
        beacon(&s, &alps, None, "browser-a", ev("s2", "play", 0.0)).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        beacon(&s, &alps, None, "browser-a", ev("s2", "ended", 3.0)).await,
        StatusCode::ACCEPTED
    );
    // A signed-in viewer is a viewer of their own.
    assert_eq!(
        beacon(&s, &alps, Some(&viewer), "browser-a", ev("s3", "play", 1.0)).await,
        StatusCode::ACCEPTED
    );
    // Claims beyond the clock are capped (here: at most ~30 s in a new session)…
    assert_eq!(
        beacon(&s, &alps, None, "browser-b", ev("s4", "progress", 90_000.0)).await,
        StatusCode::ACCEPTED
    );
    // …and another client cannot write into someone else's session.
    assert_eq!(
        beacon(&s, &alps, Some(&viewer), "x", ev("s1", "progress", 25.0)).await,
        StatusCode::ACCEPTED
    );

    for bad in [
        json!({"session_id": "s5", "event": "pause", "position_s": 0, "watched_s": 0}),
        json!({"session_id": "", "event": "play", "position_s": 0, "watched_s": 0}),
        json!({"session_id": "bad id!", "event": "play", "position_s": 0, "watched_s": 0}),
        json!({"session_id": "s5", "event": "play", "position_s": -1, "watched_s": 0}),
    ] {
        let r = s
            .post_json(&format!("/api/v1/videos/{alps}/views"), None, bad)
            .await;
        problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
    assert_eq!(
        beacon(&s, &private, None, "browser-a", ev("s6", "play", 0.0)).await,
        StatusCode::NOT_FOUND
    );

    let stats = s
        .get_json(&format!("/api/v1/videos/{alps}/stats"), Some(&owner))
        .await;
    assert_eq!(stats["views"], 3, "{stats}");
    assert_eq!(stats["unique_viewers"], 2, "{stats}");
    let watch = stats["watch_time_s"].as_f64().unwrap();
    // 4 + 3 + 1 from the honest sessions, 30 (the cap of a new session) from the forged one.
    assert!((watch - 38.0).abs() < 1e-6, "{stats}");
    let avg = stats["avg_view_duration_s"].as_f64().unwrap();
    assert!((avg - watch / 3.0).abs() < 1e-9, "{stats}");
    // (Sessions are dated by the day they started: at most one day boundary
    // can lie between those reports and now.)
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let date = stats["by_day"][0]["date"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let yesterday = (chrono::Utc::now() - chrono::Duration::minutes(1))
        .format("%Y-%m-%d")
        .to_string();
    let today = if date == yesterday { yesterday } else { today };
    assert_eq!(
        stats["by_day"],
        json!([{"date": today, "views": 3, "watch_time_s": watch}])
    );
    let none = s
        .get_json(&format!("/api/v1/videos/{other}/stats"), Some(&owner))
        .await;
    assert_eq!(none["views"], 0);
    assert_eq!(none["by_day"], json!([]));
    let r = s
        .get(&format!("/api/v1/videos/{alps}/stats"), Some(&viewer))
        .await;
    problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = s
        .get(&format!("/api/v1/videos/{private}/stats"), Some(&viewer))
        .await;
    problem(r, StatusCode::NOT_FOUND, "video_not_found").await;

    // Most viewed first, then newest; pages of one follow each other.
    let all = s.get_json("/api/v1/videos?sort=popular", None).await;
    let ids: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [alps.as_str(), other.as_str()]);
    assert_eq!(all["items"][0]["views"], 3);
    let paged = s
        .all_pages("/api/v1/videos?sort=popular&limit=1", None, "id")
        .await;
    assert_eq!(paged, ids);
    let r = s
        .get("/api/v1/videos?sort=popular&cursor=MTIzOmFiYw", None)
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test]
async fn related_videos_share_tags_and_only_show_what_others_may_watch() {
    let s = TestServer::start().await;
    let owner = s.user("owner@example.com").await;
    let other_owner = s.user("other@example.com").await;
    let hike = video(&s, &owner, "Alps hike", "mountains,hiking", "public", true).await;
    let ski = video(
        &s,
        &other_owner,
        "Alps ski day",
        "mountains,snow",
        "public",
        true,
    )
    .await;
    let same_owner = video(&s, &owner, "Garden tour", "plants", "public", true).await;
    let unrelated = video(&s, &other_owner, "Cooking pasta", "food", "public", true).await;
    let private = video(
        &s,
        &owner,
        "Mountains private",
        "mountains,hiking",
        "private",
        true,
    )
    .await;
    let unready = video(
        &s,
        &owner,
        "Mountains soon",
        "mountains,hiking",
        "public",
        false,
    )
    .await;
    let unlisted = video(
        &s,
        &owner,
        "Mountains unlisted",
        "mountains,hiking",
        "unlisted",
        true,
    )
    .await;

    let related = s
        .get_json(&format!("/api/v1/videos/{hike}/related"), None)
        .await;
    let ids: Vec<&str> = related["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [ski.as_str(), same_owner.as_str(), unrelated.as_str()],
        "{related}"
    );
    // The owner sees the same list: related videos are for anyone to watch next.
    let mine = s
        .get_json(&format!("/api/v1/videos/{hike}/related"), Some(&owner))
        .await;
    assert_eq!(mine["items"], related["items"]);
    for hidden in [&private, &unready, &unlisted] {
        assert!(!ids.contains(&hidden.as_str()));
    }
    // Related of what the caller may not see: 404.
    let r = s
        .get(&format!("/api/v1/videos/{private}/related"), None)
        .await;
    problem(r, StatusCode::NOT_FOUND, "video_not_found").await;
    let r = s
        .get(&format!("/api/v1/videos/{private}/related"), Some(&owner))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn search_by_relevance_ranks_title_then_tags_then_description() {
    let s = TestServer::start().await;
    let t = s.user("cats@example.com").await;
    // The best match is made first: newest first is the reverse order.
    for (title, tags, description) in [
        ("Cats", "", ""),
        ("Cats in space", "", ""),
        ("Funny cats compilation", "", ""),
        ("Dog day", "dogs,cats", ""),
        ("Birds at dawn", "birds", "the cats were asleep"),
        ("Unrelated", "", "nothing here"),
    ] {
        let r = s
            .upload_form(
                &t,
                sample_mp4().to_vec(),
                "v.mp4",
                &[
                    ("title", title),
                    ("tags", tags),
                    ("description", description),
                    ("visibility", "public"),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        sql(
            &s.database_url,
            &format!("UPDATE videos SET status = 'ready' WHERE id = '{id}'"),
        )
        .await;
    }
    let titles = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["title"].as_str().unwrap().to_owned())
            .collect()
    };
    let ranked = s
        .get_json("/api/v1/videos?q=CATS&sort=relevance", None)
        .await;
    assert!(ranked["items"].is_array(), "{ranked}");
    assert_eq!(
        titles(&ranked),
        [
            "Cats",
            "Cats in space",
            "Funny cats compilation",
            "Dog day",
            "Birds at dawn"
        ]
    );
    let recent = s.get_json("/api/v1/videos?q=cats", None).await;
    assert_eq!(
        titles(&recent),
        [
            "Birds at dawn",
            "Dog day",
            "Funny cats compilation",
            "Cats in space",
            "Cats"
        ]
    );
    let recent = s.get_json("/api/v1/videos?q=dawn&sort=recent", None).await;
    assert_eq!(titles(&recent), ["Birds at dawn"]);
    // Pages of two follow each other.
    let paged = s
        .all_pages(
            "/api/v1/videos?q=cats&sort=relevance&limit=2",
            None,
            "title",
        )
        .await;
    assert_eq!(paged, titles(&ranked));
    let r = s
        .get(
            "/api/v1/videos?q=cats&sort=relevance&cursor=bzk5OTk5OQ",
            None,
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test]
async fn sessions_over_for_a_day_fold_into_daily_totals_and_the_stats_stay() {
    let s = TestServer::start_with(&[("VIDHOST_UPLOADS__SWEEP_INTERVAL_S", "1")]).await;
    let owner = s.user("owner@example.com").await;
    let id = video(&s, &owner, "Fjords", "sea", "public", true).await;
    let stats = || async {
        s.get_json(&format!("/api/v1/videos/{id}/stats"), Some(&owner))
            .await
    };
    // Two sessions of one browser, one of another, one that never played.
    for (ua, b) in [
        ("browser-a", ev("s1", "play", 5.0)),
        ("browser-a", ev("s2", "play", 2.0)),
        ("browser-b", ev("s3", "play", 3.0)),
        ("browser-c", ev("s4", "progress", 1.0)),
    ] {
        assert_eq!(beacon(&s, &id, None, ua, b).await, StatusCode::ACCEPTED);
    }
    // A day and more later (their dates moved back, as if), they are over…
    let day = 86_400_000;
    sql(
        &s.database_url,
        &format!(
            "UPDATE view_sessions SET started_at = started_at - 2 * {day}, \
             updated_at = updated_at - 2 * {day}, day = '2026-01-01' WHERE video_id = '{id}'"
        ),
    )
    .await;
    let before = stats().await;
    assert_eq!(
        before,
        json!({"views": 3, "unique_viewers": 2, "watch_time_s": 11.0,
               "avg_view_duration_s": 11.0 / 3.0,
               "by_day": [{"date": "2026-01-01", "views": 3, "watch_time_s": 11.0}]})
    );
    // …and a sweep folds them into the daily totals.
    let live = || sql_count(&s.database_url, "SELECT COUNT(*) FROM view_sessions");
    for _ in 0..50 {
        if live().await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(live().await, 0, "sessions a day old are folded within 5 s");
    assert_eq!(stats().await, before);
    let rows = |table: &str| {
        let q = format!("SELECT COUNT(*) FROM {table} WHERE video_id = '{id}'");
        let url = s.database_url.clone();
        async move { sql_count(&url, &q).await }
    };
    assert_eq!(rows("view_days").await, 1);
    assert_eq!(rows("video_viewers").await, 2);

    // Later sessions add to the totals; a returning viewer is not a new one.
    for (ua, b) in [
        ("browser-a", ev("s5", "play", 1.0)),
        ("browser-d", ev("s6", "play", 1.5)),
    ] {
        assert_eq!(beacon(&s, &id, None, ua, b).await, StatusCode::ACCEPTED);
    }
    let after = stats().await;
    assert_eq!(after["views"], 5, "{after}");
    assert_eq!(after["unique_viewers"], 3, "{after}");
    assert_eq!(after["watch_time_s"], 13.5, "{after}");
    let by_day = after["by_day"].as_array().unwrap();
    assert_eq!(by_day.len(), 2, "{after}");
    assert_eq!(by_day[0], before["by_day"][0]);
    assert_eq!(by_day[1]["views"], 2, "{after}");
    assert_eq!(by_day[1]["watch_time_s"], 2.5, "{after}");

    // A deleted video takes its totals along.
    let r = s.delete(&format!("/api/v1/videos/{id}"), &owner).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(rows("view_days").await, 0);
    assert_eq!(rows("video_viewers").await, 0);
}
