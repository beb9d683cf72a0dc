use std::path::Path;

use half::f16;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::*;

fn sample(big: bool) -> Split {
    let row = if big { 70_000 } else { 1 };
    Split {
        start: 100,
        end: 199,
        locations: vec![
            Location {
                row: 0,
                position: 3,
                latent: 100,
            },
            Location {
                row,
                position: 0,
                latent: 199,
            },
        ],
        activations: vec![1.5, 0.25],
        tokens: (!big).then(|| Tokens {
            rows: 2,
            ctx_len: 4,
            ids: vec![5, 6, 7, 8, 9, 10, 11, 12],
        }),
    }
}

#[test]
fn ranges_match_delphi_linspace() {
    // torch.linspace(0, 10, 4).long() == [0, 3, 6, 10]
    assert_eq!(split_ranges(10, 3), vec![(0, 2), (3, 5), (6, 9)]);
    assert_eq!(split_ranges(131_072, 5)[4], (104_857, 131_071));
    assert_eq!(parse_file_name("3_5.safetensors"), Some((3, 5)));
    assert_eq!(parse_file_name("5_3.safetensors"), None);
    assert_eq!(parse_file_name("config.json"), None);
}

#[test]
fn round_trip_small_and_wide_locations() {
    let dir = tempfile::tempdir().unwrap();
    for big in [false, true] {
        let split = sample(big);
        let path = split.write_to_dir(dir.path()).unwrap();
        let st_bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&st_bytes).unwrap();
        let want = if big { Dtype::U32 } else { Dtype::U16 };
        assert_eq!(st.tensor("locations").unwrap().dtype(), want);
        assert_eq!(Split::read(&path).unwrap(), split);
    }
}

#[test]
fn corrupt_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample(false).write_to_dir(dir.path()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = Split::read(&path).unwrap_err().to_string();
    assert!(msg.contains("100_199.safetensors"), "{msg}");

    let mut split = sample(false);
    split.locations[0].latent = 5;
    assert!(split
        .to_bytes()
        .unwrap_err()
        .to_string()
        .contains("outside split"));
}

/// The header the cache has always written (keys sorted, data in the order locations,
/// activations, tokens, padded with spaces to 8 bytes): changing it changes every cache file.
#[test]
fn the_header_is_byte_stable() {
    let layout = SplitLayout {
        len: 5,
        locations: LocationDtype::U16,
        tokens: Some((2, 3)),
    };
    let json = concat!(
        r#"{"activations":{"data_offsets":[30,40],"dtype":"F16","shape":[5]},"#,
        r#""locations":{"data_offsets":[0,30],"dtype":"U16","shape":[5,3]},"#,
        r#""tokens":{"data_offsets":[40,88],"dtype":"I64","shape":[2,3]}}"#
    );
    let padded = format!("{json:<width$}", width = json.len().next_multiple_of(8));
    let mut want = (padded.len() as u64).to_le_bytes().to_vec();
    want.extend(padded.as_bytes());
    let bytes = sample_layout_file(layout);
    assert_eq!(bytes.len(), want.len() + 88);
    assert_eq!(&bytes[..want.len()], &want[..]);
}

