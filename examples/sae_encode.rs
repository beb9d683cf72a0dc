//! Run with: cargo run --release -p autointerp-sae --example sae_encode
//!
//! Builds a random TopK SAE and a random JumpReLU SAE (GemmaScope's activation) in memory,
//! encodes a batch of random activations with each, and prints the batch metrics: mean L0,
//! FVU and the fraction of latents that never fired. Random weights reconstruct nothing, so the
//! FVU is large; the point is the API.

use anyhow::Result;
use autointerp_core::HookPoint;
use autointerp_sae::{Activation, SparseCoder, Weights};
use tch::{Device, Kind, Tensor};

fn random_weights(d_in: i64, width: i64) -> Weights {
    let opts = (Kind::Float, Device::Cpu);
    let w_dec = Tensor::randn([width, d_in], opts);
    // Unit-norm decoder rows, encoder initialised as their transpose (sparsify's init).
    let w_dec = &w_dec / w_dec.norm_scalaropt_dim(2, [-1i64].as_slice(), true);
    Weights {
        w_enc: w_dec.tr().contiguous(),
        b_enc: Tensor::zeros([width], opts),
        w_dec: Some(w_dec),
        b_dec: Tensor::zeros([d_in], opts),
        w_skip: None,
    }
}

fn main() -> Result<()> {
    tch::manual_seed(0);
    let (d_in, width, tokens) = (256, 4096, 512);
    let x = Tensor::randn([tokens, d_in], (Kind::Float, Device::Cpu));

    let topk = SparseCoder::new(random_weights(d_in, width), Activation::TopK { k: 32 })?
        .with_hook(HookPoint::Residual(6));
    let threshold = Tensor::full([width], 2.5, (Kind::Float, Device::Cpu));
    let jumprelu = SparseCoder::new(
        random_weights(d_in, width),
        Activation::JumpRelu { threshold },
    )?;

    for (name, sae) in [("TopK k=32", &topk), ("JumpReLU threshold=2.5", &jumprelu)] {
        sae.check_input(Some(HookPoint::Residual(6)), d_in as usize)?;
        let latents = sae.encode(&x)?;
        let m = sae.metrics(&x, None)?;
        println!(
            "{name:>24}: d_in {d_in}, width {width}, {tokens} tokens -> latents {:?}; \
             mean L0 {:.2}, FVU {:.3}, dead {:.1}%",
            latents.indices.size(),
            m.mean_l0,
            m.fvu,
            100.0 * m.dead_fraction
        );
    }
    Ok(())
}
