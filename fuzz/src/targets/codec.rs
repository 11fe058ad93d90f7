//! `codec`: compressed (or not) content through `codec::sniff`,
//! `decoder_limited` and `zstd_frame_len`.
//!
//! Input: a codec byte (0 plain, 1 zstd, 2 gzip, 3 bzip2, 4 xz, 5 and up:
//! what `sniff` says), a limit byte (0, 1, 100, 4 KiB, 64 KiB, 1 MiB), then
//! the bytes. Properties: no panic; `sniff` says a codec only when the
//! bytes start with its signature; `decoder_limited` never yields more than
//! the limit (not even before its error), refuses xz, ends within a few
//! seconds; what decodes within a limit decodes the same within a larger
//! one; `zstd_frame_len` gives at most the input's length.

use std::io::{Cursor, Read, Write};
use std::time::{Duration, Instant};

use archive_core::common::codec::{decoder_limited, sniff, zstd_compress, zstd_frame_len, Codec};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::{ensure, Target};
use crate::mutate::{mutated, with_edits};

/// The target.
pub static TARGET: Target = Target {
    name: "codec",
    what: "compressed content, decoded with a size limit",
    check,
    strategy,
    seeds,
};

const LIMITS: [u64; 6] = [0, 1, 100, 4096, 64 << 10, 1 << 20];
const CODECS: [Codec; 5] = [
    Codec::Plain,
    Codec::Zstd,
    Codec::Gzip,
    Codec::Bzip2,
    Codec::Xz,
];

/// Longest a decode of at most 1 MiB may take (generous: debug builds,
/// a loaded machine).
const TIME_BOUND: Duration = Duration::from_secs(10);

/// Decodes `data` with `limit`: the bytes that came out and whether it
/// ended without error.
fn decode(codec: Codec, data: &[u8], limit: u64) -> Result<(Vec<u8>, bool), String> {
    let mut r = match decoder_limited(codec, data, limit) {
        Ok(r) => r,
        Err(e) => {
            ensure(codec == Codec::Xz, || {
                format!("{codec}: decoder_limited refused to start: {e}")
            })?;
            return Ok((Vec::new(), false));
        }
    };
    ensure(codec != Codec::Xz, || "xz was not refused".into())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 7919];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok((out, true)),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                ensure(out.len() as u64 <= limit, || {
                    format!(
                        "{codec}: {} bytes came out of a decoder limited to {limit}",
                        out.len()
                    )
                })?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Ok((out, false)),
        }
    }
}

/// The properties.
pub fn check(input: &[u8]) -> Result<(), String> {
    let (sel, limit, data) = match input {
        [c, l, rest @ ..] => (*c, LIMITS[usize::from(*l) % LIMITS.len()], rest),
        _ => (0, 0, &[][..]),
    };
    let sniffed = sniff(data);
    let signature: &[u8] = match sniffed {
        Codec::Plain => &[],
        Codec::Zstd => &[0x28, 0xB5, 0x2F, 0xFD],
        Codec::Gzip => &[0x1F, 0x8B, 0x08],
        Codec::Bzip2 => b"BZh",
        Codec::Xz => &[0xFD, b'7', b'z', b'X', b'Z', 0],
    };
    ensure(data.starts_with(signature), || {
        format!("sniff said {sniffed} without its signature")
    })?;
    if let Some(len) = zstd_frame_len(&mut Cursor::new(data)).map_err(|e| e.to_string())? {
        ensure(len <= data.len() as u64 && len > 0, || {
            format!("zstd_frame_len {len} for {} bytes", data.len())
        })?;
    }
    let codec = CODECS.get(usize::from(sel)).copied().unwrap_or(sniffed);
    let started = Instant::now();
    let (out, complete) = decode(codec, data, limit)?;
    let took = started.elapsed();
    ensure(took < TIME_BOUND, || {
        format!(
            "{codec}: decoding {} bytes with limit {limit} took {took:?}",
            data.len()
        )
    })?;
    if complete {
        let bigger = limit * 2 + 1;
        let (again, complete_again) = decode(codec, data, bigger)?;
        ensure(complete_again && again == out, || {
            format!(
                "{codec}: {} bytes within {limit}, other bytes within {bigger}",
                out.len()
            )
        })?;
    }
    Ok(())
}

