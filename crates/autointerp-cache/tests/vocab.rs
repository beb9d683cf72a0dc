//! The vocabulary projection of decoder rows on the tiny HF fixtures of autointerp-model, against
//! plain f64 loops over the same weights.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use autointerp_cache::{cache_dataset, hook_dir, vocab_projection, CacheConfig, DEFAULT_VOCAB_K};
use autointerp_core::split::Tokens;
use autointerp_core::{HookPoint, VocabProjection, VOCAB_PROJECTION_FILE};
use autointerp_model::{DType, Model};
use autointerp_sae::{Activation, SparseCoder, Weights};
use tch::{Device, Kind, Tensor};

fn fixture(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../autointerp-model/tests/fixtures")
        .join(arch)
}

/// How a fixture's final norm treats a direction.
#[derive(Clone, Copy, PartialEq)]
enum Norm {
    /// `w * d`.
    Rms,
    /// `(1 + w) * d`.
    Gemma,
    /// `w * (d - mean(d))`.
    Layer,
}

/// Each architecture's unembedding and final-norm tensors (tied models unembed with the
/// token embedding).
const CASES: [(&str, &str, &str, Norm); 6] = [
    ("llama", "lm_head.weight", "model.norm.weight", Norm::Rms),
    (
        "llama3",
        "model.embed_tokens.weight",
        "model.norm.weight",
        Norm::Rms,
    ),
    ("gemma2", "lm_head.weight", "model.norm.weight", Norm::Gemma),
    (
        "gemma3",
        "model.embed_tokens.weight",
        "model.norm.weight",
        Norm::Gemma,
    ),
    (
        "gpt2",
        "transformer.wte.weight",
        "transformer.ln_f.weight",
        Norm::Layer,
    ),
    (
        "gpt_neox",
        "embed_out.weight",
        "gpt_neox.final_layer_norm.weight",
        Norm::Layer,
    ),
];

fn rows_f64(t: &Tensor) -> Vec<Vec<f64>> {
    let t = t.to_kind(Kind::Double);
    (0..t.size()[0])
        .map(|i| Vec::<f64>::try_from(t.get(i)).unwrap())
        .collect()
}

/// The reference: `W_U · (g ⊙ d)` (d centred first under LayerNorm), in f64 loops.
fn reference(w_u: &[Vec<f64>], gain: &[f64], norm: Norm, d: &[f64]) -> Vec<f64> {
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    let scaled: Vec<f64> = d
        .iter()
        .zip(gain)
        .map(|(&x, &w)| match norm {
            Norm::Rms => w * x,
            Norm::Gemma => (1.0 + w) * x,
            Norm::Layer => w * (x - mean),
        })
        .collect();
    w_u.iter()
        .map(|row| row.iter().zip(&scaled).map(|(a, b)| a * b).sum())
        .collect()
}

/// A coder of `width` latents on d_model whose decoder row `planted` is `scale` times the
/// unembedding row of `token`; the other rows are random.
fn planted_coder(w_u: &Tensor, width: i64, planted: i64, token: i64, scale: f64) -> SparseCoder {
    let d = w_u.size()[1];
    let opts = (Kind::Float, Device::Cpu);
    let w_dec = Tensor::randn([width, d], opts);
    w_dec
        .get(planted)
        .copy_(&(w_u.get(token).to_kind(Kind::Float) * scale));
    SparseCoder::new(
        Weights {
            w_enc: w_dec.tr().contiguous(),
            b_enc: Tensor::zeros([width], opts),
            w_dec: Some(w_dec),
            b_dec: Tensor::zeros([d], opts),
            w_skip: None,
        },
        Activation::TopK { k: 2 },
    )
    .unwrap()
    .with_hook(HookPoint::Residual(0))
}

