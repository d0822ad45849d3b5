//! The uploaded file is read only as one of the containers uploads may be
//! (`transcode::source_input`), with the real ffprobe.

use std::path::Path;
use std::process::Command;
use vidhost_pipeline::transcode::source_input;

fn ffmpeg(args: &[&str], out: &Path) {
    let ok = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10",
            "-t",
            "2",
        ])
        .args(args)
        .arg(out)
        .status()
        .unwrap();
    assert!(ok.success(), "ffmpeg made {}", out.display());
}

/// The video width ffprobe reads from `args`, or its error.
fn width(args: &[String]) -> Result<String, String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=width", "-of", "csv=p=0"])
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        // The first line: a DASH input also prints its program's stream.
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(text
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches(',')
            .to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn a_manifest_naming_other_files_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    // Someone's stream, elsewhere on this disk.
    let mpd = dir.path().join("manifest.mpd");
    ffmpeg(
        &["-c:v", "libx264", "-preset", "ultrafast", "-f", "dash"],
        &mpd,
    );
    let prefix = format!("{}/", dir.path().display());
    let text = std::fs::read_to_string(&mpd).unwrap();
    let body = text
        .trim_start_matches(r#"<?xml version="1.0" encoding="utf-8"?>"#)
        .replace("initialization=\"", &format!("initialization=\"{prefix}"))
        .replace("media=\"", &format!("media=\"{prefix}"));
    // The manifest with `ftyp` at offset 4, uploaded as an MP4.
    let upload = dir.path().join("original");
    std::fs::write(&upload, format!("<!--ftypjp2 -->\n{}", body.trim_start())).unwrap();

    let plain = [upload.display().to_string()];
    assert_eq!(
        width(&plain).as_deref(),
        Ok("160"),
        "left to choose, ffprobe reads the files the manifest names"
    );
    let refused = width(&source_input(&upload)).unwrap_err();
    assert!(refused.contains("not on whitelist"), "{refused}");
}

#[test]
fn the_containers_uploads_may_be_are_read() {
    let dir = tempfile::tempdir().unwrap();
    for (name, codec) in [
        ("a.mp4", "libx264"),
        ("a.mov", "libx264"),
        ("a.webm", "libvpx-vp9"),
        ("a.mkv", "libx264"),
        ("a.avi", "mpeg4"),
        ("a.ts", "libx264"),
        ("a.mpg", "mpeg2video"),
        // An elementary stream (`00 00 01 B3`), which the upload check admits.
        ("a.m2v", "mpeg2video"),
        ("a.3gp", "libx264"),
    ] {
        let out = dir.path().join(name);
        ffmpeg(&["-c:v", codec], &out);
        // Under a name without an extension, as the original is stored.
        let original = dir.path().join("original");
        std::fs::rename(&out, &original).unwrap();
        assert_eq!(
            width(&source_input(&original)).as_deref(),
            Ok("160"),
            "{name}"
        );
    }
}
