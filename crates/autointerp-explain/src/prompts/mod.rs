//! Prompts as data: every prompt the explainers and scorers send is a [minijinja] template, one
//! file per prompt ([`PromptKind`]). The templates in this crate's `prompts/` folder are built
//! in; [`PromptSet::from_dir`] replaces any of them by a file of the same name, so that a run can
//! send a lab's own prompts (or delphi's, written by `scripts/delphi-prompts.py`).
//!
//! docs/PROMPTS.md describes each template's variables, its settings and the answer its parser
//! expects. In short:
//!
//! - **Messages.** A chat prompt writes each message as a filter block named after its role:
//!   `{% filter system %}…{% endfilter %}`, `{% filter user %}…{% endfilter %}`,
//!   `{% filter assistant %}…{% endfilter %}`. A message's text is what its block renders, less
//!   one final line break; nothing but whitespace may stand between blocks. `surprisal.jinja`
//!   renders plain text instead.
//! - **Whitespace.** Templates are rendered with `trim_blocks` and `lstrip_blocks` (a line
//!   holding only a tag leaves nothing behind), keeping the file's final line break; `+%}` keeps
//!   the line break after a tag.
//! - **Settings.** Top-level `{% set numbering_base = 0 %}`-style lines declare how examples are
//!   numbered and marked ([`PromptSettings`]); the parsers read answers by them.
//! - **Checks at load.** Every template is compiled and rendered against sample variables with
//!   strict undefined variables, so a syntax error, a misspelt variable or a malformed setting
//!   fails when the set is loaded, naming the file and line, not in the middle of a run.
//!
//! ```
//! use autointerp_explain::prompts::{PromptKind, PromptSet};
//!
//! let dir = tempfile::tempdir()?;
//! PromptSet::write_defaults(dir.path())?;
//! // Number excerpts from 0 in the detection prompt; everything else stays built in.
//! let path = dir.path().join(PromptKind::Detection.file_name());
//! let source = std::fs::read_to_string(&path)?
//!     .replace("{% set numbering_base = 1 %}", "{% set numbering_base = 0 %}");
//! std::fs::write(&path, source)?;
//! let prompts = PromptSet::from_dir(dir.path())?;
//! assert_eq!(prompts.settings(PromptKind::Detection).numbering_base, 0);
//!
//! // A template that names an unknown variable fails at load, with its file and line.
//! std::fs::write(&path, "{% filter user %}\n{{ explanation }} {{ exampels }}\n{% endfilter %}\n")?;
//! let err = PromptSet::from_dir(dir.path()).unwrap_err().to_string();
//! assert!(err.contains("detection.jinja:2"), "{err}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod context;
mod settings;

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use autointerp_core::{Message, Role};
use minijinja::value::Value;
use minijinja::{Environment, Error as JinjaError, ErrorKind, UndefinedBehavior};
use serde::Serialize;

pub use context::{
    ClassifierContext, ClassifierOneContext, ContrastiveContext, Excerpt, ExplainerContext,
    IntruderContext, SimulationContext, SurprisalContext, TokenActivation,
};
pub use settings::{
    PromptSettings, ANSWER_MARKER, DOCUMENT_END, DOCUMENT_START, HIGHLIGHT_CLOSE, HIGHLIGHT_OPEN,
    NUMBERING_BASE,
};

/// A prompt, one template file each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PromptKind {
    /// The default explainer ([`ExplainerContext`]).
    Explainer,
    /// The contrastive explainer ([`ContrastiveContext`]).
    Contrastive,
    /// Detection, a batch of excerpts answered with a list of labels ([`ClassifierContext`]).
    Detection,
    /// Detection, one excerpt answered with one digit ([`ClassifierOneContext`]).
    DetectionOne,
    /// Fuzzing, a batch of highlighted excerpts ([`ClassifierContext`]).
    Fuzzing,
    /// Fuzzing, one highlighted excerpt ([`ClassifierOneContext`]).
    FuzzingOne,
    /// Intruder, one trial ([`IntruderContext`]).
    Intruder,
    /// Simulation read through prompt logprobs ([`SimulationContext`]).
    Simulation,
    /// Simulation answered in JSON ([`SimulationContext`]).
    SimulationJson,
    /// The text a base model reads before each example in the surprisal scorer
    /// ([`SurprisalContext`]); plain text, not messages.
    Surprisal,
}

