//! What a classifier scorer (detection, fuzzing) records for each example shown.

use serde::{Deserialize, Serialize};

/// One example shown to a classifier scorer, and what the scorer said about it.
///
/// Serialised in delphi's `ClassifierOutput` layout — `str_tokens`, `activations`, `distance`,
/// `activating`, `prediction`, `probability`, `correct` — plus two fields delphi lacks and
/// ignores when reading: `quantile` and `text` (the excerpt exactly as shown, highlights
/// included).
///
/// As in delphi, `distance` holds the quantile for activating examples and the distance for
/// non-activating ones, `-1` when there is none. delphi numbers quantiles from 0 (strongest)
/// and we from 1, so an activating example of our quantile `q` is written with `distance` `q - 1`
/// and read back as `q`; the extra `quantile` field holds our 1-based number. An activating
/// example without a quantile is written with `distance` `-1`, never `0`, which is delphi's
/// strongest quantile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "Wire", from = "Wire")]
pub struct ExampleOutcome {
    /// The example's tokens, decoded one by one.
    pub str_tokens: Vec<String>,
    /// The latent's activation on each token.
    pub activations: Vec<f32>,
    /// The quantile the example was drawn from, when it was.
    pub quantile: Option<u8>,
    /// For non-activating examples found by similarity, their distance to the latent.
    pub distance: Option<f32>,
    /// The right answer: for detection, whether the latent fires in the example; for fuzzing,
    /// whether its highlighting is the correct one.
    pub activating: bool,
    /// The scorer's answer; `None` when it could not be parsed (a failed example).
    pub prediction: Option<bool>,
    /// The scorer's probability that the answer is 1, from token logprobs; `None` without them.
    pub probability: Option<f32>,
    /// Whether `prediction` equals `activating`; `None` for a failed example.
    pub correct: Option<bool>,
    /// The excerpt as shown to the scorer.
    pub text: Option<String>,
}

impl ExampleOutcome {
    /// Whether the scorer's answer for this example could not be parsed. Failed examples are
    /// excluded from every metric and counted apart.
    pub fn failed(&self) -> bool {
        self.prediction.is_none()
    }

    /// Records the scorer's answer (or its failure, with `None`).
    pub fn set_prediction(&mut self, prediction: Option<bool>, probability: Option<f32>) {
        self.prediction = prediction;
        self.correct = prediction.map(|p| p == self.activating);
        self.probability = prediction.and(probability);
    }
}

/// A JSON number that stays an integer when it is one (delphi writes quantiles as integers).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Float(f64),
}

/// delphi's `distance` (and intruder `chosen_quantile`, simulation `distance`) when there is
/// none.
pub(crate) const NONE: i64 = -1;

/// delphi's 0-based number of our 1-based quantile `q` (1 = strongest).
pub(crate) fn delphi_quantile(q: u8) -> i64 {
    i64::from(q) - 1
}

/// Our 1-based quantile of delphi's 0-based number `d`; `None` for `-1` or anything that is no
/// quantile (negative, fractional, beyond 254).
pub(crate) fn our_quantile(d: f64) -> Option<u8> {
    (d >= 0.0 && d.fract() == 0.0 && d < 255.0).then(|| d as u8 + 1)
}

