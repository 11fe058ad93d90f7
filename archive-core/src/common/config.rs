//! One configuration for every binary: a flat TOML file, then environment
//! variables, then `--set key=value` flags, each overriding the one before.
//!
//! The file is the one named by `--config`, else by `PGARCHIVE_CONFIG`, else
//! `/etc/pgarchive.toml` when it exists; without any, the defaults below
//! apply. Every key may also come from `PGARCHIVE_<KEY>` (upper case), e.g.
//! `PGARCHIVE_RETRY_COUNT=3`. Unknown keys are an error, so a typo never
//! silently falls back to a default.
//!
//! One convention for every duration and size: a duration is a number of
//! seconds or a value with units (`90s`, `15m`, `6h`, `2d`, `1h 30m`); a size
//! is a number of bytes or a value with a unit (`512MiB`, `4GiB`; `k`, `M`,
//! `G`, `T`, `KB`, `MB`, `GB`, `TB` mean the same binary multiples). Values
//! with a fixed set of choices are enums, checked when the file is read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::common::error::{Error, Result};

/// Default config file, read when present and nothing else names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pgarchive.toml";
/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "PGARCHIVE_CONFIG";

/// Default `pg_search_path`: Debian/Ubuntu's, then PGDG RPMs', then a
/// source build's installation directories.
pub const DEFAULT_PG_SEARCH_PATH: &str =
    "/usr/lib/postgresql/*/bin:/usr/pgsql-*/bin:/usr/local/pgsql/bin";
const ENV_PREFIX: &str = "PGARCHIVE_";

