//! The compressors of an export: `gzip` (LXD's default), `xz`, `zstd`, `none`, parsed from
//! LXD's `compression_algorithm` values, compressing in parallel.
//!
//! The stream is cut into chunks that are compressed on their own threads as independent
//! gzip members, xz streams or zstd frames, written out in order. A concatenation of
//! those is one valid file for `gzip -d`, `xz -d`, `zstd -d`, `tar -z/-J`, Go's gzip
//! reader (multistream by default), flate2's `MultiGzDecoder`, xz2's multi decoder and
//! zstd's decoder; so the tar writer's thread only copies bytes while the cores compress.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::thread::JoinHandle;

use crate::BackupError;

/// One of the algorithms hutch compresses with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// Level 1–9 (`gzip -9`); 6 as gzip's default.
    Gzip(u32),
    /// Preset 0–9 (`xz -9`); 6 as xz's default.
    Xz(u32),
    /// Level 1–19 (`zstd -19`); 3 as zstd's default.
    Zstd(i32),
}

impl Compression {
    /// LXD's value: a name, optionally with arguments as LXD passes them to the command
    /// (`gzip -9`, `zstd -T0`). A level flag is honoured; other flags are the command's
    /// own business (threads, say) and are ignored. Anything else is refused.
    pub fn parse(value: &str) -> Result<Compression, BackupError> {
        let mut words = value.split_whitespace();
        let name = words.next().unwrap_or("gzip");
        let level = words
            .filter_map(|w| w.strip_prefix('-'))
            .filter_map(|w| w.parse::<u32>().ok())
            .next_back();
        let unknown = || BackupError::UnknownCompression(value.to_string());
        Ok(match name {
            "none" => Compression::None,
            "gzip" | "pigz" => Compression::Gzip(level.unwrap_or(6).clamp(1, 9)),
            "xz" => Compression::Xz(level.unwrap_or(6).min(9)),
            "zstd" => Compression::Zstd(level.unwrap_or(3).clamp(1, 19) as i32),
            _ => return Err(unknown()),
        })
    }

    /// The file extension `lxc export` names such a file with (`backup.tar.gz`).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => ".tar",
            Compression::Gzip(_) => ".tar.gz",
            Compression::Xz(_) => ".tar.xz",
            Compression::Zstd(_) => ".tar.zst",
        }
    }

    /// A writer that compresses into `out` on `threads` threads (at least one).
    /// [`Compressor::finish`] flushes the last chunk and hands `out` back.
    pub fn writer<W: Write>(self, out: W, threads: usize) -> Compressor<W> {
        Compressor {
            algorithm: self,
            out,
            chunk: Vec::with_capacity(self.chunk_size()),
            pending: VecDeque::new(),
            threads: threads.max(1),
            dispatched: false,
        }
    }

    /// Bytes compressed as one independent piece: large enough that the ratio is close to
    /// a single stream's, small enough that every core gets work early.
    fn chunk_size(self) -> usize {
        match self {
            Compression::None => 1 << 20,
            Compression::Gzip(_) => 4 << 20,
            Compression::Xz(_) | Compression::Zstd(_) => 8 << 20,
        }
    }

    fn compress(self, data: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(data.to_vec()),
            Compression::Gzip(level) => {
                // flate2 writes no name and a zero mtime, as `gzip -n` does.
                let mut e = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 3),
                    flate2::Compression::new(level),
                );
                e.write_all(data)?;
                e.finish()
            }
            Compression::Xz(preset) => {
                let mut e = xz2::write::XzEncoder::new(Vec::with_capacity(data.len() / 4), preset);
                e.write_all(data)?;
                e.finish()
            }
            Compression::Zstd(level) => zstd::bulk::compress(data, level),
        }
    }
}

/// The writer of [`Compression::writer`].
pub struct Compressor<W: Write> {
    algorithm: Compression,
    out: W,
    chunk: Vec<u8>,
    /// Chunks being compressed, oldest first: written out in this order.
    pending: VecDeque<JoinHandle<io::Result<Vec<u8>>>>,
    threads: usize,
    /// Some chunk was handed out (else finish writes an empty compressed file).
    dispatched: bool,
}

