//! The ffmpeg command lines: poster, the one-decode ladder (one process,
//! `split` feeding every rung, CMAF segments that HLS and DASH share), the
//! progressive MP4, and the playlists we rewrite for publishing.

use crate::ladder::Rung;
use crate::probe::{MediaInfo, VideoInfo};
use std::path::Path;
use vidhost_core::config::ProcessingConfig;

fn s(x: impl ToString) -> String {
    x.to_string()
}

/// The demuxers an upload is read with: the containers the upload check
/// admits (`domain::sniff_video`). Left to itself ffmpeg reads a file with
/// whichever demuxer scores it highest, and a file can carry the magic bytes
/// the check looks for and still be, say, a DASH manifest or a playlist
/// whose entries are other files on this disk (another user's private
/// video): it would be transcoded into the uploader's. `mov` does not follow
/// external references (its `enable_drefs` is off by default).
pub const SOURCE_FORMATS: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpeg,mpegvideo,mpegts";

/// `-i src` for an uploaded file: only [`SOURCE_FORMATS`], only local files.
pub fn source_input(src: &Path) -> [String; 6] {
    [
        s("-format_whitelist"),
        s(SOURCE_FORMATS),
        s("-protocol_whitelist"),
        s("file"),
        s("-i"),
        s(src.display()),
    ]
}

/// A representative frame (ffmpeg's `thumbnail` filter picks the frame most
/// like its neighbours' average out of a window, which skips transition
/// frames), taken a little into the video. With `skip_dark`, frames whose
/// mean luma is near black are dropped before the choice, so a video that
/// opens on black gets a picture of what follows. That costs `signalstats`
/// on every frame looked at (seconds at 1080p), so the worker asks for it
/// only when the plain choice came out dark ([`luma_args`]); if the first two
/// minutes from there hold no bright frame, ffmpeg writes nothing and the
/// dark poster stays.
pub fn poster_args(src: &Path, info: &MediaInfo, out: &Path, skip_dark: bool) -> Vec<String> {
    poster_at((info.duration_s * 0.1).min(10.0), src, out, skip_dark)
}

/// The poster from `at` seconds on. [`poster_args`]'s point can lie past
/// the picture's end (one frame, or a picture shorter than the sound, or a
/// container that claims too long a duration): ffmpeg then writes nothing
/// and succeeds, and the worker asks again from the start.
pub fn poster_at(at: f64, src: &Path, out: &Path, skip_dark: bool) -> Vec<String> {
    let not_dark = if skip_dark {
        // 8-bit limited range first, so the threshold means the same for a
        // 10-bit or full-range source.
        "format=yuv420p,signalstats,metadata=select:key=lavfi.signalstats.YAVG:value=40:function=greater,"
    } else {
        ""
    };
    vec![
        s("-nostdin"),
        s("-y"),
        s("-v"),
        s("error"),
        s("-ss"),
        format!("{at:.3}"),
        s("-t"),
        s("120"),
    ]
    .into_iter()
    .chain(source_input(src))
    .chain([
        s("-vf"),
        // Non-square pixels are made square (JPEG viewers ignore a pixel
        // aspect), so an anamorphic source's poster is not squeezed.
        format!("{not_dark}thumbnail=n=50,scale='trunc(iw*sar/2)*2':ih,setsar=1,scale='min(1280,iw)':-2,format=yuvj420p"),
        s("-frames:v"),
        s("1"),
        s("-q:v"),
        s("3"),
        s(out.display()),
    ])
    .collect()
}

/// Mean luma (0–255) of a picture: ffmpeg prints `lavfi.signalstats.YAVG=…`.
pub fn luma_args(picture: &Path) -> Vec<String> {
    vec![
        s("-nostdin"),
        s("-v"),
        s("error"),
        s("-i"),
        s(picture.display()),
        s("-vf"),
        s("scale=out_range=tv,format=yuv420p,signalstats,metadata=print:key=lavfi.signalstats.YAVG:file=-"),
        s("-f"),
        s("null"),
        s("-"),
    ]
}

pub fn parse_luma(out: &[u8]) -> Option<f64> {
    String::from_utf8_lossy(out)
        .lines()
        .find_map(|l| l.trim().strip_prefix("lavfi.signalstats.YAVG="))
        .and_then(|v| v.parse().ok())
}