/// Every setting of the suite, with its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// ssh client config file passed as `ssh -F` (host aliases, keys,
    /// known_hosts). Default: ssh's own lookup.
    pub ssh_config: Option<PathBuf>,
    /// Directory for ssh control sockets (short path: sockets are limited
    /// to ~100 bytes). Default: `$XDG_RUNTIME_DIR/pgarchive` or
    /// `/tmp/pgarchive-<uid>`.
    pub runtime_dir: Option<PathBuf>,
    /// Directory for durable state: host health, push records, drops.
    /// Default: `$HOME/.pgarchive`.
    pub state_dir: Option<PathBuf>,
    /// Command line run on archive servers (ignored by a forced command).
    pub remote_command: String,
    /// Cipher preference for the ssh connections (`-o Ciphers=`): AES-GCM
    /// first, which costs about half the CPU of chacha20 on CPUs with AES
    /// instructions. Empty: ssh's own choice.
    pub ssh_ciphers: String,
    /// Seconds to establish an ssh connection.
    #[serde(deserialize_with = "seconds")]
    pub connect_timeout: u64,
    /// Seconds without progress after which a transfer counts as stalled.
    /// A long transfer that keeps moving never times out.
    #[serde(deserialize_with = "seconds")]
    pub io_timeout: u64,
    /// Seconds an idle ssh master connection stays open for later calls.
    #[serde(deserialize_with = "seconds")]
    pub control_persist: u64,
    /// Consecutive failures of a host before it goes into cooldown.
    pub retry_count: u32,
    /// Seconds a host in cooldown is tried only as a last resort.
    #[serde(deserialize_with = "seconds")]
    pub cooldown: u64,
    /// Look-ahead: when more than this many segments are `.ready`,
    /// archive-cmd sends the following ones in the same call.
    pub lookahead_threshold: usize,
    /// Look-ahead: most files sent by one archive-cmd call.
    pub lookahead_max: usize,
    /// Concurrent channels one archive-cmd call uses for look-ahead.
    pub parallel: usize,
    /// Opt-in push queue limit in bytes (pgBackRest's archive-push-queue-max):
    /// when no server accepts WAL and the `.ready` backlog exceeds this, the
    /// segment is acknowledged without being stored. Accepts "4GiB" etc.
    pub push_queue_max: Option<ByteSize>,
    /// Compress on the primary before sending (costs the primary's CPU).
    pub compress_on_primary: bool,
    /// archive-cmd waits until server 1 has forwarded the segment to server
    /// 2 before it returns. Off (the default), it returns once server 1 has
    /// it durably, with the forward recorded as owed until it is done, and
    /// server 1 forwards while the next segment arrives.
    pub wait_for_forward: bool,
    /// zstd level used by whoever compresses.
    pub compress_level: i32,
    /// Archive servers: directories under which DST-DIRs may live.
    pub archive_roots: Vec<PathBuf>,
    /// Archive servers: this server's own host alias (never forwards to it).
    pub server_name: Option<String>,
    /// Archive servers: seconds forwarding to the peer is skipped after a
    /// failure (segments are recorded as owed meanwhile).
    #[serde(deserialize_with = "seconds")]
    pub forward_cooldown: u64,
    /// Archive servers: most owed files delivered after one put.
    pub owed_batch: usize,
    /// Archive servers: the largest raw size accepted for a WAL file that
    /// is not a segment (`.history`, `.backup`); decoding one stops past it.
    /// Segments are bounded by PostgreSQL's largest segment (1 GiB).
    pub max_other_file_size: ByteSize,
    /// Archive servers: a lock a channel took (wal-sync, wal-cleanup) is
    /// released when the channel has sent no request but `hello` for this
    /// long, so a client cannot hold it forever by keeping the channel
    /// alive.
    #[serde(deserialize_with = "seconds")]
    pub lock_lease: u64,
    /// Archive servers: serve a key whose forced command names no `--role`
    /// (`archive-remote-cmd serve` alone) with every right, as before roles
    /// existed, logging a warning per channel. Off (the default), such a
    /// key is refused every request.
    pub allow_keys_without_role: bool,
    /// Only log warnings and errors.
    pub quiet: bool,
    /// base-backup / backup-queue: libpq connection string of the
    /// backup_queue database ("host=q.example port=5432 dbname=backup_queue
    /// user=backup", or a postgresql:// URL). No default: base-backup
    /// refuses to run without it.
    pub queue_dsn: Option<String>,
    /// base-backup, restore-backup: the one directory to take PostgreSQL's
    /// programs (pg_basebackup, pg_verifybackup, ...) from; its programs
    /// must be of the server's major version or newer. Unset (the
    /// default): the programs are looked for in `pg_search_path` and PATH.
    pub pg_bin_dir: Option<PathBuf>,
    /// Where PostgreSQL's programs are looked for when `pg_bin_dir` is
    /// unset: directories separated by ':', each may hold globs; then PATH.
    /// The program of the smallest major version at least the server's is
    /// taken (see `common::pg_programs`).
    pub pg_search_path: String,
    /// base-backup: pg_basebackup's `--compress` value,
    /// `[client-|server-]{none,gzip,lz4,zstd}[:DETAIL]`, e.g. "server-zstd:3"
    /// (compress on the standby) or "client-zstd:level=1,workers=4".
    pub backup_compress: BackupCompress,
    /// base-backup: pg_basebackup's `--checkpoint`: "spread" (PostgreSQL's
    /// default; on a standby the backup waits for the next restartpoint) or
    /// "fast".
    pub backup_checkpoint: Checkpoint,
    /// base-backup: pg_basebackup's `--max-rate` ("100M", "32k"); unset
    /// means no limit.
    pub backup_max_rate: Option<MaxRate>,
    /// base-backup: how a new backup is verified before it replaces an old
    /// one. "manifest": every file of the tar archives is read back
    /// (decompressed) and checked against backup_manifest (size, CRC32C or
    /// SHA checksum, no file missing or extra, the manifest's own SHA-256).
    /// "pg_verifybackup": the archives are extracted into a temp dir next to
    /// the backup and `pg_verifybackup --no-parse-wal` checks it (PostgreSQL
    /// 15's pg_verifybackup cannot read tar format itself); needs the
    /// backup's size again in free space.
    pub backup_verify: BackupVerify,
    /// base-backup: seconds between two pg_basebackup progress lines in the
    /// log; 0 (the default): none. Progress costs time: pg_basebackup's
    /// `--progress` makes the server walk the whole data directory to
    /// estimate its size before it sends anything (measured here: about a
    /// quarter more wall time for a 1.5 GiB cluster).
    #[serde(deserialize_with = "seconds")]
    pub backup_progress_interval: u64,
    /// base-backup: after each backup, run wal-cleanup and wal-sync with the
    /// peer (the task only counts as done when both succeed). Turn off only
    /// when they run on their own schedule.
    pub backup_wal_maintenance: bool,
    /// restore-cmd: a local directory searched first for the requested file
    /// (plain or compressed), e.g. segments an operator copied by hand.
    /// Unset: no manual directory.
    pub restore_manual_dir: Option<PathBuf>,
    /// restore-cmd: prefetch (fetch the segments after the requested one in
    /// the background into a per-standby buffer).
    pub restore_prefetch: bool,
    /// restore-cmd: most bytes of WAL the prefetch buffer holds, complete
    /// and in flight ("256MiB"). Below one segment, nothing is prefetched.
    pub restore_queue_max: ByteSize,
    /// restore-cmd: concurrent transfers of the prefetch worker (channels
    /// over the one ssh master connection of a host).
    pub restore_parallel: usize,
    /// restore-cmd: seconds without a request after which the prefetch
    /// worker empties the buffer and exits.
    #[serde(deserialize_with = "seconds")]
    pub restore_prefetch_idle: u64,
    /// restore-cmd: where prefetch buffers live. Unset: inside the data
    /// directory, `pg_wal/.restore-prefetch` (same file system as pg_wal, so
    /// a buffered segment is handed over by a rename). Set: a subdirectory
    /// per data directory (named by a hash of the machine's name and the
    /// directory's path), so two standbys never share a buffer, also when
    /// this directory is on a file system several machines share.
    pub restore_buffer_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ssh_config: None,
            runtime_dir: None,
            state_dir: None,
            remote_command: "archive-remote-cmd serve".to_string(),
            ssh_ciphers:
                "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-gcm@openssh.com"
                    .to_string(),
            connect_timeout: 10,
            io_timeout: 60,
            control_persist: 300,
            retry_count: 6,
            cooldown: 600,
            lookahead_threshold: 4,
            lookahead_max: 16,
            parallel: 2,
            push_queue_max: None,
            compress_on_primary: false,
            wait_for_forward: false,
            compress_level: 1,
            archive_roots: vec![PathBuf::from("/var/lib/pgarchive")],
            server_name: None,
            forward_cooldown: 30,
            owed_batch: 256,
            max_other_file_size: ByteSize(16 << 20),
            lock_lease: 3600,
            allow_keys_without_role: false,
            quiet: false,
            queue_dsn: None,
            pg_bin_dir: None,
            pg_search_path: DEFAULT_PG_SEARCH_PATH.into(),
            backup_compress: BackupCompress::parse("client-zstd:1").expect("valid default"),
            backup_checkpoint: Checkpoint::Spread,
            backup_max_rate: None,
            backup_verify: BackupVerify::Manifest,
            backup_progress_interval: 0,
            backup_wal_maintenance: true,
            restore_manual_dir: None,
            restore_prefetch: true,
            restore_queue_max: ByteSize(256 << 20),
            restore_parallel: 3,
            restore_prefetch_idle: 60,
            restore_buffer_dir: None,
        }
    }
}

