//! Run with: cargo run --release -p autointerp-model --example gguf_inspect -- PATH.gguf
//!
//! Prints a GGUF file's header, metadata (long arrays shortened), hyperparameters, tensor
//! table, and how its tokenizer splits a sample sentence.

use anyhow::Context;
use autointerp_model::gguf::GgufFile;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .context("usage: gguf_inspect PATH.gguf")?;
    let gguf = GgufFile::open(&path)?;
    println!(
        "{path}: GGUF v{}, {} metadata keys, {} tensors, alignment {}, data at byte {}",
        gguf.version(),
        gguf.metadata().len(),
        gguf.tensors().len(),
        gguf.alignment(),
        gguf.data_offset()
    );

    println!("\n# metadata");
    for (key, value) in gguf.metadata() {
        let mut shown = value.to_string();
        if shown.chars().count() > 160 {
            shown = shown.chars().take(160).collect::<String>() + "…";
        }
        println!(
            "{key} ({}) = {}",
            value.type_name(),
            shown.replace('\n', "\\n")
        );
    }

    println!("\n# hyperparameters");
    match gguf.hparams() {
        Ok(hp) => println!("{hp:#?}"),
        Err(e) => println!("(none: {e})"),
    }

    println!("\n# tensors");
    println!(
        "{:<40} {:>8} {:>24} {:>12}",
        "name", "type", "shape", "bytes"
    );
    let mut counts = std::collections::BTreeMap::new();
    for t in gguf.tensors() {
        *counts.entry(t.ggml_type.name()).or_insert(0usize) += 1;
        let size = t.size.map_or("?".to_owned(), |s| s.to_string());
        println!(
            "{:<40} {:>8} {:>24} {:>12}",
            t.name,
            t.ggml_type.name(),
            format!("{:?}", t.shape()),
            size
        );
    }
    println!("types: {counts:?}");

    println!("\n# tokenizer");
    match gguf.tokenizer() {
        Ok(tok) => {
            let text = "Hello world, <|im_start|>user 12345!";
            let ids = tok.encode(text, true)?;
            let pieces: Vec<String> = ids
                .iter()
                .map(|&i| tok.id_to_token(i).unwrap_or_default())
                .collect();
            println!(
                "model {}, pre {:?}, vocab {}, bos {:?}, eos {:?}, pad {:?}, add_bos {}",
                tok.model(),
                tok.pre(),
                tok.vocab_size(),
                tok.bos_id(),
                tok.eos_id(),
                tok.pad_id(),
                tok.add_bos()
            );
            println!("{text:?} -> {ids:?}\n  {pieces:?}");
            println!("decoded: {:?}", tok.decode(&ids, false)?);
            if let Some(t) = tok.chat_template() {
                println!("chat template: {} chars", t.len());
            }
        }
        Err(e) => println!("(none: {e})"),
    }
    Ok(())
}
