//! [`FileNvm`]: the card's non-volatile memory in one file.
//!
//! Every `write`/`erase` rewrites the whole image to a temporary file in the
//! same directory, `fsync`s it, renames it over the state file and
//! `fsync`s the directory. Rename is atomic on POSIX file systems, so a
//! power cut (or a killed process) leaves the old or the new image — the
//! one-write-at-a-time atomicity the applet's journal relies on.
//!
//! File format (version 1): magic `KSCARD01`, then records as
//! `id: u16 BE, len: u16 BE, bytes`, then a SHA-free CRC-less end: the file
//! is never partially written, so no checksum is needed; a file that does
//! not parse is refused as corrupt rather than guessed at.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use kessai_card::nvm::{MAX_RECORD_LEN, Nvm, NvmError, RecordId};

const MAGIC: &[u8; 8] = b"KSCARD01";

/// Card memory persisted in one file.
#[derive(Debug)]
pub struct FileNvm {
    path: PathBuf,
    records: BTreeMap<RecordId, Vec<u8>>,
}

/// Failures opening a state file.
#[derive(Debug, thiserror::Error)]
pub enum FileNvmError {
    /// Reading or creating the file failed.
    #[error("card state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a kessai card image.
    #[error("card state file {0} is not a kessai card image (or is corrupt)")]
    Corrupt(PathBuf),
    /// [`FileNvm::create`] found a file already there.
    #[error("card state file {0} already exists; refusing to overwrite an existing card")]
    Exists(PathBuf),
}

impl FileNvm {
    /// Opens an existing state file.
    pub fn open(path: &Path) -> Result<Self, FileNvmError> {
        let bytes = std::fs::read(path).map_err(|source| FileNvmError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let records = parse(&bytes).ok_or_else(|| FileNvmError::Corrupt(path.to_path_buf()))?;
        Ok(Self {
            path: path.to_path_buf(),
            records,
        })
    }

    /// Creates a new, empty state file; refuses to overwrite one.
    pub fn create(path: &Path) -> Result<Self, FileNvmError> {
        if path.exists() {
            return Err(FileNvmError::Exists(path.to_path_buf()));
        }
        let nvm = Self {
            path: path.to_path_buf(),
            records: BTreeMap::new(),
        };
        nvm.persist(&nvm.records)
            .map_err(|source| FileNvmError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(nvm)
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn persist(&self, records: &BTreeMap<RecordId, Vec<u8>>) -> std::io::Result<()> {
        let mut image = MAGIC.to_vec();
        for (id, data) in records {
            image.extend_from_slice(&id.0.to_be_bytes());
            let len =
                u16::try_from(data.len()).map_err(|_| std::io::Error::other("record too large"))?;
            image.extend_from_slice(&len.to_be_bytes());
            image.extend_from_slice(data);
        }
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "card".into())
        ));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&image)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn update(&mut self, f: impl FnOnce(&mut BTreeMap<RecordId, Vec<u8>>)) -> Result<(), NvmError> {
        let mut next = self.records.clone();
        f(&mut next);
        self.persist(&next)
            .map_err(|e| NvmError::Failure(e.to_string()))?;
        self.records = next;
        Ok(())
    }
}

fn parse(bytes: &[u8]) -> Option<BTreeMap<RecordId, Vec<u8>>> {
    let mut rest = bytes.strip_prefix(MAGIC.as_slice())?;
    let mut out = BTreeMap::new();
    while !rest.is_empty() {
        if rest.len() < 4 {
            return None;
        }
        let id = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        rest = &rest[4..];
        if rest.len() < len || len > MAX_RECORD_LEN {
            return None;
        }
        if out.insert(RecordId(id), rest[..len].to_vec()).is_some() {
            return None;
        }
        rest = &rest[len..];
    }
    Some(out)
}

impl Nvm for FileNvm {
    fn read(&self, id: RecordId) -> Result<Option<Vec<u8>>, NvmError> {
        Ok(self.records.get(&id).cloned())
    }

