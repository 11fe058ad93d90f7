//! The JSON records kept in the buffer: [`Meta`] next to each buffered
//! segment (what the worker verified, to check the file against before it
//! is handed over) and [`Want`] (what PostgreSQL asked for last: the
//! worker's window).

use serde::{Deserialize, Serialize};

use super::FileId;
use crate::common::codec::Codec;
use crate::common::wal::WalName;

/// The record kept next to a buffered segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Decoded size.
    pub size: u64,
    /// [`content_digest`](crate::client::restore::verify::content_digest)
    /// of the decoded bytes (`blake3`: records of older versions, which
    /// never match and are refetched).
    #[serde(alias = "blake3")]
    pub digest: String,
    /// The archive's mtime of the file (when it was archived), Unix seconds.
    pub mtime: i64,
    /// Host it came from.
    pub host: String,
    /// Codec it was stored with.
    pub codec: Codec,
    /// SRC-DIR it came from.
    pub src_dir: String,
    /// The buffered file as the worker left it (absent in records of older
    /// versions: their files are hashed again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileId>,
}

/// What PostgreSQL asked for last: tells the worker which segments to fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Want {
    /// Timeline of the requested segment.
    pub tli: u32,
    /// Its segment number.
    pub segno: u64,
    /// True when `segno` itself was not handed over yet (delay): the worker
    /// fetches it too.
    pub include: bool,
    /// Segment size (the requested segment's page header, or pg_control's
    /// when the request is recorded before its bytes arrived).
    pub seg_size: u64,
    /// HOSTS of the restore_command.
    pub hosts: Vec<String>,
    /// SRC-DIR of the restore_command.
    pub src_dir: String,
    /// System identifier of the data directory, when known.
    pub sysid: Option<u64>,
    /// When it was asked for, Unix milliseconds.
    pub at_ms: i64,
}

impl Want {
    /// The segment numbers the buffer should hold, as an inclusive range;
    /// `None` when not even one segment fits in `queue_max`.
    pub(crate) fn window(&self, queue_max: u64) -> Option<(u64, u64)> {
        let k = queue_max / self.seg_size.max(1);
        if k == 0 {
            return None;
        }
        let first = self.segno + u64::from(!self.include);
        Some((first, first + k - 1))
    }

    /// Everything but the position: when it changes, the buffer is emptied.
    pub(crate) fn same_stream(&self, other: &Want) -> bool {
        self.tli == other.tli
            && self.seg_size == other.seg_size
            && self.hosts == other.hosts
            && self.src_dir == other.src_dir
            && self.sysid == other.sysid
    }

    /// The segment name for `segno` on this timeline.
    pub(crate) fn name(&self, segno: u64) -> WalName {
        WalName::from_segment_number(self.tli, segno, self.seg_size)
    }
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{want, MIB};

    #[test]
    fn window_follows_the_request_and_the_bound() {
        assert_eq!(want(10, false).window(4 * MIB), Some((11, 14)));
        assert_eq!(want(10, true).window(4 * MIB), Some((10, 13)));
        assert_eq!(want(10, false).window(4 * MIB + 1), Some((11, 14)));
        assert_eq!(want(10, false).window(MIB - 1), None);
    }
}