/// A byte count written as a number or with a unit ("512MiB", "4GB").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_byte_size(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parses "123", "16MiB", "4 GB", "1k" (binary multiples either way: this
/// is a queue limit, not a marketing figure).
pub fn parse_byte_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 4GiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit (use KiB, MiB, GiB, TiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A duration key: an integer is seconds, a string is a duration with
/// units (`"15m"`, `"1h 30m"`) or bare seconds (`"90"`, from the
/// environment or `--set`).
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(n),
        Raw::S(s) => parse_duration(&s).map_err(serde::de::Error::custom),
    }
}

/// Parses a duration in whole seconds: "90", "90s", "15m", "6h", "2d",
/// "1h 30m" (humantime's syntax).
pub fn parse_duration(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        return t.parse().map_err(|_| format!("{s:?} is too large"));
    }
    humantime::parse_duration(t)
        .map(|d| d.as_secs())
        .map_err(|e| format!("{s:?} is not a duration like 90s, 15m, 6h or 2d: {e}"))
}

/// pg_basebackup's `--checkpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Checkpoint {
    /// PostgreSQL's default; on a standby the backup waits for the next
    /// restartpoint.
    Spread,
    /// Start at once.
    Fast,
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Checkpoint::Spread => "spread",
            Checkpoint::Fast => "fast",
        })
    }
}

/// How base-backup verifies a new backup (see `backup_verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupVerify {
    /// Every file read back and checked against backup_manifest.
    Manifest,
    /// Extracted next to the backup and checked by pg_verifybackup.
    PgVerifybackup,
}

