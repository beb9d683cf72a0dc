//! Named edits (`autointerp_sae::edit`) through the model's hooks equal the same edits done by a
//! PyTorch forward hook in transformers, on the tiny `llama` and `gemma2` fixtures
//! (`tests/fixtures/make_steering_fixtures.py`): logits of a left-padded batch within 1e-4, and
//! greedy generations with the KV cache (one prompt, and two left-padded rows) token for token.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use autointerp_core::HookPoint;
use autointerp_model::{DType, GenerateOptions, Hooks, Input, Model};
use autointerp_sae::edit::{Edit, SharedCoder};
use autointerp_sae::{Activation, SparseCoder, Weights};
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

fn fixture(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(arch)
}

fn read(arch: &str, file: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture(arch).join(file))
        .unwrap()
        .into_iter()
        .collect()
}

fn scalar(t: &Tensor) -> f64 {
    t.double_value(&[])
}

/// The fixture's edits: (name, hook point, edit).
fn edits(s: &HashMap<String, Tensor>) -> Vec<(&'static str, HookPoint, Edit)> {
    let coder: SharedCoder = Edit::share(
        SparseCoder::new(
            Weights {
                w_enc: s["sae.W_enc"].shallow_clone(),
                b_enc: s["sae.b_enc"].shallow_clone(),
                w_dec: Some(s["sae.W_dec"].shallow_clone()),
                b_dec: s["sae.b_dec"].shallow_clone(),
                w_skip: None,
            },
            Activation::TopK {
                k: s["sae.k"].int64_value(&[]) as usize,
            },
        )
        .unwrap(),
    );
    let direction = Vec::<f32>::try_from(&s["direction"]).unwrap();
    let latent = |key: &str| s[key].int64_value(&[]) as usize;
    vec![
        (
            "add",
            HookPoint::Residual(1),
            Edit::add(direction, scalar(&s["scale"])).unwrap(),
        ),
        (
            "clamp",
            HookPoint::Residual(0),
            Edit::clamp(
                Arc::clone(&coder),
                latent("clamp.latent"),
                scalar(&s["clamp.value"]),
            )
            .unwrap(),
        ),
        (
            "ablate",
            HookPoint::Residual(0),
            Edit::ablate(coder, latent("ablate.latent")).unwrap(),
        ),
    ]
}

fn hooks(point: HookPoint, edit: &Edit) -> Hooks {
    let edit = edit.clone();
    Hooks::new().try_intervene(point, move |x| edit.apply(x))
}

fn ids_of(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.flatten(0, -1)).unwrap()
}

#[test]
fn edits_match_transformers_forward_hooks() {
    for arch in ["llama", "gemma2"] {
        let model = Model::from_hf_dir(fixture(arch), Device::Cpu, DType::F32).unwrap();
        let exp = read(arch, "expected.safetensors");
        let s = read(arch, "steering.safetensors");
        let (ids, mask, pos) = (
            &exp["left.input_ids"],
            &exp["left.attention_mask"],
            &exp["left.position_ids"],
        );
        for (name, point, edit) in edits(&s) {
            let input = Input::new(ids)
                .with_attention_mask(mask)
                .with_position_ids(pos);
            let logits = model
                .forward(&input, &hooks(point, &edit))
                .unwrap()
                .logits
                .unwrap();
            // Padding positions' logits are not compared (transformers leaves them arbitrary).
            let m = mask.unsqueeze(-1).to_kind(Kind::Float);
            let want = &s[&format!("{name}.logits")];
            let diff = ((&logits - want).abs() * &m).max().double_value(&[]);
            assert!(diff < TOL, "{arch} {name}: logits differ by {diff}");
            let unsteered = ((&logits - &exp["left.logits"]).abs() * &m)
                .max()
                .double_value(&[]);
            assert!(unsteered > 1e-2, "{arch} {name}: the edit changed nothing");

            let prompt = &exp["generate.input_ids"];
            let got = model
                .generate_with(prompt, None, &GenerateOptions::new(8), hooks(point, &edit))
                .unwrap();
            assert_eq!(
                ids_of(&got),
                ids_of(&s[&format!("{name}.generate")]),
                "{arch} {name}: one prompt"
            );
            let got = model
                .generate_with(
                    ids,
                    Some(mask),
                    &GenerateOptions::new(8),
                    hooks(point, &edit),
                )
                .unwrap();
            assert_eq!(
                ids_of(&got),
                ids_of(&s[&format!("{name}.batch_generate")]),
                "{arch} {name}: two left-padded rows"
            );
        }
    }
}

#[test]
fn a_failing_edit_fails_the_pass_naming_the_hook() {
    let model = Model::from_hf_dir(fixture("llama"), Device::Cpu, DType::F32).unwrap();
    let ids = Tensor::from_slice(&[3i64, 4, 5]).unsqueeze(0);
    // A direction of the wrong width (the model's is 32).
    let edit = Edit::add(vec![1.0f32; 7], 1.0).unwrap();
    let msg = model
        .forward(&Input::new(&ids), &hooks(HookPoint::Residual(1), &edit))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("layers.1") && msg.contains("given width 32"),
        "{msg}"
    );
    let msg = model
        .generate_with(
            &ids,
            None,
            &GenerateOptions::new(2),
            hooks(HookPoint::Residual(0), &edit),
        )
        .unwrap_err()
        .to_string();
    assert!(msg.contains("layers.0"), "{msg}");
}
