//! The archive file: what `wkuser archive --out FILE` writes and `--archive FILE` reads.
//!
//! Layout: a zstd *skippable frame* (RFC 8878, section 3.1.2) holding the [`Header`] as JSON
//! (the seq range, the count, the last event's id, the time it was cut at), then one zstd
//! frame, with its content checksum, holding the events one per line in the operator form
//! that `wkuser events` prints, seq ascending. The stock `zstd -dc FILE` skips the header and
//! prints exactly those lines; the header is read without decompressing anything.
//!
//! Owns writing a file completely or not at all (under `FILE.partial`, synced, then renamed,
//! and the directory synced) and reading one back with every check a damaged or truncated file
//! fails: the header's format, each line's seq following the last, the count, the frame's
//! checksum. Must never: leave a file under the final name that is not complete and synced.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ArchiveError;
use crate::domain::{RecordedEvent, Seq};

/// The compression level: zstd's default, a fair trade of speed and size for JSON lines.
pub const LEVEL: i32 = 3;

/// The first skippable frame magic number of RFC 8878.
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;

/// Names the format in the header.
pub const FORMAT: &str = "wkuser-archive";
pub const VERSION: u32 = 1;

/// What an archive states about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub first_seq: Seq,
    pub last_seq: Seq,
    pub events: u64,
    /// The `event_id` of the event at `last_seq`.
    pub last_event_id: Uuid,
    /// `--before` as given, RFC 3339: every event here was recorded before it.
    pub before: String,
    /// When the file was written, RFC 3339.
    pub created_at: String,
}

/// An archive being written: under a temporary name until [`ArchiveWriter::finish`].
pub struct ArchiveWriter {
    path: PathBuf,
    temp: PathBuf,
    encoder: zstd::Encoder<'static, BufWriter<File>>,
    next: Seq,
    last: Seq,
}

/// The temporary name an archive is written under.
pub fn partial_name(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.partial", path.display()))
}

impl ArchiveWriter {
    /// Starts the file for `header`'s range (the events must follow, each once, in order).
    pub fn create(path: &Path, header: &Header) -> Result<Self, ArchiveError> {
        let temp = partial_name(path);
        let io = |e| ArchiveError::io(&temp, e);
        let mut out = BufWriter::new(File::create(&temp).map_err(io)?);
        let json = serde_json::to_vec(header).expect("a header always serializes");
        let len = u32::try_from(json.len()).expect("a header is small");
        out.write_all(&SKIPPABLE_MAGIC.to_le_bytes()).map_err(io)?;
        out.write_all(&len.to_le_bytes()).map_err(io)?;
        out.write_all(&json).map_err(io)?;
        let mut encoder = zstd::Encoder::new(out, LEVEL).map_err(io)?;
        encoder.include_checksum(true).map_err(io)?;
        Ok(ArchiveWriter {
            path: path.to_path_buf(),
            temp,
            encoder,
            next: header.first_seq,
            last: header.last_seq,
        })
    }

    pub fn write(&mut self, event: &RecordedEvent) -> Result<(), ArchiveError> {
        if event.seq != self.next || event.seq > self.last {
            return Err(ArchiveError::Mismatch(format!(
                "the archive expected seq {} and was given seq {}",
                self.next, event.seq
            )));
        }
        writeln!(self.encoder, "{}", event.to_operator_json().get())
            .map_err(|e| ArchiveError::io(&self.temp, e))?;
        self.next = self.next.next();
        Ok(())
    }

    /// Ends the frame, syncs the file, renames it to its final name and syncs the directory:
    /// once this returns, the file survives a crash, whole.
    pub fn finish(self) -> Result<(), ArchiveError> {
        let io = |e| ArchiveError::io(&self.temp, e);
        if self.next != self.last.next() {
            return Err(ArchiveError::Mismatch(format!(
                "the archive ends at seq {} where its header says {}",
                self.next.0.saturating_sub(1),
                self.last
            )));
        }
        let out = self.encoder.finish().map_err(io)?;
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&self.temp, &self.path).map_err(io)?;
        sync_dir_of(&self.path)
    }
}

/// Syncs the directory that holds `path`, so that a rename into it survives a crash.
pub fn sync_dir_of(path: &Path) -> Result<(), ArchiveError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ArchiveError::io(&dir, e))
}

/// An archive being read: its header, then its events in seq order.
pub struct ArchiveReader {
    pub path: PathBuf,
    pub header: Header,
    lines: std::io::Lines<BufReader<zstd::Decoder<'static, BufReader<File>>>>,
    next: Seq,
    done: bool,
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

impl ArchiveReader {
    pub fn open(path: &Path) -> Result<Self, ArchiveError> {
        let mut file = File::open(path).map_err(|e| ArchiveError::io(path, e))?;
        let header = read_header(path, &mut file)?;
        let decoder = zstd::Decoder::new(file).map_err(|e| ArchiveError::io(path, e))?;
        Ok(ArchiveReader {
            path: path.to_path_buf(),
            next: header.first_seq,
            header,
            lines: BufReader::new(decoder).lines(),
            done: false,
        })
    }

