//! `log/hookpoint_firing_counts.pt`: each hook point's per-latent firing counts, as delphi's
//! `LatentCache.save_firing_counts` writes them and its `log_results` reads them
//! (`torch.load(path, weights_only=True)`): a dict from hook point name to a 1-D int64 tensor.
//!
//! tch cannot write this file: its `Tensor::save`/`save_multi` write a TorchScript archive, which
//! `torch.load` does not return as a dict. The format is small enough to write here: a zip of
//! stored (uncompressed) entries, each 64-byte aligned, under one folder — `data.pkl`, a protocol-2
//! pickle of the dict whose tensors are `torch._utils._rebuild_tensor_v2` calls on persistent
//! storages `('storage', torch.LongStorage, '<i>', 'cpu', numel)`, and `data/<i>`, each storage's
//! little-endian bytes — plus the `version`, `byteorder`, `.format_version` and
//! `.storage_alignment` records that `torch.save` (torch 2.11) writes. Only the opcodes and
//! globals that torch's `weights_only` unpickler allows are used.

use std::io::Write;

use autointerp_latents::LatentCache;
use zip::write::SimpleFileOptions;

use crate::error::Context;
use crate::{Layout, Result};

/// Writes `log/hookpoint_firing_counts.pt` for every hook point of `cache`, keyed by the hook
/// point's name as score files name it (`layers.6`). Counts come from the cache's
/// `firing_counts.json`; a cache without them (delphi's, a hand-made one) is counted from its
/// split files, and then only when the file does not exist yet (delphi's own run wrote it).
pub(crate) fn write_for_cache(cache: &LatentCache, layout: &Layout) -> Result<()> {
    let path = layout.firing_counts();
    let mut entries = Vec::new();
    for hook in cache.hooks() {
        let counts = match hook.stored_firing_counts()? {
            Some(c) => c,
            None if path.exists() => return Ok(()),
            None => hook.count_firings()?,
        };
        entries.push((hook.hook().to_string(), counts));
    }
    let bytes = torch_dict_of_longs(&entries)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    autointerp_core::fs::write_atomic(&path, &bytes)?;
    Ok(())
}

/// `torch.save({name: torch.tensor(counts, dtype=torch.int64), ...})`, as bytes.
pub fn torch_dict_of_longs(entries: &[(String, Vec<u64>)]) -> Result<Vec<u8>> {
    let archive = "hookpoint_firing_counts";
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .with_alignment(64);
    let mut put = |name: &str, data: &[u8]| -> Result<()> {
        zip.start_file(format!("{archive}/{name}"), options)
            .map_err(std::io::Error::other)
            .and_then(|()| zip.write_all(data))
            .with_context(|| format!("writing {name} of a .pt file"))
    };
    put("data.pkl", &pickle(entries)?)?;
    put(".format_version", b"1")?;
    put(".storage_alignment", b"64")?;
    put("byteorder", b"little")?;
    for (i, (_, counts)) in entries.iter().enumerate() {
        let mut bytes = Vec::with_capacity(counts.len() * 8);
        for &c in counts {
            // Firing counts are token counts: far below i64::MAX.
            bytes.extend_from_slice(&i64::try_from(c).unwrap_or(i64::MAX).to_le_bytes());
        }
        put(&format!("data/{i}"), &bytes)?;
    }
    put("version", b"3\n")?;
    let cursor = zip
        .finish()
        .map_err(std::io::Error::other)
        .context("writing a .pt file")?;
    Ok(cursor.into_inner())
}