impl PromptKind {
    /// Every prompt.
    pub const ALL: [Self; 10] = [
        Self::Explainer,
        Self::Contrastive,
        Self::Detection,
        Self::DetectionOne,
        Self::Fuzzing,
        Self::FuzzingOne,
        Self::Intruder,
        Self::Simulation,
        Self::SimulationJson,
        Self::Surprisal,
    ];

    /// The template's file name, e.g. `detection.jinja`.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Explainer => "explainer.jinja",
            Self::Contrastive => "contrastive.jinja",
            Self::Detection => "detection.jinja",
            Self::DetectionOne => "detection_one.jinja",
            Self::Fuzzing => "fuzzing.jinja",
            Self::FuzzingOne => "fuzzing_one.jinja",
            Self::Intruder => "intruder.jinja",
            Self::Simulation => "simulation.jinja",
            Self::SimulationJson => "simulation_json.jinja",
            Self::Surprisal => "surprisal.jinja",
        }
    }

    /// The prompt whose template file is called `name`.
    pub fn from_file_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.file_name() == name)
    }

    /// The built-in template.
    pub fn embedded_source(self) -> &'static str {
        match self {
            Self::Explainer => include_str!("../../prompts/explainer.jinja"),
            Self::Contrastive => include_str!("../../prompts/contrastive.jinja"),
            Self::Detection => include_str!("../../prompts/detection.jinja"),
            Self::DetectionOne => include_str!("../../prompts/detection_one.jinja"),
            Self::Fuzzing => include_str!("../../prompts/fuzzing.jinja"),
            Self::FuzzingOne => include_str!("../../prompts/fuzzing_one.jinja"),
            Self::Intruder => include_str!("../../prompts/intruder.jinja"),
            Self::Simulation => include_str!("../../prompts/simulation.jinja"),
            Self::SimulationJson => include_str!("../../prompts/simulation_json.jinja"),
            Self::Surprisal => include_str!("../../prompts/surprisal.jinja"),
        }
    }

    /// Whether the template renders chat messages (all but [`PromptKind::Surprisal`]).
    pub fn is_chat(self) -> bool {
        self != Self::Surprisal
    }

    /// The role of the last message: the simulation prompt ends with the document for the model
    /// to continue, every other with the question.
    fn last_role(self) -> Role {
        if self == Self::Simulation {
            Role::Assistant
        } else {
            Role::User
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// Errors from loading, checking and rendering prompt templates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromptError {
    /// A template that does not compile, fails to render, declares an unusable setting, or
    /// renders something that is not a prompt.
    #[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Template {
        /// The template file (`<embedded>/…` for a built-in one).
        file: PathBuf,
        /// The line at fault, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A file in a prompt folder that is not one of the templates.
    #[error(
        "{}: not a prompt template; a prompt folder holds only {}",
        path.display(),
        expected.join(", ")
    )]
    UnknownFile {
        /// The file.
        path: PathBuf,
        /// The template file names.
        expected: Vec<&'static str>,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// [`PromptSet::write_defaults`] found the file already there and left it alone.
    #[error("{}: already exists; not overwritten", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
}

/// Delimits the messages a chat template renders. The renderer replaces these characters in
/// every variable it passes in, so only the message filters can produce them.
const MESSAGE_START: char = '\u{1e}';
const ROLE_END: char = '\u{1f}';
const MESSAGE_END: char = '\u{1d}';

/// One loaded template.
#[derive(Debug)]
struct Entry {
    /// Where it came from, for error messages.
    origin: PathBuf,
    source: String,
    settings: PromptSettings,
}

