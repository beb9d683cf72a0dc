//! What differs between the `config.json` files of transformers 4.x and 5.x, undone before the
//! family structs in [`crate::arch`] read them, and the guard that no key which could change the
//! forward pass is silently ignored.
//!
//! transformers 5 writes `null` for optional fields it used to leave out, and gathers the RoPE
//! settings (`rope_theta`, `rope_scaling`, `partial_rotary_factor`, Gemma 3's
//! `rope_local_base_freq`) into one `rope_parameters` object, keyed by layer type where the layer
//! types differ (`{"full_attention": {…}, "sliding_attention": {…}}`). A loader that reads only the
//! 4.x keys then falls back to the default theta of 10,000 and computes wrong activations without a
//! word (a Qwen2 saved by 5.x has theta 1e6), so both spellings are read here, a conflict between
//! them is an error, and every key outside a family's list of understood ones is an error too.

use serde_json::{Map, Value};

/// The environment variable that names config keys to ignore even though they are not understood
/// (comma-separated): the way out for a key this crate does not know but the user knows to be
/// harmless.
pub const ALLOW_KEYS_ENV: &str = "AUTOINTERP_ALLOW_CONFIG_KEYS";

/// Keys whose `null` means something other than "absent" (Gemma's softcaps: `null` turns the cap
/// off, absence takes the default cap; a window of `null` means no sliding window).
const NULL_IS_A_VALUE: &[&str] = &[
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "sliding_window",
];

/// Keys of `rope_parameters` (and of a per-layer-type entry in it) that this crate understands.
const ROPE_PARAMETER_KEYS: &[&str] = &[
    "rope_theta",
    "rope_type",
    "type",
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
    "partial_rotary_factor",
];

/// Keys every `PretrainedConfig` may carry that do not change an inference forward pass: labels,
/// generation defaults, bookkeeping, training-only switches.
const HARMLESS_KEYS: &[&str] = &[
    "architectures",
    "model_type",
    "dtype",
    "torch_dtype",
    "transformers_version",
    "use_cache",
    "initializer_range",
    "initializer_factor",
    "id2label",
    "label2id",
    "num_labels",
    "problem_type",
    "return_dict",
    "use_return_dict",
    "torchscript",
    "tie_encoder_decoder",
    "is_encoder_decoder",
    "is_decoder",
    "add_cross_attention",
    "cross_attention_hidden_size",
    "chunk_size_feed_forward",
    "pruned_heads",
    "finetuning_task",
    "tokenizer_class",
    "prefix",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "task_specific_params",
    "cache_implementation",
    "tf_legacy_loss",
    "use_bfloat16",
    "gradient_checkpointing",
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "max_position_embeddings",
    // Llama's tensor-parallel slicing of the projections is the same product, summed in parts.
    "pretraining_tp",
    // The attention implementation (eager, sdpa, flash) is ours to choose; results agree.
    "attn_implementation",
];

/// Is `key` one that never changes an inference forward pass, whatever the family?
fn harmless(key: &str) -> bool {
    HARMLESS_KEYS.contains(&key)
        || key.starts_with('_')
        || key.starts_with("output_")
        || key.ends_with("dropout")
        || key.ends_with("pdrop")
}

/// Rewrites a transformers 5.x `config.json` object into the 4.x spelling the family structs read,
/// then checks that every key is understood. `family_keys` are the keys the family's converter
/// reads; `local_rope` says whether sliding layers have a RoPE of their own (Gemma 3).
///
/// # Errors
/// A message naming the key for a conflict between the two spellings, a RoPE parameter that is not
/// understood, a per-layer-type RoPE the family cannot express, or a key not understood.
pub(crate) fn normalize(
    object: &mut Map<String, Value>,
    family: &str,
    family_keys: &[&str],
    local_rope: bool,
) -> Result<(), String> {
    object.retain(|k, v| !v.is_null() || NULL_IS_A_VALUE.contains(&k.as_str()));
    if let Some(params) = object.remove("rope_parameters") {
        let legacy = rope_parameters_to_legacy(params, local_rope)?;
        for (key, value) in legacy {
            merge_legacy(object, &key, value)?;
        }
    }
    let allowed = allowed_from_env();
    let unknown: Vec<&str> = object
        .keys()
        .map(String::as_str)
        .filter(|k| !harmless(k) && !family_keys.contains(k) && !allowed.iter().any(|a| a == k))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "{family}: key{} {} not understood by this loader and may change the forward pass, \
             so the model is not loaded with it ignored; if you know {} harmless, set \
             {ALLOW_KEYS_ENV}={}",
            if unknown.len() == 1 { "" } else { "s" },
            unknown
                .iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            if unknown.len() == 1 {
                "it is"
            } else {
                "they are"
            },
            unknown.join(",")
        ));
    }
    Ok(())
}