/// A complete file of `layout` with made-up values.
fn sample_layout_file(layout: SplitLayout) -> Vec<u8> {
    let mut w = SplitWriter::new(Vec::new(), Path::new("0_9.safetensors"), layout).unwrap();
    for i in 0..layout.len as u32 {
        w.write_location(i % 2, i % 3, i).unwrap();
    }
    for i in 0..layout.len {
        w.write_activation(f16::from_f32(i as f32 + 0.5)).unwrap();
    }
    if let Some((rows, ctx)) = layout.tokens {
        w.write_tokens(&(0..(rows * ctx) as u32).collect::<Vec<_>>())
            .unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn writer_and_reader_round_trip_and_agree_with_safetensors() {
    for locations in [LocationDtype::U16, LocationDtype::U32] {
        for tokens in [None, Some((2, 3))] {
            let layout = SplitLayout {
                len: 5,
                locations,
                tokens,
            };
            let bytes = sample_layout_file(layout);
            // The reference parser reads what we write.
            let st = SafeTensors::deserialize(&bytes).unwrap();
            assert_eq!(st.tensor("activations").unwrap().shape(), [5]);
            assert_eq!(st.tensor("tokens").is_ok(), tokens.is_some());

            let r =
                SplitReader::from_bytes(&bytes[..], 0, 9, Path::new("0_9.safetensors")).unwrap();
            assert_eq!(r.len(), 5);
            let mut seen = Vec::new();
            r.for_each_location(2, 3, |i, row, pos, off| seen.push((i, row, pos, off)))
                .unwrap();
            let want: Vec<_> = (0..5u32)
                .map(|i| (i as usize, u64::from(i % 2), i % 3, i))
                .collect();
            assert_eq!(seen, want);
            assert_eq!(r.activations().to_vec(), vec![0.5, 1.5, 2.5, 3.5, 4.5]);
            let t = r.tokens().map(|t| t.to_tokens().unwrap());
            assert_eq!(
                t.map(|t| (t.rows, t.ctx_len, t.ids)),
                tokens.map(|_| (2, 3, (0..6).collect()))
            );
        }
    }
}

/// delphi's files, written by the safetensors library, in the dtypes its versions have used.
fn delphi_file(loc: Dtype, act: Dtype, tok: Dtype) -> Vec<u8> {
    // Integers of the dtype's size; other dtypes get bytes of their size, for the error tests.
    let ints = |d: Dtype, v: &[i64]| -> Vec<u8> {
        match d.bitsize() / 8 {
            2 => v.iter().flat_map(|&x| (x as u16).to_le_bytes()).collect(),
            4 => v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
            _ => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
        }
    };
    let acts = [1.5f32, -2.0];
    let act_bytes: Vec<u8> = match act {
        Dtype::F16 => acts
            .iter()
            .flat_map(|&a| f16::from_f32(a).to_le_bytes())
            .collect(),
        Dtype::BF16 => acts
            .iter()
            .flat_map(|&a| half::bf16::from_f32(a).to_le_bytes())
            .collect(),
        Dtype::F32 => acts.iter().flat_map(|&a| a.to_le_bytes()).collect(),
        _ => ints(act, &[1, 2]),
    };
    let loc_bytes = ints(loc, &[0, 1, 0, 1, 2, 3]);
    let tok_bytes = ints(tok, &[10, 11, 12, 13, 14, 15]);
    let tensors = vec![
        (
            "locations",
            TensorView::new(loc, vec![2, 3], &loc_bytes).unwrap(),
        ),
        (
            "activations",
            TensorView::new(act, vec![2], &act_bytes).unwrap(),
        ),
        (
            "tokens",
            TensorView::new(tok, vec![2, 3], &tok_bytes).unwrap(),
        ),
    ];
    safetensors::serialize(tensors, None).unwrap()
}

#[test]
fn reads_every_dtype_delphi_writes() {
    for (loc, act, tok) in [
        (Dtype::U16, Dtype::F16, Dtype::I64),
        (Dtype::I32, Dtype::BF16, Dtype::I32),
        (Dtype::I64, Dtype::F32, Dtype::I64),
    ] {
        let bytes = delphi_file(loc, act, tok);
        let split = Split::from_bytes(&bytes, 4, 7, Path::new("4_7.safetensors")).unwrap();
        assert_eq!(
            split.locations,
            vec![
                Location {
                    row: 0,
                    position: 1,
                    latent: 4
                },
                Location {
                    row: 1,
                    position: 2,
                    latent: 7
                }
            ],
            "{loc:?}"
        );
        assert_eq!(split.activations, vec![1.5, -2.0], "{act:?}");
        assert_eq!(split.tokens.unwrap().ids, vec![10, 11, 12, 13, 14, 15]);
    }
}

/// `bytes` with `from` replaced by `to` in the header (whose length is updated).
fn edit_header(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    assert!(header.contains(from), "{header}");
    let header = header.replace(from, to);
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(&bytes[8 + n..]);
    out
}

/// Where tensor `name`'s bytes lie in the file.
fn tensor_bytes(bytes: &[u8], name: &str) -> std::ops::Range<usize> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let at = |i: usize| 8 + n + header[name]["data_offsets"][i].as_u64().unwrap() as usize;
    at(0)..at(1)
}

fn read_err(bytes: &[u8]) -> String {
    match Split::from_bytes(bytes, 4, 7, Path::new("dir/4_7.safetensors")) {
        Ok(_) => panic!("read a malformed file"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("dir/4_7.safetensors"), "{msg}");
            msg
        }
    }
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = delphi_file(Dtype::U16, Dtype::F16, Dtype::I64);
    for len in 0..bytes.len() {
        read_err(&bytes[..len]);
    }
    assert!(read_err(&bytes[..5]).contains("too short"));
    let msg = read_err(&bytes[..bytes.len() - 1]);
    assert!(msg.contains("truncated"), "{msg}");
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(read_err(&longer).contains("tensors end at"));
}

#[test]
fn a_header_longer_than_the_file_is_an_error() {
    let mut bytes = delphi_file(Dtype::U16, Dtype::F16, Dtype::I64);
    for claim in [bytes.len() as u64, u64::MAX] {
        bytes[..8].copy_from_slice(&claim.to_le_bytes());
        let msg = read_err(&bytes);
        assert!(msg.contains(&format!("claims {claim} bytes")), "{msg}");
    }
    // Offsets past the data, in a file that is not truncated.
    let bytes = delphi_file(Dtype::U16, Dtype::F16, Dtype::I64);
    let msg = read_err(&edit_header(&bytes, "[0,48]", "[0,99]"));
    assert!(msg.contains("tokens") && msg.contains("[0, 99]"), "{msg}");
    let msg = read_err(&edit_header(&bytes, "{", "["));
    assert!(msg.contains("not a safetensors header"), "{msg}");
}

