//! A small key-value store in the shape of LevelDB, on aioctx: puts go to a
//! write-ahead log and are acknowledged once it is fsynced; every so often
//! the log is rotated and the data so far is written to a new table file,
//! and a new manifest naming the live table and log is switched in by an
//! atomic rename of `CURRENT`; recovery reads `CURRENT`, the manifest, the
//! table and every log the manifest does not retire.
//!
//! ```text
//!  db/CURRENT            "MANIFEST-000007\n"          (switched by rename)
//!  db/MANIFEST-000007    table 5, log 6, checksum     (written once)
//!  db/TABLE-000005       sorted records, checksum     (written once)
//!  db/LOG-000006         records: len, crc, key, value (appended)
//!  db/LOG-000008         the log rotated to since     (found by listing)
//! ```
//!
//! The crash-safety protocol, every step of which a crash can interrupt:
//! a new file's name is durable once the directory is fsynced after its
//! creation (so is a rename); a file's contents once it is fsynced; a
//! record is acknowledged only after its log's fsync; a manifest points
//! only at files whose contents and names are durable; `CURRENT` is
//! replaced by writing, fsyncing and renaming a temporary file; and nothing
//! the old manifest needs is deleted until the rename that retires it is
//! durable. An fsync that fails ends the store (Linux has dropped the data
//! it could not write: nothing may be acknowledged on top of it).
//!
//! [`Bug`] plants one mistake at a time, each a crash bug real storage code
//! has had, selected at run time.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use aioctx::Context;
use aioctx::fs::{Dir, File, OpenOptions};

/// A mistake to plant in the store's crash-safety protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// The correct store.
    None,
    /// (a) `CURRENT`'s new contents are not fsynced before the rename that
    /// installs them: after a crash `CURRENT` may be empty.
    NoFsyncBeforeRename,
    /// (b) The directory is not fsynced after a new log is created: records
    /// acknowledged into it may vanish with its name.
    NoDirFsyncAfterLogCreate,
    /// (c) A failed fsync is retried and, the retry succeeding, the record
    /// acknowledged: Linux dropped the data the first fsync failed to write.
    RetryFsyncAfterEio,
    /// (d) The old table and log are deleted right after the rename that
    /// retires them, before the directory fsync that makes it durable.
    DeleteBeforeRenameIsDurable,
}

impl Bug {
    /// Every planted bug, with its letter.
    pub const PLANTED: [(char, Bug); 4] = [
        ('a', Bug::NoFsyncBeforeRename),
        ('b', Bug::NoDirFsyncAfterLogCreate),
        ('c', Bug::RetryFsyncAfterEio),
        ('d', Bug::DeleteBeforeRenameIsDurable),
    ];
}

/// Tells the store its process is gone (the simulator crashed under it):
/// from then on every operation fails before touching the disk, as a dead
/// process does nothing more.
pub type KillSwitch = Arc<dyn Fn() -> bool + Send + Sync>;

/// How a store runs.
#[derive(Clone)]
pub struct Options {
    /// The mistake to make, if any.
    pub bug: Bug,
    /// Puts per log before the log is rotated.
    pub rotate_every: usize,
    /// Puts into the new log before the data is flushed to a new table (a
    /// background compaction, run inline).
    pub flush_after: usize,
    /// Checked before every operation, if set.
    pub killed: Option<KillSwitch>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bug: Bug::None,
            rotate_every: 64,
            flush_after: 8,
            killed: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("bug", &self.bug)
            .field("rotate_every", &self.rotate_every)
            .field("flush_after", &self.flush_after)
            .finish_non_exhaustive()
    }
}

/// What a manifest names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Manifest {
    /// The live table, if any.
    table: Option<u64>,
    /// The oldest log not yet in the table: it and every later log replay.
    log: u64,
    /// The next file number to use.
    next: u64,
}

/// The store.
pub struct Store {
    dir: Dir,
    options: Options,
    /// Everything: the table and the logs, replayed.
    data: Data,
    manifest: Manifest,
    /// The manifest `CURRENT` names.
    manifest_number: u64,
    log: File,
    log_number: u64,
    log_end: u64,
    /// Puts into the current log, and whether it awaits a flush.
    log_puts: usize,
    flush_due: bool,
    /// An fsync failed: nothing more may be acknowledged.
    poisoned: bool,
}

/// Keys and their values.
pub type Data = BTreeMap<Vec<u8>, Vec<u8>>;

fn name(kind: &str, number: u64) -> String {
    format!("{kind}-{number:06}")
}