/// Below this mean luma a poster counts as black.
pub const DARK_LUMA: f64 = 40.0;

/// Scrubbing thumbnails: one every `interval` seconds, 160 px wide, tiled
/// 10×10 into sprite images.
pub struct Storyboard {
    pub interval: f64,
    pub width: u32,
    pub height: u32,
    pub count: u32,
}

pub const SPRITE_COLUMNS: u32 = 10;
pub const SPRITE_ROWS: u32 = 10;

impl Storyboard {
    pub fn plan(info: &MediaInfo, v: &VideoInfo) -> Storyboard {
        let (w, h) = v.display_size();
        // Every 2 s for short videos; at most ~300 thumbnails for long ones.
        let interval = (info.duration_s / 300.0).max(2.0);
        let width = 160;
        let height = ((width as f64 * h as f64 / w as f64 / 2.0).round() as u32 * 2).max(2);
        let count = (info.duration_s / interval).ceil().max(1.0) as u32;
        Storyboard {
            interval,
            width,
            height,
            count,
        }
    }

    /// The filter branch that makes the sprites out of frames the ladder
    /// already decoded (no second decode of the source).
    fn filter(&self) -> String {
        format!(
            "fps=1/{:.3},scale={}:{},setsar=1,format=yuvj420p,tile={SPRITE_COLUMNS}x{SPRITE_ROWS}",
            self.interval, self.width, self.height
        )
    }

    /// The WebVTT track: one cue per thumbnail, pointing into its sprite.
    pub fn vtt(&self, duration_s: f64) -> String {
        let per = SPRITE_COLUMNS * SPRITE_ROWS;
        let ts = |t: f64| {
            let ms = (t * 1000.0).round() as u64;
            format!(
                "{:02}:{:02}:{:02}.{:03}",
                ms / 3_600_000,
                ms / 60_000 % 60,
                ms / 1000 % 60,
                ms % 1000
            )
        };
        let mut out = String::from("WEBVTT\n");
        for i in 0..self.count {
            let start = i as f64 * self.interval;
            let end = ((i + 1) as f64 * self.interval).min(duration_s.max(start + 0.001));
            let (sprite, pos) = (i / per + 1, i % per);
            let (x, y) = (
                (pos % SPRITE_COLUMNS) * self.width,
                (pos / SPRITE_COLUMNS) * self.height,
            );
            out.push_str(&format!(
                "\n{} --> {}\nstoryboard/sb-{sprite:03}.jpg#xywh={x},{y},{},{}\n",
                ts(start),
                ts(end),
                self.width,
                self.height
            ));
        }
        out
    }
}

/// Filters applied once, before the split: HDR is tone-mapped to SDR
/// BT.709, 10-bit becomes 8-bit 4:2:0, variable frame rate becomes
/// constant (so a fixed GOP lines keyframes up across renditions).
fn prelude(v: &VideoInfo, fps: f64) -> String {
    let mut f: Vec<String> = tone_map(v).into_iter().map(s).collect();
    f.push(format!("fps={fps:.3}"));
    f.push(s("format=yuv420p"));
    f.join(",")
}

/// HDR (PQ, HLG) to SDR BT.709, for the ladder and the storyboard alike.
fn tone_map(v: &VideoInfo) -> Option<&'static str> {
    v.hdr().then_some(
        "zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=hable:desat=0,zscale=t=bt709:m=bt709:r=tv",
    )
}

