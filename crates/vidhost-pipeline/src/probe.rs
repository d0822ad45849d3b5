//! What ffprobe says about a source, reduced to what the pipeline decides on.

use crate::PipelineError;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq)]
pub struct MediaInfo {
    pub container: String,
    pub duration_s: f64,
    /// Total bitrate, bits/s (0 when unknown).
    pub bitrate: u64,
    pub video: Option<VideoInfo>,
    pub audio: Option<AudioInfo>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    pub codec: String,
    /// Coded size, before rotation.
    pub width: u32,
    pub height: u32,
    /// Degrees, as the display matrix says (0, ±90, 180).
    pub rotation: i32,
    pub frame_rate: f64,
    pub pix_fmt: String,
    /// Sample aspect ratio (pixel shape), 1.0 for square pixels.
    pub sar: f64,
    pub bitrate: u64,
    /// e.g. `smpte2084` (PQ) or `arib-std-b67` (HLG) for HDR.
    pub color_transfer: String,
}

impl VideoInfo {
    /// The picture as shown: rotation and pixel shape applied, even sizes.
    pub fn display_size(&self) -> (u32, u32) {
        let w = (self.width as f64 * self.sar).round() as u32;
        let (w, h) = if self.rotation.rem_euclid(180) == 90 {
            (self.height, w)
        } else {
            (w, self.height)
        };
        (w.max(2), h.max(2))
    }

    /// More than 8 bits per sample (10-bit phone video, HDR).
    pub fn high_bit_depth(&self) -> bool {
        self.pix_fmt.contains("10") || self.pix_fmt.contains("12")
    }

