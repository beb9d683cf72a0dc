//! Chat templates: the Jinja template a model ships with, rendered with minijinja the way
//! transformers' `apply_chat_template` renders it.

use std::time::{SystemTime, UNIX_EPOCH};

use autointerp_core::Message;
use autointerp_model::Tokenizer;
use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, Value};

use crate::{Error, Result};

const NAME: &str = "chat_template";

/// How a conversation is turned into the prompt text.
///
/// The defaults are what a chat request needs: a generation prompt (the opening of the
/// assistant's turn) after the last message.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    /// Ends the prompt with the opening of an assistant turn (transformers'
    /// `add_generation_prompt`).
    pub add_generation_prompt: bool,
    /// Leaves the final (assistant) message open, so that the model continues it: the prompt
    /// ends with that message's text, and whatever the template writes after it (its
    /// end-of-turn token) is cut (transformers' and vLLM's `continue_final_message`).
    pub continue_final_message: bool,
    /// More template variables (vLLM's `chat_template_kwargs`, e.g. `enable_thinking`).
    pub kwargs: serde_json::Map<String, serde_json::Value>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            add_generation_prompt: true,
            continue_final_message: false,
            kwargs: serde_json::Map::new(),
        }
    }
}

/// A compiled chat template.
///
/// Rendered as transformers does: `trim_blocks` and `lstrip_blocks`, loop controls, the
/// variables `messages`, `add_generation_prompt`, `bos_token` and `eos_token`, and the globals
/// `raise_exception(message)` and `strftime_now(format)` (UTC). Python's string and dict
/// methods (`.strip()`, `.startswith()`, `.items()`, …) work through `minijinja-contrib`'s
/// `pycompat`, and `tojson` writes JSON as Python's `json.dumps` does (no HTML escaping).
///
/// ```
/// use autointerp_engine::{ChatTemplate, RenderOptions};
/// use autointerp_core::Message;
///
/// let t = ChatTemplate::new(
///     "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}\
///      {% if add_generation_prompt %}<|assistant|>{% endif %}",
///     "<s>",
///     "</s>",
/// )?;
/// let text = t.render(&[Message::user("Hi")], &RenderOptions::default())?;
/// assert_eq!(text, "<|user|>Hi</s><|assistant|>");
/// # Ok::<(), autointerp_client::Error>(())
/// ```
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

fn template_error(e: impl std::fmt::Display) -> Error {
    Error::ChatTemplate {
        problem: e.to_string(),
    }
}

impl ChatTemplate {
    /// Compiles `source` (a Jinja chat template) with the special tokens it may refer to.
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] if the template does not compile.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self> {
        // transformers' AssistantTracker tags: markers for training masks, no output.
        let source = source
            .into()
            .replace("{% generation %}", "")
            .replace("{% endgeneration %}", "")
            .replace("{%- generation %}", "")
            .replace("{%- endgeneration %}", "");
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source)
            .map_err(template_error)?;
        Ok(Self {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// The template of `tokenizer` (`tokenizer_config.json`'s `chat_template`, or the GGUF
    /// file's `tokenizer.chat_template`), with its BOS and EOS tokens.
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] if the tokenizer has no template or it does not compile.
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Result<Self> {
        let source = tokenizer
            .chat_template()
            .ok_or_else(|| Error::ChatTemplate {
                problem: "the model has no chat template (neither `chat_template` in \
                      tokenizer_config.json / chat_template.jinja nor `tokenizer.chat_template` \
                      in the GGUF metadata); set one with EngineConfig::with_chat_template"
                    .into(),
            })?;
        Self::from_tokenizer_with(tokenizer, source)
    }

    /// `source` with the special tokens of `tokenizer`.
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] if the template does not compile.
    pub fn from_tokenizer_with(tokenizer: &Tokenizer, source: &str) -> Result<Self> {
        let name = |id: Option<u32>| {
            id.and_then(|id| tokenizer.id_to_token(id))
                .unwrap_or_default()
        };
        Self::new(source, name(tokenizer.bos_id()), name(tokenizer.eos_id()))
    }

    /// The BOS token the template sees as `bos_token` (empty if the model has none).
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// The EOS token the template sees as `eos_token` (empty if the model has none).
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Renders `messages` into the prompt text.
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] if rendering fails (the template's own `raise_exception`
    /// included), if `continue_final_message` is asked for with `add_generation_prompt`, or
    /// without messages, or when the final message's text is not in the rendered prompt.
    pub fn render(&self, messages: &[Message], options: &RenderOptions) -> Result<String> {
        if options.continue_final_message && options.add_generation_prompt {
            return Err(template_error(
                "continue_final_message and add_generation_prompt cannot both be true",
            ));
        }
        let mut ctx: std::collections::BTreeMap<String, Value> = options
            .kwargs
            .iter()
            .map(|(k, v)| (k.clone(), Value::from_serialize(v)))
            .collect();
        ctx.insert("messages".into(), Value::from_serialize(messages));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(options.add_generation_prompt),
        );
        ctx.insert("bos_token".into(), Value::from(self.bos_token.as_str()));
        ctx.insert("eos_token".into(), Value::from(self.eos_token.as_str()));
        let rendered = self
            .env
            .get_template(NAME)
            .and_then(|t| t.render(Value::from(ctx)))
            .map_err(|e| template_error(describe(&e)))?;
        if !options.continue_final_message {
            return Ok(rendered);
        }
        let last = messages
            .last()
            .ok_or_else(|| template_error("continue_final_message needs a final message"))?;
        continue_final(rendered, &last.content)
    }
}

