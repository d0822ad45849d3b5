//! Domain newtypes, parsed once at the edge so an invalid value cannot exist
//! past it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Opaque identifiers are UUIDv7: sortable by creation time, which keeps
/// cursor pagination and B-tree inserts cheap. The 74 random bits come from
/// the thread's CSPRNG (`rand::thread_rng`, ChaCha reseeded from the OS):
/// `Uuid::now_v7` asks the kernel (`getrandom`) for every id, a syscall
/// that was ~1.7 % of the server's CPU in bench/ (d), two ids a creation.
pub fn new_id() -> String {
    use rand::RngCore;
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut random = [0u8; 10];
    rand::thread_rng().fill_bytes(&mut random);
    let id = uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid();
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    id.simple().encode_lower(&mut buf).to_owned()
}

/// True when `s` looks like an id we issued (32 lowercase hex digits).
pub fn is_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s { $($text => Ok($name::$variant),)+ _ => Err(UnknownVariant(s.to_owned())) }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownVariant;
            fn try_from(s: String) -> Result<Self, Self::Error> { s.parse() }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

#[derive(Debug, thiserror::Error)]
#[error("unknown value `{0}`")]
pub struct UnknownVariant(pub String);

string_enum!(
    /// What a user may do. Admins see and manage everything; uploaders own
    /// their videos; viewers only watch.
    Role { Admin => "admin", Uploader => "uploader", Viewer => "viewer" }
);

impl Role {
    pub fn can_upload(self) -> bool {
        matches!(self, Role::Admin | Role::Uploader)
    }
}

string_enum!(
    Visibility { Public => "public", Unlisted => "unlisted", Private => "private" }
);

string_enum!(
    VideoStatus {
        AwaitingUpload => "awaiting_upload",
        Uploaded => "uploaded",
        Processing => "processing",
        Ready => "ready",
        Failed => "failed",
    }
);

string_enum!(
    /// The four ways bytes come in (also the `method` metric label).
    UploadMethod { Form => "form", Presigned => "presigned", Multipart => "multipart", Tus => "tus" }
);

string_enum!(
    RegistrationMode { Open => "open", Invite => "invite", Closed => "closed" }
);

/// Video content types we accept at upload time. `application/octet-stream`
/// (or none) lets the magic bytes decide.
pub const VIDEO_CONTENT_TYPES: &[&str] = &[
    "video/mp4",
    "video/quicktime",
    "video/webm",
    "video/x-matroska",
    "video/x-msvideo",
    "video/mpeg",
    "video/mp2t",
    "video/3gpp",
];

/// Parses a declared content type: `Ok(Some(ct))` for an allowed video type,
/// `Ok(None)` when the magic bytes must decide, `Err` for anything else.
pub fn parse_content_type(declared: Option<&str>) -> Result<Option<&'static str>, String> {
    let Some(raw) = declared else { return Ok(None) };
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence.is_empty() || essence == "application/octet-stream" {
        return Ok(None);
    }
    VIDEO_CONTENT_TYPES
        .iter()
        .find(|t| **t == essence)
        .map(|t| Some(*t))
        .ok_or(essence)
}

