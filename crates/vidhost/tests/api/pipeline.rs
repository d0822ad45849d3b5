//! Uploads become adaptive streams: sources generated with ffmpeg's lavfi,
//! outputs checked with ffprobe/ffmpeg reading the server over HTTP.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const WORKER: (&str, &str) = ("VIDHOST_PROCESSING__WORKERS", "1");

/// 8 s of 1080p: long enough to catch its transcode midway with a slow preset.
const LONG_1080P: &[&str] = &[
    "-f",
    "lavfi",
    "-i",
    "testsrc2=size=1920x1080:rate=30",
    "-t",
    "8",
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
];

fn make(name: &str, args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(name);
    let ok = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(&out)
        .status()
        .unwrap();
    assert!(ok.success(), "ffmpeg made {name}");
    std::fs::read(out).unwrap()
}

async fn wait_done(s: &TestServer, t: &str, id: &str) -> Value {
    let mut last_progress = 0.0;
    for _ in 0..600 {
        let v: Value = s.get_json(&format!("/api/v1/videos/{id}"), Some(t)).await;
        let p = v["progress"].as_f64().unwrap();
        if v["status"] == "processing" {
            assert!(
                p + 1e-9 >= last_progress,
                "progress never goes back: {last_progress} → {p}"
            );
            last_progress = p;
        }
        if v["status"] == "ready" || v["status"] == "failed" {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("video {id} did not finish processing");
}

/// The id of the video an upload request created.
async fn created_id(r: reqwest::Response) -> String {
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The jobs of `video` in the admin's list of jobs in `state`.
async fn admin_jobs(s: &TestServer, admin: &str, state: &str, video: &str) -> Vec<Value> {
    let list: Value = s
        .get_json(&format!("/api/v1/admin/jobs?state={state}"), Some(admin))
        .await;
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["video_id"] == video)
        .cloned()
        .collect()
}

/// The job of `video` in the admin's list of jobs in `state`, if there.
async fn admin_job(s: &TestServer, admin: &str, state: &str, video: &str) -> Option<Value> {
    admin_jobs(s, admin, state, video).await.into_iter().next()
}

/// Uploads `bytes` as the owner `t`, waits for processing to end, and
/// returns the video and the owner's playback grant.
async fn processed(s: &TestServer, t: &str, bytes: Vec<u8>, name: &str) -> (Value, Value) {
    let r = s.upload_form(t, bytes, name, &[]).await;
    let id = created_id(r).await;
    let v = wait_done(s, t, &id).await;
    let pb: Value = s
        .get_json(&format!("/api/v1/videos/{id}/playback"), Some(t))
        .await;
    (v, pb)
}

/// Decodes every stream of `url` with ffmpeg; returns ffprobe's stream list.
/// (ffmpeg 5.1's DASH demuxer asks for one segment past the end and logs the
/// 404, so for DASH only the exit status counts.)
fn decode_and_probe(url: &str) -> Vec<(String, u32, u32)> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i", url, "-map", "0", "-f", "null", "-"])
        .output()
        .unwrap();
    let quiet = url.ends_with(".mpd") || out.stderr.is_empty();
    assert!(
        out.status.success() && quiet,
        "{url} decodes cleanly: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ffprobe_csv(url, &[], "stream=codec_name,width,height")
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].to_owned(),
                f.get(1).and_then(|x| x.parse().ok()).unwrap_or(0),
                f.get(2).and_then(|x| x.parse().ok()).unwrap_or(0),
            )
        })
        // ffprobe lists streams once per program too.
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// ffprobe's `-show_entries` for `url`, one CSV line per entry.
fn ffprobe_csv(url: &str, extra: &[&str], entries: &str) -> Vec<String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(extra)
        .args(["-show_entries", entries, "-of", "csv=p=0", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_end_matches(',').to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The times of the keyframes of a playlist's video, as ffprobe reads them.
fn keyframe_times(url: &str) -> Vec<f64> {
    ffprobe_csv(url, &["-select_streams", "v:0"], "packet=pts_time,flags")
        .iter()
        .filter_map(|l| l.split_once(','))
        .filter(|(_, flags)| flags.contains('K'))
        .map(|(t, _)| t.parse().unwrap())
        .collect()
}

/// Width and height of a picture or video ffprobe reads at `url`.
fn picture_size(url: &str) -> (u32, u32) {
    let l = ffprobe_csv(url, &["-select_streams", "v:0"], "stream=width,height");
    let (w, h) = l[0].split_once(',').unwrap();
    (w.parse().unwrap(), h.parse().unwrap())
}

/// A numeric attribute of an `#EXT-X-STREAM-INF` line.
fn attribute(line: &str, name: &str) -> u64 {
    line.split([':', ','])
        .find_map(|a| a.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} in {line}"))
        .parse()
        .unwrap()
}

fn extinf(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .filter(|l| l.starts_with("#EXTINF"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landscape_with_audio_becomes_an_adaptive_ladder() {
    let s =
        TestServer::start_with(&[WORKER, ("VIDHOST_PROCESSING__SEGMENT_DURATION_S", "2")]).await;
    let t = s.user("p@example.com").await;
    let src = make(
        "land.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=300:sample_rate=44100",
            "-t",
            "5",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-ac",
            "6",
            "-shortest",
        ],
    );
    let r = s
        .upload_form(
            &t,
            src,
            "land.mp4",
            &[("visibility", "public"), ("title", "Land")],
        )
        .await;
    let id = created_id(r).await;
    let v = wait_done(&s, &t, &id).await;
    assert_eq!(v["status"], "ready", "{v}");
    assert!(v["ready_at"].is_string());
    assert_eq!(
        (v["width"].as_i64(), v["height"].as_i64()),
        (Some(1280), Some(720))
    );
    assert!((v["duration_s"].as_f64().unwrap() - 5.0).abs() < 0.2);
    let names: Vec<&str> = v["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["720p", "480p", "360p", "240p"],
        "no upscaling to 1080p"
    );
    assert!(v["thumbnail_url"]
        .as_str()
        .unwrap()
        .ends_with("/poster.jpg"));

    // Anyone can now see it (public + ready) and play it without signing in.
    let pb: Value = s
        .get_json(&format!("/api/v1/videos/{id}/playback"), None)
        .await;
    assert!(pb["original"].is_null(), "viewers get no original");
    let hls = s.url(pb["hls"].as_str().unwrap());
    let streams = decode_and_probe(&hls);
    for (w, h) in [(1280, 720), (854, 480), (640, 360), (426, 240)] {
        assert!(
            streams
                .iter()
                .any(|st| st.0 == "h264" && st.1 == w && st.2 == h),
            "{w}x{h} in {streams:?}"
        );
    }
    assert!(streams.iter().any(|st| st.0 == "aac"));
    let channels = ffprobe_csv(
        &hls,
        &["-select_streams", "a"],
        "stream=codec_name,channels",
    );
    assert!(
        !channels.is_empty() && channels.iter().all(|c| c == "aac,2"),
        "5.1 downmixed to stereo: {channels:?}"
    );
    let dash_url = s.url(pb["dash"].as_str().unwrap());
    let mpd = s.get(pb["dash"].as_str().unwrap(), None).await;
    assert_eq!(mpd.headers()["content-type"], "application/dash+xml");
    assert_eq!(mpd.headers()["cache-control"], "public, max-age=5");
    let dash = decode_and_probe(&dash_url);
    assert!(
        dash.iter().filter(|st| st.0 == "h264").count() == 4,
        "{dash:?}"
    );

    // Keyframes aligned: every rendition cuts its segments at the same times.
    let master = s.get(pb["hls"].as_str().unwrap(), None).await;
    assert_eq!(
        master.headers()["content-type"],
        "application/vnd.apple.mpegurl"
    );
    let master = master.text().await.unwrap();
    for attr in [
        "BANDWIDTH=",
        "AVERAGE-BANDWIDTH=",
        "RESOLUTION=",
        "CODECS=",
        "FRAME-RATE=",
    ] {
        assert!(master.contains(attr), "{attr} in {master}");
    }
    let base = pb["hls"]
        .as_str()
        .unwrap()
        .trim_end_matches("master.m3u8")
        .to_owned();
    let media: Vec<&str> = master
        .lines()
        .filter(|l| !l.starts_with('#') && l.ends_with(".m3u8"))
        .collect();
    assert_eq!(media.len(), 4);
    // Rates measured from the finished segments: the peak is at least the
    // average, and a bigger rendition weighs more.
    let variants: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF:"))
        .collect();
    let rates: Vec<(u64, u64)> = variants
        .iter()
        .map(|l| (attribute(l, "BANDWIDTH"), attribute(l, "AVERAGE-BANDWIDTH")))
        .collect();
    assert!(
        rates
            .iter()
            .all(|(peak, avg)| peak >= avg && *avg > 128_000),
        "{master}"
    );
    assert!(rates.windows(2).all(|w| w[0].1 > w[1].1), "{master}");
    // Keyframes, as ffprobe reads them over HTTP, fall at the same times in
    // every rendition: every 2 s, the segment duration.
    let keys: Vec<Vec<f64>> = media
        .iter()
        .map(|m| keyframe_times(&s.url(&format!("{base}{m}"))))
        .collect();
    let first_keys = &keys[0];
    assert!(first_keys.len() >= 3, "{first_keys:?}");
    assert!(
        first_keys
            .windows(2)
            .all(|w| (w[1] - w[0] - 2.0).abs() < 0.02),
        "a keyframe every 2 s: {first_keys:?}"
    );
    for (m, k) in media.iter().zip(&keys) {
        assert_eq!(k.len(), first_keys.len(), "{m}: {k:?} vs {first_keys:?}");
        assert!(
            k.iter().zip(first_keys).all(|(a, b)| (a - b).abs() < 0.02),
            "{m} keyframes aligned: {k:?} vs {first_keys:?}"
        );
    }
    let first = extinf(
        &s.get(&format!("{base}{}", media[0]), None)
            .await
            .text()
            .await
            .unwrap(),
    );
    assert!(
        first.len() >= 2
            && first[..first.len() - 1]
                .iter()
                .all(|l| l.starts_with("#EXTINF:2.0")),
        "{first:?}"
    );
    for m in &media[1..] {
        let r = s.get(&format!("{base}{m}"), None).await;
        assert_eq!(
            extinf(&r.text().await.unwrap()),
            first,
            "segment boundaries of {m}"
        );
    }
    let seg_name = s
        .get(&format!("{base}{}", media[0]), None)
        .await
        .text()
        .await
        .unwrap()
        .lines()
        .find(|l| l.ends_with(".m4s") && !l.contains("init"))
        .unwrap()
        .to_owned();
    let gen = media[0].split('/').next().unwrap();
    let seg = s.get(&format!("{base}{gen}/{seg_name}"), None).await;
    assert_eq!(
        seg.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(seg.headers()["content-type"], "video/iso.segment");
    let seg_bytes = seg.bytes().await.unwrap();
    let seg_url = s.url(&format!("{base}{gen}/{seg_name}"));
    let part = s
        .http
        .get(&seg_url)
        .header("range", "bytes=8-23")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &seg_bytes[8..24]);
    let past = format!("bytes={}-", seg_bytes.len());
    let r = s
        .http
        .get(&seg_url)
        .header("range", past)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let head = s.http.head(&seg_url).send().await.unwrap();
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        seg_bytes.len().to_string()
    );
    let media_pl = s.get(&format!("{base}{}", media[0]), None).await;
    assert_eq!(media_pl.headers()["cache-control"], "public, max-age=5");

    // The progressive MP4: faststart, ranges.
    let mp4_url = pb["mp4"].as_str().unwrap();
    let mp4 = s.get(mp4_url, None).await;
    assert_eq!(mp4.headers()["content-type"], "video/mp4");
    let mp4 = mp4.bytes().await.unwrap();
    let pos = |tag: &[u8]| mp4.windows(4).position(|w| w == tag).unwrap();
    assert!(pos(b"moov") < pos(b"mdat"), "moov before mdat");
    let r = s
        .http
        .get(s.url(mp4_url))
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &mp4[100..200]);
    let mp4_streams = decode_and_probe(&s.url(mp4_url));
    assert!(
        mp4_streams.contains(&("h264".into(), 1280, 720))
            && mp4_streams.iter().any(|x| x.0 == "aac")
    );
    // The poster is a JPEG.
    let poster = s.get(pb["poster"].as_str().unwrap(), None).await;
    assert_eq!(poster.headers()["content-type"], "image/jpeg");
    assert_eq!(&poster.bytes().await.unwrap()[..2], &[0xFF, 0xD8]);

    // Storyboard: a WebVTT track whose cues point into JPEG sprites.
    let vtt_url = pb["storyboard_vtt"].as_str().unwrap();
    let vtt = s.get(vtt_url, None).await;
    assert_eq!(vtt.headers()["content-type"], "text/vtt; charset=utf-8");
    let vtt = vtt.text().await.unwrap();
    assert!(vtt.starts_with("WEBVTT"));
    let first_cue = vtt.lines().find(|l| l.contains("#xywh=")).unwrap();
    let sprite = first_cue.split('#').next().unwrap();
    let sprite_url = format!("{}{sprite}", vtt_url.trim_end_matches("storyboard.vtt"));
    let img = s.get(&sprite_url, None).await.bytes().await.unwrap();
    assert_eq!(&img[..2], &[0xFF, 0xD8], "{sprite_url}");
    assert_eq!(
        vtt.matches("#xywh=").count(),
        3,
        "one thumbnail every 2 s of 5 s: {vtt}"
    );

    let m = s.get("/metrics", None).await.text().await.unwrap();
    assert!(
        m.contains(r#"vidhost_jobs_total{kind="process",outcome="completed"} 1"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_follow_processing_to_the_end() {
    use futures::StreamExt;
    let s = TestServer::start_with(&[WORKER]).await;
    let t = s.user("sse@example.com").await;
    let r = s.upload_form(&t, sample_mp4().to_vec(), "a.mp4", &[]).await;
    let id = created_id(r).await;
    // The token in the query string, as a browser's EventSource sends it.
    let resp = s
        .http
        .get(s.url(&format!("/api/v1/videos/{id}/events?access_token={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ends once the video is ready");
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events.last().unwrap()["status"], "ready", "{text}");
    let progress: Vec<f64> = events
        .iter()
        .map(|e| e["progress"].as_f64().unwrap())
        .collect();
    assert!(progress.windows(2).all(|w| w[1] >= w[0]), "{progress:?}");
    let steps: Vec<&str> = events.iter().filter_map(|e| e["step"].as_str()).collect();
    // Every step from the one shown at connecting on, in order, the short
    // last one too: a change wakes the stream, it does not wait for a poll.
    let order = ["probe", "thumbnails", "transcode", "publish"];
    let first = order
        .iter()
        .position(|s| *s == steps[0])
        .expect("a known step");
    let mut seen = steps.clone();
    seen.dedup();
    assert_eq!(seen, order[first..], "{steps:?}");
    // Without a token, someone else's private video has no events.
    let r = s.get(&format!("/api/v1/videos/{id}/events"), None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portrait_rotated_odd_and_silent_sources() {
    let s = TestServer::start_with(&[WORKER]).await;
    let t = s.user("p@example.com").await;
    // Portrait with odd dimensions and no audio.
    let portrait = make(
        "portrait.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=362x642:rate=25",
            "-t",
            "2",
            // Odd sizes need 4:4:4 (4:2:0 cannot be odd-sized).
            "-vf",
            "scale=361:641",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv444p",
        ],
    );
    let odd = tempfile::tempdir().unwrap();
    std::fs::write(odd.path().join("p.mp4"), &portrait).unwrap();
    assert_eq!(
        picture_size(odd.path().join("p.mp4").to_str().unwrap()),
        (361, 641),
        "the source really is odd-sized"
    );
    // Landscape pixels that a rotation tag turns upright.
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw.mp4");
    std::fs::write(
        &raw,
        make(
            "raw.mp4",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=640x360:rate=25",
                "-t",
                "2",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
            ],
        ),
    )
    .unwrap();
    let rotated_path = tmp.path().join("rotated.mp4");
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&raw)
        .args(["-c", "copy", "-metadata:s:v:0", "rotate=90"])
        .arg(&rotated_path)
        .status()
        .unwrap();
    assert!(ok.success());
    let rotated = std::fs::read(&rotated_path).unwrap();

    for (bytes, name, (w, h)) in [
        (portrait, "portrait.mp4", (360, 640)),
        (rotated, "rotated.mp4", (360, 640)),
    ] {
        let r = s.upload_form(&t, bytes, name, &[]).await;
        let id = created_id(r).await;
        let v = wait_done(&s, &t, &id).await;
        assert_eq!(v["status"], "ready", "{name}: {v}");
        let top = &v["renditions"][0];
        assert!(
            top["height"].as_i64() > top["width"].as_i64(),
            "{name} stays portrait: {v}"
        );
        for r in v["renditions"].as_array().unwrap() {
            assert_eq!(
                (
                    r["width"].as_i64().unwrap() % 2,
                    r["height"].as_i64().unwrap() % 2
                ),
                (0, 0),
                "{name}: even sizes"
            );
            assert!(
                r["height"].as_i64().unwrap() <= h + 1 && r["width"].as_i64().unwrap() <= w + 1,
                "{name}: no upscaling"
            );
        }
        let pb: Value = s
            .get_json(&format!("/api/v1/videos/{id}/playback"), Some(&t))
            .await;
        let streams = decode_and_probe(&s.url(pb["hls"].as_str().unwrap()));
        assert!(
            streams.iter().all(|st| st.0 == "h264"),
            "{name}: no audio stream invented: {streams:?}"
        );
        assert!(
            streams.iter().all(|st| st.2 > st.1),
            "{name}: every rendition portrait: {streams:?}"
        );
    }

    // Non-square pixels: 320x240 coded, each pixel twice as wide as high,
    // shows as 640x240; renditions and the poster have square pixels.
    let anamorphic = make(
        "wide.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "2",
            "-vf",
            "setsar=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    let (v, pb) = processed(&s, &t, anamorphic, "wide.mp4").await;
    assert_eq!(v["status"], "ready", "{v}");
    assert_eq!(
        (v["width"].as_i64(), v["height"].as_i64()),
        (Some(640), Some(240))
    );
    let top = &v["renditions"][0];
    assert_eq!(
        (top["width"].as_i64(), top["height"].as_i64()),
        (Some(640), Some(240)),
        "{v}"
    );
    let streams = decode_and_probe(&s.url(pb["hls"].as_str().unwrap()));
    assert_eq!(streams, [("h264".to_owned(), 640, 240)]);
    assert_eq!(
        picture_size(&s.url(pb["poster"].as_str().unwrap())),
        (640, 240),
        "the poster is not squeezed"
    );

    // A video that opens on 3 s of black gets a poster of what follows.
    let black_first = make(
        "black.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "color=black:size=320x240:rate=25:duration=3",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=3",
            "-filter_complex",
            "[0][1]concat=n=2:v=1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let (v, pb) = processed(&s, &t, black_first, "black.mp4").await;
    assert_eq!(v["status"], "ready", "{v}");
    let jpeg = s
        .get(pb["poster"].as_str().unwrap(), None)
        .await
        .bytes()
        .await
        .unwrap();
    let file = odd.path().join("poster.jpg");
    std::fs::write(&file, &jpeg).unwrap();
    let luma = ffprobe_csv(
        &format!("movie={},signalstats", file.display()),
        &["-f", "lavfi"],
        "frame_tags=lavfi.signalstats.YAVG",
    );
    let luma: f64 = luma[0].parse().unwrap();
    assert!(luma > 60.0, "not a black poster: mean luma {luma}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_media_fails_goes_to_dead_letters_and_can_be_retried() {
    let s = TestServer::start_with(&[WORKER]).await;
    let t = s.user("p@example.com").await;
    let admin = s.admin().await;
    // A real MP4 header, then garbage: passes the magic-byte check, not ffprobe.
    let mut corrupt = sample_mp4()[..40].to_vec();
    corrupt.extend((0..50_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    let r = s.upload_form(&t, corrupt, "broken.mp4", &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = created_id(r).await;
    let v = wait_done(&s, &t, &id).await;
    assert_eq!(v["status"], "failed");
    let reason = v["error"].as_str().unwrap();
    assert!(
        reason.contains("not readable media"),
        "a readable reason: {v}"
    );
    // …in the tools' words, without this server's paths or their addresses.
    let data_dir = s.data_dir.path().to_str().unwrap();
    assert!(
        !reason.contains(data_dir) && !reason.contains(" @ 0x"),
        "{v}"
    );

    let job = admin_job(&s, &admin, "dead", &id)
        .await
        .expect("in dead letters");
    assert_eq!(job["attempts"], 1, "a permanent error is not retried");
    problem(
        s.get("/api/v1/admin/jobs?state=dead", Some(&t)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    // An admin retries it: it runs again (and fails again, for the same reason).
    let r = s
        .post_json(
            &format!("/api/v1/admin/jobs/{}/retry", job["id"].as_str().unwrap()),
            Some(&admin),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v = wait_done(&s, &t, &id).await;
    assert_eq!(v["status"], "failed");
    let r = s
        .post_json(
            "/api/v1/admin/jobs/nope/retry",
            Some(&admin),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // An MP4 with sound and no picture passes the magic-byte check, then
    // fails validation for good.
    let sound_only = make(
        "sound.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "2",
            "-c:a",
            "aac",
        ],
    );
    let r = s.upload_form(&t, sound_only, "sound.mp4", &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = created_id(r).await;
    let v = wait_done(&s, &t, &id).await;
    assert_eq!(v["status"], "failed");
    assert!(v["error"].as_str().unwrap().contains("no video"), "{v}");
    let job = admin_job(&s, &admin, "dead", &id)
        .await
        .expect("in dead letters");
    assert_eq!(job["attempts"], 1);

    // The owner runs it again: the new run's job replaces the dead letter
    // (which would otherwise stay listed, and counted, for good).
    let r = s
        .post_json(
            &format!("/api/v1/videos/{id}/reprocess"),
            Some(&t),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let v = wait_done(&s, &t, &id).await;
    assert_eq!(v["status"], "failed");
    let dead = admin_jobs(&s, &admin, "dead", &id).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_ne!(dead[0]["id"], job["id"], "the new run's job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_back_off_then_reach_dead_letters() {
    // Every run is cut short by the step timeout: a transient failure, so
    // the job is retried after a backoff kept in its row, then buried.
    let s = TestServer::start_with(&[
        WORKER,
        ("VIDHOST_PROCESSING__STEP_TIMEOUT_S", "2"),
        ("VIDHOST_PROCESSING__MAX_ATTEMPTS", "2"),
        ("VIDHOST_PROCESSING__RETRY_BASE_S", "3"),
        ("VIDHOST_PROCESSING__PRESET", "medium"),
    ])
    .await;
    let t = s.user("slow@example.com").await;
    let admin = s.admin().await;
    let r = s
        .upload_form(&t, make("slow.mp4", LONG_1080P), "slow.mp4", &[])
        .await;
    let id = created_id(r).await;
    let job_in = |state: &'static str| admin_job(&s, &admin, state, &id);
    let mut waiting = None;
    for _ in 0..300 {
        if let Some(j) = job_in("failed").await {
            waiting = Some(j);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waiting = waiting.expect("the first attempt failed and waits for its retry");
    assert_eq!(waiting["attempts"], 1);
    assert!(
        waiting["last_error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{waiting}"
    );
    let at = |k: &str| chrono::DateTime::parse_from_rfc3339(waiting[k].as_str().unwrap()).unwrap();
    let delay = at("run_at") - at("updated_at");
    assert!(
        delay >= chrono::Duration::milliseconds(2900),
        "the retry waits retry_base_s: {waiting}"
    );
    let v: Value = s.get_json(&format!("/api/v1/videos/{id}"), Some(&t)).await;
    assert_eq!(
        v["status"], "processing",
        "a video waiting for a retry stays processing"
    );

    let v = wait_done(&s, &t, &id).await;
    assert_eq!(v["status"], "failed", "{v}");
    let dead = job_in("dead")
        .await
        .expect("in dead letters after its retries");
    assert_eq!(dead["attempts"], 2);
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("gave up after 2 attempts"),
        "{dead}"
    );
    assert!(job_in("failed").await.is_none() && job_in("queued").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprocess_replaces_outputs_without_orphans() {
    let s = TestServer::start_with(&[WORKER]).await;
    let t = s.user("p@example.com").await;
    let r = s.upload_form(&t, sample_mp4().to_vec(), "a.mp4", &[]).await;
    let id = created_id(r).await;
    assert_eq!(wait_done(&s, &t, &id).await["status"], "ready");
    let gens = |keys: &[String]| {
        let mut g: Vec<String> = keys
            .iter()
            .filter_map(|k| k.split("/stream/").nth(1))
            .filter_map(|r| r.split_once('/').map(|x| x.0.to_owned()))
            .collect();
        g.sort();
        g.dedup();
        g
    };
    let before = gens(&s.object_keys().await);
    assert_eq!(before.len(), 1);
    let r = s
        .post_json(
            &format!("/api/v1/videos/{id}/reprocess"),
            Some(&t),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(wait_done(&s, &t, &id).await["status"], "ready");
    // The old generation goes once the catalog points at the new one, right
    // after `ready`; on S3 that is many deletes, so give them a moment.
    let mut after = gens(&s.object_keys().await);
    for _ in 0..150 {
        if after.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = gens(&s.object_keys().await);
    }
    assert_eq!(after.len(), 1, "the old generation is gone: {after:?}");
    assert_ne!(after, before);
    let other = s.user("o@example.com").await;
    let r = s
        .post_json(
            &format!("/api/v1/videos/{id}/reprocess"),
            Some(&other),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// Reprocess requests racing for one video queue one job: the others get
/// 409 `processing_pending`, and the video never has two pending jobs (on
/// PostgreSQL the check alone could let two through; the unique index on
/// pending jobs stops the second).
#[tokio::test]
async fn racing_reprocess_requests_queue_one_job() {
    let s = TestServer::start_with(&[WORKER]).await;
    let admin = s.admin().await;
    let t = s.user("p@example.com").await;
    let r = s.upload_form(&t, sample_mp4().to_vec(), "a.mp4", &[]).await;
    let id = created_id(r).await;
    assert_eq!(wait_done(&s, &t, &id).await["status"], "ready");
    let path = format!("/api/v1/videos/{id}/reprocess");
    let answers = futures::future::join_all(
        (0..12).map(|_| s.post_json(&path, Some(&t), serde_json::json!({}))),
    )
    .await;
    let mut accepted = 0;
    for r in answers {
        match r.status() {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::CONFLICT => {
                problem(r, StatusCode::CONFLICT, "processing_pending").await;
            }
            other => panic!("reprocess answered {other}"),
        }
    }
    // Processing the sample takes longer than the burst of requests, so
    // the first job is still pending when the others arrive.
    assert_eq!(accepted, 1, "exactly one of them is queued");
    assert_eq!(wait_done(&s, &t, &id).await["status"], "ready");
    let count = |state: &'static str| {
        let (s, admin, id) = (&s, &admin, &id);
        async move { admin_jobs(s, admin, state, id).await.len() }
    };
    // A job is marked done in the transaction that makes its video ready.
    let done = count("done").await;
    assert_eq!(done, 2, "the upload's job and the reprocess job");
    for state in ["queued", "running", "failed", "dead"] {
        assert_eq!(count(state).await, 0, "no other job, {state}");
    }
}

/// A server with short job leases, and an 8 s 1080p upload it is busy
/// transcoding (a slow preset, so the transcode lasts long enough to act on).
async fn long_upload_caught_transcoding(email: &str) -> (TestServer, String, String) {
    let s = TestServer::start_with(&[
        WORKER,
        ("VIDHOST_PROCESSING__LEASE_S", "3"),
        ("VIDHOST_PROCESSING__PRESET", "medium"),
    ])
    .await;
    let t = s.user(email).await;
    let r = s
        .upload_form(&t, make("long.mp4", LONG_1080P), "long.mp4", &[])
        .await;
    let id = created_id(r).await;
    let mut seen_transcode = false;
    for _ in 0..1200 {
        let v: Value = s.get_json(&format!("/api/v1/videos/{id}"), Some(&t)).await;
        if v["step"] == "transcode" && v["progress"].as_f64().unwrap() > 0.1 {
            seen_transcode = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_transcode, "caught it transcoding");
    (s, t, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_transcode_does_not_lose_the_job() {
    let (mut s, _, id) = long_upload_caught_transcoding("k@example.com").await;
    s.crash_and_restart().await;
    let t = s.login("k@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = wait_done(&s, &t, &id).await;
    assert_eq!(v["status"], "ready", "{v}");
    let keys = s.object_keys().await;
    let gens: std::collections::BTreeSet<_> = keys
        .iter()
        .filter_map(|k| k.split("/stream/").nth(1))
        .filter_map(|r| r.split_once('/').map(|x| x.0))
        .collect();
    assert_eq!(gens.len(), 1, "no duplicate outputs: {keys:?}");
    assert!(keys.iter().all(|k| k.starts_with(&format!("videos/{id}/"))));
}

/// A deploy stops the server with SIGTERM: its job goes back to the queue
/// at once (not `running` until the lease lapses) without losing an
/// attempt, and the next start finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_hands_the_job_back() {
    let (mut s, t, id) = long_upload_caught_transcoding("g@example.com").await;
    // Someone follows its progress: the stream does not hold the stop up.
    let events = s
        .http
        .get(s.url(&format!("/api/v1/videos/{id}/events")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    s.stop_gracefully().await;
    drop(events);
    let queued = format!(
        "SELECT COUNT(*) FROM jobs WHERE video_id = '{id}' AND state = 'queued' \
         AND attempts = 0 AND lease_owner IS NULL"
    );
    assert_eq!(sql_count(&s.database_url, &queued).await, 1);
    s.restart().await;
    let t = s.login("g@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = wait_done(&s, &t, &id).await;
    assert_eq!(v["status"], "ready", "{v}");
    let once = format!("SELECT COUNT(*) FROM jobs WHERE video_id = '{id}' AND attempts = 1");
    assert_eq!(sql_count(&s.database_url, &once).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hdr_variable_frame_rate_and_4k_sources() {
    let s = TestServer::start_with(&[WORKER, ("VIDHOST_PROCESSING__PRESET", "ultrafast")]).await;
    let t = s.user("h@example.com").await;
    let hdr = make(
        "hdr.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p10le",
            "-color_trc",
            "smpte2084",
            "-color_primaries",
            "bt2020",
            "-colorspace",
            "bt2020nc",
        ],
    );
    let vfr = make(
        "vfr.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=480x270:rate=60",
            "-t",
            "3",
            "-vf",
            "select='lt(mod(n\\,7)\\,3)'",
            "-vsync",
            "vfr",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    let uhd = make(
        "uhd.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=3840x2160:rate=30",
            "-t",
            "1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    for (bytes, name) in [(hdr, "hdr.mp4"), (vfr, "vfr.mkv"), (uhd, "uhd.mp4")] {
        let r = s.upload_form(&t, bytes, name, &[]).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{name}");
        let id = created_id(r).await;
        let v = wait_done(&s, &t, &id).await;
        assert_eq!(v["status"], "ready", "{name}: {v}");
        let pb: Value = s
            .get_json(&format!("/api/v1/videos/{id}/playback"), Some(&t))
            .await;
        let hls = s.url(pb["hls"].as_str().unwrap());
        decode_and_probe(&hls);
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                "v",
                "-show_entries",
                "stream=pix_fmt,color_transfer",
                "-of",
                "csv=p=0",
                &hls,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines()
                .filter(|l| !l.is_empty())
                .all(|l| l.starts_with("yuv420p,") || l == "yuv420p"),
            "{name}: 8-bit 4:2:0 everywhere: {text}"
        );
        if name == "hdr.mp4" {
            assert!(text.contains("bt709"), "tone-mapped to BT.709: {text}");
        }
        if name == "uhd.mp4" {
            let names: Vec<&str> = v["renditions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap())
                .collect();
            assert_eq!(names[0], "1080p", "{names:?}");
        }
        if name == "vfr.mkv" {
            let master = s
                .get(pb["hls"].as_str().unwrap(), None)
                .await
                .text()
                .await
                .unwrap();
            let base = pb["hls"]
                .as_str()
                .unwrap()
                .trim_end_matches("master.m3u8")
                .to_owned();
            let mut lists: Vec<Vec<String>> = Vec::new();
            for m in master
                .lines()
                .filter(|l| !l.starts_with('#') && l.ends_with(".m3u8"))
            {
                lists.push(extinf(
                    &s.get(&format!("{base}{m}"), None)
                        .await
                        .text()
                        .await
                        .unwrap(),
                ));
            }
            assert!(
                lists.windows(2).all(|w| w[0] == w[1]),
                "VFR made constant: aligned segments {lists:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_never_run_the_same_job() {
    // The server itself runs no workers; three `vidhost worker` processes
    // of three workers each (nine claimers) share its database.
    let s = TestServer::start_with(&[("VIDHOST_PROCESSING__PRESET", "ultrafast")]).await;
    let _workers: Vec<_> = (0..3).map(|_| s.spawn_worker(3)).collect();
    let t = s.user("w@example.com").await;
    let admin = s.admin().await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let r = s
            .upload_form(&t, sample_mp4().to_vec(), &format!("{i}.mp4"), &[])
            .await;
        ids.push(created_id(r).await);
    }
    for id in &ids {
        assert_eq!(wait_done(&s, &t, id).await["status"], "ready");
    }
    let done: Value = s
        .get_json("/api/v1/admin/jobs?state=done", Some(&admin))
        .await;
    let jobs = done["items"].as_array().unwrap();
    assert_eq!(jobs.len(), 12);
    let videos: std::collections::BTreeSet<_> = jobs
        .iter()
        .map(|j| j["video_id"].as_str().unwrap())
        .collect();
    assert_eq!(videos.len(), 12, "one job per video");
    assert!(
        jobs.iter().all(|j| j["attempts"] == 1),
        "each job ran exactly once: {done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_video_stops_its_processing_and_leaves_nothing() {
    let (s, t, id) = long_upload_caught_transcoding("d@example.com").await;
    let work = s.data_dir.path().join("work");
    let running = || {
        Command::new("pgrep")
            .args(["-f", work.to_str().unwrap()])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(running(), "ffmpeg is transcoding");
    let r = s
        .http
        .delete(s.url(&format!("/api/v1/videos/{id}")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let mut stopped = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !running() {
            stopped = true;
            break;
        }
    }
    assert!(stopped, "ffmpeg was killed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        s.object_keys().await.is_empty(),
        "no object of the deleted video remains"
    );
}

/// ffprobe's stream list for `url`, killed if it has not answered in 60 s.
async fn probe_streams(url: &str) -> Vec<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width,height",
                "-of",
                "csv=p=0",
                url,
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ffprobe answers")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_plays_while_its_ladder_is_still_being_made() {
    let s = TestServer::start_with(&[
        WORKER,
        ("VIDHOST_PROCESSING__PRESET", "medium"),
        ("VIDHOST_PROCESSING__SEGMENT_DURATION_S", "2"),
    ])
    .await;
    let t = s.user("live@example.com").await;
    let args = [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1920x1080:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440",
        "-t",
        "12",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        "-shortest",
    ];
    let r = s
        .upload_form(
            &t,
            make("live.mp4", &args),
            "live.mp4",
            &[("visibility", "public")],
        )
        .await;
    let id = created_id(r).await;

    // Playable (HLS) while still processing: poster first, then the stream.
    let mut live = None;
    for _ in 0..600 {
        let pb: Value = s
            .get_json(&format!("/api/v1/videos/{id}/playback"), Some(&t))
            .await;
        let v: Value = s.get_json(&format!("/api/v1/videos/{id}"), Some(&t)).await;
        assert_ne!(v["status"], "ready", "caught it before the end");
        if pb["hls"].is_string() {
            live = Some((pb, v));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (pb, v) = live.expect("the stream appears while processing");
    assert_eq!(v["status"], "processing", "{v}");
    assert!(pb["poster"].is_string(), "the poster came first: {pb}");
    assert!(
        pb["dash"].is_null() && pb["mp4"].is_null(),
        "DASH and MP4 come at the end: {pb}"
    );
    assert_eq!(v["renditions"].as_array().unwrap().len(), 5, "{v}");
    // Only the owner sees it before it is ready.
    let other = s.user("viewer@example.com").await;
    let r = s
        .get(&format!("/api/v1/videos/{id}/playback"), Some(&other))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let hls = pb["hls"].as_str().unwrap().to_owned();
    let base = hls.trim_end_matches("master.m3u8").to_owned();
    let master = s.get(&hls, None).await.text().await.unwrap();
    let media: Vec<String> = master
        .lines()
        .filter(|l| !l.starts_with('#') && l.ends_with(".m3u8"))
        .map(str::to_owned)
        .collect();
    assert_eq!(media.len(), 5, "{master}");
    let growing = s
        .get(&format!("{base}{}", media[0]), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        growing.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !growing.contains("#EXT-X-ENDLIST"),
        "{growing}"
    );
    let early = extinf(&growing).len();
    assert!((1..6).contains(&early), "{growing}");
    let streams = probe_streams(&s.url(&hls)).await;
    assert!(streams.iter().any(|l| l == "h264,1920,1080"), "{streams:?}");
    assert!(streams.iter().any(|l| l.starts_with("aac")), "{streams:?}");

    let v = wait_done(&s, &t, &id).await;
    assert_eq!(v["status"], "ready", "{v}");
    let pb: Value = s
        .get_json(&format!("/api/v1/videos/{id}/playback"), Some(&t))
        .await;
    // Grant expiries are rounded to a bucket (a sixth of the ttl), so the URL
    // stays the same unless a bucket boundary passed while this test ran;
    // the earlier URL keeps working either way (it is used below).
    let hls_after = pb["hls"].as_str().unwrap();
    assert!(
        hls_after == hls
            || (hls_after.starts_with("/play/") && hls_after.ends_with("/hls/master.m3u8")),
        "same grant, same URL: {hls_after} vs {hls}"
    );
    assert!(pb["dash"].is_string() && pb["mp4"].is_string());
    let master_after = s.get(&hls, None).await.text().await.unwrap();
    assert!(
        master_after.contains(&media[0]),
        "same generation: {master_after}"
    );
    let done = s
        .get(&format!("{base}{}", media[0]), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        done.starts_with(growing.trim_end()) || {
            // The segments listed early are still the first ones, in order.
            let seg = |p: &str| {
                p.lines()
                    .filter(|l| l.ends_with(".m4s"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            };
            seg(&done)[..seg(&growing).len()] == seg(&growing)[..]
        },
        "an EVENT playlist only grows:\n{growing}\n---\n{done}"
    );
    assert!(done.trim_end().ends_with("#EXT-X-ENDLIST"), "{done}");
    assert_eq!(extinf(&done).len(), 6, "12 s in 2 s segments: {done}");
    decode_and_probe(&s.url(&hls));
}

/// A source with a long gap in its timestamps (60 frames, the last at
/// 200 s: `fps` fills the gap with copies). With the storyboard as a second
/// output of the ladder's ffmpeg, that ffmpeg outgrew 512 MiB within two
/// seconds (and 12 GB within two minutes from a 1 MB upload at one hour).
/// Under a 512 MiB cap per tool it now processes like any video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_timestamps_does_not_balloon_ffmpeg() {
    let s = TestServer::start_with(&[
        WORKER,
        ("VIDHOST_PROCESSING__PRESET", "ultrafast"),
        ("VIDHOST_PROCESSING__TOOL_MEMORY_MB", "512"),
    ])
    .await;
    let t = s.user("g@example.com").await;
    let gap = make(
        "gap.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-frames:v",
            "60",
            "-vf",
            "setpts='if(eq(N,59),200/TB,PTS)'",
            "-c:v",
            "mjpeg",
            "-q:v",
            "4",
            "-r",
            "30",
        ],
    );
    let (v, pb) = processed(&s, &t, gap, "gap.mkv").await;
    assert_eq!(v["status"], "ready", "{v}");
    assert!(
        (v["duration_s"].as_f64().unwrap() - 200.0).abs() < 1.0,
        "{v}"
    );
    // The storyboard covers the whole length: a thumbnail every 2 s.
    let vtt_url = pb["storyboard_vtt"].as_str().expect("a storyboard");
    let vtt = s.get(vtt_url, None).await.text().await.unwrap();
    assert!(vtt.contains("--> 00:03:20.000"), "{vtt}");
    assert!(vtt.contains("storyboard/sb-001.jpg#xywh="), "{vtt}");
}

/// Deleted near the end of processing (the storyboard, the MP4, the
/// publishing: after the last point where a worker looks for a deletion),
/// nothing of the video remains once its job has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_video_as_it_finishes_leaves_nothing() {
    let s = TestServer::start_with(&[WORKER, ("VIDHOST_PROCESSING__PRESET", "ultrafast")]).await;
    let t = s.user("late@example.com").await;
    let source = make(
        "late.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-t",
            "20",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    let id = created_id(s.upload_form(&t, source, "late.mp4", &[]).await).await;
    let mut late = false;
    for _ in 0..2400 {
        let v: Value = s.get_json(&format!("/api/v1/videos/{id}"), Some(&t)).await;
        assert_ne!(v["status"], "failed", "{v}");
        if v["progress"].as_f64().unwrap() >= 0.92 && v["status"] == "processing" {
            late = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(late, "caught after the ladder");
    let r = s.delete(&format!("/api/v1/videos/{id}"), &t).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // The job ends (cancelled or finished) within seconds; then nothing is left.
    let mut keys = s.object_keys().await;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        keys = s.object_keys().await;
        let work_left = std::fs::read_dir(s.data_dir.path().join("work"))
            .map(|d| d.count())
            .unwrap_or(0);
        if keys.is_empty() && work_left == 0 {
            break;
        }
    }
    assert!(keys.is_empty(), "left behind: {keys:?}");
}

/// A picture that ends before the point the poster is taken from (one
/// frame; one second of picture under twelve of sound) still gets a poster
/// and a stream, instead of retrying a missing file into dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_pictures_get_a_poster_and_a_stream() {
    let s = TestServer::start_with(&[WORKER, ("VIDHOST_PROCESSING__PRESET", "ultrafast")]).await;
    let t = s.user("short@example.com").await;
    let one_frame = make(
        "one.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-frames:v",
            "1",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let short_picture = make(
        "short.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30:duration=1",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=12",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ],
    );
    for (bytes, name) in [(one_frame, "one.mp4"), (short_picture, "short.mp4")] {
        let (v, pb) = processed(&s, &t, bytes, name).await;
        assert_eq!(v["status"], "ready", "{name}: {v}");
        let poster = pb["poster"].as_str().expect("a poster");
        let r = s.get(poster, None).await;
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        let jpeg = r.bytes().await.unwrap();
        assert!(jpeg.starts_with(&[0xFF, 0xD8]), "{name}: a JPEG");
        // A storyboard only where there are sprites to show (one frame
        // makes none: no VTT pointing at missing pictures).
        match pb["storyboard_vtt"].as_str() {
            None => assert_eq!(name, "one.mp4", "{pb}"),
            Some(url) => {
                let vtt = s.get(url, None).await.text().await.unwrap();
                let sprite = vtt.lines().find(|l| l.contains(".jpg#")).expect("a cue");
                let path = url.rsplit_once('/').unwrap().0.to_owned()
                    + "/"
                    + sprite.split('#').next().unwrap();
                let r = s.get(&path, None).await;
                assert_eq!(r.status(), StatusCode::OK, "{name}: {path}");
            }
        }
    }
}

/// With workers in processes of their own, the job metrics can still be
/// scraped: a worker's counters and durations from the worker
/// (`--metrics-listen`), the queue and dead-letter gauges from any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_metrics_of_separate_workers_can_be_scraped() {
    let s = TestServer::start_with(&[("VIDHOST_PROCESSING__PRESET", "ultrafast")]).await;
    let (_worker, worker_url) = s.spawn_worker_with_metrics(1).await;
    let t = s.user("metrics@example.com").await;
    let id = created_id(s.upload_form(&t, sample_mp4().to_vec(), "m.mp4", &[]).await).await;
    assert_eq!(wait_done(&s, &t, &id).await["status"], "ready");
    let scrape = |url: String| async move {
        let r = reqwest::get(url).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.unwrap()
    };
    let worker = scrape(format!("{worker_url}/metrics")).await;
    let completed = worker
        .lines()
        .find(|l| l.starts_with("vidhost_jobs_total{") && l.contains("outcome=\"completed\""))
        .unwrap_or_else(|| panic!("a completed job counted by the worker:\n{worker}"));
    assert!(completed.ends_with(" 1"), "{completed}");
    assert!(worker.contains("vidhost_job_duration_seconds"), "{worker}");
    let server = scrape(s.url("/metrics")).await;
    for gauge in ["vidhost_jobs_queued 0", "vidhost_jobs_dead 0"] {
        assert!(
            server.lines().any(|l| l == gauge),
            "{gauge} on the API node:\n{server}"
        );
    }
    // 200, or `scrape` fails.
    scrape(format!("{worker_url}/healthz")).await;
}

/// Transport streams as broadcast recorders (188-byte packets) and AVCHD
/// camcorders (`.mts`: 192-byte BDAV packets) write them are admitted and
/// processed like any other upload.
#[tokio::test]
async fn transport_streams_and_camcorder_mts_become_ready() {
    let s = TestServer::start_with(&[WORKER, ("VIDHOST_PROCESSING__PRESET", "ultrafast")]).await;
    let t = s.user("mts@example.com").await;
    for (name, m2ts) in [("broadcast.ts", "0"), ("camcorder.mts", "1")] {
        let bytes = make(
            name,
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25:duration=2",
                "-f",
                "lavfi",
                "-i",
                "sine=duration=2",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-f",
                "mpegts",
                "-mpegts_m2ts_mode",
                m2ts,
            ],
        );
        let packet = if m2ts == "1" { 192 } else { 188 };
        let sync = if m2ts == "1" { 4 } else { 0 };
        assert!(
            bytes[sync..]
                .iter()
                .step_by(packet)
                .take(8)
                .all(|&b| b == 0x47),
            "{name}: {packet}-byte packets"
        );
        let (v, pb) = processed(&s, &t, bytes, name).await;
        assert_eq!(v["status"], "ready", "{name}: {v}");
        assert_eq!(v["content_type"], "video/mp2t", "{name}");
        assert_eq!(v["width"], 320, "{name}");
        assert!(pb["hls"].is_string(), "{name}: {pb}");
    }
}

/// A worker killed mid-job leaves its work directory (the source, the
/// segments made so far). Once that job went on elsewhere or ended, the next
/// worker process on that data dir removes it; a directory young enough
/// that its job may just have been claimed stays.
#[tokio::test]
async fn a_starting_worker_removes_work_directories_no_running_job_owns() {
    let s = TestServer::start().await;
    let work = s.data_dir.path().join("work");
    let stale = work.join("01JABANDONEDJOB0000000000-a1");
    std::fs::create_dir_all(stale.join("out")).unwrap();
    std::fs::write(stale.join("out/seg_0001.m4s"), vec![7u8; 4096]).unwrap();
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::open(&stale)
        .unwrap()
        .set_modified(an_hour_ago)
        .unwrap();
    let young = work.join("01JJUSTCLAIMEDJOB00000000-a1");
    std::fs::create_dir_all(&young).unwrap();

    let _worker = s.spawn_worker(1);
    let mut gone = false;
    for _ in 0..150 {
        if !stale.exists() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gone, "the abandoned work directory was removed");
    assert!(young.is_dir(), "a young one stays");
}

/// An outage of the object store while a video is processed is no fault of
/// the video: the job waits for the store without spending attempts (here
/// it has only one), and finishes once the store answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_during_processing_spends_no_attempts() {
    let env = [
        WORKER,
        ("VIDHOST_PROCESSING__MAX_ATTEMPTS", "1"),
        ("VIDHOST_PROCESSING__RETRY_BASE_S", "1"),
    ];
    let Some((proxy, s)) = TestServer::start_behind_store_proxy(1, &env).await else {
        // Local disk has no store process to go silent.
        assert!(std::env::var("VIDHOST_TEST_S3_ENDPOINT").is_err());
        return;
    };
    let t = s.user("outage@example.com").await;
    let r = s.upload_form(&t, sample_mp4().to_vec(), "a.mp4", &[]).await;
    let id = created_id(r).await;
    proxy.set_hung(true);
    // Long enough for several tries to find the store silent.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let v: Value = s.get_json(&format!("/api/v1/videos/{id}"), Some(&t)).await;
    assert_ne!(v["status"], "failed", "{v}");
    proxy.set_hung(false);
    let v = wait_done(&s, &t, &id).await;
    assert_eq!(v["status"], "ready", "{v}");
}

/// A viewer's playback URLs stop working the moment their video turns
/// private (on the node that made the change; the others within seconds),
/// keep-alive connections that already served them included, while the
/// owner's go on; and they work again once it is public.
#[tokio::test]
async fn viewer_urls_stop_when_the_video_turns_private() {
    let s = TestServer::start_with(&[WORKER]).await;
    let t = s.user("private@example.com").await;
    let r = s
        .upload_form(
            &t,
            sample_mp4().to_vec(),
            "v.mp4",
            &[("visibility", "public")],
        )
        .await;
    let id = created_id(r).await;
    assert_eq!(wait_done(&s, &t, &id).await["status"], "ready");
    let viewer: Value = s
        .get_json(&format!("/api/v1/videos/{id}/playback"), None)
        .await;
    let owner: Value = s
        .get_json(&format!("/api/v1/videos/{id}/playback"), Some(&t))
        .await;
    let poster = |pb: &Value| s.url(pb["poster"].as_str().expect("a poster"));
    let (as_viewer, as_owner) = (poster(&viewer), poster(&owner));
    assert_ne!(as_viewer, as_owner, "viewer and owner grants differ");
    // The first answer comes through the router, which reads the video;
    // then a new keep-alive connection gets its answers from the
    // connection's own fast path, the second from its memo of the first.
    let r = s.http.get(&as_viewer).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let viewer_http = reqwest::Client::new();
    for _ in 0..2 {
        let r = viewer_http.get(&as_viewer).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.bytes().await.unwrap();
    }
    let set = |visibility: &'static str| {
        s.http
            .patch(s.url(&format!("/api/v1/videos/{id}")))
            .bearer_auth(&t)
            .json(&serde_json::json!({ "visibility": visibility }))
            .send()
    };
    assert_eq!(set("private").await.unwrap().status(), StatusCode::OK);
    for _ in 0..2 {
        let r = viewer_http.get(&as_viewer).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "a private video's viewer grant"
        );
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["code"], "video_not_found");
        let r = s.http.get(&as_owner).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "the owner still plays it");
        r.bytes().await.unwrap();
    }
    let hls = s.url(viewer["hls"].as_str().unwrap());
    assert_eq!(
        s.http.get(&hls).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(set("public").await.unwrap().status(), StatusCode::OK);
    let r = s.http.get(&as_viewer).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "public again");
}
