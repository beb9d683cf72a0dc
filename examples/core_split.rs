//! Run with: cargo run -p autointerp-core --example core_split
//!
//! The split-file codec of a latent cache, by hand: streams one split file with `SplitWriter`,
//! maps it back with `SplitReader`, round-trips a whole `Split` through a folder, and prints the
//! names `layout::Layout` gives the files of a results directory. Pure Rust, no model.

use autointerp_core::layout::Layout;
use autointerp_core::split::{
    file_name, split_ranges, Location, LocationDtype, Split, SplitLayout, SplitReader, SplitWriter,
    Tokens,
};
use autointerp_core::{HookPoint, LatentId};
use half::f16;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;

    // A coder of 16 latents cached in 2 splits, as delphi cuts them: 0..=7 and 8..=15.
    let ranges = split_ranges(16, 2);
    println!("splits of 16 latents: {ranges:?}");
    let (start, end) = ranges[0];

    // Two rows of four tokens; three nonzero activations in the first split.
    let tokens = Tokens {
        rows: 2,
        ctx_len: 4,
        ids: vec![5, 6, 7, 8, 9, 10, 11, 12],
    };
    let fired = [(0u32, 1u32, 3u32, 1.5f32), (0, 2, 7, 0.25), (1, 3, 3, 4.0)];

    // The streaming writer: header from the layout, then every location, every activation and
    // the token grid, in that order. The file appears, complete, at `commit`.
    let path = dir.path().join(file_name(start, end));
    let layout = SplitLayout {
        len: fired.len(),
        locations: LocationDtype::fitting(7),
        tokens: Some((tokens.rows, tokens.ctx_len)),
    };
    let mut writer = SplitWriter::create(&path, layout)?;
    for &(row, position, latent, _) in &fired {
        writer.write_location(row, position, latent - start)?;
    }
    for &(.., value) in &fired {
        writer.write_activation(f16::from_f32(value))?;
    }
    writer.write_tokens(&tokens.ids)?;
    writer.commit()?;

    // The memory-mapped reader: the latent range comes from the file name.
    let reader = SplitReader::open(&path)?;
    println!(
        "{}: latents {}..={}, {} activations",
        path.file_name().unwrap_or_default().to_string_lossy(),
        reader.start(),
        reader.end(),
        reader.len()
    );
    reader.for_each_location(2, 4, |i, row, position, offset| {
        let value = reader.activations().get(i);
        println!(
            "  row {row} position {position}: latent {} = {value}",
            start + offset
        );
    })?;

    // A whole split in memory, written atomically under its delphi name and read back.
    let second = Split {
        start: ranges[1].0,
        end: ranges[1].1,
        locations: vec![Location {
            row: 1,
            position: 0,
            latent: 12,
        }],
        activations: vec![2.0],
        tokens: Some(tokens),
    };
    let written = second.write_to_dir(dir.path())?;
    assert_eq!(Split::read(&written)?, second);
    println!("round trip of {} ok", written.display());

    // Where a run puts each file of its results directory.
    let results = Layout::new("results/my-run");
    let latent = LatentId::new(HookPoint::Residual(6), 42);
    println!("record:      {}", results.record(&latent).display());
    println!("explanation: {}", results.explanations(false).display());
    println!(
        "score:       {}",
        results.score_file("detection", &latent, false).display()
    );
    println!(
        "control:     {}",
        results.score_file("detection", &latent, true).display()
    );
    println!("failures:    {}", results.failures().display());
    Ok(())
}
