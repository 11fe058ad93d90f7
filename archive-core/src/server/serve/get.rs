//! Streaming a file back to the client: a stored archive file
//! (`Request::Get`) or one file of a backup (`Request::GetBackupFile`), as
//! a `Reply::File` header, the bytes, and a `Reply::End` with their checksum.
//! An archive file's header carries the raw content's digest recorded when
//! it was accepted, which the reader proves (see `server::store::digest`).

use std::fs::File;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::common::durable;
use crate::common::error::{Error, Result};
use crate::net::wire::{self, Reply};

use super::Server;

impl Server {
    pub(super) async fn send_backup_file<W: AsyncWrite + Unpin>(
        &mut self,
        output: &mut W,
        backup_dir: &str,
        index: u32,
        name: &str,
    ) -> Result<()> {
        let t = self.cfg.io_timeout();
        let simple = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        let opened = if !simple {
            Err(Error::Refused(format!(
                "{name:?} is not a backup file name"
            )))
        } else {
            self.store.backup_dir(backup_dir).and_then(|dir| {
                let slot = crate::server::backups::slot(&dir, index);
                if slot
                    .symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_symlink())
                {
                    return Err(Error::Refused(format!(
                        "{} is a symbolic link, not a backup",
                        slot.display()
                    )));
                }
                let path = slot.join(name);
                let file = durable::open_no_follow(&path).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        Error::NotFound(format!("{} does not exist", path.display()))
                    }
                    _ => Error::io("cannot open", &path, e),
                })?;
                let len = file
                    .metadata()
                    .map_err(|e| Error::io("cannot stat", &path, e))?
                    .len();
                Ok((file, len, 0, None))
            })
        };
        self.stream(output, name, opened, t).await
    }

    /// Streams a stored file: header reply, bytes, checksum reply.
    pub(super) async fn send_file<W: AsyncWrite + Unpin>(
        &mut self,
        output: &mut W,
        dir: &str,
        name: &str,
    ) -> Result<()> {
        let t = self.cfg.io_timeout();
        let opened = self.store.open(dir, name);
        self.stream(output, name, opened, t).await
    }

    async fn stream<W: AsyncWrite + Unpin>(
        &mut self,
        output: &mut W,
        name: &str,
        opened: Result<(File, u64, i64, Option<blake3::Hash>)>,
        t: Duration,
    ) -> Result<()> {
        let (mut file, size, mtime, recorded) = match opened {
            Ok(v) => v,
            Err(e) => return wire::write_frame(output, &Reply::from_error(&e), t).await,
        };
        let header = Reply::File {
            size,
            mtime,
            raw_blake3: recorded.map(|h| h.to_hex().to_string()),
        };
        wire::write_frame(output, &header, t).await?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; wire::CHUNK];
        let mut remaining = size;
        while remaining > 0 {
            let want = buf.len().min(remaining as usize);
            let n = std::io::Read::read(&mut file, &mut buf[..want])
                .map_err(|e| Error::io("cannot read", name, e))?;
            if n == 0 {
                // Shrank under us: the client sees a short stream and fails.
                return Err(Error::Protocol(format!("{name} shrank while being sent")));
            }
            hasher.update(&buf[..n]);
            wire::stall(t, "sending file data", output.write_all(&buf[..n])).await?;
            remaining -= n as u64;
        }
        let end = Reply::End {
            checksum: hasher.finalize().to_hex().to_string(),
        };
        wire::write_frame(output, &end, t).await
    }
}
