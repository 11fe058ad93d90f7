//! The first source of a restore: the local manual directory
//! (`restore_manual_dir`), where an operator can put files by hand. A file
//! there that does not verify is skipped (logged), and the call goes on to
//! the buffer and the hosts.

use std::fs::File;
use std::io;
use std::path::Path;

use super::verify::{self, Check, VerifyError};
use super::{commit_replace, Restored, Source};
use crate::common::durable::AtomicFile;
use crate::common::error::{Error, Result};
use crate::common::log;

/// Puts the manual directory's copy of the file at `dest`, verified;
/// `None` when it has none, or none that verifies.
pub(super) fn from_manual(dir: &Path, check: &Check, dest: &Path) -> Result<Option<Restored>> {
    let path = dir.join(check.name.as_str());
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot open", &path, e)),
    };
    let mut out = AtomicFile::create(dest)?;
    match verify::decode_verify(
        io::BufReader::with_capacity(verify::BUF_SIZE, file),
        &mut out,
        check,
    ) {
        Ok(v) => {
            commit_replace(out, dest)?;
            Ok(Some(Restored {
                source: Source::Manual(dir.to_path_buf()),
                size: v.size,
                codec: v.codec,
            }))
        }
        Err(VerifyError::Bad(m)) => {
            log::warn(format!(
                "{} in the manual directory is not usable ({m}); trying the archive",
                path.display()
            ));
            Ok(None)
        }
        Err(VerifyError::Write(e)) => Err(Error::io("cannot write", dest, e)),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::tests::{data_dir, no_worker_cfg, request};
    use super::super::{restore, Source};
    use super::verify;
    use crate::common::codec::Codec;

    #[tokio::test]
    async fn manual_directory_comes_first_and_bad_files_there_are_skipped() {
        let d = data_dir();
        let manual = tempfile::tempdir().unwrap();
        let mut cfg = no_worker_cfg(d.path());
        cfg.restore_manual_dir = Some(manual.path().to_path_buf());
        let name = "000000010000000000000009";
        let seg = verify::tests::segment(name);
        fs::write(manual.path().join(name), verify::tests::zstd(&seg)).unwrap();
        let r = restore(&cfg, &request(d.path(), name, None)).await.unwrap();
        assert!(matches!(r.source, Source::Manual(_)));
        assert_eq!(r.codec, Codec::Zstd);
        assert_eq!(fs::read(d.path().join("pg_wal/RECOVERYXLOG")).unwrap(), seg);
        // A wrong file there is not used (and the unreachable host fails).
        fs::write(manual.path().join(name), &seg[..1000]).unwrap();
        fs::remove_file(d.path().join("pg_wal/RECOVERYXLOG")).unwrap();
        assert!(restore(&cfg, &request(d.path(), name, None)).await.is_err());
        assert!(!d.path().join("pg_wal/RECOVERYXLOG").exists());
    }
}