    fn damaged(&self, why: impl Into<String>) -> ArchiveError {
        ArchiveError::Damaged {
            path: self.path.display().to_string(),
            why: why.into(),
        }
    }

    fn next_event(&mut self) -> Result<Option<RecordedEvent>, ArchiveError> {
        let Some(line) = self.lines.next() else {
            if self.next != self.header.last_seq.next() {
                return Err(self.damaged(format!(
                    "it ends before seq {} where its header says {}",
                    self.next, self.header.last_seq
                )));
            }
            return Ok(None);
        };
        let line = line.map_err(|e| self.damaged(e.to_string()))?;
        let seq = serde_json::from_str::<SeqOnly>(&line)
            .map_err(|e| self.damaged(format!("after seq {}: {e}", self.next.0.saturating_sub(1))))?
            .seq;
        if Seq(seq) != self.next || Seq(seq) > self.header.last_seq {
            return Err(self.damaged(format!("seq {seq} where seq {} was due", self.next)));
        }
        let event = RecordedEvent::decode(Seq(seq), line.as_bytes())
            .map_err(|e| self.damaged(format!("seq {seq}: {e}")))?;
        self.next = self.next.next();
        Ok(Some(event))
    }
}

impl Iterator for ArchiveReader {
    type Item = Result<RecordedEvent, ArchiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_event().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

/// Reads only the header of the archive at `path`.
pub fn read_header_of(path: &Path) -> Result<Header, ArchiveError> {
    let mut file = File::open(path).map_err(|e| ArchiveError::io(path, e))?;
    read_header(path, &mut file)
}

fn read_header(path: &Path, file: &mut File) -> Result<Header, ArchiveError> {
    let not = |why: &str| ArchiveError::NotAnArchive {
        path: path.display().to_string(),
        why: why.to_owned(),
    };
    let mut frame = [0u8; 8];
    file.read_exact(&mut frame)
        .map_err(|_| not("it is shorter than a header"))?;
    let magic = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(frame[4..].try_into().expect("4 bytes"));
    if magic != SKIPPABLE_MAGIC || len > 1 << 20 {
        return Err(not("it does not begin with a wkuser archive header"));
    }
    let mut json = vec![0; len as usize];
    file.read_exact(&mut json)
        .map_err(|_| not("its header is cut short"))?;
    let header: Header =
        serde_json::from_slice(&json).map_err(|e| not(&format!("its header: {e}")))?;
    if header.format != FORMAT {
        return Err(not("its header names another format"));
    }
    if header.version != VERSION {
        return Err(not(&format!(
            "format version {} (this wkuser reads version {VERSION})",
            header.version
        )));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::SystemUids;
    use crate::domain::{Event, NodeId, Uid};

    fn event(seq: u64) -> RecordedEvent {
        RecordedEvent {
            seq: Seq(seq),
            event_id: Uuid::now_v7(),
            recorded_at: 1_700_000_000_000 + seq as i64,
            node_id: NodeId(1),
            event: Event::SystemUidsAdded(SystemUids {
                uids: vec![Uid::parse(&format!("u{seq}")).unwrap()],
            }),
        }
    }

    fn header(first: u64, last: u64, last_event_id: Uuid) -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            first_seq: Seq(first),
            last_seq: Seq(last),
            events: last - first + 1,
            last_event_id,
            before: "2026-01-01T00:00:00Z".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn an_archive_reads_back_what_was_written_and_a_cut_one_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wkarchive.zst");
        let events: Vec<_> = (5..=9).map(event).collect();
        let mut w = ArchiveWriter::create(&path, &header(5, 9, events[4].event_id)).unwrap();
        for e in &events {
            w.write(e).unwrap();
        }
        assert!(!path.exists(), "only the partial name until finished");
        w.finish().unwrap();
        let r = ArchiveReader::open(&path).unwrap();
        assert_eq!(r.header.last_seq, Seq(9));
        let read: Vec<_> = r.map(Result::unwrap).collect();
        assert_eq!(read, events);

        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.zst");
        std::fs::write(&cut, &bytes[..bytes.len() - 6]).unwrap();
        let outcome: Result<Vec<_>, _> = ArchiveReader::open(&cut).unwrap().collect();
        assert!(
            matches!(outcome, Err(ArchiveError::Damaged { .. })),
            "{outcome:?}"
        );
    }
}
