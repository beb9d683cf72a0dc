//! Chat models named by one string, as a command line or a config file names them.

use std::fmt;
use std::str::FromStr;

use crate::redact::redact_url;
use crate::{Error, HttpSettings, OpenAiClient, Result};

/// The accepted forms, for error messages.
const FORMS: &str = "`openai:BASE_URL/MODEL`, `openai:MODEL`, `openrouter:MODEL` or `local:PATH`";

/// Where a chat model is answered, parsed from `provider:rest`:
///
/// - `openai:BASE_URL/MODEL`: any OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama);
///   the model is what follows the last `/`, so `openai:http://localhost:8000/v1/Qwen2.5-7B` is
///   model `Qwen2.5-7B` at `http://localhost:8000/v1`.
/// - `openai:MODEL`: api.openai.com, key in `OPENAI_API_KEY`.
/// - `openrouter:MODEL`: OpenRouter, key in `OPENROUTER_API_KEY`.
/// - `local:PATH`: a model run in this process (an HF folder, a `.gguf` file or a Hub id). This
///   crate never links libtorch, so [`ModelSpec::client`] refuses it: build autointerp-engine's
///   `LocalEngine` from [`ModelSpec::Local`]'s source instead.
///
/// ```
/// use autointerp_client::ModelSpec;
///
/// let spec: ModelSpec = "openai:http://127.0.0.1:8000/v1/Qwen2.5-7B".parse()?;
/// let client = spec.client(None)?;
/// assert_eq!(client.base_url(), "http://127.0.0.1:8000/v1");
/// assert_eq!(client.model(), "Qwen2.5-7B");
/// assert!(matches!("local:model.gguf".parse()?, ModelSpec::Local { .. }));
/// # Ok::<(), autointerp_client::Error>(())
/// ```
///
/// `Display` writes the spec back as it was given, credentials in a base URL included, so that
/// it parses again; `Debug` and errors redact them ([`crate::redact_url`]). Show a spec to
/// people with `redact_url(&spec.to_string())`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelSpec {
    /// `openai:BASE_URL/MODEL`: an OpenAI-compatible server at `base_url`.
    Server {
        /// The part before `/chat/completions`, e.g. `http://localhost:8000/v1`.
        base_url: String,
        /// The model name the server knows.
        model: String,
    },
    /// `openai:MODEL`: OpenAI's API.
    OpenAi {
        /// The model name.
        model: String,
    },
    /// `openrouter:MODEL`: OpenRouter.
    OpenRouter {
        /// The model name.
        model: String,
    },
    /// `local:PATH`: a model for the in-process engine.
    Local {
        /// An HF folder, a `.gguf` file or a Hub id.
        source: String,
    },
}

impl FromStr for ModelSpec {
    type Err = Error;

    /// # Errors
    /// [`Error::ModelSpec`] when there is no `provider:`, the provider is unknown, or an
    /// `openai:` URL names no model after its last `/`.
    fn from_str(spec: &str) -> Result<Self> {
        let bad = |problem: String| Error::ModelSpec {
            spec: redact_url(spec),
            problem,
        };
        let (provider, rest) = spec
            .split_once(':')
            .ok_or_else(|| bad(format!("expected {FORMS}")))?;
        Ok(match provider {
            "openrouter" => Self::OpenRouter {
                model: rest.to_owned(),
            },
            "openai" if rest.starts_with("http://") || rest.starts_with("https://") => {
                let (base, model) = rest
                    .rsplit_once('/')
                    .filter(|(_, m)| !m.is_empty())
                    .ok_or_else(|| bad("expected `openai:BASE_URL/MODEL`".into()))?;
                Self::Server {
                    base_url: base.to_owned(),
                    model: model.to_owned(),
                }
            }
            "openai" => Self::OpenAi {
                model: rest.to_owned(),
            },
            "local" => Self::Local {
                source: rest.to_owned(),
            },
            other => {
                return Err(bad(format!(
                    "unknown provider {other:?} (openai, openrouter, local)"
                )))
            }
        })
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Server { base_url, model } => write!(f, "openai:{base_url}/{model}"),
            Self::OpenAi { model } => write!(f, "openai:{model}"),
            Self::OpenRouter { model } => write!(f, "openrouter:{model}"),
            Self::Local { source } => write!(f, "local:{source}"),
        }
    }
}

impl fmt::Debug for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Server { base_url, model } => f
                .debug_struct("Server")
                .field("base_url", &crate::RedactedUrl(base_url))
                .field("model", model)
                .finish(),
            Self::OpenAi { model } => f.debug_struct("OpenAi").field("model", model).finish(),
            Self::OpenRouter { model } => {
                f.debug_struct("OpenRouter").field("model", model).finish()
            }
            Self::Local { source } => f.debug_struct("Local").field("source", source).finish(),
        }
    }
}