impl std::fmt::Display for BackupVerify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackupVerify::Manifest => "manifest",
            BackupVerify::PgVerifybackup => "pg_verifybackup",
        })
    }
}

/// Where pg_basebackup compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressPlace {
    /// On the archive server, as the backup arrives.
    Client,
    /// On the database server, before sending.
    Server,
}

/// pg_basebackup's compression method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressMethod {
    /// Plain tar.
    None,
    /// `.tar.gz`.
    Gzip,
    /// `.tar.lz4`.
    Lz4,
    /// `.tar.zst`.
    Zstd,
}

/// `backup_compress`: pg_basebackup's `--compress` value,
/// `[client-|server-]{none,gzip,lz4,zstd}[:DETAIL]`, checked when read and
/// passed on as written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(into = "String")]
pub struct BackupCompress {
    /// Where it compresses (client when the prefix is left out).
    pub place: CompressPlace,
    /// The method.
    pub method: CompressMethod,
    spec: String,
}

impl BackupCompress {
    /// Parses and checks a `--compress` value.
    pub fn parse(spec: &str) -> std::result::Result<Self, String> {
        let spec = spec.trim();
        let head = spec.split(':').next().unwrap_or_default();
        let (place, method) = head.split_once('-').unwrap_or(("client", head));
        let place = match place {
            "client" => Some(CompressPlace::Client),
            "server" => Some(CompressPlace::Server),
            _ => None,
        };
        let method = match method {
            "none" => Some(CompressMethod::None),
            "gzip" => Some(CompressMethod::Gzip),
            "lz4" => Some(CompressMethod::Lz4),
            "zstd" => Some(CompressMethod::Zstd),
            _ => None,
        };
        match (place, method) {
            (Some(place), Some(method)) => Ok(BackupCompress {
                place,
                method,
                spec: spec.to_string(),
            }),
            _ => Err(format!(
                "backup_compress {spec:?}: expected [client-|server-]{{none,gzip,lz4,zstd}}[:DETAIL], e.g. \"client-zstd:1\""
            )),
        }
    }
}

impl std::fmt::Display for BackupCompress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.spec)
    }
}

impl From<BackupCompress> for String {
    fn from(c: BackupCompress) -> String {
        c.spec
    }
}

impl<'de> Deserialize<'de> for BackupCompress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        BackupCompress::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// `backup_max_rate`: pg_basebackup's `--max-rate`, kB/s with an optional
/// `k` or `M` ("100M", "32k"); checked when read, passed on as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxRate(String);

impl std::fmt::Display for MaxRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MaxRate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let rate = String::deserialize(d)?;
        let t = rate.trim();
        let digits = t.trim_end_matches(['k', 'K', 'm', 'M']);
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(serde::de::Error::custom(format!(
                "backup_max_rate {rate:?}: use a number of kB/s, optionally with k or M (\"100M\")"
            )));
        }
        Ok(MaxRate(t.to_string()))
    }
}