/// One ffmpeg process: decode once, split, scale per rung, encode H.264 with
/// a fixed GOP of one segment, AAC stereo, and write CMAF segments with a
/// DASH manifest and HLS playlists over the same files.
///
/// The storyboard is not a branch of this graph (it was): a sprite comes out
/// once per 100 thumbnails, and ffmpeg 5.1 serves the output that is most
/// behind, so it ran the graph until the next sprite while every rung's
/// frames piled up unencoded. With dense frames that stayed small; a source
/// with a gap in its timestamps (which `fps` fills with copies) grew it by
/// gigabytes within a minute (a 1 MB file, 60 frames over an hour: 12 GB).
/// Its `-progress` also said nothing until the end.
pub fn ladder_args(
    src: &Path,
    info: &MediaInfo,
    v: &VideoInfo,
    rungs: &[Rung],
    cfg: &ProcessingConfig,
    out_dir: &Path,
) -> Vec<String> {
    let fps = rungs.first().map(|r| r.frame_rate).unwrap_or(30.0);
    let gop = (fps * cfg.segment_duration_s as f64).round().max(1.0) as u32;
    let n = rungs.len();
    let mut graph = format!("[0:v:0]{},split={}", prelude(v, fps), n);
    for i in 0..n {
        graph.push_str(&format!("[s{i}]"));
    }
    // Even sizes cannot all keep the exact same ratio; DASH wants one picture
    // aspect ratio per adaptation set, so every rung declares the top rung's
    // (the pixel aspect absorbs the rounding, a fraction of a percent).
    let (dw, dh) = rungs
        .first()
        .map(|r| (r.width, r.height))
        .unwrap_or((16, 9));
    for (i, r) in rungs.iter().enumerate() {
        graph.push_str(&format!(
            ";[s{i}]scale={}:{}:flags=bicubic,setdar={dw}/{dh}[v{i}]",
            r.width, r.height
        ));
    }
    let mut a = vec![s("-nostdin"), s("-y"), s("-v"), s("error")];
    a.extend(source_input(src));
    a.extend([s("-filter_complex"), graph]);
    for i in 0..n {
        a.extend([s("-map"), format!("[v{i}]")]);
    }
    if info.audio.is_some() {
        a.extend([s("-map"), s("0:a:0")]);
    }
    a.extend([
        s("-c:v"),
        s("libx264"),
        s("-preset"),
        cfg.preset.clone(),
        s("-profile:v"),
        s("high"),
    ]);
    for (i, r) in rungs.iter().enumerate() {
        a.extend([
            format!("-b:v:{i}"),
            s(r.bitrate),
            format!("-maxrate:v:{i}"),
            s(r.bitrate * 11 / 10),
            format!("-bufsize:v:{i}"),
            s(r.bitrate * 2),
        ]);
    }
    a.extend([
        s("-g"),
        s(gop),
        s("-keyint_min"),
        s(gop),
        s("-sc_threshold"),
        s("0"),
        s("-force_key_frames"),
        format!("expr:gte(t,n_forced*{})", cfg.segment_duration_s),
    ]);
    if info.audio.is_some() {
        a.extend([
            s("-c:a"),
            s("aac"),
            s("-b:a"),
            s("128k"),
            s("-ac"),
            s("2"),
            s("-ar"),
            s("48000"),
        ]);
    }
    if cfg.ffmpeg_threads > 0 {
        a.extend([s("-threads"), s(cfg.ffmpeg_threads)]);
    }
    // Say what the pictures are: SDR BT.709 (after tone mapping, for HDR sources).
    a.extend([
        s("-color_primaries"),
        s("bt709"),
        s("-color_trc"),
        s("bt709"),
        s("-colorspace"),
        s("bt709"),
    ]);
    let sets = if info.audio.is_some() {
        "id=0,streams=v id=1,streams=a"
    } else {
        "id=0,streams=v"
    };
    a.extend([
        s("-f"),
        s("dash"),
        s("-seg_duration"),
        s(cfg.segment_duration_s),
        s("-use_template"),
        s("1"),
        s("-use_timeline"),
        s("0"),
        s("-hls_playlist"),
        s("1"),
        s("-adaptation_sets"),
        s(sets),
        s("-progress"),
        s("pipe:1"),
        s("-nostats"),
        s(out_dir.join("manifest.mpd").display()),
    ]);
    a
}

/// The storyboard sprites into `dir`, a pass of their own (see
/// [`ladder_args`]): the source decoded again, which costs a fraction of
/// encoding the ladder.
pub fn storyboard_args(
    src: &Path,
    v: &VideoInfo,
    storyboard: &Storyboard,
    dir: &Path,
) -> Vec<String> {
    let filter: Vec<String> = tone_map(v)
        .into_iter()
        .map(s)
        .chain([storyboard.filter()])
        .collect();
    let mut a = vec![s("-nostdin"), s("-y"), s("-v"), s("error")];
    a.extend(source_input(src));
    a.extend([
        s("-map"),
        s("0:v:0"),
        s("-vf"),
        filter.join(","),
        s("-c:v"),
        s("mjpeg"),
        s("-q:v"),
        s("5"),
        s("-f"),
        s("image2"),
        s(dir.join("sb-%03d.jpg").display()),
    ]);
    a
}

