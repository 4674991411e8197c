//! The binary tensor data extension (Triton's `binary_tensor_data`, used by KServe clients): the body is
//! a JSON header of `Inference-Header-Content-Length` bytes followed by raw tensors in input order, each
//! input naming its byte count in `parameters.binary_data_size`. Little-endian, no padding; BOOL is one
//! byte per element; BYTES elements are a 4-byte little-endian length and the bytes.

use crate::runtime::{Datatype, Tensor, TensorData};

/// Header naming the JSON part's length.
pub const HEADER: &str = "inference-header-content-length";

fn chunks<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("exact chunk")))
        .collect()
}

/// Decodes `count` elements of `datatype` from raw little-endian bytes.
pub fn decode(datatype: Datatype, bytes: &[u8], count: usize) -> Result<TensorData, String> {
    let width: usize = match datatype {
        Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => 1,
        Datatype::Uint16 | Datatype::Int16 => 2,
        Datatype::Uint32 | Datatype::Int32 | Datatype::Fp32 => 4,
        Datatype::Uint64 | Datatype::Int64 | Datatype::Fp64 => 8,
        Datatype::Bytes => return decode_bytes(bytes, count),
    };
    // Checked: a count whose byte size wraps must not match a short buffer.
    if width.checked_mul(count) != Some(bytes.len()) {
        return Err(format!(
            "{} bytes of binary data for {count} elements of {width} bytes",
            bytes.len()
        ));
    }
    Ok(match datatype {
        Datatype::Bool => TensorData::Bool(bytes.iter().map(|b| *b != 0).collect()),
        Datatype::Uint8 => TensorData::Uint8(bytes.to_vec()),
        Datatype::Int8 => TensorData::Int8(bytes.iter().map(|b| *b as i8).collect()),
        Datatype::Uint16 => TensorData::Uint16(chunks(bytes, u16::from_le_bytes)),
        Datatype::Int16 => TensorData::Int16(chunks(bytes, i16::from_le_bytes)),
        Datatype::Uint32 => TensorData::Uint32(chunks(bytes, u32::from_le_bytes)),
        Datatype::Int32 => TensorData::Int32(chunks(bytes, i32::from_le_bytes)),
        Datatype::Fp32 => TensorData::Fp32(chunks(bytes, f32::from_le_bytes)),
        Datatype::Uint64 => TensorData::Uint64(chunks(bytes, u64::from_le_bytes)),
        Datatype::Int64 => TensorData::Int64(chunks(bytes, i64::from_le_bytes)),
        Datatype::Fp64 => TensorData::Fp64(chunks(bytes, f64::from_le_bytes)),
        Datatype::Bytes => unreachable!("handled above"),
    })
}

fn decode_bytes(mut bytes: &[u8], count: usize) -> Result<TensorData, String> {
    // Each element takes at least its 4-byte length: a count the bytes cannot hold allocates nothing
    // for it (a declared count of 2^20 once reserved 24 MB, whatever the bytes).
    let mut items = Vec::with_capacity(count.min(bytes.len() / 4));
    for i in 0..count {
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(format!("BYTES element {i}: missing its 4-byte length"));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(format!(
                "BYTES element {i}: {len} bytes announced, {} left",
                rest.len()
            ));
        }
        items.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    if !bytes.is_empty() {
        return Err(format!(
            "{} bytes left after {count} BYTES elements",
            bytes.len()
        ));
    }
    Ok(TensorData::Bytes(items))
}

/// Tensor `name` of `datatype` and wire `shape` from its raw `bytes` (this extension's layout, and
/// gRPC's `raw_input_contents`): dimensions must be non-negative, and the element count is checked
/// against what the bytes can hold before anything is sized by it (nor may it wrap).
pub fn decode_tensor(
    name: &str,
    datatype: Datatype,
    shape: &[i64],
    bytes: &[u8],
) -> Result<Tensor, String> {
    if shape.iter().any(|d| *d < 0) {
        return Err(format!("shape {shape:?} has a negative dimension"));
    }
    let dims: Vec<u64> = shape.iter().map(|d| *d as u64).collect();
    // Every element takes a byte at least (BOOL, INT8; BYTES its 4-byte length): 8 per byte is
    // generous, and bounds what a count may reserve.
    let count = super::element_count(&dims)
        .filter(|n| *n <= bytes.len() as u64 * 8 + 1)
        .ok_or_else(|| {
            format!(
                "shape {shape:?} needs more elements than {} bytes of binary data hold",
                bytes.len()
            )
        })?;
    Ok(Tensor {
        name: name.to_owned(),
        shape: dims,
        data: decode(datatype, bytes, count as usize)?,
    })
}

