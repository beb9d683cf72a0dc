//! Run with: cargo run --release -p autointerp-model --example model_steer -- MODEL SAE_DIR HOOK LATENT [STRENGTH] ["prompt"]
//!
//! Steers a model along one sparse-coder latent: loads the model (an HF folder, a `.gguf` file
//! or a Hub id) and the coder at `HOOK` (e.g. `layers.1`, any format `autointerp` reads),
//! generates 24 greedy tokens after the prompt as the model is, with the latent's decoder
//! direction added at every position (`Edit::steer`, strength 40 by default), and with the latent
//! ablated (`Edit::ablate`), and prints the three continuations.
//!
//! e.g. with the demo's SAE: `... -- $SMOLLM2_GGUF ~/.cache/autointerp/demo-sae/layers.1-100000 layers.1 3`

use anyhow::{Context, Result};
use autointerp_core::HookPoint;
use autointerp_model::{DType, GenerateOptions, Hooks, Model};
use autointerp_sae::edit::Edit;
use autointerp_sae::SparseCoder;
use tch::{Device, Tensor};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_path, sae, hook, latent, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: model_steer MODEL SAE_DIR HOOK LATENT [STRENGTH] [\"prompt\"]");
    };
    let latent: usize = latent.parse().context("LATENT must be a number")?;
    let strength: f64 = match rest.first() {
        Some(s) => s.parse().context("STRENGTH must be a number")?,
        None => 40.0,
    };
    let prompt = rest.get(1).map_or("I think that", String::as_str);
    let point: HookPoint = hook.parse().context("HOOK")?;

    let (model, tokenizer) = Model::load(model_path, Device::Cpu, DType::F32)?;
    let tokenizer = tokenizer.context("the model has no tokenizer")?;
    let (_, coder) = SparseCoder::load(sae, &[hook.as_str()], Device::Cpu)?
        .into_iter()
        .next()
        .context("no coder at that hook point")?;
    let coder = Edit::share(coder);

    let ids: Vec<i64> = tokenizer
        .encode(prompt, true)?
        .into_iter()
        .map(i64::from)
        .collect();
    let input = Tensor::from_slice(&ids).unsqueeze(0);
    let options = GenerateOptions::new(24);
    let run = |edit: Option<Edit>| -> Result<String> {
        let hooks = match edit {
            Some(edit) => Hooks::new().try_intervene(point, move |x| edit.apply(x)),
            None => Hooks::new(),
        };
        let out = model.generate_with(&input, None, &options, hooks)?;
        let new: Vec<u32> =
            Vec::<i64>::try_from(out.narrow(1, ids.len() as i64, 24).flatten(0, -1))?
                .into_iter()
                .map(|t| t as u32)
                .collect();
        Ok(tokenizer.decode(&new, true)?)
    };
    println!("prompt:  {prompt:?}");
    println!("clean:   {:?}", run(None)?);
    let steer = Edit::steer(&coder, latent, strength)?;
    println!(
        "steered: {:?}  ({steer} at {point})",
        run(Some(steer.clone()))?
    );
    let ablate = Edit::ablate(coder, latent)?;
    println!(
        "ablated: {:?}  ({ablate} at {point})",
        run(Some(ablate.clone()))?
    );
    Ok(())
}