/// An HLS media playlist as ffmpeg wrote it: the init segment and the media
/// segments with their durations.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    pub init: String,
    pub segments: Vec<(f64, String)>,
}

/// Reads ffmpeg's media playlist. Only whole entries count (an `#EXTINF`
/// followed by its complete URI line), so a file caught mid-write yields a
/// prefix, never garbage.
pub fn parse_media_playlist(text: &str) -> Option<MediaPlaylist> {
    let mut init = None;
    let mut segments = Vec::new();
    let mut duration = None;
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            init = rest.split('"').next().map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix("#EXTINF:") {
            duration = rest
                .split(',')
                .next()
                .and_then(|d| d.trim().parse::<f64>().ok());
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let last = i + 1 == lines.len();
            if let (Some(d), false) = (duration.take(), last && !complete) {
                segments.push((d, line.trim().to_owned()));
            }
        }
    }
    Some(MediaPlaylist {
        init: init?,
        segments,
    })
}

/// Our media playlist over `pl`: `EVENT` while the ladder still runs (it
/// only grows; players keep polling it), `ENDLIST` once it is complete.
/// `VOD` for a run that publishes only at the end.
pub fn media_playlist(pl: &MediaPlaylist, target_s: u32, event: bool, ended: bool) -> String {
    let longest = pl.segments.iter().map(|s| s.0).fold(0.0, f64::max);
    let target = (longest.round() as u32).max(target_s).max(1);
    let mut out = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:1\n\
         #EXT-X-PLAYLIST-TYPE:{}\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"{}\"\n",
        if event { "EVENT" } else { "VOD" },
        pl.init
    );
    for (d, uri) in &pl.segments {
        out.push_str(&format!("#EXTINF:{d:.6},\n{uri}\n"));
    }
    if ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// The progressive MP4: the top rendition and the audio, copied (not
/// re-encoded) from the segments, moov at the front.
pub fn mp4_args(out_dir: &Path, mp4: &Path) -> Vec<String> {
    vec![
        s("-nostdin"),
        s("-y"),
        s("-v"),
        s("error"),
        // Our own playlist and segments; still only what they are made of.
        s("-format_whitelist"),
        s("hls,mov,mp4,m4a,3gp,3g2,mj2"),
        s("-protocol_whitelist"),
        s("file"),
        s("-i"),
        s(out_dir.join("master.m3u8").display()),
        s("-map"),
        s("0:v:0"),
        s("-map"),
        s("0:a:0?"),
        s("-c"),
        s("copy"),
        s("-movflags"),
        s("+faststart"),
        s(mp4.display()),
    ]
}

/// What a stream's segments weigh, bits/s: the peak over its segments and
/// the average over the whole stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth {
    pub peak: u64,
    pub average: u64,
}

impl Bandwidth {
    /// From (duration s, size bytes) per segment. A last segment shorter
    /// than half the target duration (a few frames, but a whole keyframe)
    /// counts together with the one before it, as RFC 8216bis measures a
    /// peak over segments of about the target duration.
    pub fn of(segments: &[(f64, u64)], target_s: f64) -> Bandwidth {
        let mut spans: Vec<(f64, u64)> = segments.to_vec();
        if spans.len() >= 2 && spans[spans.len() - 1].0 < target_s / 2.0 {
            let (d, b) = spans.pop().expect("two or more");
            let prev = spans.last_mut().expect("one left");
            prev.0 += d;
            prev.1 += b;
        }
        let peak = spans
            .iter()
            .filter(|(d, _)| *d > 0.0)
            .map(|(d, b)| (*b as f64 * 8.0 / d) as u64)
            .max()
            .unwrap_or(0);
        let (secs, bytes) = segments
            .iter()
            .fold((0.0, 0u64), |(s, b), (d, n)| (s + d, b + n));
        let average = if secs > 0.0 {
            (bytes as f64 * 8.0 / secs) as u64
        } else {
            0
        };
        Bandwidth { peak, average }
    }

