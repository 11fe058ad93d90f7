//! The page headers of every page of a segment, checked as the decoded
//! bytes stream past (a [`Sink`] for the restore's decoder, which checks
//! the first page's long header itself).
//!
//! Each page after the first starts with a short header: the segment's
//! magic, flags PostgreSQL defines (never the long-header flag), a
//! timeline no higher than the name's, and the page's own address. The
//! tail of a segment closed early (`pg_switch_wal`, `archive_timeout`) may
//! hold zeros or a recycled file's old pages, so a page that fails is
//! damage only when a later page holds this segment's WAL again: the
//! damaged page lies inside the written part.

use std::io;

use crate::client::restore::verify::{Sink, BUF_SIZE};
use crate::common::page_header::{self, LONG_HEADER_LEN, XLP_ALL_FLAGS, XLP_LONG_HEADER};
use crate::common::wal::WalName;

/// Bytes of a short page header checked (`XLogPageHeaderData` up to
/// `xlp_rem_len`).
const SHORT_HEADER_LEN: usize = 20;

/// What the first page said, once read.
#[derive(Debug, Clone, Copy)]
struct Segment {
    magic: u16,
    start: u64,
    block: u64,
}

/// A [`Sink`] that drops the decoded bytes after checking every page
/// header in them.
pub(super) struct PageCheck {
    buf: Vec<u8>,
    timeline: u32,
    name: WalName,
    /// Bytes taken so far.
    pos: u64,
    /// The first page's long header, while incomplete.
    head: Vec<u8>,
    /// Known once the long header is read; `None` after it, when it does
    /// not parse (the decoder reports that).
    segment: Option<Segment>,
    /// The long header was read (whatever it said).
    started: bool,
    /// The current page's short header, while incomplete.
    short: Vec<u8>,
    /// The first page that failed, not yet followed by a good one.
    pending_bad: Option<u64>,
    /// Failed pages followed by a good one: (first, how many).
    damaged: Option<(u64, u64)>,
    /// Pages that failed since the last good one.
    bad_run: u64,
}

impl PageCheck {
    /// A check for the pages of `name`.
    pub fn new(name: &WalName) -> PageCheck {
        PageCheck {
            buf: vec![0u8; BUF_SIZE],
            timeline: name.timeline(),
            name: name.clone(),
            pos: 0,
            head: Vec::with_capacity(LONG_HEADER_LEN),
            segment: None,
            started: false,
            short: Vec::with_capacity(SHORT_HEADER_LEN),
            pending_bad: None,
            damaged: None,
            bad_run: 0,
        }
    }

    /// The verdict once every byte was taken: the first damaged page and
    /// how many, if any.
    pub fn verdict(&self) -> Result<(), String> {
        match (self.damaged, self.segment) {
            (Some((page, n)), Some(s)) => Err(format!(
                "the page header of page {page} (offset {}){} is damaged, and later pages hold this segment's WAL",
                page * s.block,
                if n > 1 {
                    format!(" and of {} more page(s)", n - 1)
                } else {
                    String::new()
                }
            )),
            _ => Ok(()),
        }
    }

    fn read_long_header(&mut self) {
        self.started = true;
        self.segment = page_header::parse_long_header(&self.head)
            .ok()
            .map(|h| Segment {
                magic: h.magic,
                start: self.name.start_lsn(u64::from(h.seg_size)),
                block: u64::from(h.block_size),
            });
    }

    fn judge(&mut self, s: Segment, page: u64) {
        let h = &self.short;
        let magic = u16::from_le_bytes([h[0], h[1]]);
        let info = u16::from_le_bytes([h[2], h[3]]);
        let tli = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
        let addr = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
        let good = magic == s.magic
            && info & !XLP_ALL_FLAGS == 0
            && info & XLP_LONG_HEADER == 0
            && tli != 0
            && tli <= self.timeline
            && addr == s.start + page * s.block;
        if good {
            if let Some(first) = self.pending_bad.take() {
                self.damaged.get_or_insert((first, 0)).1 += self.bad_run;
            }
            self.bad_run = 0;
        } else {
            self.pending_bad.get_or_insert(page);
            self.bad_run += 1;
        }
    }
}