    fn write(&mut self, id: RecordId, data: &[u8]) -> Result<(), NvmError> {
        if data.len() > MAX_RECORD_LEN {
            return Err(NvmError::TooLarge);
        }
        self.update(|r| {
            r.insert(id, data.to_vec());
        })
    }

    fn erase(&mut self, id: RecordId) -> Result<(), NvmError> {
        if !self.records.contains_key(&id) {
            return Ok(());
        }
        self.update(|r| {
            r.remove(&id);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_and_erase() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("card.state");
        let mut n = FileNvm::create(&p).unwrap();
        n.write(RecordId(1), b"hello").unwrap();
        n.write(RecordId(7), &[0u8; 300]).unwrap();
        n.write(RecordId(1), b"world").unwrap();
        let mut m = FileNvm::open(&p).unwrap();
        assert_eq!(m.read(RecordId(1)).unwrap().unwrap(), b"world");
        assert_eq!(m.read(RecordId(7)).unwrap().unwrap().len(), 300);
        m.erase(RecordId(7)).unwrap();
        let k = FileNvm::open(&p).unwrap();
        assert_eq!(k.read(RecordId(7)).unwrap(), None);
        assert!(FileNvm::create(&p).is_err(), "must not overwrite a card");
    }

    /// A crash between writing the temporary image and the rename leaves a
    /// (possibly half-written) `.NAME.tmp` beside the state file. Opening
    /// the card reads the old image only, and the next write replaces the
    /// stale temporary file instead of picking anything up from it.
    #[test]
    fn crash_before_the_rename_leaves_the_old_image() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("card.state");
        let mut n = FileNvm::create(&p).unwrap();
        n.write(RecordId(1), b"old").unwrap();
        let old_image = std::fs::read(&p).unwrap();
        // What a crash mid-`persist` of a later write would leave: a
        // complete new image, and a torn one, as the temporary file.
        let tmp = dir.path().join(".card.state.tmp");
        let mut next = n.records.clone();
        next.insert(RecordId(2), b"never renamed".to_vec());
        let crashed = FileNvm {
            path: tmp.clone(),
            records: next.clone(),
        };
        crashed.persist(&next).unwrap();
        let full_tmp = std::fs::read(&tmp).unwrap();
        for torn in [full_tmp.clone(), full_tmp[..full_tmp.len() / 2].to_vec()] {
            std::fs::write(&tmp, &torn).unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), old_image);
            let mut m = FileNvm::open(&p).unwrap();
            assert_eq!(m.read(RecordId(1)).unwrap().unwrap(), b"old");
            assert_eq!(m.read(RecordId(2)).unwrap(), None);
            // The next write goes through and the stale file is gone.
            m.write(RecordId(3), b"after").unwrap();
            let k = FileNvm::open(&p).unwrap();
            assert_eq!(k.read(RecordId(1)).unwrap().unwrap(), b"old");
            assert_eq!(k.read(RecordId(2)).unwrap(), None);
            assert_eq!(k.read(RecordId(3)).unwrap().unwrap(), b"after");
            assert!(!tmp.exists());
            // Back to the one-record card for the next round.
            let mut k = k;
            k.erase(RecordId(3)).unwrap();
        }
    }

    #[test]
    fn corrupt_or_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"not a card").unwrap();
        assert!(matches!(FileNvm::open(&p), Err(FileNvmError::Corrupt(_))));
        let mut img = MAGIC.to_vec();
        img.extend_from_slice(&[0, 1, 0, 9, 1, 2]); // length past the end
        std::fs::write(&p, img).unwrap();
        assert!(matches!(FileNvm::open(&p), Err(FileNvmError::Corrupt(_))));
        assert!(matches!(
            FileNvm::open(&dir.path().join("missing")),
            Err(FileNvmError::Io { .. })
        ));
    }

    #[test]
    fn too_large_records_are_refused_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("card.state");
        let mut n = FileNvm::create(&p).unwrap();
        assert_eq!(
            n.write(RecordId(1), &vec![0; MAX_RECORD_LEN + 1]),
            Err(NvmError::TooLarge)
        );
        assert_eq!(FileNvm::open(&p).unwrap().read(RecordId(1)).unwrap(), None);
    }
}