fn corrupt(what: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl Store {
    /// Opens the store in the directory `path` (which must exist), creating
    /// it if it has no `CURRENT`, recovering it otherwise: then it starts a
    /// fresh log, and writes everything recovered to a new table. File
    /// numbers go on past every file in the directory (a crash may have
    /// left files no manifest names).
    pub async fn open(
        ctx: &Context,
        path: impl AsRef<Path>,
        options: Options,
    ) -> io::Result<Store> {
        let dir = Dir::open(ctx, path.as_ref()).await?;
        let recovered = recover_in(&dir).await?;
        let past = recovered.highest + 1;
        let found = recovered.found.is_some();
        let (mut manifest, manifest_number, data) = match recovered.found {
            Some(found) => found,
            None => {
                // A new store: a manifest naming the log it starts with.
                let manifest = Manifest {
                    table: None,
                    log: past + 1,
                    next: past + 2,
                };
                Io::new(&dir, &options)
                    .install_manifest(past, &manifest)
                    .await?;
                (manifest, past, BTreeMap::new())
            }
        };
        let log_number = if found {
            let number = manifest.next.max(past);
            manifest.next = number + 1;
            number
        } else {
            manifest.log
        };
        let log = Io::new(&dir, &options).create_log(log_number).await?;
        let mut store = Store {
            dir,
            options,
            data,
            manifest,
            manifest_number,
            log,
            log_number,
            log_end: 0,
            log_puts: 0,
            flush_due: found,
            poisoned: false,
        };
        // What the old logs held goes to a table, and they are retired.
        if found {
            store.flush().await?;
        }
        Ok(store)
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.data.get(key).map(Vec::as_slice)
    }

    /// Stores `value` under `key`, durably: once this returns `Ok`, the put
    /// survives a crash (it is acknowledged).
    ///
    /// # Errors
    ///
    /// An I/O error; after a failed fsync, every later call fails too.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other("the store stopped after a failed fsync"));
        }
        let result = self.put_inner(key, value).await;
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    async fn put_inner(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let frame = encode_record(key, value);
        let len = frame.len() as u64;
        let io = Io::new(&self.dir, &self.options);
        io.write(&self.log, frame, self.log_end).await?;
        io.sync(&self.log).await?;
        self.log_end += len;
        self.data.insert(key.to_vec(), value.to_vec());
        self.log_puts += 1;
        if self.flush_due && self.log_puts >= self.options.flush_after {
            self.flush().await?;
        } else if !self.flush_due && self.log_puts >= self.options.rotate_every {
            self.rotate().await?;
        }
        Ok(())
    }

    /// Starts a new log; the records acknowledged so far stay in the old
    /// ones until a flush writes them to a table.
    async fn rotate(&mut self) -> io::Result<()> {
        let number = self.manifest.next;
        self.manifest.next += 1;
        self.log = Io::new(&self.dir, &self.options).create_log(number).await?;
        self.log_number = number;
        self.log_end = 0;
        self.log_puts = 0;
        self.flush_due = true;
        Ok(())
    }

    /// Writes everything to a new table, switches to a manifest naming it
    /// and the current log, and deletes what the old manifest needed.
    async fn flush(&mut self) -> io::Result<()> {
        let mut io = Io::new(&self.dir, &self.options);
        let table = self.manifest.next;
        let manifest_number = table + 1;
        let new = Manifest {
            table: Some(table),
            log: self.log_number,
            next: manifest_number + 1,
        };
        let file = io.create(&name("TABLE", table)).await?;
        io.write(&file, encode_table(&self.data), 0).await?;
        io.sync(&file).await?;
        file.close().await?;
        let old = (self.manifest, self.manifest_number);
        io.install_manifest(manifest_number, &new).await?;
        self.manifest = new;
        self.manifest_number = manifest_number;
        self.flush_due = false;
        // Retired: the old table, the old manifest, every older log.
        let mut retired = vec![name("MANIFEST", old.1)];
        retired.extend(old.0.table.map(|table| name("TABLE", table)));
        retired.extend((old.0.log..new.log).map(|log| name("LOG", log)));
        io.delete_retired(&retired).await
    }
}

/// The store's I/O, each step of the protocol in one place, each checking
/// the kill switch first; where a [`Bug`] is planted, it is planted here.
struct Io<'a> {
    dir: &'a Dir,
    options: &'a Options,
    /// Names deleted before the rename that retired them was durable (bug
    /// (d) only): the next directory fsync makes both durable.
    early: bool,
}

