//! A produce request written by hand, for records no client library would write (a header name
//! that is not UTF-8): the broker stores what it does not validate, and consumers must cope.

use std::io::{Read, Write};
use std::net::TcpStream;

/// A record as written: key, value, and headers as (name, value) bytes.
pub type RawRecord = (Vec<u8>, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// One version-2 batch of (key, value, headers) records, gzip-compressed if asked.
fn batch(records: &[RawRecord], gzip: bool) -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut body = Vec::new();
    body.extend_from_slice(&i16::from(gzip).to_be_bytes()); // attributes: the codec
    body.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes()); // lastOffsetDelta
    body.extend_from_slice(&now.to_be_bytes());
    body.extend_from_slice(&now.to_be_bytes());
    body.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
    body.extend_from_slice(&(-1i16).to_be_bytes());
    body.extend_from_slice(&(-1i32).to_be_bytes());
    body.extend_from_slice(&(records.len() as i32).to_be_bytes());
    let mut encoded = Vec::new();
    for (i, (key, value, headers)) in records.iter().enumerate() {
        let mut r = vec![0u8]; // attributes
        varint(&mut r, 0); // timestampDelta
        varint(&mut r, i as i64); // offsetDelta
        bytes(&mut r, key);
        bytes(&mut r, value);
        varint(&mut r, headers.len() as i64);
        for (k, v) in headers {
            bytes(&mut r, k);
            bytes(&mut r, v);
        }
        varint(&mut encoded, r.len() as i64);
        encoded.extend_from_slice(&r);
    }
    if gzip {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&encoded).unwrap();
        encoded = gz.finish().unwrap();
    }
    body.extend_from_slice(&encoded);
    let mut out = Vec::new();
    out.extend_from_slice(&0i64.to_be_bytes()); // baseOffset
    out.extend_from_slice(&((4 + 1 + 4 + body.len()) as i32).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
    out.push(2); // magic
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Produces one batch to `topic`/`partition` on the broker at `bootstrap` (a single-broker
/// cluster: it leads every partition); returns the batch's base offset.
pub fn produce(bootstrap: &str, topic: &str, partition: i32, records: &[RawRecord], gzip: bool) -> i64 {
    let batch = batch(records, gzip);
    let mut req = Vec::new();
    req.extend_from_slice(&0i16.to_be_bytes()); // Produce
    req.extend_from_slice(&3i16.to_be_bytes()); // version 3
    req.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    string(&mut req, "system-tests");
    req.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
    req.extend_from_slice(&(-1i16).to_be_bytes()); // acks: all
    req.extend_from_slice(&10_000i32.to_be_bytes());
    req.extend_from_slice(&1i32.to_be_bytes());
    string(&mut req, topic);
    req.extend_from_slice(&1i32.to_be_bytes());
    req.extend_from_slice(&partition.to_be_bytes());
    req.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    req.extend_from_slice(&batch);
    let mut conn = TcpStream::connect(bootstrap).unwrap();
    conn.write_all(&(req.len() as i32).to_be_bytes()).unwrap();
    conn.write_all(&req).unwrap();
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    conn.read_exact(&mut resp).unwrap();
    // correlation id, 1 topic (name), 1 partition: index, error code, base offset.
    let name_len = i16::from_be_bytes([resp[8], resp[9]]) as usize;
    let at = 10 + name_len + 4 + 4;
    let error = i16::from_be_bytes([resp[at], resp[at + 1]]);
    assert_eq!(error, 0, "the broker refused the hand-written batch (error code {error})");
    i64::from_be_bytes(resp[at + 2..at + 10].try_into().unwrap())
}
