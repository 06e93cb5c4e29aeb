//! Reads the `key: value` vector files under `tests/vectors/`.

#![allow(dead_code)]

/// One record: its fields in file order.
pub struct Record(pub Vec<(String, String)>);

impl Record {
    /// The text of field `key`; panics (failing the test) if absent.
    pub fn get(&self, key: &str) -> &str {
        &self
            .0
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("vector field {key} missing"))
            .1
    }

    /// Field `key` decoded from hex.
    pub fn hex(&self, key: &str) -> Vec<u8> {
        hex::decode(self.get(key)).unwrap_or_else(|e| panic!("field {key}: {e}"))
    }

    /// Field `key` as exactly N bytes of hex.
    pub fn arr<const N: usize>(&self, key: &str) -> [u8; N] {
        self.hex(key)
            .try_into()
            .unwrap_or_else(|_| panic!("field {key} is not {N} bytes"))
    }
}

/// Parses a vector file into records (blank-line separated, `#` comments).
pub fn records(text: &str) -> Vec<Record> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            if !cur.is_empty() {
                out.push(Record(std::mem::take(&mut cur)));
            }
            continue;
        }
        let (k, v) = line.split_once(':').expect("`key: value` line");
        cur.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    if !cur.is_empty() {
        out.push(Record(cur));
    }
    out
}