impl Config {
    /// Loads the file (see module docs), then `PGARCHIVE_*` variables, then
    /// `overrides` ("key=value", value in TOML syntax or a bare string).
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Config> {
        let env_path = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        let path = path.map(Path::to_path_buf).or(env_path).or_else(|| {
            let p = PathBuf::from(DEFAULT_CONFIG_PATH);
            p.exists().then_some(p)
        });
        let mut table = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    Error::Usage(format!("cannot read config {}: {e}", p.display()))
                })?;
                text.parse::<toml::Table>().map_err(|e| {
                    Error::Usage(format!("config {} is not valid TOML: {e}", p.display()))
                })?
            }
            None => toml::Table::new(),
        };
        let source = path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "defaults".into());
        for (key, value) in std::env::vars() {
            let Some(name) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if key == CONFIG_ENV {
                continue;
            }
            table.insert(name.to_ascii_lowercase(), parse_value(&value));
        }
        for o in overrides {
            let (k, v) = o.split_once('=').ok_or_else(|| {
                Error::Usage(format!(
                    "--set {o:?}: expected key=value, e.g. --set retry_count=3"
                ))
            })?;
            table.insert(k.trim().to_string(), parse_value(v.trim()));
        }
        let cfg: Config = toml::Value::Table(table).try_into().map_err(|e| {
            Error::Usage(format!("configuration ({source}, environment, flags): {e}"))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        if self.retry_count == 0 {
            return Err(Error::Usage("retry_count must be at least 1".into()));
        }
        if self.io_timeout == 0 || self.connect_timeout == 0 {
            return Err(Error::Usage(
                "io_timeout and connect_timeout must be at least 1 second".into(),
            ));
        }
        if !(1..=22).contains(&self.compress_level) {
            return Err(Error::Usage(
                "compress_level must be between 1 and 22".into(),
            ));
        }
        if self.parallel == 0 || self.lookahead_max == 0 {
            return Err(Error::Usage(
                "parallel and lookahead_max must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Stall timeout.
    pub fn io_timeout(&self) -> Duration {
        Duration::from_secs(self.io_timeout)
    }

    /// Connection timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout)
    }

    /// Where control sockets live.
    pub fn runtime_dir(&self) -> PathBuf {
        if let Some(d) = &self.runtime_dir {
            return d.clone();
        }
        if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
            return PathBuf::from(x).join("pgarchive");
        }
        PathBuf::from(format!(
            "/tmp/pgarchive-{}",
            rustix::process::getuid().as_raw()
        ))
    }

    /// Where durable state lives.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/var/lib/postgresql".into());
        PathBuf::from(home).join(".pgarchive")
    }
}

/// A value from the environment or a flag: TOML syntax when it parses
/// (numbers, booleans, arrays, quoted strings), else the bare string.
fn parse_value(v: &str) -> toml::Value {
    format!("x = {v}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("x"))
        .unwrap_or_else(|| toml::Value::String(v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags_override() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "retry_count = 3\ncooldown = 10\narchive_roots = [\"/a\"]\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&p),
            &["cooldown=20".into(), "push_queue_max=1GiB".into()],
        )
        .unwrap();
        assert_eq!(c.retry_count, 3);
        assert_eq!(c.cooldown, 20);
        assert_eq!(c.archive_roots, vec![PathBuf::from("/a")]);
        assert_eq!(c.push_queue_max, Some(ByteSize(1 << 30)));
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "retry_cuont = 3\n").unwrap();
        let e = Config::load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("retry_cuont"), "{e}");
    }

    #[test]
    fn backup_keys_are_checked() {
        let c = Config::load(
            None,
            &["backup_compress=server-zstd:level=3,workers=2".into()],
        )
        .unwrap();
        assert_eq!(c.backup_compress.place, CompressPlace::Server);
        assert_eq!(c.backup_compress.method, CompressMethod::Zstd);
        assert_eq!(
            c.backup_compress.to_string(),
            "server-zstd:level=3,workers=2"
        );
        let c = Config::load(None, &["backup_compress=gzip".into()]).unwrap();
        assert_eq!(c.backup_compress.place, CompressPlace::Client);
        assert_eq!(c.backup_compress.method, CompressMethod::Gzip);
        let c = Config::load(
            None,
            &[
                "backup_checkpoint=fast".into(),
                "backup_verify=pg_verifybackup".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.backup_checkpoint, Checkpoint::Fast);
        assert_eq!(c.backup_verify, BackupVerify::PgVerifybackup);
        for bad in [
            "backup_compress=client-bzip2",
            "backup_checkpoint=slow",
            "backup_verify=maybe",
            "backup_max_rate=fast",
        ] {
            let e = Config::load(None, &[bad.into()]).unwrap_err().to_string();
            let key = bad.split('=').next().unwrap();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_take_seconds_or_units() {
        let c = Config::load(
            None,
            &[
                "cooldown=15m".into(),
                "io_timeout=90".into(),
                "connect_timeout=\"20\"".into(),
                "restore_prefetch_idle=\"1h 30m\"".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.cooldown, 900);
        assert_eq!(c.io_timeout, 90);
        assert_eq!(c.connect_timeout, 20);
        assert_eq!(c.restore_prefetch_idle, 5400);
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("6h"), Ok(21_600));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("2 fortnights").is_err());
        let e = Config::load(None, &["cooldown=\"2 fortnights\"".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cooldown"), "{e}");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_byte_size("4 GB"), Ok(4 << 30));
        assert_eq!(parse_byte_size("100"), Ok(100));
        assert!(parse_byte_size("4 parsecs").is_err());
    }
}