impl ModelSpec {
    /// [`ModelSpec::client`] with `settings` applied ([`OpenAiClient::with_settings`]).
    ///
    /// # Errors
    /// As [`ModelSpec::client`], and [`Error::Config`] naming a setting that is out of range.
    pub fn client_with(
        &self,
        api_key_env: Option<&str>,
        settings: &HttpSettings,
    ) -> Result<OpenAiClient> {
        self.client(api_key_env)?.with_settings(settings)
    }

    /// The HTTP client that asks this model. `api_key_env` names the variable holding the key of
    /// a [`ModelSpec::Server`] (servers on localhost usually need none); OpenAI and OpenRouter
    /// always read their own variable, so it is ignored for them.
    ///
    /// # Errors
    /// [`Error::ModelSpec`] for [`ModelSpec::Local`], which only the in-process engine answers;
    /// [`Error::Config`] when a base URL is not http(s) or a key variable is unset or empty.
    pub fn client(&self, api_key_env: Option<&str>) -> Result<OpenAiClient> {
        match self {
            Self::Server { base_url, model } => {
                let client = OpenAiClient::new(base_url.as_str(), model.as_str())?;
                match api_key_env {
                    Some(var) => client.with_api_key_env(var),
                    None => Ok(client),
                }
            }
            Self::OpenAi { model } => OpenAiClient::openai(model.as_str()),
            Self::OpenRouter { model } => OpenAiClient::openrouter(model.as_str()),
            Self::Local { .. } => Err(Error::ModelSpec {
                spec: redact_url(&self.to_string()),
                problem: "local models are answered by the in-process engine, not an HTTP client"
                    .into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_into_clients() {
        let spec: ModelSpec = "openai:http://127.0.0.1:8000/v1/Qwen2.5-7B"
            .parse()
            .unwrap();
        let c = spec.client(None).unwrap();
        assert_eq!(
            (c.base_url(), c.model()),
            ("http://127.0.0.1:8000/v1", "Qwen2.5-7B")
        );
        assert_eq!(
            spec.to_string(),
            "openai:http://127.0.0.1:8000/v1/Qwen2.5-7B"
        );
        assert_eq!(
            "local:/models/x.gguf".parse::<ModelSpec>().unwrap(),
            ModelSpec::Local {
                source: "/models/x.gguf".into()
            }
        );
        assert_eq!(
            "openrouter:a/b".parse::<ModelSpec>().unwrap(),
            ModelSpec::OpenRouter {
                model: "a/b".into()
            }
        );
    }

    #[test]
    fn bad_specs_name_the_spec() {
        for bad in ["gpt-4o", "claude:x", "openai:http://host/"] {
            let err = bad.parse::<ModelSpec>().unwrap_err();
            assert!(matches!(err, Error::ModelSpec { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(bad), "{err}");
        }
        let err = "claude:x".parse::<ModelSpec>().unwrap_err().to_string();
        assert!(err.contains("unknown provider \"claude\""), "{err}");
    }

    #[test]
    fn credentials_stay_out_of_debug_and_errors_but_round_trip() {
        let text = "openai:https://bob:hunter2@h/v1?api_key=sk-9/m";
        // `?api_key=sk-9/m` is not a model after a query: the model is what follows the last `/`.
        let spec: ModelSpec = text.parse().unwrap();
        assert_eq!(spec.to_string(), text, "Display round-trips");
        let debug = format!("{spec:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("sk-9"),
            "{debug}"
        );
        assert!(debug.contains("bob:[redacted]@h"), "{debug}");
        let client = spec.client(None).unwrap();
        let debug = format!("{client:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("sk-9"),
            "{debug}"
        );

        let err = "openai:https://bob:hunter2@h/"
            .parse::<ModelSpec>()
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        let err = OpenAiClient::new("ftp://bob:hunter2@h/v1", "m").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn clients_report_what_they_cannot_build() {
        let local: ModelSpec = "local:m.gguf".parse().unwrap();
        let err = local.client(None).unwrap_err().to_string();
        assert!(err.contains("in-process engine"), "{err}");

        let server: ModelSpec = "openai:http://h/v1/m".parse().unwrap();
        let err = server
            .client(Some("AUTOINTERP_TEST_NO_SUCH_VAR"))
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(
            err.to_string().contains("AUTOINTERP_TEST_NO_SUCH_VAR"),
            "{err}"
        );
    }
}
