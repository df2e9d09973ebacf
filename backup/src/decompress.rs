//! A compressed stream told by its magic bytes (gzip, bzip2, xz, lzma, zstd, none),
//! decompressed as it is read. Owned by the import work.
//!
//! images/src/unpack.rs sniffs the same magics for image tarballs; it cannot use this one
//! (images must not depend on backup), and this one needs more (multi-member gzip, lzma,
//! bzip2, a clear refusal of squashfs), so each keeps its own.

use std::io::{self, BufReader, Cursor, Read};
use std::process::{Child, ChildStdout, Command, Stdio};

use crate::BackupError;

/// The compression of a stream, as its first bytes tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Lzma,
    Zstd,
    Squashfs,
}

impl Compression {
    /// The compression the first bytes of a stream show (up to 6 are looked at).
    pub fn sniff(magic: &[u8]) -> Compression {
        match magic {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [b'B', b'Z', b'h', ..] => Compression::Bzip2,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Compression::Xz,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            [b'h', b's', b'q', b's', ..] => Compression::Squashfs,
            // lzma_alone: properties byte 0x5d, then a little-endian dictionary size.
            [0x5d, 0x00, 0x00, ..] => Compression::Lzma,
            _ => Compression::None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Zstd => "zstd",
            Compression::Squashfs => "squashfs",
        }
    }
}

/// The decompressed content of `reader`, and the compression found. The first bytes are
/// read ahead and put back in front.
pub fn decompressed<R: Read + Send + 'static>(
    mut reader: R,
) -> Result<(Compression, Box<dyn Read + Send>), BackupError> {
    let mut magic = Vec::with_capacity(6);
    (&mut reader)
        .take(6)
        .read_to_end(&mut magic)
        .map_err(|e| BackupError::io("read", "the backup", e))?;
    let kind = Compression::sniff(&magic);
    let reader = BufReader::with_capacity(1 << 16, Cursor::new(magic).chain(reader));
    let inner: Box<dyn Read + Send> = match kind {
        Compression::None => Box::new(reader),
        // Multi-member: pigz and concatenated gzip files are one stream to `gzip -d`.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(reader)),
        Compression::Lzma => {
            let stream = xz2::stream::Stream::new_lzma_decoder(u64::MAX)
                .map_err(|e| BackupError::Invalid(format!("lzma: {e}")))?;
            Box::new(xz2::read::XzDecoder::new_stream(reader, stream))
        }
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(|e| BackupError::io("read", "the backup", e))?,
        ),
        // No bzip2 crate in the workspace: the system's bzip2, fed by a thread.
        Compression::Bzip2 => Box::new(Filter::spawn("bzip2", &["-dc"], reader)?),
        Compression::Squashfs => {
            return Err(BackupError::Invalid(
                "squashfs backups are not supported (convert it to a tarball)".into(),
            ))
        }
    };
    Ok((kind, inner))
}

/// A command's stdout, its stdin fed from a reader by a thread. The child is killed and
/// reaped when dropped; a failed exit is a read error.
struct Filter {
    child: Child,
    stdout: ChildStdout,
    feeder: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Filter {
    fn spawn<R: Read + Send + 'static>(
        cmd: &'static str,
        args: &[&str],
        mut input: R,
    ) -> Result<Filter, BackupError> {
        let mut child = Command::new(cmd)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BackupError::io("run", cmd, e))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let feeder = std::thread::spawn(move || io::copy(&mut input, &mut stdin).map(|_| ()));
        Ok(Filter {
            child,
            stdout,
            feeder: Some(feeder),
        })
    }
}

impl Read for Filter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let Some(feeder) = self.feeder.take() {
                // The input's own error (a dropped upload) comes first.
                feeder
                    .join()
                    .map_err(|_| io::Error::other("the decompressor's feeder panicked"))??;
            }
            let status = self.child.wait()?;
            if !status.success() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("corrupt compressed stream ({status})"),
                ));
            }
        }
        Ok(n)
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The feeder ends when the killed child's stdin breaks.
        if let Some(feeder) = self.feeder.take() {
            let _ = feeder.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const TEXT: &[u8] = b"the quick brown fox jumps over the lazy dog\n";

    fn round_trip(compressed: Vec<u8>, expect: Compression) {
        let (kind, mut r) = decompressed(Cursor::new(compressed)).unwrap();
        assert_eq!(kind, expect);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, TEXT, "{expect:?}");
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn every_supported_compression_is_told_and_read() {
        round_trip(TEXT.to_vec(), Compression::None);
        // Two gzip members read as one stream.
        let (a, b) = TEXT.split_at(10);
        let mut two = gzip(a);
        two.extend(gzip(b));
        round_trip(two, Compression::Gzip);
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(TEXT).unwrap();
        round_trip(xz.finish().unwrap(), Compression::Xz);
        let opts = xz2::stream::LzmaOptions::new_preset(1).unwrap();
        let stream = xz2::stream::Stream::new_lzma_encoder(&opts).unwrap();
        let mut lzma = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
        lzma.write_all(TEXT).unwrap();
        round_trip(lzma.finish().unwrap(), Compression::Lzma);
        round_trip(zstd::encode_all(TEXT, 1).unwrap(), Compression::Zstd);
        if let Ok(out) = Command::new("bzip2")
            .arg("-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(TEXT)?;
                c.wait_with_output()
            })
        {
            round_trip(out.stdout, Compression::Bzip2);
        }
    }

    #[test]
    fn squashfs_is_refused_and_corruption_is_a_read_error() {
        let err = decompressed(Cursor::new(b"hsqs\0\0\0\0".to_vec()))
            .err()
            .unwrap();
        assert!(err.to_string().contains("squashfs"), "{err}");
        let mut truncated = gzip(&[7u8; 100_000]);
        truncated.truncate(truncated.len() / 2);
        let (_, mut r) = decompressed(Cursor::new(truncated)).unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }
}