impl Sink for PageCheck {
    fn chunk(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    fn take(&mut self, n: usize) -> io::Result<()> {
        let mut at = 0;
        while at < n {
            if !self.started {
                let k = (LONG_HEADER_LEN - self.head.len()).min(n - at);
                self.head.extend_from_slice(&self.buf[at..at + k]);
                at += k;
                if self.head.len() == LONG_HEADER_LEN {
                    self.read_long_header();
                }
                continue;
            }
            let Some(s) = self.segment else {
                break;
            };
            let abs = self.pos + at as u64;
            let (page, off) = (abs / s.block, abs % s.block);
            if page >= 1 && off < SHORT_HEADER_LEN as u64 {
                let k = (SHORT_HEADER_LEN - off as usize).min(n - at);
                self.short.extend_from_slice(&self.buf[at..at + k]);
                at += k;
                if self.short.len() == SHORT_HEADER_LEN {
                    self.judge(s, page);
                    self.short.clear();
                }
            } else {
                let next = (page + 1) * s.block;
                at += ((next - abs) as usize).min(n - at);
            }
        }
        self.pos += n as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::restore::verify::tests::{segment, SEG};
    use std::io::Read;

    const NAME: &str = "000000010000000000000003";
    const BLOCK: usize = 8192;

    /// `segment(NAME)` with a short header on each of its first `pages`
    /// pages after the first; the rest as it is (zeros and noise, like a
    /// switched segment's tail).
    fn with_pages(pages: usize) -> Vec<u8> {
        let name = WalName::parse(NAME).unwrap();
        let mut seg = segment(NAME);
        let magic = u16::from_le_bytes([seg[0], seg[1]]);
        for p in 1..=pages {
            let at = p * BLOCK;
            seg[at..at + 2].copy_from_slice(&magic.to_le_bytes());
            seg[at + 2..at + 4].copy_from_slice(&0u16.to_le_bytes());
            seg[at + 4..at + 8].copy_from_slice(&1u32.to_le_bytes());
            let addr = name.start_lsn(SEG) + (p * BLOCK) as u64;
            seg[at + 8..at + 16].copy_from_slice(&addr.to_le_bytes());
        }
        seg
    }

    /// Feeds `bytes` in chunks of `step`.
    fn check(bytes: &[u8], step: usize) -> Result<(), String> {
        let mut c = PageCheck::new(&WalName::parse(NAME).unwrap());
        let mut input = bytes;
        loop {
            let want = step.min(c.chunk().len());
            let n = input.read(&mut c.chunk()[..want]).unwrap();
            if n == 0 {
                break;
            }
            c.take(n).unwrap();
        }
        c.verdict()
    }

    #[test]
    fn good_pages_and_an_unwritten_tail_pass() {
        let seg = with_pages(40);
        for step in [7, 4096, BUF_SIZE] {
            assert_eq!(check(&seg, step), Ok(()), "step {step}");
        }
        let all = with_pages(SEG as usize / BLOCK - 1);
        assert_eq!(check(&all, BUF_SIZE), Ok(()));
    }

    #[test]
    fn a_damaged_header_inside_the_written_part_is_named() {
        let mut seg = with_pages(40);
        seg[12 * BLOCK + 9] ^= 0x01;
        for step in [7, BUF_SIZE] {
            let e = check(&seg, step).unwrap_err();
            assert!(
                e.starts_with("the page header of page 12 (offset 98304)"),
                "{e}"
            );
        }
        // Two damaged pages.
        seg[13 * BLOCK] ^= 0x01;
        let e = check(&seg, BUF_SIZE).unwrap_err();
        assert!(e.contains("and of 1 more page(s)"), "{e}");
        // The last written page damaged looks like the tail: not found
        // here (the content digest finds it).
        let mut seg = with_pages(40);
        seg[40 * BLOCK + 9] ^= 0x01;
        assert_eq!(check(&seg, BUF_SIZE), Ok(()));
    }
}
