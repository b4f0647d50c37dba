//! Reading many rows fast: `COPY (SELECT ...) TO STDOUT (FORMAT binary)`,
//! decoded row by row as it streams.
//!
//! A row read this way costs a fraction of one fetched through a prepared
//! query, which matters when a call reads a million rows (the valuation
//! service's fits over kept purchase summaries). The format is PostgreSQL's
//! documented binary COPY format: a signature and header, then per row a
//! field count and each field's length (-1 for NULL) and bytes, then -1.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use sqlx::PgConnection;

/// The binary COPY signature.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Why a COPY could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The data is not in the binary COPY format, or ended early.
    #[error("malformed binary COPY data: {0}")]
    Malformed(&'static str),
}

/// Runs `statement` (a `COPY (...) TO STDOUT (FORMAT binary)`) on `conn` and
/// calls `row` with each row's fields (None for NULL), in the order the
/// database sends them. An error from `row` stops the copy (the rest is
/// drained so the connection stays usable) and is returned.
pub async fn for_each_row<E>(
    conn: &mut PgConnection,
    statement: &str,
    mut row: impl FnMut(&[Option<&[u8]>]) -> Result<(), E>,
) -> Result<Result<(), E>, CopyError> {
    let mut stream = conn.copy_out_raw(statement).await?;
    let mut reader = Reader::default();
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if failed.is_some() {
            continue;
        }
        reader.push(&chunk);
        if let Err(e) = reader.rows(&mut row)? {
            failed = Some(e);
        }
    }
    if let Some(e) = failed {
        return Ok(Err(e));
    }
    if !reader.finished {
        return Err(CopyError::Malformed("no trailer"));
    }
    Ok(Ok(()))
}

/// Parses a binary COPY stream given in chunks of any size.
#[derive(Default)]
struct Reader {
    buf: Vec<u8>,
    pos: usize,
    header: bool,
    finished: bool,
    fields: Vec<(usize, i32)>,
}