/// Recognises a video container from its first bytes (`head`, at least 16
/// and better 512 of them) and the file's whole `size`; returns the content
/// type it implies. Where a format's magic is a size and a short tag
/// (QuickTime boxes, MPEG-TS sync bytes), the size must fit the file and
/// the tag repeat where the format repeats it: text that happens to spell
/// the tag is not a video.
pub fn sniff_video(head: &[u8], size: u64) -> Option<&'static str> {
    // An `ftyp` box is a few dozen bytes; its size is the first four. Text
    // that merely spells `ftyp` at offset 4 (`<!--ftyp…`) is no box.
    let box_size = |h: &[u8]| u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    if head.len() >= 12 && &head[4..8] == b"ftyp" && (8..=4096).contains(&box_size(head)) {
        let brand = &head[8..12];
        return Some(if brand == b"qt  " {
            "video/quicktime"
        } else if brand.starts_with(b"3g") {
            "video/3gpp"
        } else {
            "video/mp4"
        });
    }
    if head.len() >= 8 && matches!(&head[4..8], b"moov" | b"mdat" | b"wide" | b"free" | b"skip") {
        // Old QuickTime files start with one of these boxes. Its size fits
        // the file (`wide` is always 8; `mdat` may say 0, to the end, or 1,
        // a 64-bit size after the tag).
        let n = box_size(head) as u64;
        let fits = match &head[4..8] {
            b"wide" => n == 8,
            b"mdat" if n == 0 => true,
            b"mdat" if n == 1 => {
                head.len() >= 16 && {
                    let large = u64::from_be_bytes(head[8..16].try_into().expect("8 bytes"));
                    (16..=size).contains(&large)
                }
            }
            _ => (8..=size).contains(&n),
        };
        // And the next box, when it starts within `head`, has a tag of
        // letters (`moov`, `mdat`, `free`, …).
        let next = usize::try_from(n)
            .ok()
            .filter(|&n| n >= 8 && n.checked_add(8).is_some_and(|end| end <= head.len()));
        let next_ok = next.is_none_or(|at| {
            head[at + 4..at + 8]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b' ')
        });
        return (fits && next_ok).then_some("video/quicktime");
    }
    if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        // EBML: WebM and Matroska share it; the DocType a few bytes in tells.
        let window = &head[..head.len().min(64)];
        return Some(if window.windows(4).any(|w| w == b"webm") {
            "video/webm"
        } else {
            "video/x-matroska"
        });
    }
    if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..11] == b"AVI" {
        return Some("video/x-msvideo");
    }
    if head.starts_with(&[0x00, 0x00, 0x01, 0xBA]) || head.starts_with(&[0x00, 0x00, 0x01, 0xB3]) {
        return Some("video/mpeg");
    }
    // MPEG-TS: 188-byte packets, each starting with the sync byte 0x47 (a
    // `G`); BDAV (M2TS: AVCHD camcorders' .mts, Blu-ray) puts a 4-byte
    // arrival timestamp before each, so its sync byte repeats every 192
    // bytes from offset 4. ffmpeg's mpegts demuxer reads both. At least two
    // packets, every one within `head` synced.
    for (packet, sync) in [(188usize, 0usize), (192, 4)] {
        if size >= 2 * packet as u64
            && head.len() > packet + sync
            && head[sync..].iter().step_by(packet).all(|&b| b == 0x47)
        {
            return Some("video/mp2t");
        }
    }
    None
}

/// At most this many tags per video.
pub const MAX_TAGS: usize = 20;

/// Tags: trimmed, de-duplicated case-insensitively, at most 20 of 1–40 chars.
pub fn normalize_tags<I, S>(raw: I) -> Result<Vec<String>, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // Stops at the 21st distinct tag: a request carrying a quarter of a
    // million of them costs no more than one carrying 21.
    for t in raw {
        let t = t.as_ref().trim();
        let len = t.chars().count();
        if len == 0 || len > 40 {
            return Err(format!("a tag must have 1 to 40 characters, got {len}"));
        }
        if t.chars().any(char::is_control) {
            return Err("a tag must not contain control characters".to_owned());
        }
        if seen.insert(t.to_lowercase()) {
            if out.len() == MAX_TAGS {
                return Err(format!("at most {MAX_TAGS} tags"));
            }
            out.push(t.to_owned());
        }
    }
    Ok(out)
}