#[test]
fn wrong_dtypes_and_shapes_are_errors_naming_the_tensor() {
    let msg = read_err(&delphi_file(Dtype::F32, Dtype::F16, Dtype::I64));
    assert!(
        msg.contains("`locations`") && msg.contains("dtype F32"),
        "{msg}"
    );
    let msg = read_err(&delphi_file(Dtype::U16, Dtype::I64, Dtype::I64));
    assert!(
        msg.contains("`activations`") && msg.contains("dtype I64"),
        "{msg}"
    );
    let msg = read_err(&delphi_file(Dtype::U16, Dtype::F16, Dtype::F32));
    assert!(
        msg.contains("`tokens`") && msg.contains("dtype F32"),
        "{msg}"
    );

    let bytes = delphi_file(Dtype::U16, Dtype::F16, Dtype::I64);
    // A shape that does not match the bytes; a missing tensor.
    let msg = read_err(&edit_header(&bytes, "[2,3]", "[3,2]"));
    assert!(msg.contains("shape [3, 2]"), "{msg}");
    let msg = read_err(&edit_header(&bytes, "\"activations\"", "\"activationz\""));
    assert!(msg.contains("`activations`: missing"), "{msg}");
}

#[test]
fn values_outside_the_split_or_grid_are_errors() {
    let mut bytes = delphi_file(Dtype::I32, Dtype::F16, Dtype::I32);
    // A negative token id: the last one.
    let end = tensor_bytes(&bytes, "tokens").end;
    bytes[end - 4..end].copy_from_slice(&(-1i32).to_le_bytes());
    assert!(read_err(&bytes).contains("holds -1, not a token id"));
    // A latent offset past the split: the reader is told the split is 4..=5.
    let bytes = delphi_file(Dtype::U16, Dtype::F16, Dtype::I64);
    let msg = Split::from_bytes(&bytes, 4, 5, Path::new("4_5.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("latent offset 3, outside the split's 0..=1"),
        "{msg}"
    );
    // A position past the grid.
    let r = SplitReader::from_bytes(&bytes[..], 4, 7, Path::new("4_7.safetensors")).unwrap();
    let msg = r
        .for_each_location(2, 2, |_, _, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("location 1 at (1, 2) is outside the 2×2 token grid"),
        "{msg}"
    );
}

#[test]
fn the_writer_refuses_what_the_layout_does_not_hold() {
    let layout = SplitLayout {
        len: 1,
        locations: LocationDtype::U16,
        tokens: None,
    };
    let path = Path::new("0_9.safetensors");
    let mut w = SplitWriter::new(Vec::new(), path, layout).unwrap();
    let msg = w.write_activation(f16::ONE).unwrap_err().to_string();
    assert!(msg.contains("after 0 of the 1 locations"), "{msg}");
    let msg = w.write_location(70_000, 0, 0).unwrap_err().to_string();
    assert!(msg.contains("does not fit U16"), "{msg}");
    let mut w = SplitWriter::new(Vec::new(), path, layout).unwrap();
    w.write_location(1, 2, 3).unwrap();
    assert!(w.write_location(1, 2, 3).is_err());
    w.write_activation(f16::ONE).unwrap();
    assert!(w.write_activation(f16::ONE).is_err());
    assert!(w
        .write_tokens(&[1])
        .unwrap_err()
        .to_string()
        .contains("no token grid"));
    let bytes = w.finish().unwrap();
    assert_eq!(
        Split::from_bytes(&bytes, 0, 9, path).unwrap().activations,
        vec![1.0]
    );
}

#[test]
fn an_unfinished_file_never_appears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0_9.safetensors");
    let layout = SplitLayout {
        len: 2,
        locations: LocationDtype::U32,
        tokens: None,
    };
    let mut w = SplitWriter::create(&path, layout).unwrap();
    w.write_location(0, 0, 0).unwrap();
    drop(w);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let mut w = SplitWriter::create(&path, layout).unwrap();
    w.write_location(0, 0, 0).unwrap();
    assert!(w.commit().is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // A file named as no split, and an empty one.
    let other = dir.path().join("notes.safetensors");
    std::fs::write(&other, b"").unwrap();
    let msg = SplitReader::open(&other).unwrap_err().to_string();
    assert!(
        msg.contains("notes.safetensors") && msg.contains("<start>_<end>"),
        "{msg}"
    );
    std::fs::write(&path, b"").unwrap();
    let msg = SplitReader::open(&path).unwrap_err().to_string();
    assert!(
        msg.contains("0_9.safetensors") && msg.contains("too short"),
        "{msg}"
    );
}