impl Reader {
    fn push(&mut self, chunk: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 1 << 20 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// Calls `row` with every complete row buffered so far.
    fn rows<E>(
        &mut self,
        row: &mut impl FnMut(&[Option<&[u8]>]) -> Result<(), E>,
    ) -> Result<Result<(), E>, CopyError> {
        if !self.header {
            // Signature, flags (4 bytes), header extension length and data.
            let Some(ext) = self.buf.get(15..19) else {
                return Ok(Ok(()));
            };
            if &self.buf[..11] != SIGNATURE {
                return Err(CopyError::Malformed("bad signature"));
            }
            let ext = be_i32(ext).max(0) as usize;
            if self.buf.len() < 19 + ext {
                return Ok(Ok(()));
            }
            self.pos = 19 + ext;
            self.header = true;
        }
        let mut values: Vec<Option<&[u8]>> = Vec::new();
        loop {
            if self.finished {
                return Ok(Ok(()));
            }
            let Some(count) = self.buf.get(self.pos..self.pos + 2) else {
                return Ok(Ok(()));
            };
            let count = i16::from_be_bytes([count[0], count[1]]);
            if count == -1 {
                self.finished = true;
                self.pos += 2;
                return Ok(Ok(()));
            }
            if count < 0 {
                return Err(CopyError::Malformed("negative field count"));
            }
            // Find every field's extent before handing out the row.
            self.fields.clear();
            let mut at = self.pos + 2;
            let mut complete = true;
            for _ in 0..count {
                let Some(len) = self.buf.get(at..at + 4) else {
                    complete = false;
                    break;
                };
                let len = be_i32(len);
                at += 4;
                self.fields.push((at, len));
                if len > 0 {
                    at += len as usize;
                }
                if at > self.buf.len() {
                    complete = false;
                    break;
                }
            }
            if !complete {
                return Ok(Ok(()));
            }
            values.clear();
            values.extend(
                self.fields.iter().map(|&(start, len)| {
                    (len >= 0).then(|| &self.buf[start..start + len as usize])
                }),
            );
            self.pos = at;
            if let Err(e) = row(&values) {
                return Ok(Err(e));
            }
        }
    }
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// An `int4` field.
pub fn int4(field: Option<&[u8]>) -> Option<i32> {
    let b: [u8; 4] = field?.try_into().ok()?;
    Some(i32::from_be_bytes(b))
}

/// An `int8` field.
pub fn int8(field: Option<&[u8]>) -> Option<i64> {
    let b: [u8; 8] = field?.try_into().ok()?;
    Some(i64::from_be_bytes(b))
}

/// A `timestamptz` field (None for ±infinity, out of chrono's range).
pub fn timestamptz(field: Option<&[u8]>) -> Option<DateTime<Utc>> {
    let micros = int8(field)?;
    DateTime::from_timestamp_micros(micros.checked_add(PG_EPOCH_MICROS)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend(0i32.to_be_bytes());
        out.extend(2i32.to_be_bytes());
        out.extend([7, 7]);
        for r in rows {
            out.extend((r.len() as i16).to_be_bytes());
            for f in r {
                match f {
                    None => out.extend((-1i32).to_be_bytes()),
                    Some(b) => {
                        out.extend((b.len() as i32).to_be_bytes());
                        out.extend(b);
                    }
                }
            }
        }
        out.extend((-1i16).to_be_bytes());
        out
    }

    type Pairs = Vec<(Option<i32>, Option<i64>)>;

    fn read(data: &[u8], chunk: usize) -> (Pairs, bool) {
        let mut r = Reader::default();
        let mut got = Vec::new();
        for c in data.chunks(chunk) {
            r.push(c);
            r.rows(&mut |f: &[Option<&[u8]>]| {
                got.push((int4(f[0]), int8(f[1])));
                Ok::<_, ()>(())
            })
            .unwrap()
            .unwrap();
        }
        (got, r.finished)
    }

    #[test]
    fn rows_decode_in_chunks_of_any_size() {
        let rows: Vec<Vec<Option<Vec<u8>>>> = (0..50)
            .map(|i: i32| {
                vec![
                    Some(i.to_be_bytes().to_vec()),
                    (i % 3 != 0).then(|| (i64::from(i) * -1_000_000_007).to_be_bytes().to_vec()),
                ]
            })
            .collect();
        let data = encode(&rows);
        for chunk in [1, 2, 3, 7, 19, 64, data.len()] {
            let (got, finished) = read(&data, chunk);
            assert!(finished, "chunk {chunk}");
            assert_eq!(got.len(), 50);
            for (i, (a, b)) in got.iter().enumerate() {
                let i = i as i32;
                assert_eq!(*a, Some(i));
                assert_eq!(*b, (i % 3 != 0).then(|| i64::from(i) * -1_000_000_007));
            }
        }
    }

    #[test]
    fn bad_signatures_and_sizes_are_refused() {
        let mut r = Reader::default();
        r.push(b"PGCOPX\n\xff\r\n\0\0\0\0\0\0\0\0\0");
        assert!(r.rows(&mut |_: &[Option<&[u8]>]| Ok::<_, ()>(())).is_err());
        assert_eq!(int4(Some(&[1, 2, 3])), None);
        assert_eq!(int8(None), None);
        let t = timestamptz(Some(&0i64.to_be_bytes())).unwrap();
        assert_eq!(t.to_rfc3339(), "2000-01-01T00:00:00+00:00");
    }

    #[test]
    fn a_row_error_stops_the_rows() {
        let rows: Vec<Vec<Option<Vec<u8>>>> = (0..5)
            .map(|i: i32| vec![Some(i.to_be_bytes().to_vec())])
            .collect();
        let data = encode(&rows);
        let mut r = Reader::default();
        r.push(&data);
        let mut seen = 0;
        let out = r
            .rows(&mut |_: &[Option<&[u8]>]| {
                seen += 1;
                if seen == 3 { Err("stop") } else { Ok(()) }
            })
            .unwrap();
        assert_eq!(out, Err("stop"));
        assert_eq!(seen, 3);
    }
}