/// The protocol-2 pickle of the dict, its tensors' storages numbered in order.
fn pickle(entries: &[(String, Vec<u64>)]) -> Result<Vec<u8>> {
    let mut p = vec![0x80, 2, b'}']; // PROTO 2, EMPTY_DICT
    if !entries.is_empty() {
        p.push(b'('); // MARK
        for (i, (name, counts)) in entries.iter().enumerate() {
            let numel = i32::try_from(counts.len()).map_err(|_| {
                crate::Error::Config(format!("{name}: {} latents is too wide", counts.len()))
            })?;
            unicode(&mut p, name);
            p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n"); // GLOBAL
            p.push(b'('); // MARK: the arguments
            p.push(b'('); // MARK: the persistent id
            unicode(&mut p, "storage");
            p.extend_from_slice(b"ctorch\nLongStorage\n");
            unicode(&mut p, &i.to_string());
            unicode(&mut p, "cpu");
            int(&mut p, numel);
            p.push(b't'); // TUPLE
            p.push(b'Q'); // BINPERSID
            int(&mut p, 0); // storage offset
            int(&mut p, numel);
            p.push(0x85); // TUPLE1: size
            int(&mut p, 1);
            p.push(0x85); // TUPLE1: stride
            p.push(0x89); // NEWFALSE: requires_grad
            p.extend_from_slice(b"ccollections\nOrderedDict\n)R"); // OrderedDict(): hooks
            p.push(b't'); // TUPLE
            p.push(b'R'); // REDUCE
        }
        p.push(b'u'); // SETITEMS
    }
    p.push(b'.'); // STOP
    Ok(p)
}

/// BINUNICODE.
fn unicode(p: &mut Vec<u8>, s: &str) {
    p.push(b'X');
    p.extend_from_slice(&(s.len() as u32).to_le_bytes());
    p.extend_from_slice(s.as_bytes());
}

/// BININT.
fn int(p: &mut Vec<u8>, v: i32) {
    p.push(b'J');
    p.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn entries() -> Vec<(String, Vec<u64>)> {
        vec![
            ("layers.0".into(), vec![3, 0, 1]),
            ("layers.1.mlp".into(), vec![0, 2]),
        ]
    }

    /// The records `torch.save` writes, 64-byte aligned, the storages little-endian int64.
    #[test]
    fn the_archive_holds_torch_save_records() {
        let bytes = torch_dict_of_longs(&entries()).unwrap();
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&bytes)).unwrap();
        let names: Vec<String> = zip.file_names().map(str::to_owned).collect();
        for name in [
            "data.pkl",
            ".format_version",
            ".storage_alignment",
            "byteorder",
            "data/0",
            "data/1",
            "version",
        ] {
            assert!(
                names.contains(&format!("hookpoint_firing_counts/{name}")),
                "{name}: {names:?}"
            );
        }
        let mut read = |name: &str| {
            let mut f = zip
                .by_name(&format!("hookpoint_firing_counts/{name}"))
                .unwrap();
            assert_eq!(f.compression(), zip::CompressionMethod::Stored);
            assert_eq!(f.data_start() % 64, 0, "{name}");
            let mut out = Vec::new();
            f.read_to_end(&mut out).unwrap();
            out
        };
        let long = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        assert_eq!(read("data/0"), long(&[3, 0, 1]));
        assert_eq!(read("data/1"), long(&[0, 2]));
        assert_eq!(read("version"), b"3\n");
        assert_eq!(read("byteorder"), b"little");
        let pkl = read("data.pkl");
        assert!(pkl.starts_with(&[0x80, 2, b'}', b'(']) && pkl.ends_with(b"u."));
        assert_eq!(pickle(&[]).unwrap(), b"\x80\x02}.");
    }

    /// The bytes that torch 2.11's `torch.load(weights_only=True)` was checked to read as the
    /// dict (tests/fixtures/delphi/README.md). `AUTOINTERP_WRITE_FIXTURES=1` rewrites the file.
    #[test]
    fn the_bytes_are_the_ones_torch_was_checked_to_read() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/delphi/hookpoint_firing_counts.pt");
        let bytes = torch_dict_of_longs(&entries()).unwrap();
        if std::env::var_os("AUTOINTERP_WRITE_FIXTURES").is_some() {
            std::fs::write(&path, &bytes).unwrap();
        }
        assert!(
            std::fs::read(&path).unwrap() == bytes,
            "{} differs",
            path.display()
        );
    }
}
