//! Byte-level mutations of seed inputs, as a proptest strategy (so a
//! failing mutation shrinks to fewer, smaller edits).

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// One edit of a byte string.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Flips one bit.
    Flip(Index, u8),
    /// Sets one byte.
    Set(Index, u8),
    /// Writes a boundary value (0, 1, 0x7F, 0x80, 0xFF, ...) of 1, 2, 4 or
    /// 8 bytes, little or big endian.
    Boundary(Index, u8, u8),
    /// Inserts bytes.
    Insert(Index, Vec<u8>),
    /// Inserts a token of the target's dictionary.
    Token(Index, Index),
    /// Removes up to that many bytes.
    Delete(Index, u8),
    /// Cuts the input there.
    Truncate(Index),
    /// Copies a chunk to another place.
    Duplicate(Index, Index, u8),
}

const BOUNDARIES: [u64; 10] = [
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x7FFF,
    0xFFFF,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    u64::MAX,
];

fn at(i: &Index, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        i.index(len)
    }
}

impl Mutation {
    /// Applies the edit; `dict` holds the target's tokens.
    pub fn apply(&self, data: &mut Vec<u8>, dict: &[&[u8]]) {
        let len = data.len();
        match self {
            Mutation::Flip(i, bit) if len > 0 => data[at(i, len)] ^= 1 << (bit % 8),
            Mutation::Set(i, b) if len > 0 => data[at(i, len)] = *b,
            Mutation::Boundary(i, which, shape) if len > 0 => {
                let v = BOUNDARIES[usize::from(*which) % BOUNDARIES.len()];
                let width = [1usize, 2, 4, 8][usize::from(shape % 4)];
                let (le, be) = (v.to_le_bytes(), v.to_be_bytes());
                let bytes = if shape & 4 == 0 {
                    &le[..width]
                } else {
                    &be[8 - width..]
                };
                let start = at(i, len);
                let end = (start + width).min(len);
                let src = &bytes[..end - start];
                data[start..end].copy_from_slice(src);
            }
            Mutation::Insert(i, bytes) => {
                let p = at(i, len + 1);
                data.splice(p..p, bytes.iter().copied());
            }
            Mutation::Token(i, t) if !dict.is_empty() => {
                let p = at(i, len + 1);
                let tok = dict[t.index(dict.len())];
                data.splice(p..p, tok.iter().copied());
            }
            Mutation::Delete(i, n) if len > 0 => {
                let p = at(i, len);
                let end = (p + usize::from(*n) + 1).min(len);
                data.drain(p..end);
            }
            Mutation::Truncate(i) => data.truncate(at(i, len + 1)),
            Mutation::Duplicate(from, to, n) if len > 0 => {
                let s = at(from, len);
                let e = (s + usize::from(*n) + 1).min(len);
                let chunk = data[s..e].to_vec();
                let p = at(to, len + 1);
                data.splice(p..p, chunk);
            }
            _ => {}
        }
    }
}

/// A strategy for one edit.
pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        2 => (any::<Index>(), any::<u8>(), any::<u8>())
            .prop_map(|(i, w, s)| Mutation::Boundary(i, w, s)),
        1 => (any::<Index>(), vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::Token(i, t)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), any::<Index>(), any::<u8>())
            .prop_map(|(f, t, n)| Mutation::Duplicate(f, t, n)),
    ]
}

/// Inputs made by applying 1 to 8 edits to one of `seeds` (arbitrary
/// bytes when there are none).
pub fn mutated(seeds: Vec<Vec<u8>>, dict: &'static [&'static [u8]]) -> BoxedStrategy<Vec<u8>> {
    if seeds.is_empty() {
        return vec(any::<u8>(), 0..256).boxed();
    }
    (select(seeds), vec(mutation(), 1..8))
        .prop_map(move |(mut data, edits)| {
            for m in &edits {
                m.apply(&mut data, dict);
            }
            data
        })
        .boxed()
}

/// `edits` applied to `data` (for strategies that mutate what they built).
pub fn with_edits(
    base: impl Strategy<Value = Vec<u8>>,
    max_edits: usize,
    dict: &'static [&'static [u8]],
) -> impl Strategy<Value = Vec<u8>> {
    (base, vec(mutation(), 0..=max_edits)).prop_map(move |(mut data, edits)| {
        for m in &edits {
            m.apply(&mut data, dict);
        }
        data
    })
}