#[test]
fn a_decoder_row_along_a_tokens_unembedding_promotes_that_token() {
    tch::manual_seed(7);
    for (arch, unembed, norm_name, norm) in CASES {
        let dir = fixture(arch);
        let (model, _) = Model::load(dir.to_str().unwrap(), Device::Cpu, DType::F32).unwrap();
        let weights: HashMap<String, Tensor> =
            Tensor::read_safetensors(dir.join("model.safetensors"))
                .unwrap()
                .into_iter()
                .collect();
        let w_u_tensor = &weights[unembed];
        let w_u = rows_f64(w_u_tensor);
        let gain = Vec::<f64>::try_from(weights[norm_name].to_kind(Kind::Double)).unwrap();
        // The token with the longest unembedding row: along its own row, its logit wins.
        let token = (0..w_u.len())
            .max_by(|&a, &b| {
                let n = |v: &Vec<f64>| v.iter().map(|x| x * x).sum::<f64>();
                n(&w_u[a]).total_cmp(&n(&w_u[b]))
            })
            .unwrap();
        let (width, planted, scale) = (12, 5, 3.0);
        let coder = planted_coder(w_u_tensor, width, planted, token as i64, scale);
        let p = vocab_projection(&model, &coder, 4).unwrap();
        assert_eq!((p.width(), p.k, p.vocab_size), (width as usize, 4, 96));

        let w_dec = rows_f64(coder.decoder_weight().unwrap());
        for (latent, got) in p.latents.iter().enumerate() {
            let want = reference(&w_u, &gain, norm, &w_dec[latent]);
            let mut order: Vec<usize> = (0..want.len()).collect();
            order.sort_by(|&a, &b| want[b].total_cmp(&want[a]));
            for (side, pairs, ranked) in [
                ("promoted", &got.promoted, order.clone()),
                (
                    "suppressed",
                    &got.suppressed,
                    order.iter().rev().copied().collect(),
                ),
            ] {
                assert_eq!(pairs.len(), 4);
                for (rank, &(tok, delta)) in pairs.iter().enumerate() {
                    // Each delta is the reference's for that token, and the rank-th largest.
                    let (want_delta, want_rank) = (want[tok as usize], want[ranked[rank]]);
                    assert!(
                        (f64::from(delta) - want_delta).abs() < 1e-4
                            && (f64::from(delta) - want_rank).abs() < 1e-4,
                        "{arch} latent {latent} {side} #{rank}: token {tok} delta {delta}, \
                         reference {want_delta} (rank value {want_rank})"
                    );
                }
            }
        }
        let top = p.latents[planted as usize].promoted[0];
        assert_eq!(top.0 as usize, token, "{arch}");
        let want = reference(&w_u, &gain, norm, &w_dec[planted as usize])[token];
        assert!(
            (f64::from(top.1) - want).abs() < 1e-4,
            "{arch}: {top:?} vs {want}"
        );
        assert!(want > 0.0);
    }
}

#[test]
fn coders_that_cannot_be_projected_are_refused() {
    let (model, _) =
        Model::load(fixture("llama").to_str().unwrap(), Device::Cpu, DType::F32).unwrap();
    let err = vocab_projection(&model, &SparseCoder::neurons(64, Some(4)).unwrap(), 4).unwrap_err();
    assert!(err.to_string().contains("no decoder"), "{err}");
    // An SAE of the MLP's hidden layer (64 wide): its rows are not residual-stream directions.
    let opts = (Kind::Float, Device::Cpu);
    let wide = SparseCoder::new(
        Weights {
            w_enc: Tensor::randn([64, 8], opts),
            b_enc: Tensor::zeros([8], opts),
            w_dec: Some(Tensor::randn([8, 64], opts)),
            b_dec: Tensor::zeros([64], opts),
            w_skip: None,
        },
        Activation::TopK { k: 2 },
    )
    .unwrap();
    let err = vocab_projection(&model, &wide, 4).unwrap_err();
    assert!(err.to_string().contains("d_model 32"), "{err}");
}

/// `cache_dataset` writes the projection beside the split files of a coder with a decoder, and
/// caches a coder without one (MLP neurons) all the same, without a projection.
#[test]
fn the_cache_writes_the_projection_beside_the_splits() {
    tch::manual_seed(3);
    let dir = fixture("llama");
    let (model, _) = Model::load(dir.to_str().unwrap(), Device::Cpu, DType::F32).unwrap();
    let weights: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    let sae = planted_coder(&weights["lm_head.weight"], 16, 2, 40, 2.0);
    let want = vocab_projection(&model, &sae, DEFAULT_VOCAB_K).unwrap();
    let coders = vec![
        (HookPoint::Residual(0), sae),
        (
            HookPoint::MlpHidden(1),
            SparseCoder::neurons(64, Some(4))
                .unwrap()
                .with_hook(HookPoint::MlpHidden(1)),
        ),
    ];
    let tokens = Tokens {
        rows: 6,
        ctx_len: 8,
        ids: (0..48u32).map(|i| (i * 37 + 5) % 96).collect(),
    };
    let cfg = CacheConfig {
        batch_size: NonZeroUsize::new(2).unwrap(),
        n_splits: 2,
        model_name: "tiny-llama".into(),
        skip_first_token: false,
        extra: Default::default(),
        checkpoint_every: CacheConfig::DEFAULT_CHECKPOINT_EVERY,
        identity: String::new(),
    };
    let out = tempfile::tempdir().unwrap();
    cache_dataset(out.path(), &model, &coders, &tokens, &cfg, |_| {}).unwrap();
    let resid = hook_dir(out.path(), HookPoint::Residual(0));
    let got = VocabProjection::read_from_dir(&resid).unwrap().unwrap();
    assert_eq!(got, want);
    assert_eq!(got.latents[2].promoted.len(), DEFAULT_VOCAB_K);
    assert!(resid.join("config.json").is_file());
    let neurons = hook_dir(out.path(), HookPoint::MlpHidden(1));
    assert!(neurons.join("config.json").is_file());
    assert!(!neurons.join(VOCAB_PROJECTION_FILE).exists());
}