    /// A variant is played with the audio: their rates add up (RFC 8216
    /// §4.3.4.2: the largest sum of peak rates of any playable combination).
    pub fn with(self, audio: Option<Bandwidth>) -> Bandwidth {
        let a = audio.unwrap_or(Bandwidth {
            peak: 0,
            average: 0,
        });
        Bandwidth {
            peak: self.peak + a.peak,
            average: self.average + a.average,
        }
    }
}

/// Points ffmpeg's multivariant playlist at the generation directory and
/// gives each variant BANDWIDTH, AVERAGE-BANDWIDTH and FRAME-RATE: measured
/// from the finished segments when `measured` has them (one per rung,
/// audio included), else the encoder's targets (while the ladder still runs).
pub fn rewrite_master(
    master: &str,
    generation: &str,
    rungs: &[Rung],
    audio: bool,
    measured: Option<&[Bandwidth]>,
) -> String {
    let mut out = Vec::new();
    let mut variant = 0;
    for line in master.lines() {
        if let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            let i = variant;
            variant += 1;
            let Some(r) = rungs.get(i) else {
                out.push(line.to_owned());
                continue;
            };
            let nominal = r.bitrate + if audio { 128_000 } else { 0 };
            let bw = measured
                .and_then(|m| m.get(i).copied())
                .unwrap_or(Bandwidth {
                    peak: nominal * 11 / 10,
                    average: nominal,
                });
            let kept: Vec<&str> = split_attributes(attrs)
                .into_iter()
                .filter(|a| {
                    !a.starts_with("BANDWIDTH=")
                        && !a.starts_with("AVERAGE-BANDWIDTH=")
                        && !a.starts_with("FRAME-RATE=")
                })
                .collect();
            out.push(format!(
                "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},{},FRAME-RATE={:.3}",
                bw.peak.max(1),
                bw.average.max(1),
                kept.join(","),
                r.frame_rate
            ));
        } else if line.starts_with("#EXT-X-MEDIA:") {
            out.push(line.replace("URI=\"", &format!("URI=\"{generation}/")));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            out.push(format!("{generation}/{line}"));
        } else {
            out.push(line.to_owned());
        }
    }
    out.join("\n") + "\n"
}