/// Cuts `rendered` right after the last occurrence of `final_message`, as transformers does:
/// templates that strip the message are matched on its stripped text.
fn continue_final(mut rendered: String, final_message: &str) -> Result<String> {
    let stripped = final_message.trim();
    let start = rendered.rfind(stripped).ok_or_else(|| {
        template_error(
            "continue_final_message: the final message's text is not in the rendered prompt",
        )
    })?;
    let lstripped = final_message.trim_start();
    let end = if rendered[start..].starts_with(lstripped) {
        // The template keeps the message's trailing spaces.
        start + lstripped.len()
    } else {
        start + stripped.len()
    };
    rendered.truncate(end);
    Ok(rendered)
}

/// A minijinja error with its chain of causes.
fn describe(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)`: keys in their order, no
/// HTML escaping, `", "` and `": "` between items.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    // Accepted and ignored: Python's defaults are what is written anyway.
    for key in ["ensure_ascii", "sort_keys", "separators"] {
        let _: Option<Value> = kwargs.get(key)?;
    }
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let written = match indent {
        None => {
            let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
            serde::Serialize::serialize(&value, &mut ser)
        }
        Some(n) => {
            let spaces = vec![b' '; n];
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&spaces);
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            serde::Serialize::serialize(&value, &mut ser)
        }
    };
    written.map_err(|e| {
        minijinja::Error::new(ErrorKind::InvalidOperation, "cannot serialize to JSON")
            .with_source(e)
    })?;
    Ok(Value::from_safe_string(
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

/// serde_json's compact output with Python's default separators.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// Python's `datetime.now().strftime(format)`, in UTC, for the codes chat templates use
/// (`%d %m %Y %y %b %B %a %A %H %M %S %j %p %I %%`); other codes are kept as they are.
fn strftime_now(format: String) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    strftime(&format, secs)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// `format` for `secs` seconds after the Unix epoch (UTC).
fn strftime(format: &str, secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative[(month - 1) as usize] + day + i64::from(leap && month > 2);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = (days + 3).rem_euclid(7) as usize;
    let month_name = MONTHS[(month - 1) as usize];
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('I') => out.push_str(&format!("{hour12:02}")),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template (ChatML with a default system prompt).
    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_renders_as_transformers() {
        let t = ChatTemplate::new(CHATML, "<|im_start|>", "<|im_end|>").unwrap();
        let out = t
            .render(&[Message::user("Hi")], &RenderOptions::default())
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
             Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn continue_final_message_leaves_the_turn_open() {
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let messages = [
            Message::system("S"),
            Message::user("Count"),
            Message::assistant("1, 2,"),
        ];
        let opts = RenderOptions {
            add_generation_prompt: false,
            continue_final_message: true,
            ..RenderOptions::default()
        };
        let out = t.render(&messages, &opts).unwrap();
        assert!(out.ends_with("<|im_start|>assistant\n1, 2,"), "{out:?}");
        // Trailing spaces are kept where the template keeps them.
        let out = t
            .render(&[Message::user("a"), Message::assistant("x \n")], &opts)
            .unwrap();
        assert!(out.ends_with("assistant\nx \n"), "{out:?}");
        // Both at once is an error, as in vLLM.
        let both = RenderOptions {
            add_generation_prompt: true,
            continue_final_message: true,
            ..RenderOptions::default()
        };
        assert!(t.render(&messages, &both).is_err());
    }

    #[test]
    fn stripping_templates_continue_on_the_stripped_text() {
        let t = ChatTemplate::new(
            "{% for m in messages %}[{{ m.role }}]{{ m.content | trim }}[/]{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let opts = RenderOptions {
            add_generation_prompt: false,
            continue_final_message: true,
            ..RenderOptions::default()
        };
        let out = t.render(&[Message::assistant("  go on  ")], &opts).unwrap();
        assert_eq!(out, "[assistant]go on");
    }

    #[test]
    fn raise_exception_and_python_methods() {
        let t = ChatTemplate::new(
            "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}\
             {{ messages[0]['content'].strip().upper() }}|{{ bos_token }}",
            "<s>",
            "</s>",
        )
        .unwrap();
        let out = t
            .render(&[Message::user("  hi ")], &RenderOptions::default())
            .unwrap();
        assert_eq!(out, "HI|<s>");
        let err = t
            .render(&[Message::assistant("x")], &RenderOptions::default())
            .unwrap_err();
        assert!(err.to_string().contains("first must be user"), "{err}");
    }

    #[test]
    fn kwargs_tojson_and_loop_controls() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m | tojson }}{% endfor %}{% if enable_thinking %}T{% endif %}",
            "",
            "",
        )
        .unwrap();
        let mut opts = RenderOptions::default();
        opts.kwargs.insert("enable_thinking".into(), true.into());
        let out = t
            .render(&[Message::user("<b>"), Message::user("no")], &opts)
            .unwrap();
        assert_eq!(out, r#"{"role": "user", "content": "<b>"}T"#);
    }

    #[test]
    fn compile_errors_are_template_errors() {
        assert!(matches!(
            ChatTemplate::new("{% for %}", "", ""),
            Err(Error::ChatTemplate { .. })
        ));
    }

    #[test]
    fn strftime_formats_dates() {
        // 2024-07-26 13:05:09 UTC, a Friday, day 208 of a leap year.
        let t = 1_722_000_000 - 1_722_000_000 % 86_400 + 13 * 3600 + 5 * 60 + 9;
        assert_eq!(
            strftime("%d %b %Y|%A %B %m %y %H:%M:%S %j %I%p %%", t),
            "26 Jul 2024|Friday July 07 24 13:05:09 208 01PM %"
        );
        assert_eq!(strftime("%d-%m-%Y", 0), "01-01-1970");
        assert!(!strftime_now("%Y".into()).is_empty());
    }
}