#[derive(Serialize, Deserialize)]
struct Wire {
    str_tokens: Vec<String>,
    activations: Vec<f32>,
    distance: Number,
    activating: bool,
    #[serde(default)]
    prediction: Option<bool>,
    #[serde(default)]
    probability: Option<f32>,
    #[serde(default)]
    correct: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quantile: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

impl From<ExampleOutcome> for Wire {
    fn from(o: ExampleOutcome) -> Self {
        let distance = match (o.activating, o.quantile, o.distance) {
            (true, Some(q), _) => Number::Int(delphi_quantile(q)),
            (true, None, _) => Number::Int(NONE),
            (false, _, Some(d)) => Number::Float(f64::from(d)),
            (false, _, None) => Number::Int(NONE),
        };
        Self {
            str_tokens: o.str_tokens,
            activations: o.activations,
            distance,
            activating: o.activating,
            prediction: o.prediction,
            probability: o.probability,
            correct: o.correct,
            quantile: o.quantile,
            text: o.text,
        }
    }
}

impl From<Wire> for ExampleOutcome {
    fn from(w: Wire) -> Self {
        let distance = match w.distance {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        };
        // Files of ours carry the quantile itself; delphi's only its 0-based number in `distance`.
        let quantile = w
            .quantile
            .or_else(|| w.activating.then(|| our_quantile(distance)).flatten());
        let distance = (!w.activating && distance != NONE as f64).then_some(distance as f32);
        Self {
            str_tokens: w.str_tokens,
            activations: w.activations,
            quantile,
            distance,
            activating: w.activating,
            prediction: w.prediction,
            probability: w.probability,
            correct: w.correct,
            text: w.text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(activating: bool, quantile: Option<u8>, distance: Option<f32>) -> ExampleOutcome {
        ExampleOutcome {
            str_tokens: vec!["a".into()],
            activations: vec![1.5],
            quantile,
            distance,
            activating,
            prediction: None,
            probability: None,
            correct: None,
            text: None,
        }
    }

    #[test]
    fn serialises_in_delphis_layout() {
        let mut o = outcome(true, Some(3), None);
        o.set_prediction(Some(true), Some(0.75));
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(
            json,
            r#"{"str_tokens":["a"],"activations":[1.5],"distance":2,"activating":true,"prediction":true,"probability":0.75,"correct":true,"quantile":3}"#
        );
        assert_eq!(serde_json::from_str::<ExampleOutcome>(&json).unwrap(), o);

        let mut o = outcome(false, None, None);
        o.set_prediction(None, Some(0.5));
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(
            json,
            r#"{"str_tokens":["a"],"activations":[1.5],"distance":-1,"activating":false,"prediction":null,"probability":null,"correct":null}"#
        );
        assert_eq!(serde_json::from_str::<ExampleOutcome>(&json).unwrap(), o);

        let o = outcome(false, None, Some(0.25));
        let back: ExampleOutcome =
            serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn reads_delphi_records() {
        let delphi = r#"{"str_tokens":["x"],"activations":[0.0],"distance":-1.0,"activating":false,"prediction":false,"probability":null,"correct":true}"#;
        let o: ExampleOutcome = serde_json::from_str(delphi).unwrap();
        assert_eq!(
            (o.distance, o.quantile, o.correct),
            (None, None, Some(true))
        );
        let delphi = r#"{"str_tokens":["x"],"activations":[2.0],"distance":4,"activating":true,"prediction":true,"probability":0.9,"correct":true}"#;
        let o: ExampleOutcome = serde_json::from_str(delphi).unwrap();
        assert_eq!((o.distance, o.quantile), (None, Some(5)));
    }

    /// #13: delphi's quantiles are 0-based (`split_quantiles` sets `example.quantile = i` for
    /// `i in range(n_quantiles)`, 0 = strongest) and its score files put them in `distance`.
    #[test]
    fn quantiles_cross_delphis_zero_based_distance() {
        // delphi's strongest quantile, 0, was read as out of range.
        let delphi = r#"{"str_tokens":["x"],"activations":[2.0],"distance":0,"activating":true,"prediction":true,"probability":0.9,"correct":true}"#;
        let o: ExampleOutcome = serde_json::from_str(delphi).unwrap();
        assert_eq!(o.quantile, Some(1));
        // Written back without our extra fields, it is the same line delphi wrote.
        let back = serde_json::to_string(&o).unwrap();
        assert_eq!(back.replace(r#","quantile":1"#, ""), delphi);
        // delphi's last quantile of 10, and floats of integer value.
        let nine = delphi.replace(r#""distance":0"#, r#""distance":9.0"#);
        assert_eq!(
            serde_json::from_str::<ExampleOutcome>(&nine)
                .unwrap()
                .quantile,
            Some(10)
        );

        for q in [1u8, 2, 10, 255] {
            let o = outcome(true, Some(q), None);
            let json = serde_json::to_value(&o).unwrap();
            assert_eq!(json["distance"], i64::from(q) - 1);
            assert_eq!(
                serde_json::from_value::<ExampleOutcome>(json.clone()).unwrap(),
                o
            );
            // A reader that only has delphi's fields gets the same quantile.
            let mut bare = json;
            bare.as_object_mut().unwrap().remove("quantile");
            assert_eq!(serde_json::from_value::<ExampleOutcome>(bare).unwrap(), o);
        }
    }

    #[test]
    fn an_activating_example_without_quantile_is_minus_one_not_zero() {
        for distance in [None, Some(0.5)] {
            let o = outcome(true, None, distance);
            let json = serde_json::to_value(&o).unwrap();
            assert_eq!(
                json["distance"], -1,
                "0 would read as delphi's strongest quantile"
            );
            assert!(json.get("quantile").is_none());
            let back: ExampleOutcome = serde_json::from_value(json).unwrap();
            assert_eq!((back.quantile, back.distance), (None, None));
        }
        // A non-activating example's distance passes through, -1 when it has none.
        let o = outcome(false, None, Some(0.0));
        assert_eq!(serde_json::to_value(&o).unwrap()["distance"], 0.0);
        assert_eq!(
            serde_json::from_value::<ExampleOutcome>(serde_json::to_value(&o).unwrap()).unwrap(),
            o
        );
    }
}