/// Tokens for byte mutations: signatures and stream markers.
pub const DICT: &[&[u8]] = &[
    &[0x28, 0xB5, 0x2F, 0xFD],
    &[0x1F, 0x8B, 0x08],
    b"BZh9",
    &[0x31, 0x41, 0x59, 0x26, 0x53, 0x59],
    &[0x17, 0x72, 0x45, 0x38, 0x50, 0x90],
    &[0xFD, b'7', b'z', b'X', b'Z', 0],
    &[0x50, 0x2A, 0x4D, 0x18],
    &[0xFF, 0xFF, 0xFF, 0x7F],
];

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0usize..(2 << 20)).prop_map(|n| vec![0u8; n]),
        vec(any::<u8>(), 0..2048),
        (1usize..5000).prop_map(|n| {
            (0..n)
                .flat_map(|i| format!("record {i} of some WAL-ish data\n").into_bytes())
                .collect()
        }),
    ]
}

/// `data` compressed with `codec` (xz: a signature and noise).
pub fn compress(codec: Codec, data: &[u8], level: u32) -> Vec<u8> {
    match codec {
        Codec::Plain => data.to_vec(),
        Codec::Zstd => zstd_compress(data, level as i32 % 6 + 1).expect("zstd"),
        Codec::Gzip => {
            let mut e =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level % 9 + 1));
            e.write_all(data).expect("gzip");
            e.finish().expect("gzip")
        }
        Codec::Bzip2 => {
            let mut e =
                bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(level % 9 + 1));
            e.write_all(data).expect("bzip2");
            e.finish().expect("bzip2")
        }
        Codec::Xz => {
            let mut v = vec![0xFD, b'7', b'z', b'X', b'Z', 0, 0, 4];
            v.extend_from_slice(&data[..data.len().min(64)]);
            v
        }
    }
}

fn compressed() -> impl Strategy<Value = Vec<u8>> {
    (0u8..6, 0u8..6, payload(), 0u32..3, 1usize..3).prop_map(|(sel, limit, data, level, parts)| {
        let codec = CODECS[usize::from(sel) % CODECS.len()];
        let mut v = vec![sel, limit];
        for _ in 0..parts {
            v.extend(compress(codec, &data, level));
        }
        v
    })
}

/// Compressed streams and their mutations, corpus mutations, arbitrary
/// bytes after each codec's signature.
pub fn strategy(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let noise = (
        0u8..6,
        0u8..6,
        select(DICT.to_vec()),
        vec(any::<u8>(), 0..256),
    )
        .prop_map(|(c, l, sig, rest)| {
            let mut v = vec![c, l];
            v.extend_from_slice(sig);
            v.extend(rest);
            v
        });
    prop_oneof![
        1 => compressed(),
        4 => with_edits(compressed(), 6, DICT),
        4 => mutated(seeds, DICT),
        1 => noise,
    ]
    .boxed()
}

/// Each codec over text and over a bomb of zeros, with a small limit.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let text: Vec<u8> = (0..300)
        .flat_map(|i| format!("record {i} of some WAL-ish data\n").into_bytes())
        .collect();
    let zeros = vec![0u8; 1 << 20];
    let mut out = Vec::new();
    for (i, codec) in CODECS.into_iter().enumerate() {
        let mut v = vec![i as u8, 3];
        v.extend(compress(codec, &text, 1));
        out.push((format!("{codec}-text"), v));
        if codec != Codec::Plain && codec != Codec::Xz {
            let mut v = vec![i as u8, 4];
            v.extend(compress(codec, &zeros, 1));
            out.push((format!("{codec}-bomb-1mib"), v));
        }
    }
    let mut two = vec![1u8, 3];
    two.extend(compress(Codec::Zstd, b"one", 1));
    two.extend(compress(Codec::Zstd, b"two", 1));
    out.push(("zstd-two-frames".into(), two));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_pass() {
        for (name, input) in seeds() {
            assert_eq!(check(&input), Ok(()), "{name}");
        }
    }
}
