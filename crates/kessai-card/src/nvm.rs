//! Non-volatile memory abstraction.
//!
//! Contract of [`Nvm`] (what an implementation must guarantee, and all the
//! applet relies on):
//! - memory is a set of records, each named by a [`RecordId`] and holding up
//!   to [`MAX_RECORD_LEN`] bytes;
//! - [`Nvm::write`] and [`Nvm::erase`] are each **one atomic unit**: after a
//!   power cut the record holds either its complete old or its complete new
//!   value. A power cut can only fall *between* two calls;
//! - a call that returns `Ok` is durable (it survives any later power cut);
//! - a call that returns `Err` may or may not have taken effect, and no later
//!   call in the same power cycle is trusted by the applet (it stops using
//!   the memory until the next power-up).
//!
//! A file-backed implementation can keep all records in one file and
//! replace it with write-to-temporary + fsync + rename for each call.
//! [`MemNvm`] is the in-memory implementation used by tests, with power-cut
//! injection.

use std::collections::BTreeMap;

/// Largest record the applet writes, in bytes.
pub const MAX_RECORD_LEN: usize = 4096;

/// Names one record of non-volatile memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId(pub u16);

/// Failures of non-volatile memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvmError {
    /// Power was lost (or injected as lost) before this write happened.
    #[error("power lost before the write")]
    PowerLost,
    /// The record is larger than [`MAX_RECORD_LEN`].
    #[error("record too large")]
    TooLarge,
    /// The backing store failed (I/O error of a file-backed NVM, ...).
    #[error("non-volatile memory failure: {0}")]
    Failure(String),
}

/// Record-oriented non-volatile memory whose writes are atomic one by one.
/// See the [module documentation](self) for the full contract.
pub trait Nvm {
    /// The current content of record `id`, or `None` if it was never
    /// written or was erased.
    fn read(&self, id: RecordId) -> Result<Option<Vec<u8>>, NvmError>;
    /// Atomically replaces record `id` with `data`.
    fn write(&mut self, id: RecordId, data: &[u8]) -> Result<(), NvmError>;
    /// Atomically removes record `id` (no error if absent).
    fn erase(&mut self, id: RecordId) -> Result<(), NvmError>;
}

/// In-memory [`Nvm`] with power-cut injection: after
/// [`cut_power_after`](Self::cut_power_after)`(k)`, `k` more writes/erases
/// succeed and every later one fails with [`NvmError::PowerLost`] without
/// taking effect, until [`restore_power`](Self::restore_power).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemNvm {
    records: BTreeMap<RecordId, Vec<u8>>,
    writes: u64,
    remaining: Option<u64>,
}

impl MemNvm {
    /// Empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Let `k` more writes succeed, then lose power.
    pub fn cut_power_after(&mut self, k: u64) {
        self.remaining = Some(k);
    }

    /// Power is back: writes succeed again.
    pub fn restore_power(&mut self) {
        self.remaining = None;
    }

    /// Number of successful writes and erases so far.
    pub fn write_count(&self) -> u64 {
        self.writes
    }

    /// All records, for whole-state comparisons in tests.
    pub fn records(&self) -> &BTreeMap<RecordId, Vec<u8>> {
        &self.records
    }

    fn spend(&mut self) -> Result<(), NvmError> {
        match &mut self.remaining {
            Some(0) => Err(NvmError::PowerLost),
            Some(n) => {
                *n -= 1;
                self.writes += 1;
                Ok(())
            }
            None => {
                self.writes += 1;
                Ok(())
            }
        }
    }
}

impl Nvm for MemNvm {
    fn read(&self, id: RecordId) -> Result<Option<Vec<u8>>, NvmError> {
        Ok(self.records.get(&id).cloned())
    }

    fn write(&mut self, id: RecordId, data: &[u8]) -> Result<(), NvmError> {
        if data.len() > MAX_RECORD_LEN {
            return Err(NvmError::TooLarge);
        }
        self.spend()?;
        self.records.insert(id, data.to_vec());
        Ok(())
    }

    fn erase(&mut self, id: RecordId) -> Result<(), NvmError> {
        self.spend()?;
        self.records.remove(&id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_cut_stops_writes_until_restored() {
        let mut m = MemNvm::new();
        m.write(RecordId(1), b"a").unwrap();
        m.cut_power_after(1);
        m.write(RecordId(2), b"b").unwrap();
        assert_eq!(m.write(RecordId(3), b"c"), Err(NvmError::PowerLost));
        assert_eq!(m.erase(RecordId(1)), Err(NvmError::PowerLost));
        assert_eq!(m.read(RecordId(3)).unwrap(), None);
        assert_eq!(m.read(RecordId(1)).unwrap(), Some(b"a".to_vec()));
        assert_eq!(m.write_count(), 2);
        m.restore_power();
        m.erase(RecordId(1)).unwrap();
        assert_eq!(m.read(RecordId(1)).unwrap(), None);
        assert_eq!(
            m.write(RecordId(4), &vec![0; MAX_RECORD_LEN + 1]),
            Err(NvmError::TooLarge)
        );
    }
}
