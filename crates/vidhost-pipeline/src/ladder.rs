//! The source-aware ABR ladder: which renditions a source gets.

use crate::probe::{MediaInfo, VideoInfo};
use vidhost_core::config::RungConfig;

#[derive(Debug, Clone, PartialEq)]
pub struct Rung {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Target video bitrate, bits/s.
    pub bitrate: u64,
    pub frame_rate: f64,
}

fn even(x: f64) -> u32 {
    ((x / 2.0).round() as u32 * 2).max(2)
}

/// The lowest bitrate a rendition gets, unless its source had less.
const FLOOR: u64 = 64_000;

/// Rungs no larger than the source (never upscale), sized by the short side
/// with the source's aspect ratio kept (portrait stays portrait), even
/// dimensions. A rung's configured bitrate is for a 16:9 picture at 30 fps:
/// each rendition's is scaled by its own pixels × frame rate against that
/// (a 4:3 or a square picture needs fewer bits than a 16:9 one of the same
/// height), and never exceeds the source's own bitrate.
/// A source smaller than every rung gets one rendition at its own size.
pub fn plan(info: &MediaInfo, v: &VideoInfo, rungs: &[RungConfig]) -> Vec<Rung> {
    let (w, h) = v.display_size();
    let short = w.min(h) as f64;
    let fps = v.frame_rate.min(60.0);
    let source_bitrate = if v.bitrate > 0 {
        v.bitrate
    } else {
        info.bitrate
    };
    let make = |name: &str, target_short: f64, rung: &RungConfig| {
        let scale = target_short / short;
        let (rw, rh) = (even(w as f64 * scale), even(h as f64 * scale));
        let reference = rung.short_side as f64 * rung.short_side as f64 * 16.0 / 9.0 * 30.0;
        let pixel_rate = rw as f64 * rh as f64 * fps.max(1.0);
        let mut bitrate = ((rung.bitrate as f64 * pixel_rate / reference) as u64).max(FLOOR);
        if source_bitrate > 0 {
            // More bits than the source had buy nothing.
            bitrate = bitrate.min(source_bitrate);
        }
        Rung {
            name: name.to_owned(),
            width: rw,
            height: rh,
            bitrate,
            frame_rate: fps,
        }
    };
    let mut out: Vec<Rung> = rungs
        .iter()
        .filter(|r| r.short_side as f64 <= short)
        .map(|r| make(&r.name, r.short_side as f64, r))
        .collect();
    if out.is_empty() {
        let smallest = rungs
            .iter()
            .min_by_key(|r| r.short_side)
            .expect("validated: at least one rung");
        out.push(make(&format!("{}p", even(short)), short, smallest));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(w: u32, h: u32, rotation: i32) -> VideoInfo {
        VideoInfo {
            codec: "h264".into(),
            width: w,
            height: h,
            rotation,
            frame_rate: 30.0,
            pix_fmt: "yuv420p".into(),
            sar: 1.0,
            bitrate: 0,
            color_transfer: String::new(),
        }
    }

    fn info() -> MediaInfo {
        MediaInfo {
            container: "mp4".into(),
            duration_s: 10.0,
            bitrate: 0,
            video: None,
            audio: None,
        }
    }

    fn rungs() -> Vec<RungConfig> {
        vidhost_core::Config::default().processing.ladder
    }

    #[test]
    fn never_upscales_and_keeps_aspect() {
        let l = plan(&info(), &video(1280, 720, 0), &rungs());
        let names: Vec<_> = l.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["720p", "480p", "360p", "240p"]);
        assert_eq!((l[0].width, l[0].height), (1280, 720));
        assert_eq!((l[1].width, l[1].height), (854, 480));
    }

    #[test]
    fn portrait_and_rotated_sources_stay_portrait() {
        let l = plan(&info(), &video(720, 1280, 0), &rungs());
        assert_eq!((l[0].width, l[0].height), (720, 1280));
        let r = plan(&info(), &video(1280, 720, 90), &rungs());
        assert_eq!((r[0].width, r[0].height), (720, 1280));
    }

    #[test]
    fn odd_and_tiny_sources() {
        let l = plan(&info(), &video(321, 241, 0), &rungs());
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].width % 2, l[0].height % 2), (0, 0));
        let tiny = plan(&info(), &video(160, 90, 0), &rungs());
        assert_eq!((tiny[0].width, tiny[0].height), (160, 90));
    }

    #[test]
    fn bitrate_is_capped_by_the_source() {
        let mut v = video(1920, 1080, 0);
        v.bitrate = 1_000_000;
        let l = plan(&info(), &v, &rungs());
        assert!(l.iter().all(|r| r.bitrate <= 1_000_000), "{l:?}");
        // A source with less than the floor keeps its own rate.
        v.bitrate = 40_000;
        assert!(plan(&info(), &v, &rungs())
            .iter()
            .all(|r| r.bitrate == 40_000));
    }

    #[test]
    fn bitrate_follows_pixels_and_frame_rate() {
        let cfg = rungs();
        let base = |name: &str| cfg.iter().find(|r| r.name == name).unwrap().bitrate;
        let wide = plan(&info(), &video(1280, 720, 0), &cfg);
        assert_eq!(
            wide[0].bitrate,
            base("720p"),
            "16:9 at 30 fps: as configured"
        );
        // 4:3 at the same height: 960x720 is 3/4 of 1280x720's pixels.
        let four_three = plan(&info(), &video(960, 720, 0), &cfg);
        let ratio = four_three[0].bitrate as f64 / base("720p") as f64;
        assert!((ratio - 0.75).abs() < 0.01, "{ratio}");
        // Portrait has the same pixels as landscape.
        let portrait = plan(&info(), &video(720, 1280, 0), &cfg);
        assert_eq!(portrait[0].bitrate, wide[0].bitrate);
        // 60 fps: twice the pixels per second.
        let mut fast = video(1280, 720, 0);
        fast.frame_rate = 60.0;
        let ratio = plan(&info(), &fast, &cfg)[0].bitrate as f64 / base("720p") as f64;
        assert!((ratio - 2.0).abs() < 0.01, "{ratio}");
        // A tiny source is not given the smallest rung's 16:9 budget.
        let tiny = plan(&info(), &video(160, 90, 0), &cfg);
        assert!(tiny[0].bitrate < base("240p") / 3, "{tiny:?}");
    }
}