impl<W: Write> Compressor<W> {
    /// Hands the full chunk to a thread, first writing out the oldest when all are busy.
    fn dispatch(&mut self) -> io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        self.dispatched = true;
        if self.algorithm == Compression::None {
            self.out.write_all(&self.chunk)?;
            self.chunk.clear();
            return Ok(());
        }
        while self.pending.len() >= self.threads {
            self.write_oldest()?;
        }
        let data = std::mem::replace(
            &mut self.chunk,
            Vec::with_capacity(self.algorithm.chunk_size()),
        );
        let algorithm = self.algorithm;
        self.pending
            .push_back(std::thread::spawn(move || algorithm.compress(&data)));
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(job) = self.pending.pop_front() {
            let bytes = job
                .join()
                .map_err(|_| io::Error::other("a compression thread panicked"))??;
            self.out.write_all(&bytes)?;
        }
        Ok(())
    }

    /// Compresses and writes what is left, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch()?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        // An empty input still makes a valid (empty) compressed file.
        if self.algorithm != Compression::None && self.wrote_nothing() {
            let empty = self.algorithm.compress(&[])?;
            self.out.write_all(&empty)?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn wrote_nothing(&self) -> bool {
        !self.dispatched
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.algorithm.chunk_size() - self.chunk.len();
        let n = buf.len().min(room);
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() >= self.algorithm.chunk_size() {
            self.dispatch()?;
        }
        Ok(n)
    }

    /// Chunks are compressed whole; a flush only passes on what is already compressed.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: a repeating text with a counter.
        let mut v = Vec::with_capacity(len);
        let mut i = 0u64;
        while v.len() < len {
            v.extend_from_slice(format!("line {i} of the sample\n").as_bytes());
            i += 1;
        }
        v.truncate(len);
        v
    }

    fn round_trip(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut w = c.writer(Vec::new(), 3);
        // Odd write sizes cross chunk boundaries.
        for part in data.chunks(777_777) {
            w.write_all(part).unwrap();
        }
        let packed = w.finish().unwrap();
        let mut out = Vec::new();
        match c {
            Compression::None => out = packed,
            Compression::Gzip(_) => {
                flate2::read::MultiGzDecoder::new(&packed[..])
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Compression::Xz(_) => {
                xz2::read::XzDecoder::new_multi_decoder(&packed[..])
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Compression::Zstd(_) => {
                zstd::stream::read::Decoder::new(&packed[..])
                    .unwrap()
                    .read_to_end(&mut out)
                    .unwrap();
            }
        }
        out
    }

    #[test]
    fn every_algorithm_round_trips_across_many_chunks() {
        let data = sample(20 << 20);
        for c in ["gzip", "xz -1", "zstd", "none"] {
            let c = Compression::parse(c).unwrap();
            assert!(round_trip(c, &data) == data, "{c:?}");
        }
    }

    #[test]
    fn an_empty_input_is_a_valid_empty_file() {
        for c in ["gzip", "xz", "zstd", "none"] {
            let c = Compression::parse(c).unwrap();
            assert!(round_trip(c, &[]).is_empty(), "{c:?}");
        }
    }

    #[test]
    fn names_with_arguments_parse_and_unknown_ones_are_refused() {
        assert_eq!(Compression::parse("gzip").unwrap(), Compression::Gzip(6));
        assert_eq!(Compression::parse("gzip -9").unwrap(), Compression::Gzip(9));
        assert_eq!(
            Compression::parse("zstd -T0").unwrap(),
            Compression::Zstd(3)
        );
        assert_eq!(Compression::parse("").unwrap(), Compression::Gzip(6));
        assert_eq!(Compression::parse("none").unwrap().extension(), ".tar");
        let err = Compression::parse("rm -rf /").unwrap_err();
        assert!(err.to_string().contains("unknown compression"), "{err}");
        assert!(Compression::parse("bzip2").is_err());
    }
}
