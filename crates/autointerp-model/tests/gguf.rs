//! GGUF reader, dequantisation and tokenizer: small files built here byte by byte (including
//! corrupt ones, and random mutations under proptest), and the real SmolLM2-135M GGUF fetched
//! by `scripts/fetch-assets.sh smollm2`.

use std::path::PathBuf;

use autointerp_model::gguf::{Array, GgmlType, GgufFile, Value};
use autointerp_model::Error;
use half::f16;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// A tiny GGUF writer for fixtures.

/// A metadata value to write.
#[derive(Clone)]
enum V {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(&'static str),
    U64(u64),
    I64(i64),
    F64(f64),
    /// An array: element type id and encoded elements.
    Arr(u32, Vec<V>),
}

impl V {
    fn type_id(&self) -> u32 {
        match self {
            V::U8(_) => 0,
            V::I8(_) => 1,
            V::U16(_) => 2,
            V::I16(_) => 3,
            V::U32(_) => 4,
            V::I32(_) => 5,
            V::F32(_) => 6,
            V::Bool(_) => 7,
            V::Str(_) => 8,
            V::Arr(..) => 9,
            V::U64(_) => 10,
            V::I64(_) => 11,
            V::F64(_) => 12,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            V::U8(v) => out.push(*v),
            V::I8(v) => out.push(*v as u8),
            V::U16(v) => out.extend(v.to_le_bytes()),
            V::I16(v) => out.extend(v.to_le_bytes()),
            V::U32(v) => out.extend(v.to_le_bytes()),
            V::I32(v) => out.extend(v.to_le_bytes()),
            V::F32(v) => out.extend(v.to_le_bytes()),
            V::Bool(v) => out.push(u8::from(*v)),
            V::Str(s) => write_str(out, s),
            V::U64(v) => out.extend(v.to_le_bytes()),
            V::I64(v) => out.extend(v.to_le_bytes()),
            V::F64(v) => out.extend(v.to_le_bytes()),
            V::Arr(ty, items) => {
                out.extend(ty.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    item.write(out);
                }
            }
        }
    }
}

fn strs(items: &[&'static str]) -> V {
    V::Arr(8, items.iter().map(|s| V::Str(s)).collect())
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A tensor to write: name, GGUF dims (innermost first), ggml type id, data.
struct T {
    name: &'static str,
    dims: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
}

/// Encodes a GGUF v3 file. Tensor data are laid out in order, each aligned to `alignment`.
fn build(kvs: &[(&str, V)], tensors: &[T], alignment: usize) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        write_str(&mut out, k);
        out.extend(v.type_id().to_le_bytes());
        v.write(&mut out);
    }
    let mut offset = 0usize;
    let mut offsets = Vec::new();
    for t in tensors {
        write_str(&mut out, t.name);
        out.extend((t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(t.ty.to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.data.len()).div_ceil(alignment) * alignment;
    }
    let data_start = out.len().div_ceil(alignment) * alignment;
    out.resize(data_start, 0);
    for (t, off) in tensors.iter().zip(offsets) {
        out.resize(data_start + off, 0);
        out.extend(&t.data);
    }
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A small but complete file: every metadata type, a nested array, llama hyperparameters, a
/// byte-level BPE tokenizer, and F32, F16 and Q8_0 tensors, with 64-byte alignment.
fn fixture() -> Vec<u8> {
    let mut q8 = f16::from_f32(0.25).to_le_bytes().to_vec();
    q8.extend((0..32).map(|i| (i as i8 - 8) as u8));
    q8.extend(f16::from_f32(-1.0).to_le_bytes());
    q8.extend((0..32).map(|i| i as u8));
    let kvs = vec![
        ("general.architecture", V::Str("llama")),
        ("general.alignment", V::U32(64)),
        ("test.u8", V::U8(200)),
        ("test.i8", V::I8(-5)),
        ("test.u16", V::U16(60000)),
        ("test.i16", V::I16(-300)),
        ("test.i32", V::I32(-70000)),
        ("test.u64", V::U64(1 << 40)),
        ("test.i64", V::I64(-(1 << 40))),
        ("test.f64", V::F64(0.125)),
        ("test.bool", V::Bool(true)),
        (
            "test.nested",
            V::Arr(
                9,
                vec![V::Arr(4, vec![V::U32(1), V::U32(2)]), V::Arr(4, vec![])],
            ),
        ),
        ("llama.context_length", V::U32(128)),
        ("llama.embedding_length", V::U32(8)),
        ("llama.block_count", V::U32(2)),
        ("llama.feed_forward_length", V::U64(16)),
        ("llama.attention.head_count", V::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", V::F32(1e-6)),
        ("llama.rope.freq_base", V::F32(10000.0)),
        ("tokenizer.ggml.model", V::Str("gpt2")),
        ("tokenizer.ggml.pre", V::Str("gpt-2")),
        (
            "tokenizer.ggml.tokens",
            strs(&["<s>", "h", "i", "Ġ", "hi", "Ġhi", "<user>"]),
        ),
        (
            "tokenizer.ggml.token_type",
            V::Arr(5, [3, 1, 1, 1, 1, 1, 4].map(V::I32).to_vec()),
        ),
        ("tokenizer.ggml.merges", strs(&["h i", "Ġ hi"])),
        ("tokenizer.ggml.bos_token_id", V::U32(0)),
        ("tokenizer.ggml.add_bos_token", V::Bool(true)),
        ("tokenizer.chat_template", V::Str("{{ messages }}")),
    ];
    let tensors = [
        T {
            name: "w.f32",
            dims: vec![3, 2],
            ty: 0,
            data: f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        },
        T {
            name: "w.f16",
            dims: vec![2],
            ty: 1,
            data: [f16::from_f32(0.5), f16::from_f32(-2.0)]
                .iter()
                .flat_map(|h| h.to_le_bytes())
                .collect(),
        },
        T {
            name: "w.q8",
            dims: vec![32, 2],
            ty: 8,
            data: q8,
        },
    ];
    build(&kvs, &tensors, 64)
}

fn open_fixture() -> GgufFile {
    GgufFile::from_bytes("fixture.gguf", fixture()).expect("fixture parses")
}

/// The `problem` of a [`Error::Gguf`], failing on any other outcome.
fn gguf_problem(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes("bad.gguf", bytes) {
        Err(e @ Error::Gguf { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("bad.gguf"),
                "error does not name the file: {msg}"
            );
            msg
        }
        Err(e) => panic!("expected a Gguf error, got {e}"),
        Ok(_) => panic!("corrupt file parsed"),
    }
}

// ---------------------------------------------------------------------------------------------
// Reader on fixtures.

#[test]
fn fixture_metadata_round_trips() {
    let g = open_fixture();
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.data_offset() % 64, 0);
    let m = g.metadata();
    assert_eq!(m["test.u8"], Value::U8(200));
    assert_eq!(m["test.i8"], Value::I8(-5));
    assert_eq!(m["test.u16"], Value::U16(60000));
    assert_eq!(m["test.i16"], Value::I16(-300));
    assert_eq!(m["test.i32"], Value::I32(-70000));
    assert_eq!(m["test.u64"], Value::U64(1 << 40));
    assert_eq!(m["test.i64"], Value::I64(-(1 << 40)));
    assert_eq!(m["test.f64"], Value::F64(0.125));
    assert_eq!(m["test.bool"], Value::Bool(true));
    assert_eq!(
        m["test.nested"],
        Value::Array(Array::Array(vec![
            Array::U32(vec![1, 2]),
            Array::U32(vec![])
        ]))
    );
    assert_eq!(g.get_u64("test.u64").unwrap(), 1 << 40);
    assert_eq!(g.opt_i64("test.i64").unwrap(), Some(-(1 << 40)));
    assert_eq!(g.get_f32("test.f64").unwrap(), 0.125);
    assert!(g.get_bool("test.bool").unwrap());
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.opt_str("no.such.key").unwrap(), None);
}

#[test]
fn fixture_tensors_dequantise_in_pytorch_order() {
    let g = open_fixture();
    assert_eq!(g.tensors().len(), 3);
    let info = g.tensor_info("w.f32").unwrap();
    assert_eq!(info.dims, vec![3, 2]);
    assert_eq!(info.shape(), vec![2, 3]);
    let (v, shape) = g.dequantize("w.f32").unwrap();
    assert_eq!(shape, vec![2, 3]);
    assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);

    assert_eq!(g.dequantize("w.f16").unwrap(), (vec![0.5, -2.0], vec![2]));

    let (v, shape) = g.dequantize("w.q8").unwrap();
    assert_eq!(shape, vec![2, 32]);
    assert_eq!(v[0], -2.0); // 0.25 * -8
    assert_eq!(v[31], 5.75); // 0.25 * 23
    assert_eq!(v[32], 0.0); // -1 * 0
    assert_eq!(v[63], -31.0); // -1 * 31
    assert_eq!(g.tensor_info("w.q8").unwrap().ggml_type, GgmlType::Q8_0);

    let t = g.to_tensor("w.f32").unwrap();
    assert_eq!(t.size(), vec![2, 3]);
    assert_eq!(t.kind(), tch::Kind::Float);
    assert_eq!(t.double_value(&[1, 0]), 4.0);
}

#[test]
fn missing_and_mistyped_keys_are_named() {
    let g = open_fixture();
    let e = g.get_u64("llama.vocab_size").unwrap_err();
    assert!(
        matches!(&e, Error::MissingMetadata { key, .. } if key == "llama.vocab_size"),
        "{e}"
    );
    assert!(e.to_string().contains("fixture.gguf"));
    let e = g.get_str("llama.block_count").unwrap_err();
    assert!(
        matches!(&e, Error::MetadataType { key, .. } if key == "llama.block_count"),
        "{e}"
    );
    let e = g.get_u64("test.i8").unwrap_err(); // negative
    assert!(matches!(e, Error::MetadataType { .. }), "{e}");
    let e = g.dequantize("no.such.tensor").unwrap_err();
    assert!(matches!(e, Error::MissingTensor { .. }), "{e}");
}

#[test]
fn fixture_hparams_and_tokenizer() {
    let g = open_fixture();
    let hp = g.hparams().unwrap();
    assert_eq!(hp.architecture, "llama");
    assert_eq!(hp.block_count, 2);
    assert_eq!(hp.feed_forward_length, 16);
    assert_eq!(hp.head_count_kv, 2, "defaults to head_count");
    assert_eq!(hp.head_dim(), 4);
    assert_eq!(hp.rope_freq_base, Some(10000.0));
    assert_eq!(hp.vocab_size, Some(7));
    assert!(hp.tied_embeddings);

    let tok = g.tokenizer().unwrap();
    assert!(tok.add_bos());
    assert_eq!(tok.bos_id(), Some(0));
    assert_eq!(tok.encode("hi hi", true).unwrap(), vec![0, 4, 5]);
    assert_eq!(tok.encode("hi hi", false).unwrap(), vec![4, 5]);
    assert_eq!(tok.encode("hi<user>", false).unwrap(), vec![4, 6]);
    assert_eq!(tok.decode(&[0, 4, 5], true).unwrap(), "hi hi");
    // User-defined tokens are matched whole but are text, not special, to decode.
    assert_eq!(tok.decode(&[0, 4, 6], true).unwrap(), "hi<user>");
    assert_eq!(tok.chat_template(), Some("{{ messages }}"));
}

#[test]
fn missing_hparam_names_the_key() {
    let bytes = build(
        &[
            ("general.architecture", V::Str("qwen2")),
            ("qwen2.embedding_length", V::U32(8)),
        ],
        &[],
        32,
    );
    let g = GgufFile::from_bytes("q.gguf", bytes).unwrap();
    let e = g.hparams().unwrap_err();
    assert!(
        matches!(&e, Error::MissingMetadata { key, .. } if key.starts_with("qwen2.")),
        "{e}"
    );
}

#[test]
fn unsupported_quant_names_tensor_and_type() {
    let bytes = build(
        &[],
        &[
            T {
                name: "w.q2k",
                dims: vec![256],
                ty: 10,
                data: vec![0; 84],
            },
            T {
                name: "w.future",
                dims: vec![4],
                ty: 1000,
                data: vec![],
            },
        ],
        32,
    );
    let g = GgufFile::from_bytes("u.gguf", bytes).unwrap();
    let e = g.dequantize("w.q2k").unwrap_err();
    assert!(
        matches!(&e, Error::UnsupportedQuant { tensor, ggml_type } if tensor == "w.q2k" && ggml_type == "Q2_K"),
        "{e}"
    );
    let e = g.dequantize("w.future").unwrap_err();
    assert!(e.to_string().contains("unknown(1000)"), "{e}");
}

/// A SentencePiece ("llama") vocabulary: merges come from scores, spaces become `▁`, unknown
/// characters fall back to byte tokens.
#[test]
fn sentencepiece_tokenizer() {
    let mut tokens: Vec<&'static str> = vec!["<unk>", "<s>", "</s>"];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32; 3];
    let bytes: Vec<&'static str> = (0..=255u8)
        .map(|b| &*Box::leak(format!("<0x{b:02X}>").into_boxed_str()))
        .collect();
    for b in bytes {
        tokens.push(b);
        types.push(6);
        scores.push(0.0);
    }
    for (piece, score) in [
        ("▁", -1.0),
        ("h", -2.0),
        ("e", -2.0),
        ("l", -2.0),
        ("o", -2.0),
        ("he", -3.0),
        ("ll", -4.0),
        ("llo", -5.0),
        ("hello", -6.0),
        ("▁hello", -7.0),
        // Scores lower than "he": merging "▁" with "h" first would block "▁hello".
        ("▁h", -8.0),
    ] {
        tokens.push(piece);
        types.push(1);
        scores.push(score);
    }
    let id = |p: &str| tokens.iter().position(|t| *t == p).unwrap() as u32;
    let kvs = vec![
        ("tokenizer.ggml.model", V::Str("llama")),
        ("tokenizer.ggml.tokens", strs(&tokens)),
        (
            "tokenizer.ggml.token_type",
            V::Arr(5, types.iter().map(|&t| V::I32(t)).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            V::Arr(6, scores.iter().map(|&s| V::F32(s)).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", V::U32(1)),
        ("tokenizer.ggml.eos_token_id", V::U32(2)),
        ("tokenizer.ggml.unknown_token_id", V::U32(0)),
    ];
    let g = GgufFile::from_bytes("spm.gguf", build(&kvs, &[], 32)).unwrap();
    let tok = g.tokenizer().unwrap();
    assert!(
        tok.add_bos(),
        "SentencePiece vocabularies add BOS by default"
    );
    let ids = tok.encode("hello", true).unwrap();
    assert_eq!(ids, vec![1, id("▁hello")]);
    // "é" is not in the vocabulary: UTF-8 bytes C3 A9.
    let ids = tok.encode("hello é", false).unwrap();
    assert_eq!(ids, vec![id("▁hello"), id("▁"), id("<0xC3>"), id("<0xA9>")]);
    assert_eq!(tok.decode(&ids, true).unwrap(), "hello é");
    assert_eq!(tok.decode(&[1, id("▁hello")], true).unwrap(), "hello");
}

#[test]
fn unsupported_tokenizer_model_is_named() {
    let kvs = vec![
        ("tokenizer.ggml.model", V::Str("bert")),
        ("tokenizer.ggml.tokens", strs(&["a"])),
    ];
    let g = GgufFile::from_bytes("b.gguf", build(&kvs, &[], 32)).unwrap();
    let e = g.tokenizer().unwrap_err();
    assert!(matches!(e, Error::Tokenizer { .. }), "{e}");
    assert!(e.to_string().contains("bert"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Corrupt files.

#[test]
fn bad_magic_and_versions() {
    let mut b = fixture();
    b[0] = b'X';
    assert!(gguf_problem(b).contains("not a GGUF file"));
    for (version, expect) in [(1u32, "version 1"), (4, "unsupported GGUF version 4")] {
        let mut b = fixture();
        b[4..8].copy_from_slice(&version.to_le_bytes());
        let msg = gguf_problem(b);
        assert!(msg.contains(expect), "{msg}");
    }
    let mut b = fixture();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(gguf_problem(b).contains("big-endian"));
    assert!(gguf_problem(vec![]).contains("truncated"));
    assert!(gguf_problem(b"GGUF\x03\0\0".to_vec()).contains("truncated"));
}

#[test]
fn every_truncation_is_an_error() {
    let full = fixture();
    let end_of_last = full.len();
    for len in 0..end_of_last {
        let r = GgufFile::from_bytes("t.gguf", full[..len].to_vec());
        assert!(
            matches!(r, Err(Error::Gguf { .. })),
            "truncation to {len} bytes did not fail"
        );
    }
}

#[test]
fn absurd_lengths_and_counts() {
    // A key whose length is 2^60.
    let mut b = build(&[("k", V::U8(1))], &[], 32);
    b[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let msg = gguf_problem(b);
    assert!(msg.contains("1152921504606846976"), "{msg}");

    // A string value of length 2^60.
    let mut b = build(&[("k", V::Str("abc"))], &[], 32);
    let at = 24 + 8 + 1 + 4;
    b[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    gguf_problem(b);

    // An array of 2^62 elements.
    let mut b = build(&[("k", V::Arr(4, vec![V::U32(1)]))], &[], 32);
    let at = 24 + 8 + 1 + 4 + 4;
    b[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(gguf_problem(b).contains("cannot fit"));

    // Tensor and metadata counts of 2^63.
    let mut b = fixture();
    b[8..16].copy_from_slice(&(1u64 << 63).to_le_bytes());
    gguf_problem(b);
    let mut b = fixture();
    b[16..24].copy_from_slice(&(1u64 << 63).to_le_bytes());
    gguf_problem(b);

    // An unknown value type.
    let mut b = build(&[("k", V::U8(1))], &[], 32);
    b[33..37].copy_from_slice(&99u32.to_le_bytes());
    assert!(gguf_problem(b).contains("unknown value type 99"));

    // Arrays nested 100 deep.
    let mut v = V::Arr(4, vec![]);
    for _ in 0..100 {
        v = V::Arr(9, vec![v]);
    }
    assert!(gguf_problem(build(&[("k", v)], &[], 32)).contains("deeper"));

    // A duplicate key.
    let b = build(&[("k", V::U8(1)), ("k", V::U8(2))], &[], 32);
    assert!(gguf_problem(b).contains("twice"));
}

#[test]
fn bad_tensor_infos() {
    let t = |dims: Vec<u64>, ty: u32, data: Vec<u8>| T {
        name: "w",
        dims,
        ty,
        data,
    };
    // Data running past the end of the file.
    let mut b = build(&[], &[t(vec![4], 0, f32_bytes(&[1.0; 4]))], 32);
    b.truncate(b.len() - 1);
    assert!(gguf_problem(b).contains("runs past the end"));
    // Dimensions whose product overflows.
    let msg = gguf_problem(build(&[], &[t(vec![1 << 32, 1 << 32, 4], 0, vec![])], 32));
    assert!(msg.contains("overflows"), "{msg}");
    // Too many dimensions.
    assert!(gguf_problem(build(&[], &[t(vec![1; 5], 0, vec![0; 4])], 32)).contains("dimensions"));
    // A quantised row that is not a whole number of blocks.
    assert!(gguf_problem(build(&[], &[t(vec![33], 8, vec![0; 36])], 32)).contains("blocks"));
    // A misaligned offset.
    let mut b = build(&[], &[t(vec![1], 0, vec![0; 4])], 32);
    let at = 24 + 8 + 1 + 4 + 8 + 4;
    b[at..at + 8].copy_from_slice(&4u64.to_le_bytes());
    assert!(gguf_problem(b).contains("alignment"));
    // An alignment that is not a power of two.
    let b = build(&[("general.alignment", V::U32(48))], &[], 32);
    assert!(gguf_problem(b).contains("general.alignment"));
}

/// Exercises everything a caller might do with a file that parsed; must not panic.
fn use_everything(g: &GgufFile) {
    for t in g.tensors() {
        let _ = g.dequantize(&t.name);
    }
    let _ = g.hparams();
    if let Ok(tok) = g.tokenizer() {
        if let Ok(ids) = tok.encode("hi hi<user>", true) {
            let _ = tok.decode(&ids, false);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random byte changes and truncations of a valid file give an error or a file, never a
    /// panic or an abort.
    #[test]
    fn mutations_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut b = fixture();
        for (at, byte) in edits {
            let i = at.index(b.len());
            b[i] = byte;
        }
        if truncate {
            let len = cut.index(b.len());
            b.truncate(len);
        }
        if let Ok(g) = GgufFile::from_bytes("fuzz.gguf", b) {
            use_everything(&g);
        }
    }

    /// Overwriting any aligned 8 bytes with a large or extreme value (lengths, counts, dims and
    /// offsets are all u64) never panics.
    #[test]
    fn extreme_u64s_never_panic(
        at in any::<prop::sample::Index>(),
        value in prop_oneof![Just(u64::MAX), Just(1u64 << 63), Just(1u64 << 32), any::<u64>()],
    ) {
        let mut b = fixture();
        let i = at.index(b.len() - 8);
        b[i..i + 8].copy_from_slice(&value.to_le_bytes());
        if let Ok(g) = GgufFile::from_bytes("fuzz.gguf", b) {
            use_everything(&g);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The real SmolLM2-135M-Instruct Q4_1 GGUF.

/// Path of the SmolLM2 GGUF, fetched (once) by the project's script.
fn smollm2_path() -> PathBuf {
    autointerp_core::assets::fetch(autointerp_core::assets::Asset::Smollm2)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn smollm2() -> GgufFile {
    GgufFile::open(smollm2_path()).expect("SmolLM2 GGUF opens")
}

#[test]
fn smollm2_header_and_hparams() {
    let g = smollm2();
    assert_eq!(g.version(), 3);
    assert_eq!(g.tensors().len(), 272);
    let hp = g.hparams().unwrap();
    assert_eq!(hp.architecture, "llama");
    assert_eq!(hp.block_count, 30);
    assert_eq!(hp.embedding_length, 576);
    assert_eq!(hp.head_count, 9);
    assert_eq!(hp.head_count_kv, 3);
    assert_eq!(hp.feed_forward_length, 1536);
    assert_eq!(hp.vocab_size, Some(49152));
    assert_eq!(hp.rope_freq_base, Some(1e5));
    assert_eq!(hp.rms_norm_eps, 1e-5);
    assert_eq!(hp.head_dim(), 64);
    assert!(hp.tied_embeddings);
}

#[test]
fn smollm2_embedding_q8_0() {
    let g = smollm2();
    let info = g.tensor_info("token_embd.weight").unwrap();
    assert_eq!(info.ggml_type, GgmlType::Q8_0);
    let (v, shape) = g.dequantize("token_embd.weight").unwrap();
    assert_eq!(shape, vec![49152, 576]);
    assert_eq!(v.len(), 49152 * 576);
    assert!(v.iter().all(|x| x.is_finite()));
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(max > 0.01 && max < 100.0, "max |w| = {max}");
    // The first block by hand: f16 scale, then 32 signed bytes.
    let raw = g.tensor_data("token_embd.weight").unwrap();
    let d = f16::from_le_bytes([raw[0], raw[1]]).to_f32();
    for j in 0..32 {
        assert_eq!(v[j], d * f32::from(raw[2 + j] as i8));
    }
}

#[test]
fn smollm2_q4_1_weight() {
    let g = smollm2();
    let name = "blk.0.attn_q.weight";
    assert_eq!(g.tensor_info(name).unwrap().ggml_type, GgmlType::Q4_1);
    let (v, shape) = g.dequantize(name).unwrap();
    assert_eq!(shape, vec![576, 576]);
    assert!(v.iter().all(|x| x.is_finite()));
    assert!(v.iter().any(|&x| x != 0.0));
    // The first block by hand: f16 scale d, f16 min m, 16 bytes of nibbles.
    let raw = g.tensor_data(name).unwrap();
    let d = f16::from_le_bytes([raw[0], raw[1]]).to_f32();
    let m = f16::from_le_bytes([raw[2], raw[3]]).to_f32();
    for j in 0..16 {
        assert_eq!(v[j], d * f32::from(raw[4 + j] & 0x0F) + m);
        assert_eq!(v[j + 16], d * f32::from(raw[4 + j] >> 4) + m);
    }
    let t = g.to_tensor("blk.0.ffn_down.weight").unwrap();
    assert_eq!(t.size(), vec![576, 1536]);
}

#[test]
fn smollm2_tokenizer() {
    let g = smollm2();
    let tok = g.tokenizer().unwrap();
    assert_eq!(tok.model(), "gpt2");
    assert!(!tok.add_bos(), "SmolLM2 does not add BOS");
    assert!(!g.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert_eq!(tok.vocab_size(), 49152);
    let ids = tok.encode("Hello world", true).unwrap();
    assert_eq!(ids, vec![19556, 905]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "Hello world");

    let im_start = tok.token_to_id("<|im_start|>").unwrap();
    let im_end = tok.token_to_id("<|im_end|>").unwrap();
    let ids = tok.encode("<|im_start|>user\nHi<|im_end|>", false).unwrap();
    assert_eq!(ids.first(), Some(&im_start));
    assert_eq!(ids.last(), Some(&im_end));
    assert_eq!(
        tok.decode(&ids, false).unwrap(),
        "<|im_start|>user\nHi<|im_end|>"
    );
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nHi");
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));

    // Digits split one by one (the "smollm" pre-tokenizer), and text round-trips.
    let text = "In 1776, the Declaration — “naïve” café!  Two  spaces.\n\tTabs";
    let ids = tok.encode(text, false).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    let digits = tok.encode("1776", false).unwrap();
    assert_eq!(digits.len(), 4);

    let template = tok.chat_template().unwrap();
    assert!(template.contains("im_start"));
}
