//! Each format's encoder and decoder against references computed from the format's own definition
//! by `fixtures/make_sae_fixtures.py`, and the loaders' errors on bad checkpoints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use autointerp_core::HookPoint;
use autointerp_sae::{Error, Format, InputNorm, SparseCoder};
use tch::{Device, Tensor};

const TOL: f64 = 1e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixtures().join("expected.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

/// Encodes the case's input and compares the latents (densified here, for the comparison only)
/// and the decoded output with the references.
fn check(case: &str, coder: &SparseCoder, want: &HashMap<String, Tensor>) -> Result<()> {
    let x = &want[&format!("{case}.x")];
    let latents = coder.encode(x)?;
    if let Some(k) = coder.k() {
        assert_eq!(latents.indices.size(), [x.size()[0], k as i64], "{case}");
    }
    let dense = latents.to_dense(coder.width())?;
    let want_latents = &want[&format!("{case}.latents")];
    let diff = (&dense - want_latents).abs().max().double_value(&[]);
    assert!(
        dense.allclose(want_latents, TOL, TOL, false),
        "{case}: latents differ by {diff}"
    );
    // Only the active latents are in the sparse rows.
    let active = want_latents.gt(0.0).sum(tch::Kind::Int64).int64_value(&[]);
    assert_eq!(
        latents
            .values
            .gt(0.0)
            .sum(tch::Kind::Int64)
            .int64_value(&[]),
        active,
        "{case}"
    );

    let out = coder.decode(&latents, Some(x))?;
    let want_out = &want[&format!("{case}.recon")];
    let diff = (&out - want_out).abs().max().double_value(&[]);
    assert!(
        out.allclose(want_out, TOL, TOL, false),
        "{case}: output differs by {diff}"
    );
    Ok(())
}

#[test]
fn sparsify_repo_loads_every_hook_point_and_matches_the_reference() -> Result<()> {
    let want = expected();
    let coders = SparseCoder::load_dir(&fixtures().join("sparsify"), &[], Device::Cpu)?;
    let names: Vec<&str> = coders.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["layers.0", "layers.1.mlp", "layers.2"]);
    let cases = ["sparsify_topk", "sparsify_transcoder", "sparsify_groupmax"];
    for ((_, coder), case) in coders.iter().zip(cases) {
        assert_eq!(coder.format(), Format::Sparsify);
        check(case, coder, &want)?;
    }

    let (topk, transcoder, groupmax) = (&coders[0].1, &coders[1].1, &coders[2].1);
    assert_eq!(
        (topk.hook(), topk.k(), topk.is_transcoder()),
        (Some(HookPoint::Residual(0)), Some(4), false)
    );
    assert!(topk.applies_b_dec_to_input());
    // A transcoder stored under `layers.1.mlp` reads the MLP's input.
    assert_eq!(transcoder.hook(), Some(HookPoint::MlpInput(1)));
    assert!(transcoder.is_transcoder() && !transcoder.applies_b_dec_to_input());
    assert_eq!(groupmax.activation().map(|a| a.name()), Some("groupmax"));

    // Metrics: the transcoder needs its target; against its own output the FVU is 0.
    let x = &want["sparsify_transcoder.x"];
    assert!(transcoder.metrics(x, None).is_err());
    let m = transcoder.metrics(x, Some(&want["sparsify_transcoder.recon"]))?;
    assert!(m.fvu < 1e-9, "{m:?}");
    let m = topk.metrics(&want["sparsify_topk.x"], None)?;
    assert!(
        m.mean_l0 <= 4.0 && m.mean_l0 > 0.0 && m.dead_fraction > 0.0 && m.dead_fraction < 1.0,
        "{m:?}"
    );
    Ok(())
}

