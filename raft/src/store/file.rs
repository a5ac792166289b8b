//! File primitives: length-prefixed records, atomic replace, fsync.

use std::fs;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::Read;
use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A record larger than this is corruption, not data: the biggest record is
/// a log entry of a few hundred bytes.
const MAX_RECORD: usize = 16 << 20;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Appends one `[u32 BE length][json]` record to `out` (not synced).
pub(crate) fn encode_record<T: Serialize>(value: &T, out: &mut Vec<u8>) -> io::Result<()> {
    let body = serde_json::to_vec(value).map_err(|e| invalid(e.to_string()))?;
    let len = u32::try_from(body.len()).map_err(|_| invalid("record too large".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Reads every record of `path`. Returns the records and the length of the
/// valid prefix: a record cut short at the end of the file (a crash during
/// an append that was never acknowledged) ends the log there. A record that
/// is complete but does not decode, followed by more data, is corruption
/// and an error. A missing file is an empty log.
pub(crate) fn read_records<T: DeserializeOwned>(path: &Path) -> io::Result<(Vec<T>, u64)> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    }
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let Some(prefix) = bytes.get(pos..pos + 4) else {
            break; // torn length prefix
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let end = pos + 4 + len;
        if len == 0 || len > MAX_RECORD || end > bytes.len() {
            // Torn tail: a length written without (all of) its body, or the
            // zeros a crash can leave after a file was extended.
            if bytes[pos..].iter().all(|&b| b == 0) || end > bytes.len() {
                break;
            }
            return Err(invalid(format!(
                "{}: bad record length {len} at offset {pos}",
                path.display()
            )));
        }
        match serde_json::from_slice::<T>(&bytes[pos + 4..end]) {
            Ok(r) => records.push(r),
            Err(_) if end == bytes.len() => break, // torn last record
            Err(e) => {
                return Err(invalid(format!(
                    "{}: undecodable record at offset {pos}: {e}",
                    path.display()
                )))
            }
        }
        pos = end;
    }
    Ok((records, pos as u64))
}

/// Fsyncs a directory so that a rename or a new file in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically: temp file, fsync, rename,
/// fsync of the directory. A crash leaves either the old or the new file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(tmp, path)?;
    sync_dir(dir)
}

/// Reads and decodes a JSON file; `None` if it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.bin");
        let mut bytes = Vec::new();
        for i in 0..3u32 {
            encode_record(&i, &mut bytes).expect("encode");
        }
        let full = bytes.len() as u64;
        // A torn fourth record: length but half a body.
        let mut torn = Vec::new();
        encode_record(&12345u32, &mut torn).expect("encode");
        bytes.extend_from_slice(&torn[..torn.len() - 2]);
        fs::write(&path, &bytes).expect("write");
        let (records, valid) = read_records::<u32>(&path).expect("read");
        assert_eq!(records, vec![0, 1, 2]);
        assert_eq!(valid, full);

        // Zeros after the last record (file extended, data lost).
        let mut bytes = bytes[..full as usize].to_vec();
        bytes.extend_from_slice(&[0u8; 9]);
        fs::write(&path, &bytes).expect("write");
        let (records, valid) = read_records::<u32>(&path).expect("read");
        assert_eq!(records.len(), 3);
        assert_eq!(valid, full);
    }

    #[test]
    fn corruption_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.bin");
        let mut bytes = Vec::new();
        encode_record(&"x", &mut bytes).expect("encode");
        bytes[4] = b'?'; // the opening quote: no longer JSON
        encode_record(&"y", &mut bytes).expect("encode");
        fs::write(&path, &bytes).expect("write");
        assert!(read_records::<String>(&path).is_err());
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v.json");
        assert_eq!(read_json::<u32>(&path).expect("read"), None);
        write_atomic(&path, b"1").expect("write");
        write_atomic(&path, b"2").expect("write");
        assert_eq!(read_json::<u32>(&path).expect("read"), Some(2));
    }
}
