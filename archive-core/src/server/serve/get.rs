//! Streaming a file back to the client: a stored archive file
//! (`Request::Get`) or one file of a backup (`Request::GetBackupFile`), as
//! a `Reply::File` header, the bytes, and a `Reply::End` with their checksum.
//! An archive file's header carries the raw content's digest recorded when
//! it was accepted, which the reader proves (see `server::store::digest`).
//! An Archive 2.0 plain backup's `base.tar` is made from its directory.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::common::durable;
use crate::common::error::{Error, Result};
use crate::net::wire::{self, Reply};
use crate::server::backups;

use super::Server;

/// What is sent: its bytes, size, mtime and recorded raw digest.
type Opened = (Box<dyn Read + Send>, u64, i64, Option<blake3::Hash>);

/// An Archive 2.0 plain backup as one tar archive, made by a thread as it
/// is sent (a failure there shortens the stream, which the client detects).
fn plain_as_tar(slot: PathBuf) -> Result<Opened> {
    let size = backups::plain_tar_size(&slot)?;
    let (reader, writer) =
        std::io::pipe().map_err(|e| Error::io("cannot make a pipe for", &slot, e))?;
    std::thread::spawn(move || {
        if let Err(e) = backups::write_plain_tar(&slot, writer) {
            crate::common::log::warn(format!("{}: {e}", slot.display()));
        }
    });
    Ok((Box::new(reader), size, 0, None))
}

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
                if name == backups::PLAIN_AS_TAR
                    && !path.exists()
                    && backups::legacy_layout(&slot)? == Some(backups::Legacy::Plain)
                {
                    return plain_as_tar(slot);
                }
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
                Ok((Box::new(file) as Box<dyn Read + Send>, len, 0, None))
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
        let opened = self
            .store
            .open(dir, name)
            .map(|(f, size, mtime, h)| (Box::new(f) as Box<dyn Read + Send>, size, mtime, h));
        self.stream(output, name, opened, t).await
    }

    async fn stream<W: AsyncWrite + Unpin>(
        &mut self,
        output: &mut W,
        name: &str,
        opened: Result<Opened>,
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