impl<'a> Io<'a> {
    fn new(dir: &'a Dir, options: &'a Options) -> Io<'a> {
        Io {
            dir,
            options,
            early: false,
        }
    }

    fn alive(&self) -> io::Result<()> {
        match &self.options.killed {
            Some(killed) if killed() => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the process died with the power",
            )),
            _ => Ok(()),
        }
    }

    fn bug(&self, bug: Bug) -> bool {
        self.options.bug == bug
    }

    async fn create(&self, name: &str) -> io::Result<File> {
        self.alive()?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open_at(self.dir, name)
            .await
    }

    async fn write(&self, file: &File, data: Vec<u8>, offset: u64) -> io::Result<()> {
        self.alive()?;
        file.write_all_at(data, offset).await.0
    }

    /// fsync; the correct store gives up on the first failure.
    async fn sync(&self, file: &File) -> io::Result<()> {
        self.alive()?;
        match file.sync_data().await {
            Err(e) if self.bug(Bug::RetryFsyncAfterEio) => {
                let _ = e;
                self.alive()?;
                file.sync_data().await
            }
            other => other,
        }
    }

    async fn sync_dir(&self) -> io::Result<()> {
        self.alive()?;
        self.dir.sync_all().await
    }

    /// A new, empty log whose name is durable before any record goes in.
    async fn create_log(&self, number: u64) -> io::Result<File> {
        let log = self.create(&name("LOG", number)).await?;
        if !self.bug(Bug::NoDirFsyncAfterLogCreate) {
            self.sync_dir().await?;
        }
        Ok(log)
    }

    /// Writes manifest `number` and points `CURRENT` at it: the manifest
    /// durable (contents and name), then `CURRENT` replaced atomically,
    /// then the replacement durable.
    async fn install_manifest(&mut self, number: u64, manifest: &Manifest) -> io::Result<()> {
        let file = self.create(&name("MANIFEST", number)).await?;
        self.write(&file, encode_manifest(manifest), 0).await?;
        self.sync(&file).await?;
        file.close().await?;
        self.sync_dir().await?;
        self.alive()?;
        let tmp = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open_at(self.dir, "CURRENT.tmp")
            .await?;
        self.write(
            &tmp,
            format!("{}\n", name("MANIFEST", number)).into_bytes(),
            0,
        )
        .await?;
        if !self.bug(Bug::NoFsyncBeforeRename) {
            self.sync(&tmp).await?;
        }
        tmp.close().await?;
        self.alive()?;
        self.dir.rename("CURRENT.tmp", self.dir, "CURRENT").await?;
        self.early = self.bug(Bug::DeleteBeforeRenameIsDurable);
        if !self.early {
            self.sync_dir().await?;
        }
        Ok(())
    }

    /// Deletes what the manifest just retired. Not fsynced: a crash that
    /// brings a name back leaves garbage, which recovery ignores.
    async fn delete_retired(&self, names: &[String]) -> io::Result<()> {
        for name in names {
            self.alive()?;
            match self.dir.remove_file(name).await {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        if self.early {
            self.sync_dir().await?;
        }
        Ok(())
    }
}

/// Reads the store in `path` without changing anything: its data, or `None`
/// for a store never created (no `CURRENT`).
///
/// # Errors
///
/// An I/O error, or `InvalidData` for a store a crash left inconsistent
/// (what the correct store never does).
pub async fn recover(ctx: &Context, path: impl AsRef<Path>) -> io::Result<Option<Data>> {
    let dir = Dir::open(ctx, path.as_ref()).await?;
    let recovered = recover_in(&dir).await?;
    dir.close().await?;
    Ok(recovered.found.map(|(_, _, data)| data))
}

/// What recovery found: the manifest `CURRENT` names, its number and the
/// data, if there is a `CURRENT`; and the highest file number in the
/// directory.
struct Recovered {
    found: Option<(Manifest, u64, Data)>,
    highest: u64,
}

/// The number in a store file's name (`LOG-000006` is 6), and its kind.
fn parse_name(name: &str) -> Option<(&str, u64)> {
    let (kind, number) = name.split_once('-')?;
    Some((kind, number.parse().ok()?))
}

async fn recover_in(dir: &Dir) -> io::Result<Recovered> {
    let listed: Vec<(String, u64)> = dir
        .entries()
        .await?
        .iter()
        .filter_map(|entry| {
            let (kind, number) = parse_name(entry.file_name().to_str()?)?;
            Some((kind.to_owned(), number))
        })
        .collect();
    let highest = listed.iter().map(|&(_, number)| number).max().unwrap_or(0);
    let Some(current) = read(dir, "CURRENT").await? else {
        return Ok(Recovered {
            found: None,
            highest,
        });
    };
    let current = String::from_utf8(current).map_err(corrupt)?;
    let number = current
        .strip_suffix('\n')
        .and_then(|line| line.strip_prefix("MANIFEST-"))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| corrupt(format!("CURRENT is corrupt: {current:?}")))?;
    let manifest_name = name("MANIFEST", number);
    let bytes = read(dir, &manifest_name)
        .await?
        .ok_or_else(|| corrupt(format!("CURRENT names {manifest_name}, which is missing")))?;
    let manifest =
        decode_manifest(&bytes).ok_or_else(|| corrupt(format!("{manifest_name} is corrupt")))?;
    let mut data = BTreeMap::new();
    if let Some(table) = manifest.table {
        let table_name = name("TABLE", table);
        let bytes = read(dir, &table_name).await?.ok_or_else(|| {
            corrupt(format!(
                "{manifest_name} names {table_name}, which is missing"
            ))
        })?;
        data = decode_table(&bytes).ok_or_else(|| corrupt(format!("{table_name} is corrupt")))?;
    }
    // The manifest's log and every later one, in order: listed, as a log
    // rotated to after the manifest was written is named nowhere else.
    let mut logs: Vec<u64> = listed
        .iter()
        .filter(|(kind, number)| kind == "LOG" && *number >= manifest.log)
        .map(|&(_, number)| number)
        .collect();
    logs.sort_unstable();
    if logs.first() != Some(&manifest.log) && manifest.table.is_some() {
        return Err(corrupt(format!(
            "{manifest_name} names {}, which is missing",
            name("LOG", manifest.log)
        )));
    }
    for log in logs {
        let bytes = read(dir, &name("LOG", log)).await?.unwrap_or_default();
        for (key, value) in decode_records(&bytes) {
            data.insert(key, value);
        }
    }
    Ok(Recovered {
        found: Some((manifest, number, data)),
        highest,
    })
}