/// Splits the comma-separated form used in forms and tus metadata.
pub fn split_tags(s: &str) -> Vec<&str> {
    s.split(',').filter(|t| !t.trim().is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_distinct_and_ordered_across_milliseconds() {
        let a: Vec<String> = (0..1000).map(|_| new_id()).collect();
        let set: std::collections::HashSet<&String> = a.iter().collect();
        assert_eq!(set.len(), a.len());
        for id in &a {
            assert!(is_id(id), "{id}");
            let u = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(u.get_version_num(), 7);
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = new_id();
        assert!(a.iter().all(|id| *id < later));
    }

    #[test]
    fn sniffs_common_containers() {
        let sniff = |h: &[u8]| sniff_video(h, h.len() as u64);
        let mut mp4 = vec![0, 0, 0, 0x20];
        mp4.extend_from_slice(b"ftypisom\0\0\0\0");
        assert_eq!(sniff(&mp4), Some("video/mp4"));
        let mkv = [
            0x1A, 0x45, 0xDF, 0xA3, 0, 0, 0, 0, 0, 0, 0, 0, 0x42, 0x82, 0x84, b'w', b'e', b'b',
            b'm',
        ];
        assert_eq!(sniff(&mkv), Some("video/webm"));
        assert_eq!(sniff(b"hello, this is text, not video"), None);
        assert_eq!(
            sniff(b"<!--ftypjp2 -->\n<MPD xmlns=\"urn:mpeg:dash\">"),
            None
        );
        assert_eq!(sniff(b"RIFF\0\0\0\0AVI LIST"), Some("video/x-msvideo"));
    }

    #[test]
    fn old_quicktime_boxes_must_fit_the_file() {
        // `wide`, then `mdat` to the end: the start of many .mov files.
        let mut mov = vec![0, 0, 0, 8];
        mov.extend_from_slice(b"wide\0\0\x01\0mdat");
        mov.resize(300, 0);
        assert_eq!(sniff_video(&mov, 1 << 20), Some("video/quicktime"));
        let mut moov = vec![0, 0, 0x01, 0];
        moov.extend_from_slice(b"moov");
        assert_eq!(sniff_video(&moov, 1 << 20), Some("video/quicktime"));
        assert_eq!(sniff_video(&moov, 100), None, "a box larger than the file");
        let mut large = vec![0, 0, 0, 1];
        large.extend_from_slice(b"mdat");
        large.extend_from_slice(&(1u64 << 32).to_be_bytes());
        assert_eq!(sniff_video(&large, 1 << 33), Some("video/quicktime"));
        assert_eq!(sniff_video(&large, 1 << 20), None);
        // Text that spells a tag at offset 4: its "size" is four letters.
        assert_eq!(sniff_video(b"see moov later", 14), None);
        assert_eq!(sniff_video(b"abc free text, a lot of it", 1 << 20), None);
        // A box whose successor within the head is no box.
        let mut bad_next = vec![0, 0, 0, 16];
        bad_next.extend_from_slice(b"free\0\0\0\0\0\0\0\0\0\0\0\x10\x01\x02\x03\x04");
        assert_eq!(sniff_video(&bad_next, 1 << 20), None);
    }

    #[test]
    fn transport_streams_need_their_sync_bytes() {
        let mut ts = vec![0u8; 512];
        for at in (0..512).step_by(188) {
            ts[at] = 0x47;
        }
        assert_eq!(sniff_video(&ts, 188 * 100), Some("video/mp2t"));
        // One packet is not a stream; nor a text that starts with a G.
        assert_eq!(sniff_video(&ts[..188], 188), None);
        assert_eq!(sniff_video(b"Good morning", 12), None);
        let mut text = vec![b'G'; 1];
        text.resize(512, b'x');
        assert_eq!(sniff_video(&text, 4096), None);
    }

    #[test]
    fn m2ts_packets_carry_their_sync_byte_after_a_timestamp() {
        let mut m2ts = vec![0u8; 512];
        for at in (4..512).step_by(192) {
            m2ts[at] = 0x47;
        }
        assert_eq!(sniff_video(&m2ts, 192 * 100), Some("video/mp2t"));
        assert_eq!(sniff_video(&m2ts[..196], 196), None, "one packet");
        m2ts[4 + 192] = 0;
        assert_eq!(sniff_video(&m2ts, 192 * 100), None, "out of sync");
        assert_eq!(sniff_video(b"abcdG", 4096), None);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            parse_content_type(Some("video/mp4; codecs=x")),
            Ok(Some("video/mp4"))
        );
        assert_eq!(
            parse_content_type(Some("application/octet-stream")),
            Ok(None)
        );
        assert_eq!(parse_content_type(None), Ok(None));
        assert!(parse_content_type(Some("image/png")).is_err());
    }

    #[test]
    fn tags_are_normalized() {
        assert_eq!(normalize_tags([" a ", "A", "b"]).unwrap(), vec!["a", "b"]);
        assert!(normalize_tags([""]).is_err());
        assert!(normalize_tags((0..21).map(|i| i.to_string())).is_err());
        // The 21st distinct tag ends it: the rest of a huge list is not read.
        let endless = (0..).map(|i: u32| {
            assert!(i <= 20, "read past the 21st distinct tag");
            i.to_string()
        });
        assert!(normalize_tags(endless).is_err());
        // Repeats are not new tags.
        assert_eq!(
            normalize_tags(std::iter::repeat_n("a", 1000)).unwrap(),
            vec!["a"]
        );
        assert!(normalize_tags(["x".repeat(41)]).is_err());
        assert!(normalize_tags(["a\nb"]).is_err(), "control characters");
        assert!(normalize_tags(["a\tb"]).is_err());
    }
}
