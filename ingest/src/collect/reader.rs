//! An open log file: plain (read in place, may still grow) or gzip (decompressed, final).
//! Offsets are always offsets in the decompressed content, the ones records carry.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;

/// True when the file starts with the gzip magic bytes.
pub fn is_gzip(file: &File) -> bool {
    let mut magic = [0u8; 2];
    matches!(file.read_at(&mut magic, 0), Ok(2)) && magic == [0x1f, 0x8b]
}

/// Counts compressed bytes consumed, for backfill progress.
pub struct Counting {
    inner: File,
    count: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

pub enum Reader {
    Plain(File),
    Gz { dec: Box<MultiGzDecoder<Counting>>, pos: u64, consumed: Arc<AtomicU64> },
}

impl Reader {
    /// Opens `file` for reading from decompressed offset `pos`.
    pub fn open(file: File, pos: u64) -> io::Result<Reader> {
        if is_gzip(&file) {
            let mut r = Reader::gz(file)?;
            r.skip_to(pos)?;
            Ok(r)
        } else {
            let mut file = file;
            file.seek(SeekFrom::Start(pos))?;
            Ok(Reader::Plain(file))
        }
    }

    fn gz(mut file: File) -> io::Result<Reader> {
        file.seek(SeekFrom::Start(0))?;
        let consumed = Arc::new(AtomicU64::new(0));
        let dec = MultiGzDecoder::new(Counting { inner: file, count: consumed.clone() });
        Ok(Reader::Gz { dec: Box::new(dec), pos: 0, consumed })
    }

    pub fn is_gzip(&self) -> bool {
        matches!(self, Reader::Gz { .. })
    }

    pub fn file(&self) -> &File {
        match self {
            Reader::Plain(f) => f,
            Reader::Gz { dec, .. } => &dec.get_ref().inner,
        }
    }

    /// Compressed bytes consumed so far (plain: the read position).
    pub fn disk_pos(&mut self) -> u64 {
        match self {
            Reader::Plain(f) => f.stream_position().unwrap_or(0),
            Reader::Gz { consumed, .. } => consumed.load(Ordering::Relaxed),
        }
    }

    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let r = match self {
                Reader::Plain(f) => f.read(buf),
                Reader::Gz { dec, pos, .. } => dec.read(buf).inspect(|&n| *pos += n as u64),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// Repositions to decompressed offset `pos` (a gzip stream restarts and skips).
    pub fn skip_to(&mut self, target: u64) -> io::Result<()> {
        match self {
            Reader::Plain(f) => {
                f.seek(SeekFrom::Start(target))?;
            }
            Reader::Gz { pos, .. } if *pos > target => {
                let file = self.file().try_clone()?;
                *self = Reader::gz(file)?;
                return self.skip_to(target);
            }
            Reader::Gz { dec, pos, .. } => {
                let mut scratch = vec![0u8; 64 << 10];
                while *pos < target {
                    let want = (target - *pos).min(scratch.len() as u64) as usize;
                    let n = dec.read(&mut scratch[..want])?;
                    if n == 0 {
                        break;
                    }
                    *pos += n as u64;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    #[test]
    fn gzip_multi_member_skip_and_rewind() {
        let path = std::env::temp_dir().join(format!("sitelog-reader-{}.gz", std::process::id()));
        let mut bytes = Vec::new();
        for part in [&b"hello\nwor"[..], b"ld\nbye\n"] {
            let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            bytes.extend(e.finish().unwrap());
        }
        std::fs::write(&path, &bytes).unwrap();
        let mut r = Reader::open(File::open(&path).unwrap(), 6).unwrap();
        assert!(r.is_gzip());
        let mut out = Vec::new();
        let mut buf = [0u8; 4];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, b"world\nbye\n");
        assert_eq!(r.disk_pos(), bytes.len() as u64);
        r.skip_to(12).unwrap();
        let n = r.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"bye\n");
        std::fs::remove_file(&path).unwrap();
    }
}