/// The whole file `name`, or `None` if there is none.
async fn read(dir: &Dir, name: &str) -> io::Result<Option<Vec<u8>>> {
    let file = match OpenOptions::new().read(true).open_at(dir, name).await {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata().await?.len() as usize;
    let (result, data) = file.read_exact_at(vec![0u8; len], 0).await;
    result?;
    file.close().await?;
    Ok(Some(data))
}

// Formats: a record is `len u32 | crc u32 | key len u32 | key | value`; a
// table is its records back to back and a trailing crc of everything; a
// manifest is three lines and a crc line.

fn encode_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut payload = (key.len() as u32).to_le_bytes().to_vec();
    payload.extend_from_slice(key);
    payload.extend_from_slice(value);
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// The records of a log up to the first one that is torn or corrupt.
fn decode_records(bytes: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if len < 4 || crc32(payload) != crc {
            break;
        }
        let key_len = u32::from_le_bytes(payload[..4].try_into().unwrap()) as usize;
        let Some(key) = payload.get(4..4 + key_len) else {
            break;
        };
        records.push((key.to_vec(), payload[4 + key_len..].to_vec()));
        at += 8 + len;
    }
    records
}

fn encode_table(data: &Data) -> Vec<u8> {
    let mut table = Vec::new();
    for (key, value) in data {
        table.extend(encode_record(key, value));
    }
    table.extend_from_slice(&crc32(&table).to_le_bytes());
    table
}

fn decode_table(bytes: &[u8]) -> Option<Data> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    Some(decode_records(body).into_iter().collect())
}

fn encode_manifest(manifest: &Manifest) -> Vec<u8> {
    let table = manifest.table.map_or(0, |t| t);
    let body = format!(
        "table {table}\nlog {}\nnext {}\n",
        manifest.log, manifest.next
    );
    format!("{body}crc {}\n", crc32(body.as_bytes())).into_bytes()
}

fn decode_manifest(bytes: &[u8]) -> Option<Manifest> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (body, crc) = text.rsplit_once("crc ")?;
    if crc32(body.as_bytes()) != crc.strip_suffix('\n')?.parse().ok()? {
        return None;
    }
    let mut fields = body.lines().map(|line| {
        line.split_once(' ')
            .and_then(|(_, n)| n.parse::<u64>().ok())
    });
    let (table, log, next) = (fields.next()??, fields.next()??, fields.next()??);
    Some(Manifest {
        table: (table != 0).then_some(table),
        log,
        next,
    })
}

/// CRC-32 (IEEE), a byte at a time from a table built at compile time.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &byte in data {
        crc = (crc >> 8) ^ TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize];
    }
    !crc
}
