//! A reader for numpy's `.npz` archives: a zip (stored or deflated, zip64 as `np.savez` writes
//! it) of `.npy` files, each a magic string, a version, a Python-dict header and the raw data.

use std::io::Read;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::{Error, Result};

/// Deflate's ceiling: no deflate stream expands more than about 1032 times.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Reads every array of an `.npz` archive, named as in `np.load(path).keys()` (member names
/// without `.npy`), in archive order.
pub(crate) fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bad = |entry: Option<&str>, problem: String| Error::Npz {
        path: path.to_path_buf(),
        entry: entry.map(str::to_string),
        problem,
    };
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(None, e.to_string()))?;
    let mut arrays = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).map_err(|e| bad(None, e.to_string()))?;
        let name = member.name().to_string();
        if member.is_dir() {
            continue;
        }
        // The declared size comes from the file: trust it only as far as the compressed bytes
        // can back it, and never read past it (a zip bomb, or a header that lies).
        let (declared, compressed) = (member.size(), member.compressed_size());
        let most = match member.compression() {
            zip::CompressionMethod::Stored => compressed,
            _ => compressed
                .saturating_mul(MAX_DEFLATE_RATIO)
                .saturating_add(1 << 10),
        };
        if declared > most {
            return Err(bad(
                Some(&name),
                format!(
                    "declares {declared} bytes uncompressed from {compressed} compressed bytes, \
                     more than {:?} compression can give",
                    member.compression()
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(declared.min(1 << 30) as usize);
        (&mut member)
            .take(declared + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(Some(&name), e.to_string()))?;
        if bytes.len() as u64 != declared {
            return Err(bad(
                Some(&name),
                format!("holds {} bytes, not the {declared} declared", bytes.len()),
            ));
        }
        let tensor = parse_npy(&bytes).map_err(|problem| bad(Some(&name), problem))?;
        arrays.push((
            name.strip_suffix(".npy").unwrap_or(&name).to_string(),
            tensor,
        ));
    }
    Ok(arrays)
}

/// Parses one `.npy` file (format versions 1, 2 and 3).
pub(crate) fn parse_npy(bytes: &[u8]) -> std::result::Result<Tensor, String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (bad magic)".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or("truncated header")
        .and_then(|h| std::str::from_utf8(h).map_err(|_| "header is not text"))?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran =
        match dict_value(header, "fortran_order").ok_or("header has no 'fortran_order'")? {
            "True" => true,
            "False" => false,
            other => return Err(format!("bad fortran_order {other:?}")),
        };
    let shape = parse_shape(dict_value(header, "shape").ok_or("header has no 'shape'")?)?;

    let (kind, size) = match descr {
        "<f4" | "=f4" => (Kind::Float, 4),
        "<f8" | "=f8" => (Kind::Double, 8),
        "<f2" | "=f2" => (Kind::Half, 2),
        "<i8" | "=i8" => (Kind::Int64, 8),
        "<i4" | "=i4" => (Kind::Int, 4),
        "|i1" => (Kind::Int8, 1),
        "|u1" => (Kind::Uint8, 1),
        "|b1" => (Kind::Bool, 1),
        d if d.starts_with('>') => return Err(format!("big-endian dtype {d:?} is not supported")),
        d => return Err(format!("unsupported dtype {d:?}")),
    };
    let needed = shape
        .iter()
        .try_fold(size, |acc: usize, &d| {
            usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
        })
        .ok_or_else(|| format!("shape {shape:?} is negative or overflows"))?;
    let data = &bytes[start + header_len..];
    if data.len() != needed {
        return Err(format!(
            "data is {} bytes, but shape {shape:?} of {descr} needs {needed}",
            data.len(),
        ));
    }
    let tensor = if fortran {
        // Column-major: the bytes are the transpose, laid out row-major.
        let reversed: Vec<i64> = shape.iter().rev().copied().collect();
        let dims: Vec<i64> = (0..shape.len() as i64).rev().collect();
        Tensor::f_from_data_size(data, &reversed, kind)
            .and_then(|t| t.f_permute(dims.as_slice()))
            .map(|t| t.contiguous())
    } else {
        Tensor::f_from_data_size(data, &shape, kind)
    };
    tensor.map_err(|e| e.to_string())
}

/// The raw text of `key`'s value in a Python dict literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else if let Some(q @ ('\'' | '"')) = rest.chars().next() {
        rest[1..].find(q)? + 2
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

fn parse_shape(text: &str) -> std::result::Result<Vec<i64>, String> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("bad shape {text:?}"))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.trim_end_matches('L')
                .parse::<i64>()
                .map_err(|_| format!("bad shape {text:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8], version: u8) -> Vec<u8> {
        let mut header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (header.len() + 11) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY".to_vec();
        out.extend([version, 0]);
        if version == 1 {
            out.extend((header.len() as u16).to_le_bytes());
        } else {
            out.extend((header.len() as u32).to_le_bytes());
        }
        out.extend(header.bytes());
        out.extend(data);
        out
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_versions_orders_and_scalars() {
        let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        for version in [1, 2, 3] {
            let t = parse_npy(&npy("<f4", false, "(2, 3)", &data, version)).unwrap();
            assert_eq!(t.size(), [2, 3]);
            assert_eq!(t.double_value(&[0, 2]), 3.0);
        }
        // Fortran order: the same bytes are the columns.
        let t = parse_npy(&npy("<f4", true, "(2, 3)", &data, 1)).unwrap();
        assert_eq!(t.double_value(&[0, 2]), 5.0);
        assert_eq!(t.double_value(&[1, 0]), 2.0);
        let t = parse_npy(&npy("<f8", false, "()", &7.5f64.to_le_bytes(), 1)).unwrap();
        assert_eq!((t.size(), t.double_value(&[])), (vec![], 7.5));
        let t = parse_npy(&npy("<f4", false, "(6,)", &data, 1)).unwrap();
        assert_eq!(t.size(), [6]);
    }

    #[test]
    fn bad_npy_files_say_why() {
        let data = f32_bytes(&[1.0, 2.0]);
        assert!(parse_npy(b"garbage").unwrap_err().contains("magic"));
        assert!(parse_npy(&npy(">f4", false, "(2,)", &data, 1))
            .unwrap_err()
            .contains("big-endian"));
        assert!(parse_npy(&npy("<c8", false, "(2,)", &data, 1))
            .unwrap_err()
            .contains("unsupported dtype"));
        assert!(parse_npy(&npy("<f4", false, "(3,)", &data, 1))
            .unwrap_err()
            .contains("needs 12"));
        for shape in ["(-1, 2)", "(4294967296, 4294967296, 4)"] {
            let err = parse_npy(&npy("<f4", false, shape, &data, 1)).unwrap_err();
            assert!(err.contains("negative or overflows"), "{shape}: {err}");
        }
    }

    /// A one-member archive whose headers declare `declared` bytes uncompressed.
    fn lying_npz(declared: Option<u32>) -> tempfile::NamedTempFile {
        use std::io::Write;
        let member = npy("<f4", false, "(2,)", &f32_bytes(&[1.0, 2.0]), 1);
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("W_enc.npy", options).unwrap();
        zip.write_all(&member).unwrap();
        let mut bytes = zip.finish().unwrap().into_inner();
        if let Some(size) = declared {
            // The uncompressed size: offset 22 of the local header, 24 of the central one.
            for (signature, offset) in [(0x0403_4b50u32, 22), (0x0201_4b50, 24)] {
                let at = bytes
                    .windows(4)
                    .position(|w| w == signature.to_le_bytes())
                    .unwrap();
                bytes[at + offset..at + offset + 4].copy_from_slice(&size.to_le_bytes());
            }
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&bytes).unwrap();
        file
    }

    #[test]
    fn archives_that_lie_about_sizes_are_refused_before_allocating() {
        let honest = lying_npz(None);
        assert_eq!(read_npz(honest.path()).unwrap()[0].1.size(), [2]);
        let bomb = lying_npz(Some(0xFFFF_FFF0));
        let err = read_npz(bomb.path()).unwrap_err().to_string();
        assert!(
            err.contains("W_enc.npy") && err.contains("declares"),
            "{err}"
        );
    }
}