/// An attribute list split at the commas outside quotes (CODECS="a,b").
fn split_attributes(attrs: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in attrs.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&attrs[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&attrs[start..]);
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// Points the DASH manifest's segment templates at the generation directory.
pub fn rewrite_mpd(mpd: &str, generation: &str) -> String {
    mpd.replace(
        "initialization=\"",
        &format!("initialization=\"{generation}/"),
    )
    .replace("media=\"", &format!("media=\"{generation}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hdr_sources_are_tone_mapped_before_the_split() {
        let mut v = crate::probe::VideoInfo {
            codec: "hevc".into(),
            width: 1920,
            height: 1080,
            rotation: 0,
            frame_rate: 30.0,
            pix_fmt: "yuv420p10le".into(),
            sar: 1.0,
            bitrate: 0,
            color_transfer: "smpte2084".into(),
        };
        for transfer in ["smpte2084", "arib-std-b67"] {
            v.color_transfer = transfer.into();
            let p = prelude(&v, 30.0);
            assert!(
                p.contains("tonemap=") && p.ends_with("format=yuv420p"),
                "{transfer}: {p}"
            );
        }
        v.color_transfer = "bt709".into();
        assert!(!prelude(&v, 30.0).contains("tonemap"), "SDR is left alone");
    }

    #[test]
    fn luma_is_read_from_ffmpeg_metadata_output() {
        let out = b"frame:0    pts:0       pts_time:0\nlavfi.signalstats.YAVG=124.097\n";
        assert_eq!(parse_luma(out), Some(124.097));
        assert_eq!(parse_luma(b"frame:0\n"), None);
    }

    #[test]
    fn storyboard_cues_point_into_sprites() {
        let sb = Storyboard {
            interval: 2.0,
            width: 160,
            height: 90,
            count: 101,
        };
        let vtt = sb.vtt(201.0);
        assert!(vtt.starts_with("WEBVTT\n"));
        assert!(
            vtt.contains("00:00:00.000 --> 00:00:02.000\nstoryboard/sb-001.jpg#xywh=0,0,160,90")
        );
        assert!(
            vtt.contains("00:00:22.000 --> 00:00:24.000\nstoryboard/sb-001.jpg#xywh=160,90,160,90")
        );
        assert!(
            vtt.contains("00:03:20.000 --> 00:03:21.000\nstoryboard/sb-002.jpg#xywh=0,0,160,90")
        );
    }

    #[test]
    fn media_playlists_take_only_whole_entries() {
        let ffmpeg =
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n\
            #EXT-X-MAP:URI=\"init-stream0.m4s\"\n#EXTINF:2.000000,\n\
            #EXT-X-PROGRAM-DATE-TIME:2026-11-23T20:44:28.000+0000\nchunk-stream0-00001.m4s\n\
            #EXTINF:1.500000,\nchunk-stream0-00002.m4s\n";
        let pl = parse_media_playlist(ffmpeg).unwrap();
        assert_eq!(pl.init, "init-stream0.m4s");
        assert_eq!(
            pl.segments,
            vec![
                (2.0, "chunk-stream0-00001.m4s".to_owned()),
                (1.5, "chunk-stream0-00002.m4s".to_owned())
            ]
        );
        // Caught mid-write: the half-written last URI is not a segment.
        let cut = &ffmpeg[..ffmpeg.len() - 6];
        assert_eq!(parse_media_playlist(cut).unwrap().segments.len(), 1);
        assert!(parse_media_playlist("#EXTM3U\n#EXT-X-VERS").is_none());

        let live = media_playlist(&pl, 2, true, false);
        assert!(live.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"), "{live}");
        assert!(live.contains("#EXT-X-TARGETDURATION:2\n"));
        assert!(live.contains("#EXTINF:1.500000,\nchunk-stream0-00002.m4s\n"));
        assert!(!live.contains("ENDLIST") && !live.contains("PROGRAM-DATE-TIME"));
        let done = media_playlist(&pl, 2, true, true);
        assert!(
            done.ends_with("chunk-stream0-00002.m4s\n#EXT-X-ENDLIST\n"),
            "{done}"
        );
        assert!(media_playlist(&pl, 2, false, true).contains("TYPE:VOD"));
    }

    #[test]
    fn master_points_at_the_generation() {
        let master = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",URI=\"media_2.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\",AUDIO=\"a\"\nmedia_0.m3u8\n";
        let rungs = vec![Rung {
            name: "360p".into(),
            width: 640,
            height: 360,
            bitrate: 800_000,
            frame_rate: 30.0,
        }];
        let out = rewrite_master(master, "g1", &rungs, true, None);
        assert!(out.contains("URI=\"g1/media_2.m3u8\""));
        assert!(out.contains("\ng1/media_0.m3u8\n"));
        assert!(
            out.contains("#EXT-X-STREAM-INF:BANDWIDTH=1020800,AVERAGE-BANDWIDTH=928000,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\",AUDIO=\"a\",FRAME-RATE=30.000\n"),
            "{out}"
        );
        // Once the segments exist, their sizes say what the rates are.
        let video = Bandwidth::of(&[(2.0, 250_000), (2.0, 150_000), (1.0, 50_000)], 2.0);
        assert_eq!(
            video,
            Bandwidth {
                peak: 1_000_000,
                average: 720_000
            }
        );
        // A one-frame last segment holding a keyframe is no peak of its own.
        let tail = Bandwidth::of(&[(2.0, 250_000), (0.04, 40_000)], 2.0);
        assert_eq!(tail.peak, (290_000.0 * 8.0 / 2.04) as u64);
        let audio = Bandwidth::of(&[(2.0, 32_000), (3.0, 48_000)], 2.0);
        let both = video.with(Some(audio));
        let out = rewrite_master(master, "g1", &rungs, true, Some(&[both]));
        assert!(
            out.contains("BANDWIDTH=1128000,AVERAGE-BANDWIDTH=848000,RESOLUTION"),
            "{out}"
        );
        assert_eq!(
            out.matches("BANDWIDTH=").count(),
            2,
            "no stale attribute left: {out}"
        );
        let mpd = rewrite_mpd("<SegmentTemplate initialization=\"init-$RepresentationID$.m4s\" media=\"chunk-$Number$.m4s\"/>", "g1");
        assert!(
            mpd.contains("initialization=\"g1/init-") && mpd.contains("media=\"g1/chunk-"),
            "{mpd}"
        );
    }
}