fn allowed_from_env() -> Vec<String> {
    std::env::var(ALLOW_KEYS_ENV)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `key` unless the file already has it with another value (a file with both spellings that
/// disagree is ambiguous: refuse it rather than pick one).
fn merge_legacy(object: &mut Map<String, Value>, key: &str, value: Value) -> Result<(), String> {
    match object.get(key) {
        Some(old) if !same_value(old, &value) => Err(format!(
            "rope_parameters gives {key} = {value} but the top-level {key:?} is {old}"
        )),
        _ => {
            object.insert(key.to_owned(), value);
            Ok(())
        }
    }
}

/// Equality where `1e6` and `1000000` are the same number.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// One `rope_parameters` object (flat or per layer type) as the 4.x keys.
fn rope_parameters_to_legacy(
    params: Value,
    local_rope: bool,
) -> Result<Vec<(String, Value)>, String> {
    let Value::Object(params) = params else {
        return Err(format!("rope_parameters must be an object, not {params}"));
    };
    let per_layer_type = !params.is_empty() && params.values().all(Value::is_object);
    if !per_layer_type {
        return flat_rope(params, "rope_parameters");
    }
    let mut full = None;
    let mut sliding = None;
    for (layer_type, entry) in params {
        match (layer_type.as_str(), entry) {
            ("full_attention", Value::Object(entry)) => full = Some(entry),
            ("sliding_attention", Value::Object(entry)) => sliding = Some(entry),
            (other, _) => {
                return Err(format!(
                    "rope_parameters for layer type {other:?} (understood: full_attention, \
                     sliding_attention)"
                ))
            }
        }
    }
    let mut out = match &full {
        Some(f) => flat_rope(f.clone(), "rope_parameters.full_attention")?,
        None => Vec::new(),
    };
    if let Some(s) = sliding {
        let name = "rope_parameters.sliding_attention";
        let local = flat_rope(s.clone(), name)?;
        if local_rope {
            // Gemma 3: sliding layers have their own base and no scaling.
            for (key, value) in local {
                match key.as_str() {
                    "rope_theta" => out.push(("rope_local_base_freq".into(), value)),
                    "rope_scaling" => {
                        return Err(format!(
                            "{name}: rope scaling on sliding layers is not supported"
                        ))
                    }
                    _ => {
                        if !out.iter().any(|(k, v)| k == &key && same_value(v, &value)) {
                            return Err(format!(
                                "{name}.{key} differs from the full-attention layers' (not \
                                 supported)"
                            ));
                        }
                    }
                }
            }
        } else if full.is_none() {
            out = local;
        } else if full.map(|f| flat_rope(f, "")) != Some(Ok(local)) {
            // One RoPE for every layer in this family: the two entries must agree.
            return Err(format!(
                "{name} differs from rope_parameters.full_attention, but this family uses one \
                 RoPE for all layers"
            ));
        }
    }
    Ok(out)
}

/// A flat RoPE parameter object as `rope_theta`, `partial_rotary_factor` and `rope_scaling`.
fn flat_rope(mut params: Map<String, Value>, name: &str) -> Result<Vec<(String, Value)>, String> {
    params.retain(|_, v| !v.is_null());
    if let Some(key) = params
        .keys()
        .find(|k| !ROPE_PARAMETER_KEYS.contains(&k.as_str()))
    {
        return Err(format!(
            "{name}.{key} is not understood (understood: {})",
            ROPE_PARAMETER_KEYS.join(", ")
        ));
    }
    let mut out = Vec::new();
    for key in ["rope_theta", "partial_rotary_factor"] {
        if let Some(v) = params.remove(key) {
            out.push((key.to_owned(), v));
        }
    }
    let kind = params
        .get("rope_type")
        .or(params.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    if kind != "default" {
        out.push(("rope_scaling".into(), Value::Object(params)));
    } else if let Some(key) = params.keys().find(|k| *k != "rope_type" && *k != "type") {
        return Err(format!(
            "{name}.{key} is set but rope_type is \"default\", which does not use it"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn norm(v: Value, local: bool) -> Result<Map<String, Value>, String> {
        let Value::Object(mut m) = v else { panic!() };
        let keys = [
            "hidden_size",
            "use_bidirectional_attention",
            "final_logit_softcapping",
            "rope_theta",
            "rope_scaling",
            "partial_rotary_factor",
            "rope_local_base_freq",
        ];
        normalize(&mut m, "test", &keys, local)?;
        Ok(m)
    }

    #[test]
    fn flat_rope_parameters_become_the_legacy_keys() {
        let m = norm(
            json!({"hidden_size": 8, "rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}}),
            false,
        )
        .unwrap();
        assert_eq!(m["rope_theta"], json!(1e6));
        assert!(!m.contains_key("rope_scaling"));
        let m = norm(
            json!({"rope_parameters": {"rope_theta": 5e5, "rope_type": "llama3", "factor": 8.0,
                   "partial_rotary_factor": 0.5}}),
            false,
        )
        .unwrap();
        assert_eq!(m["rope_scaling"]["rope_type"], json!("llama3"));
        assert_eq!(m["rope_scaling"]["factor"], json!(8.0));
        assert_eq!(m["partial_rotary_factor"], json!(0.5));
    }

    #[test]
    fn per_layer_type_rope_goes_to_gemma3_local_base_or_must_agree() {
        let per_type = json!({"rope_parameters": {
            "full_attention": {"rope_theta": 1e6, "rope_type": "default"},
            "sliding_attention": {"rope_theta": 100.0, "rope_type": "default"}}});
        let m = norm(per_type.clone(), true).unwrap();
        assert_eq!(m["rope_theta"], json!(1e6));
        assert_eq!(m["rope_local_base_freq"], json!(100.0));
        let e = norm(per_type, false).unwrap_err();
        assert!(e.contains("one RoPE"), "{e}");
        let same = json!({"rope_parameters": {
            "full_attention": {"rope_theta": 1e4, "rope_type": "default"},
            "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"}}});
        assert_eq!(norm(same, false).unwrap()["rope_theta"], json!(1e4));
    }

    #[test]
    fn conflicts_and_unknown_keys_are_errors_that_name_the_key() {
        let e = norm(
            json!({"rope_theta": 1e4, "rope_parameters": {"rope_theta": 1e6}}),
            false,
        )
        .unwrap_err();
        assert!(e.contains("rope_theta") && e.contains("1000000"), "{e}");
        assert!(norm(
            json!({"rope_theta": 1e6, "rope_parameters": {"rope_theta": 1000000}}),
            false
        )
        .is_ok());
        let e = norm(
            json!({"rope_parameters": {"rope_theta": 1e6, "beta_fast": 32}}),
            false,
        )
        .unwrap_err();
        assert!(e.contains("beta_fast"), "{e}");
        let e = norm(
            json!({"hidden_size": 8, "quantization_config": {"bits": 4}}),
            false,
        )
        .unwrap_err();
        assert!(
            e.contains("\"quantization_config\"") && e.contains(ALLOW_KEYS_ENV),
            "{e}"
        );
        let e = norm(
            json!({"rope_parameters": {"rope_type": "default", "factor": 2.0}}),
            false,
        )
        .unwrap_err();
        assert!(e.contains("factor"), "{e}");
    }

    #[test]
    fn null_is_absent_except_where_it_means_off() {
        let m = norm(
            json!({"use_bidirectional_attention": null, "final_logit_softcapping": null,
                   "attention_dropout": 0.1, "_sliding_window_pattern": 6, "output_attentions": false}),
            false,
        )
        .unwrap();
        assert!(!m.contains_key("use_bidirectional_attention"));
        assert!(m["final_logit_softcapping"].is_null());
    }
}