/// Encodes tensor elements as raw little-endian bytes.
pub fn encode(data: &TensorData) -> Vec<u8> {
    fn flat<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        v.iter().flat_map(|x| f(*x)).collect()
    }
    match data {
        TensorData::Bool(v) => v.iter().map(|b| *b as u8).collect(),
        TensorData::Uint8(v) => v.clone(),
        TensorData::Int8(v) => v.iter().map(|x| *x as u8).collect(),
        TensorData::Uint16(v) => flat(v, u16::to_le_bytes),
        TensorData::Int16(v) => flat(v, i16::to_le_bytes),
        TensorData::Uint32(v) => flat(v, u32::to_le_bytes),
        TensorData::Int32(v) => flat(v, i32::to_le_bytes),
        TensorData::Fp32(v) => flat(v, f32::to_le_bytes),
        TensorData::Uint64(v) => flat(v, u64::to_le_bytes),
        TensorData::Int64(v) => flat(v, i64::to_le_bytes),
        TensorData::Fp64(v) => flat(v, f64::to_le_bytes),
        TensorData::Bytes(v) => v
            .iter()
            .flat_map(|b| {
                (b.len() as u32)
                    .to_le_bytes()
                    .into_iter()
                    .chain(b.iter().copied())
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{datatype_of, DATATYPES};

    #[test]
    fn every_datatype_round_trips_through_bytes() {
        for (dt, name) in DATATYPES {
            let data = match dt {
                Datatype::Bool => TensorData::Bool(vec![true, false]),
                Datatype::Uint8 => TensorData::Uint8(vec![1, 255]),
                Datatype::Int8 => TensorData::Int8(vec![-1, 7]),
                Datatype::Uint16 => TensorData::Uint16(vec![1, 65535]),
                Datatype::Int16 => TensorData::Int16(vec![-300, 7]),
                Datatype::Uint32 => TensorData::Uint32(vec![1, 70000]),
                Datatype::Int32 => TensorData::Int32(vec![-70000, 7]),
                Datatype::Uint64 => TensorData::Uint64(vec![1, u64::MAX]),
                Datatype::Int64 => TensorData::Int64(vec![i64::MIN, 7]),
                Datatype::Fp32 => TensorData::Fp32(vec![0.5, -1e-7]),
                Datatype::Fp64 => TensorData::Fp64(vec![0.1, -2.5]),
                Datatype::Bytes => TensorData::Bytes(vec![b"ab".to_vec(), vec![]]),
            };
            assert_eq!(datatype_of(&data), dt);
            assert_eq!(decode(dt, &encode(&data), 2).unwrap(), data, "{name}");
        }
    }

    #[test]
    fn short_or_long_binary_data_is_refused() {
        assert!(decode(Datatype::Fp32, &[0; 7], 2)
            .unwrap_err()
            .contains("7 bytes"));
        assert!(decode(Datatype::Bytes, &[5, 0, 0, 0, b'a'], 1)
            .unwrap_err()
            .contains("5 bytes announced"));
        assert!(decode(Datatype::Bytes, &[0, 0, 0, 0, 9], 1)
            .unwrap_err()
            .contains("left after"));
        // 8 × (2^61 + 1) wraps to 8: the count is refused, not decoded as one element.
        assert!(decode(Datatype::Fp64, &[0; 8], (1 << 61) + 1).is_err());
        assert!(decode(Datatype::Bytes, &[0; 4], usize::MAX)
            .unwrap_err()
            .contains("missing its 4-byte length"));
    }
}
