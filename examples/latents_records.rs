//! Run with: cargo run --release -p autointerp-latents --example latents_records -- CACHE_DIR HOOKPOINT [LATENT...]
//!
//! Builds the records of a hook point's latents (all of them, or those listed) from a latent
//! cache (ours, delphi's, or a folder of shards), prints the first few, then how many were built,
//! how fast, and the process's peak memory. Tokens print as `<id>`: this example loads no
//! tokenizer.

use std::time::Instant;

use anyhow::Context;
use autointerp_core::{Example, HookPoint};
use autointerp_latents::{LatentCache, LatentDataset, LatentsConfig};

fn show(e: &Example) -> String {
    e.str_tokens
        .iter()
        .zip(&e.normalized)
        .map(|(t, &n)| {
            if n > 0 {
                format!("[{t}:{n}]")
            } else {
                t.clone()
            }
        })
        .collect::<Vec<_>>()
        .join("")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, hook, latents @ ..] = args.as_slice() else {
        anyhow::bail!("usage: latents_records CACHE_DIR HOOKPOINT [LATENT...]");
    };
    let hook: HookPoint = hook.parse()?;
    let latents: Vec<u32> = latents
        .iter()
        .map(|l| l.parse().context("latent indices are integers"))
        .collect::<Result<_, _>>()?;

    let cache = LatentCache::open(dir.as_ref())?;
    let h = cache.hook(hook)?;
    println!(
        "{}: {} latents in {} splits, {} rows × {} tokens",
        h.name(),
        h.width(),
        h.split_ranges().len(),
        h.rows(),
        h.ctx_len()
    );
    let mut builder =
        LatentDataset::builder(cache, LatentsConfig::default(), |t: u32| format!("<{t}>"))
            .hooks([hook]);
    if !latents.is_empty() {
        builder = builder.latents(hook, latents);
    }
    let dataset = builder.build()?;

    let start = Instant::now();
    let mut records = dataset.records();
    let mut built = 0usize;
    for r in records.by_ref() {
        let r = r?;
        if built < 3 {
            let rec = &r.record;
            println!(
                "\n{}: fires on {:.4}% of tokens, {:.2}% of windows, max {:.3}",
                rec.id,
                100.0 * r.per_token_frequency(),
                100.0 * r.per_context_frequency(),
                rec.stats.max_activation
            );
            for e in rec.train.iter().take(3) {
                println!("  train q{:?}: {}", e.quantile, show(e));
            }
            for e in rec.test.iter().take(2) {
                println!("  test  q{:?}: {}", e.quantile, show(e));
            }
            for e in rec.non_activating.iter().take(2) {
                println!("  non-activating: {}", show(e));
            }
        }
        built += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "\n{built} records ({} skipped: too few examples) in {secs:.2}s: {:.0} records/s",
        records.skipped(),
        built as f64 / secs
    );
    if let Some(hwm) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(str::to_string)
        })
    {
        println!("peak RSS ({hwm})");
    }
    Ok(())
}