/// One compiled, checked template per [`PromptKind`], with the settings each declares.
/// Explainers and scorers hold it as `Arc<PromptSet>`; [`PromptSet::embedded`] is the built-in
/// set they use unless given another.
pub struct PromptSet {
    env: Environment<'static>,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for PromptSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                PromptKind::ALL
                    .iter()
                    .map(|k| (k.file_name(), &self.entries[k.index()].origin)),
            )
            .finish()
    }
}

static EMBEDDED: LazyLock<Arc<PromptSet>> = LazyLock::new(|| {
    let sources = PromptKind::ALL.map(|k| {
        (
            k,
            k.embedded_source().to_string(),
            Path::new("<embedded>").join(k.file_name()),
        )
    });
    // The built-in templates are part of this crate; a test loads them.
    Arc::new(PromptSet::build(sources).unwrap_or_else(|e| panic!("built-in prompt template: {e}")))
});

impl PromptSet {
    /// The built-in templates, compiled once and shared.
    pub fn embedded() -> Arc<PromptSet> {
        Arc::clone(&EMBEDDED)
    }

    /// The built-in templates, with each template file found in `dir` in place of the built-in
    /// one of the same name. Every template is compiled and rendered once against sample
    /// variables before this returns.
    ///
    /// # Errors
    /// [`PromptError::UnknownFile`] for a file (or folder) in `dir` other than the template files
    /// (hidden files and `README*` excepted); [`PromptError::Template`], naming the file and
    /// line, for a template that does not compile, uses a variable it is not given, declares an
    /// unusable setting or does not render a prompt; [`PromptError::Io`] when `dir` cannot be
    /// read.
    pub fn from_dir(dir: &Path) -> Result<Self, PromptError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PromptError::Io { path, source }
        };
        let mut found: Vec<(PromptKind, String, PathBuf)> = Vec::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .map(|e| e.map(|e| e.path()).map_err(io(dir)))
            .collect::<Result<_, _>>()?;
        names.sort();
        for path in names {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') || name.starts_with("README") {
                continue;
            }
            let kind = PromptKind::from_file_name(&name)
                .filter(|_| path.is_file())
                .ok_or_else(|| PromptError::UnknownFile {
                    path: path.clone(),
                    expected: PromptKind::ALL.map(PromptKind::file_name).to_vec(),
                })?;
            let source = std::fs::read_to_string(&path).map_err(io(&path))?;
            found.push((kind, source, path));
        }
        Self::with_overrides(found)
    }

    /// The built-in templates with `templates` (kind, source) in place of theirs, checked as
    /// [`PromptSet::from_dir`] checks files; errors name them `<given>/<file name>`.
    pub fn from_templates(
        templates: impl IntoIterator<Item = (PromptKind, String)>,
    ) -> Result<Self, PromptError> {
        Self::with_overrides(
            templates
                .into_iter()
                .map(|(k, s)| (k, s, Path::new("<given>").join(k.file_name())))
                .collect(),
        )
    }

    /// Writes the built-in templates into `dir` (created if missing), one file per prompt: the
    /// starting point of a folder for [`PromptSet::from_dir`]. Returns the files written.
    ///
    /// # Errors
    /// [`PromptError::Exists`] when one of the files is already there (nothing is overwritten,
    /// and nothing is written); [`PromptError::Io`] when writing fails.
    pub fn write_defaults(dir: &Path) -> Result<Vec<PathBuf>, PromptError> {
        std::fs::create_dir_all(dir).map_err(|source| PromptError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let paths: Vec<(PromptKind, PathBuf)> = PromptKind::ALL
            .iter()
            .map(|k| (*k, dir.join(k.file_name())))
            .collect();
        if let Some((_, path)) = paths.iter().find(|(_, p)| p.exists()) {
            return Err(PromptError::Exists { path: path.clone() });
        }
        for (kind, path) in &paths {
            autointerp_core::fs::write_atomic(path, kind.embedded_source().as_bytes()).map_err(
                |e| PromptError::Io {
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                },
            )?;
        }
        Ok(paths.into_iter().map(|(_, p)| p).collect())
    }

    /// The settings `kind`'s template declares.
    pub fn settings(&self, kind: PromptKind) -> &PromptSettings {
        &self.entries[kind.index()].settings
    }

    /// Where `kind`'s template came from: its file, or `<embedded>/<file name>`.
    pub fn origin(&self, kind: PromptKind) -> &Path {
        &self.entries[kind.index()].origin
    }

    /// The source of `kind`'s template.
    pub fn source(&self, kind: PromptKind) -> &str {
        &self.entries[kind.index()].source
    }

    /// Renders `kind`'s chat template with the variables of `context` (the context struct of
    /// that kind, e.g. [`ClassifierContext`] for [`PromptKind::Detection`]) and its settings.
    ///
    /// # Errors
    /// [`PromptError::Template`] when the template fails on these variables or renders no
    /// usable messages, or `kind` is not a chat prompt.
    pub fn render_messages<C: Serialize>(
        &self,
        kind: PromptKind,
        context: &C,
    ) -> Result<Vec<Message>, PromptError> {
        let json =
            serde_json::to_value(context).map_err(|e| self.error(kind, None, e.to_string()))?;
        let output = self.render_json(kind, json)?;
        self.messages(kind, &output)
    }

    /// Renders `kind`'s plain-text template ([`PromptKind::Surprisal`]) with the variables of
    /// `context`.
    ///
    /// # Errors
    /// [`PromptError::Template`] when the template fails on these variables, or renders message
    /// blocks.
    pub fn render_text<C: Serialize>(
        &self,
        kind: PromptKind,
        context: &C,
    ) -> Result<String, PromptError> {
        let json =
            serde_json::to_value(context).map_err(|e| self.error(kind, None, e.to_string()))?;
        let output = self.render_json(kind, json)?;
        if kind.is_chat() {
            return Err(self.error(kind, None, "this prompt is a chat prompt".into()));
        }
        if output.contains([MESSAGE_START, ROLE_END, MESSAGE_END]) {
            return Err(self.error(
                kind,
                None,
                "this prompt is plain text: it cannot hold message blocks".into(),
            ));
        }
        Ok(output)
    }

    fn error(&self, kind: PromptKind, line: Option<usize>, message: String) -> PromptError {
        PromptError::Template {
            file: self.entries[kind.index()].origin.clone(),
            line,
            message,
        }
    }

    /// Renders with `json` (cleaned of message delimiters) and the settings as variables.
    fn render_json(
        &self,
        kind: PromptKind,
        json: serde_json::Value,
    ) -> Result<String, PromptError> {
        let origin = &self.entries[kind.index()].origin;
        render(&self.env, kind, origin, json, self.settings(kind))
    }

    /// Splits a chat template's output into messages.
    fn messages(&self, kind: PromptKind, output: &str) -> Result<Vec<Message>, PromptError> {
        if !kind.is_chat() {
            return Err(self.error(kind, None, "this prompt is plain text, not messages".into()));
        }
        split_messages(output).map_err(|(message, outside)| {
            // Text outside the blocks is usually literal text of the template: find its line.
            let line = outside
                .as_deref()
                .and_then(|o| o.lines().map(str::trim).find(|l| !l.is_empty()))
                .and_then(|needle| self.source(kind).lines().position(|l| l.contains(needle)))
                .map(|i| i + 1);
            self.error(kind, line, message)
        })
    }

    /// Compiles `sources`, reads their settings and renders each against the samples.
    fn build(
        sources: impl IntoIterator<Item = (PromptKind, String, PathBuf)>,
    ) -> Result<Self, PromptError> {
        let mut env = environment();
        let mut loaded: Vec<(PathBuf, String)> = PromptKind::ALL
            .iter()
            .map(|k| (Path::new("<embedded>").join(k.file_name()), String::new()))
            .collect();
        for (kind, source, origin) in sources {
            env.add_template_owned(kind.file_name(), source.clone())
                .map_err(|e| jinja_error(&origin, &e))?;
            loaded[kind.index()] = (origin, source);
        }
        let mut entries = Vec::with_capacity(PromptKind::ALL.len());
        for (kind, (origin, source)) in PromptKind::ALL.into_iter().zip(loaded) {
            let settings = read_settings(&env, kind, &origin, &source)?;
            entries.push(Entry {
                origin,
                source,
                settings,
            });
        }
        let set = Self { env, entries };
        for kind in PromptKind::ALL {
            set.check(kind)?;
        }
        Ok(set)
    }

    /// The built-in sources with `overrides` in their place.
    fn with_overrides(overrides: Vec<(PromptKind, String, PathBuf)>) -> Result<Self, PromptError> {
        let mut sources: Vec<(PromptKind, String, PathBuf)> = PromptKind::ALL
            .iter()
            .map(|k| {
                (
                    *k,
                    k.embedded_source().to_string(),
                    Path::new("<embedded>").join(k.file_name()),
                )
            })
            .collect();
        for (kind, source, origin) in overrides {
            sources[kind.index()] = (kind, source, origin);
        }
        Self::build(sources)
    }

    /// Renders `kind` against every sample and checks that the result is a usable prompt.
    fn check(&self, kind: PromptKind) -> Result<(), PromptError> {
        let settings = self.settings(kind);
        for sample in context::samples(kind, settings) {
            if !kind.is_chat() {
                self.render_text(kind, &sample)?;
                continue;
            }
            let messages = self.render_messages(kind, &sample)?;
            let Some(last) = messages.last() else {
                return Err(self.error(kind, None, "renders no message".into()));
            };
            if last.role != kind.last_role() {
                return Err(self.error(
                    kind,
                    None,
                    format!(
                        "the last message must be a {:?} message, not {:?}",
                        kind.last_role(),
                        last.role
                    )
                    .to_lowercase(),
                ));
            }
            if kind == PromptKind::Simulation {
                // The parser reads the character after each tab that follows the last
                // document_start: a token per tab.
                let n = context::sample_tokens(settings).len();
                let slots = last
                    .content
                    .rfind(settings.document_start.as_str())
                    .map(|at| last.content[at..].matches('\t').count());
                if slots.is_none_or(|s| s < n) {
                    return Err(self.error(
                        kind,
                        None,
                        format!(
                            "the last message must list the document after {:?}, one tab per \
                             token: {n} tokens gave {} tabs",
                            settings.document_start,
                            slots.unwrap_or(0)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The environment every template set is compiled in.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    for role in ["system", "user", "assistant"] {
        env.add_filter(role, move |content: Value| message(role, &content));
    }
    env.add_filter("json", |value: Value| {
        serde_json::to_string(&value)
            .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, e.to_string()))
    });
    env.add_function("shot_example", context::shot_example);
    env
}

/// A message block's output: its text, less one final line break, between delimiters.
fn message(role: &str, content: &Value) -> Result<Value, JinjaError> {
    let text = content
        .as_str()
        .map_or_else(|| content.to_string(), str::to_string);
    if text.contains([MESSAGE_START, ROLE_END, MESSAGE_END]) {
        return Err(JinjaError::new(
            ErrorKind::InvalidOperation,
            "a message block inside another",
        ));
    }
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(Value::from_safe_string(format!(
        "{MESSAGE_START}{role}{ROLE_END}{text}{MESSAGE_END}"
    )))
}

/// The messages of a chat template's output; an error says what is wrong, with the text found
/// outside the message blocks if that is it.
fn split_messages(output: &str) -> Result<Vec<Message>, (String, Option<String>)> {
    let malformed = |m: &str| (m.to_string(), None);
    let mut messages = Vec::new();
    let mut rest = output;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(messages);
        }
        let Some(body) = rest.strip_prefix(MESSAGE_START) else {
            let outside: String = rest
                .chars()
                .take_while(|c| *c != MESSAGE_START)
                .take(60)
                .collect();
            return Err((
                format!(
                    "text outside a message block ({outside:?}): write each message inside \
                     {{% filter system %}}, {{% filter user %}} or {{% filter assistant %}}"
                ),
                Some(outside),
            ));
        };
        let (role, body) = body
            .split_once(ROLE_END)
            .ok_or_else(|| malformed("a message without its role"))?;
        let (content, after) = body
            .split_once(MESSAGE_END)
            .ok_or_else(|| malformed("a message without its end"))?;
        let role = match role {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => return Err(malformed(&format!("unknown role {other:?}"))),
        };
        messages.push(Message {
            role,
            content: content.to_string(),
        });
        rest = after;
    }
}

/// Renders `kind` from `env` with `json`, after replacing the message delimiters in its strings,
/// and with `settings` as variables where `json` does not set them.
fn render(
    env: &Environment<'static>,
    kind: PromptKind,
    origin: &Path,
    mut json: serde_json::Value,
    settings: &PromptSettings,
) -> Result<String, PromptError> {
    clean(&mut json);
    let mut vars: std::collections::BTreeMap<String, Value> = settings
        .variables()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    if let serde_json::Value::Object(map) = json {
        for (k, v) in map {
            vars.insert(k, Value::from_serialize(&v));
        }
    }
    let template = env
        .get_template(kind.file_name())
        .map_err(|e| jinja_error(origin, &e))?;
    template.render(vars).map_err(|e| jinja_error(origin, &e))
}

/// Replaces the message delimiters in every string of `json`.
fn clean(json: &mut serde_json::Value) {
    match json {
        serde_json::Value::String(s) if s.contains([MESSAGE_START, ROLE_END, MESSAGE_END]) => {
            *s = s.replace([MESSAGE_START, ROLE_END, MESSAGE_END], "\u{fffd}");
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(clean),
        serde_json::Value::Object(map) => map.values_mut().for_each(clean),
        _ => {}
    }
}

/// The settings `kind`'s template declares: its top-level variables after rendering the first
/// sample with the default settings.
fn read_settings(
    env: &Environment<'static>,
    kind: PromptKind,
    origin: &Path,
    source: &str,
) -> Result<PromptSettings, PromptError> {
    let defaults = PromptSettings::defaults(kind);
    let template = env
        .get_template(kind.file_name())
        .map_err(|e| jinja_error(origin, &e))?;
    let mut sample = context::samples(kind, &defaults)
        .into_iter()
        .next()
        .unwrap_or_default();
    clean(&mut sample);
    let mut vars: std::collections::BTreeMap<String, Value> = defaults
        .variables()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    if let serde_json::Value::Object(map) = sample {
        for (k, v) in map {
            vars.insert(k, Value::from_serialize(&v));
        }
    }
    let captured = template
        .render_captured(vars)
        .map_err(|e| jinja_error(origin, &e))?;
    PromptSettings::read(
        kind,
        |name| captured.state().lookup(name),
        |name, message| PromptError::Template {
            file: origin.to_path_buf(),
            line: set_line(source, name),
            message,
        },
    )
}

/// The line of `source` that sets `name`, if one does.
fn set_line(source: &str, name: &str) -> Option<usize> {
    source
        .lines()
        .position(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w[0] == "set" && w[1].trim_end_matches('=') == name)
        })
        .map(|i| i + 1)
}

/// A minijinja error as a [`PromptError::Template`] naming `origin` and the line.
fn jinja_error(origin: &Path, e: &JinjaError) -> PromptError {
    let message = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    PromptError::Template {
        file: origin.to_path_buf(),
        line: e.line(),
        message,
    }
}
