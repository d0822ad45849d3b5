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

/// Rungs no larger than the source (never upscale), sized by the short side
/// with the source's aspect ratio kept (portrait stays portrait), even
/// dimensions, bitrates scaled by frame rate and capped by the source's own.
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
    let make = |name: &str, target_short: f64, base: u64| {
        let scale = target_short / short;
        let (rw, rh) = (even(w as f64 * scale), even(h as f64 * scale));
        let mut bitrate = (base as f64 * (fps / 30.0).max(0.5)) as u64;
        if source_bitrate > 0 {
            // No point spending more bits than the source had (plus headroom for re-encoding).
            bitrate = bitrate
                .min((source_bitrate as f64 * 1.2) as u64)
                .max(100_000);
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
        .map(|r| make(&r.name, r.short_side as f64, r.bitrate))
        .collect();
    if out.is_empty() {
        let smallest = rungs
            .iter()
            .min_by_key(|r| r.short_side)
            .expect("validated: at least one rung");
        out.push(make(&format!("{}p", even(short)), short, smallest.bitrate));
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
        assert!(l.iter().all(|r| r.bitrate <= 1_200_000));
    }
}