#[test]
fn sparsify_hook_points_are_selectable() -> Result<()> {
    let dir = fixtures().join("sparsify");
    let by_folder = SparseCoder::load_dir(&dir, &["layers.1.mlp"], Device::Cpu)?;
    assert_eq!(by_folder.len(), 1);
    assert_eq!(by_folder[0].0, "layers.1.mlp");
    // Any spelling of a hook point finds the folder that reads it.
    let by_hook = SparseCoder::load(
        dir.to_str().unwrap(),
        &["blocks.2.hook_resid_post", "layers.0"],
        Device::Cpu,
    )?;
    let names: Vec<&str> = by_hook.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["layers.2", "layers.0"]);
    // One coder's folder on its own is named after the folder.
    let single = SparseCoder::load_dir(&dir.join("layers.0"), &[], Device::Cpu)?;
    assert_eq!(single[0].0, "layers.0");

    let err = SparseCoder::load_dir(&dir, &["layers.5"], Device::Cpu).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::UnknownHookPoint { .. }), "{msg}");
    assert!(
        msg.contains("\"layers.5\"") && msg.contains("layers.0, layers.1.mlp, layers.2"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn saelens_architectures_match_the_reference() -> Result<()> {
    let want = expected();
    let root = fixtures().join("saelens");
    let cases = [
        (
            "saelens_standard",
            "blocks.3.hook_resid_post",
            Some(HookPoint::Residual(3)),
        ),
        (
            "saelens_pre6",
            "blocks.8.hook_resid_pre",
            Some(HookPoint::Residual(7)),
        ),
        (
            "saelens_constant_norm",
            "constant_norm_rescale",
            Some(HookPoint::Mlp(2)),
        ),
        (
            "saelens_layer_norm",
            "layer_norm",
            Some(HookPoint::Residual(2)),
        ),
        ("saelens_topk", "topk", Some(HookPoint::Residual(4))),
        (
            "saelens_topk_rescaled",
            "topk_rescaled",
            Some(HookPoint::Residual(4)),
        ),
        (
            "saelens_expected_average",
            "expected_average",
            Some(HookPoint::Residual(5)),
        ),
        ("saelens_jumprelu", "jumprelu", Some(HookPoint::Residual(6))),
        (
            "saelens_jumprelu_log",
            "jumprelu_log",
            Some(HookPoint::Residual(6)),
        ),
        ("saelens_gated", "gated", Some(HookPoint::Residual(7))),
        (
            "saelens_skip_transcoder",
            "skip_transcoder",
            Some(HookPoint::MlpInput(1)),
        ),
    ];
    for (case, folder, hook) in cases {
        let coder = SparseCoder::load_saelens(&root.join(folder), Device::Cpu)?;
        assert_eq!(
            (coder.format(), coder.hook()),
            (Format::SaeLens, hook),
            "{case}"
        );
        assert!(!coder.needs_norm_scaling_factor(), "{case}");
        check(case, &coder, &want)?;
    }

    let norm = SparseCoder::load_saelens(&root.join("constant_norm_rescale"), Device::Cpu)?;
    assert_eq!(norm.input_norm(), InputNorm::ConstantNormRescale);
    // Undoing the per-token normalisation needs the input.
    let latents = norm.encode(&want["saelens_constant_norm.x"])?;
    assert!(norm
        .decode(&latents, None)
        .unwrap_err()
        .to_string()
        .contains("constant_norm_rescale"));

    let tc = SparseCoder::load_saelens(&root.join("skip_transcoder"), Device::Cpu)?;
    assert_eq!((tc.d_in(), tc.d_out(), tc.is_transcoder()), (16, 12, true));
    let gated = SparseCoder::load_saelens(&root.join("gated"), Device::Cpu)?;
    assert_eq!(
        (gated.activation().map(|a| a.name()), gated.k()),
        (Some("gated"), None)
    );
    Ok(())
}

#[test]
fn saelens_repo_is_selectable_by_transformer_lens_hook_names() -> Result<()> {
    let root = fixtures().join("saelens");
    let found = SparseCoder::load_dir(
        &root,
        &["layers.3", "blocks.1.ln2.hook_normalized"],
        Device::Cpu,
    )?;
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["blocks.3.hook_resid_post", "skip_transcoder"]);
    // Two checkpoints read blocks.6: the request must name one.
    let msg = SparseCoder::load_dir(&root, &["layers.6"], Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("several") && msg.contains("jumprelu, jumprelu_log"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn saelens_expected_average_factor_is_folded() -> Result<()> {
    let want = expected();
    let tmp = tempfile::tempdir()?;
    let src = fixtures().join("saelens/expected_average");
    for f in ["cfg.json", "sae_weights.safetensors"] {
        std::fs::copy(src.join(f), tmp.path().join(f))?;
    }
    // Without activation_scaler.json the factor is unknown: unscaled, flagged, and different.
    let mut coder = SparseCoder::load_saelens(tmp.path(), Device::Cpu)?;
    assert!(coder.needs_norm_scaling_factor());
    let x = &want["saelens_expected_average.x"];
    let unscaled = coder.encode(x)?.to_dense(coder.width())?;
    assert!(!unscaled.allclose(&want["saelens_expected_average.latents"], TOL, TOL, false));
    // The factor given by hand gives the reference.
    coder.fold_norm_scaling_factor(0.37)?;
    assert!(!coder.needs_norm_scaling_factor());
    check("saelens_expected_average", &coder, &want)?;

    // Or from cfg.json.
    let cfg = std::fs::read_to_string(tmp.path().join("cfg.json"))?;
    let cfg = cfg.replacen('{', "{\"norm_scaling_factor\": 0.37, ", 1);
    std::fs::write(tmp.path().join("cfg.json"), cfg)?;
    check(
        "saelens_expected_average",
        &SparseCoder::load_saelens(tmp.path(), Device::Cpu)?,
        &want,
    )?;
    Ok(())
}

#[test]
fn gemmascope_npz_matches_the_reference() -> Result<()> {
    let want = expected();
    let root = fixtures().join("gemmascope");
    let res = SparseCoder::load_dir(&root, &["gemma-scope-tiny-pt-res"], Device::Cpu)?;
    assert_eq!(
        res[0].0,
        "gemma-scope-tiny-pt-res/layer_3/width_64/average_l0_5"
    );
    let coder = &res[0].1;
    assert_eq!(
        (coder.format(), coder.hook(), coder.applies_b_dec_to_input()),
        (Format::GemmaScope, Some(HookPoint::Residual(3)), false)
    );
    check("gemmascope", coder, &want)?;

    // np.savez_compressed: deflated members.
    let npz = root.join("gemma-scope-tiny-pt-mlp/layer_4/width_64/average_l0_9/params.npz");
    let mlp = SparseCoder::load_gemmascope(&npz, Device::Cpu)?;
    assert_eq!(mlp.hook(), Some(HookPoint::Mlp(4)));
    check("gemmascope_compressed", &mlp, &want)?;
    // The hook point finds it too.
    let by_hook = SparseCoder::load_dir(&root, &["layers.4.mlp"], Device::Cpu)?;
    assert_eq!(
        by_hook[0].0,
        "gemma-scope-tiny-pt-mlp/layer_4/width_64/average_l0_9"
    );
    Ok(())
}

#[test]
fn neurons_are_their_own_latents() -> Result<()> {
    let want = expected();
    let neurons = SparseCoder::neurons(32, Some(5))?.with_hook(HookPoint::MlpHidden(2));
    assert_eq!(
        (neurons.format(), neurons.width(), neurons.k()),
        (Format::Neurons, 32, Some(5))
    );
    check("neurons", &neurons, &want)?;
    let msg = neurons.check_input(None, 64).unwrap_err().to_string();
    assert!(
        msg.contains("64") && msg.contains("d_in = 32") && msg.contains("layers.2.mlp.hidden"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn bad_checkpoints_are_clear_errors() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();

    // Nothing there.
    let msg = SparseCoder::load_dir(dir, &[], Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no sparse coder found"), "{msg}");
    let msg = SparseCoder::load("no/such/folder/here", &[], Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no/such/folder/here"), "{msg}");

    // SAE-Lens: missing weights, unknown architecture, shapes that disagree with cfg.json.
    let src = fixtures().join("saelens/jumprelu");
    std::fs::copy(src.join("cfg.json"), dir.join("cfg.json"))?;
    let msg = SparseCoder::load_saelens(dir, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("sae_weights.safetensors"), "{msg}");
    std::fs::copy(
        src.join("sae_weights.safetensors"),
        dir.join("sae_weights.safetensors"),
    )?;
    let cfg = std::fs::read_to_string(src.join("cfg.json"))?;
    std::fs::write(
        dir.join("cfg.json"),
        cfg.replace("\"jumprelu\"", "\"crosscoder\""),
    )?;
    let msg = SparseCoder::load_saelens(dir, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("cfg.json") && msg.contains("crosscoder") && msg.contains("gated"),
        "{msg}"
    );
    std::fs::write(
        dir.join("cfg.json"),
        cfg.replace("\"d_sae\": 64", "\"d_sae\": 65"),
    )?;
    let msg = SparseCoder::load_saelens(dir, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("sae_weights.safetensors")
            && msg.contains("W_enc")
            && msg.contains("[16, 65]"),
        "{msg}"
    );
    std::fs::write(
        dir.join("cfg.json"),
        cfg.replace(
            "\"normalize_activations\": \"none\"",
            "\"normalize_activations\": \"whiten\"",
        ),
    )?;
    let msg = SparseCoder::load_saelens(dir, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("normalize_activations") && msg.contains("whiten"),
        "{msg}"
    );
    std::fs::write(dir.join("cfg.json"), "{\"d_in\": 16")?;
    let msg = SparseCoder::load_saelens(dir, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cfg.json"), "{msg}");

    // Input of the wrong width, naming both dims and the hook point.
    let coder = SparseCoder::load_saelens(
        &fixtures().join("saelens/blocks.3.hook_resid_post"),
        Device::Cpu,
    )?;
    let x = Tensor::zeros([2, 17], (tch::Kind::Float, Device::Cpu));
    let msg = coder.encode(&x).unwrap_err().to_string();
    assert!(
        msg.contains("17") && msg.contains("d_in = 16") && msg.contains("layers.3"),
        "{msg}"
    );
    let msg = coder
        .check_input(Some(HookPoint::Residual(3)), 2304)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("2304") && msg.contains("d_in = 16") && msg.contains("layers.3"),
        "{msg}"
    );

    // GemmaScope: a corrupt archive, and one missing a member.
    let npz = dir.join("params.npz");
    std::fs::write(&npz, b"PK\x03\x04 this is not really a zip file")?;
    let msg = SparseCoder::load_gemmascope(&npz, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("params.npz") && msg.contains("not a valid .npz"),
        "{msg}"
    );
    let good = std::fs::read(
        fixtures()
            .join("gemmascope/gemma-scope-tiny-pt-res/layer_3/width_64/average_l0_5/params.npz"),
    )?;
    std::fs::write(&npz, &good[..good.len() / 2])?;
    let msg = SparseCoder::load_gemmascope(&npz, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("params.npz") && msg.contains("not a valid .npz"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn hub_ids_offline_ask_for_a_local_path() {
    let cache = tempfile::tempdir().unwrap();
    // Only this test reads these variables.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    std::env::set_var("HF_HUB_CACHE", cache.path());
    let msg = SparseCoder::load(
        "EleutherAI/sae-pythia-70m-32k",
        &["layers.4.mlp"],
        Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("EleutherAI/sae-pythia-70m-32k") && msg.contains("local folder"),
        "{msg}"
    );

    // A snapshot in the cache is used offline.
    let snapshot = cache
        .path()
        .join("models--EleutherAI--sae-pythia-70m-32k/snapshots/abc123");
    std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
    std::fs::create_dir_all(
        cache
            .path()
            .join("models--EleutherAI--sae-pythia-70m-32k/refs"),
    )
    .unwrap();
    std::fs::write(
        cache
            .path()
            .join("models--EleutherAI--sae-pythia-70m-32k/refs/main"),
        "abc123",
    )
    .unwrap();
    let src = fixtures().join("sparsify/layers.1.mlp");
    std::fs::create_dir_all(snapshot.join("layers.4.mlp")).unwrap();
    for f in ["cfg.json", "sae.safetensors"] {
        std::fs::copy(src.join(f), snapshot.join("layers.4.mlp").join(f)).unwrap();
    }
    let coders = SparseCoder::load(
        "EleutherAI/sae-pythia-70m-32k",
        &["layers.4.mlp"],
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(coders[0].0, "layers.4.mlp");
    assert_eq!(coders[0].1.hook(), Some(HookPoint::MlpInput(4)));
}