    /// HDR transfer (PQ or HLG): needs tone mapping to SDR BT.709.
    pub fn hdr(&self) -> bool {
        matches!(self.color_transfer.as_str(), "smpte2084" | "arib-std-b67")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AudioInfo {
    pub codec: String,
    pub channels: u32,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    streams: Vec<RawStream>,
    format: Option<RawFormat>,
}

#[derive(Deserialize)]
struct RawFormat {
    format_name: Option<String>,
    duration: Option<String>,
    bit_rate: Option<String>,
}

#[derive(Deserialize)]
struct RawStream {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    pix_fmt: Option<String>,
    r_frame_rate: Option<String>,
    avg_frame_rate: Option<String>,
    sample_aspect_ratio: Option<String>,
    color_transfer: Option<String>,
    bit_rate: Option<String>,
    channels: Option<u32>,
    duration: Option<String>,
    #[serde(default)]
    side_data_list: Vec<serde_json::Value>,
    #[serde(default)]
    tags: std::collections::HashMap<String, String>,
    #[serde(default)]
    disposition: std::collections::HashMap<String, i64>,
}

fn ratio(s: Option<&str>) -> Option<f64> {
    let s = s?;
    let (a, b) = s.split_once(['/', ':']).unwrap_or((s, "1"));
    let (a, b): (f64, f64) = (a.parse().ok()?, b.parse().ok()?);
    (a > 0.0 && b > 0.0).then_some(a / b)
}

/// Parses `ffprobe -print_format json -show_format -show_streams` output.
pub fn parse(json: &[u8]) -> Result<MediaInfo, PipelineError> {
    let raw: Raw = serde_json::from_slice(json)
        .map_err(|e| PipelineError::Invalid(format!("unreadable probe output: {e}")))?;
    let format = raw
        .format
        .ok_or_else(|| PipelineError::Invalid("the file has no recognisable container".into()))?;
    let num = |s: &Option<String>| s.as_deref().and_then(|v| v.parse::<f64>().ok());
    let video = raw
        .streams
        .iter()
        .filter(|s| s.codec_type.as_deref() == Some("video"))
        // Cover art is a "video" stream of one picture.
        .find(|s| s.disposition.get("attached_pic").copied().unwrap_or(0) == 0)
        .map(|s| {
            let rotation = s
                .side_data_list
                .iter()
                .find_map(|d| d.get("rotation").and_then(|r| r.as_f64()))
                .map(|r| r.round() as i32)
                .or_else(|| s.tags.get("rotate").and_then(|r| r.parse().ok()))
                .unwrap_or(0);
            let fps = ratio(s.avg_frame_rate.as_deref())
                .or_else(|| ratio(s.r_frame_rate.as_deref()))
                .unwrap_or(30.0);
            VideoInfo {
                codec: s.codec_name.clone().unwrap_or_default(),
                width: s.width.unwrap_or(0),
                height: s.height.unwrap_or(0),
                rotation,
                frame_rate: if (1.0..=240.0).contains(&fps) {
                    fps
                } else {
                    30.0
                },
                pix_fmt: s.pix_fmt.clone().unwrap_or_default(),
                sar: ratio(s.sample_aspect_ratio.as_deref())
                    .filter(|r| (0.1..=10.0).contains(r))
                    .unwrap_or(1.0),
                bitrate: num(&s.bit_rate).unwrap_or(0.0) as u64,
                color_transfer: s.color_transfer.clone().unwrap_or_default(),
            }
        });
    let audio = raw
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("audio"))
        .map(|s| AudioInfo {
            codec: s.codec_name.clone().unwrap_or_default(),
            channels: s.channels.unwrap_or(2),
        });
    let stream_duration = raw
        .streams
        .iter()
        .filter_map(|s| num(&s.duration))
        .fold(0.0, f64::max);
    Ok(MediaInfo {
        container: format.format_name.unwrap_or_default(),
        duration_s: num(&format.duration)
            .filter(|d| *d > 0.0)
            .unwrap_or(stream_duration),
        bitrate: num(&format.bit_rate).unwrap_or(0.0) as u64,
        video,
        audio,
    })
}

/// Permanent problems: media we will never be able to process.
pub fn validate(info: &MediaInfo) -> Result<&VideoInfo, PipelineError> {
    let v = info
        .video
        .as_ref()
        .ok_or_else(|| PipelineError::Invalid("the file has no video stream".into()))?;
    if info.duration_s.is_nan() || info.duration_s <= 0.0 {
        return Err(PipelineError::Invalid("the video has no duration".into()));
    }
    if v.width < 16 || v.height < 16 || v.width > 8192 || v.height > 8192 {
        return Err(PipelineError::Invalid(format!(
            "unsupported picture size {}x{}",
            v.width, v.height
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landscape_with_audio() {
        let info = parse(include_bytes!(
            "../tests/fixtures/landscape_with_audio.json"
        ))
        .unwrap();
        let v = info.video.as_ref().unwrap();
        assert_eq!((v.width, v.height, v.rotation), (640, 360, 0));
        assert_eq!(v.display_size(), (640, 360));
        assert!((v.frame_rate - 30.0).abs() < 0.01);
        assert!((info.duration_s - 6.0).abs() < 0.1);
        assert_eq!(info.audio.as_ref().unwrap().codec, "aac");
        assert!(validate(&info).is_ok());
    }

    #[test]
    fn rotated_without_audio() {
        let info = parse(include_bytes!("../tests/fixtures/rotated_no_audio.json")).unwrap();
        let v = info.video.as_ref().unwrap();
        assert_eq!(v.rotation.abs(), 90);
        assert_eq!(v.display_size(), (640, 360), "coded 360x640, shown rotated");
        assert!(info.audio.is_none());
    }

    #[test]
    fn no_video_is_permanent() {
        let info = MediaInfo {
            container: "mp3".into(),
            duration_s: 3.0,
            bitrate: 0,
            video: None,
            audio: None,
        };
        assert!(matches!(validate(&info), Err(PipelineError::Invalid(_))));
        assert!(parse(b"{}").is_err());
    }

    #[test]
    fn zero_duration_and_absurd_sizes_are_permanent() {
        let good = parse(include_bytes!(
            "../tests/fixtures/landscape_with_audio.json"
        ))
        .unwrap();
        assert!(validate(&good).is_ok());
        let invalid = |info: &MediaInfo| match validate(info) {
            Err(PipelineError::Invalid(why)) => why,
            other => panic!("{other:?}"),
        };
        let mut still = good.clone();
        still.duration_s = 0.0;
        assert_eq!(invalid(&still), "the video has no duration");
        still.duration_s = f64::NAN;
        assert_eq!(invalid(&still), "the video has no duration");
        for (w, h) in [(8, 720), (1280, 4), (16384, 720), (1280, 9000)] {
            let mut odd = good.clone();
            let v = odd.video.as_mut().unwrap();
            (v.width, v.height) = (w, h);
            assert_eq!(invalid(&odd), format!("unsupported picture size {w}x{h}"));
        }
    }
}
