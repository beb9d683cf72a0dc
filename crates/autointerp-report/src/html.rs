//! The static HTML page: one self-contained file (inline CSS, JS and data; plots referenced
//! relatively) that works opened from disk.
//!
//! Text from the results (explanations, tokens, file names) never reaches the page as markup:
//! the server-rendered parts are HTML-escaped, and the latent data travels as JSON inside a
//! `<script type="application/json">` element with `<`, `>` and `&` written as `\u003c`,
//! `\u003e`, `\u0026`, so no `</script>` can end it early; the page's script puts that text into
//! the page with `textContent` only.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use autointerp_core::{Example, LatentId, LatentLogits, TokenLogit};
use serde::Serialize;

use crate::plots::{PlotFile, PlotKind};
use crate::results::Results;
use crate::summary::{Summary, CLASSIFIER_NOTE, TABLE_NOTE};

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// JSON that is safe inside a `<script>` element: `<`, `>`, `&` and the JavaScript line
/// separators are written as `\u` escapes (only ever inside JSON strings, where they mean the
/// same characters).
pub fn script_safe_json(value: &impl Serialize) -> serde_json::Result<String> {
    let json = serde_json::to_string(value)?;
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            _ => out.push(c),
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct PageData {
    scorers: Vec<String>,
    latents: Vec<LatentRow>,
}

#[derive(Serialize)]
struct LatentRow {
    id: String,
    explanation: Option<String>,
    explanation_failed: bool,
    firing_rate: Option<f64>,
    max_activation: Option<f32>,
    /// One per scorer column; `null` when unscored or undefined.
    scores: Vec<Option<f64>>,
    /// One per scorer column: `[failed, items]`, `null` when unscored.
    failed: Vec<Option<(usize, usize)>>,
    problems: Vec<String>,
    groups: Vec<ExampleGroup>,
    /// The tokens the latent's decoder direction promotes and suppresses (its logit lens),
    /// when its record has them.
    logits: Option<LogitsView>,
}

#[derive(Serialize)]
struct LogitsView {
    /// `(token text, logit delta)`, strongest first.
    promoted: Vec<(String, f32)>,
    suppressed: Vec<(String, f32)>,
}

impl LogitsView {
    fn new(logits: &LatentLogits) -> Self {
        let side = |tokens: &[TokenLogit]| {
            tokens
                .iter()
                .filter(|t| t.delta.is_finite())
                .map(|t| (t.text.clone(), (t.delta * 1000.0).round() / 1000.0))
                .collect()
        };
        Self {
            promoted: side(&logits.promoted),
            suppressed: side(&logits.suppressed),
        }
    }
}

#[derive(Serialize)]
struct ExampleGroup {
    name: &'static str,
    total: usize,
    examples: Vec<ExampleView>,
}

#[derive(Serialize)]
struct ExampleView {
    tokens: Vec<String>,
    acts: Vec<f32>,
    quantile: Option<u8>,
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn group(name: &'static str, examples: &[Example], max: usize) -> ExampleGroup {
    ExampleGroup {
        name,
        total: examples.len(),
        examples: examples
            .iter()
            .take(max)
            .map(|e| ExampleView {
                tokens: e.str_tokens.clone(),
                acts: e
                    .activations
                    .iter()
                    // Three decimals are plenty for shading and keep the page small.
                    .map(|a| {
                        if a.is_finite() {
                            (a * 1000.0).round() / 1000.0
                        } else {
                            0.0
                        }
                    })
                    .collect(),
                quantile: e.quantile,
            })
            .collect(),
    }
}

fn page_data(results: &Results, summary: &Summary, max_examples: usize) -> PageData {
    let mut problems: BTreeMap<LatentId, Vec<String>> = BTreeMap::new();
    for p in &summary.problems {
        if let Some(l) = p.latent {
            let mut text = format!("{:?}", p.kind);
            if let Some(s) = &p.scorer {
                let _ = write!(text, " [{s}]");
            }
            let _ = write!(text, ": {}", p.message);
            problems.entry(l).or_default().push(text);
        }
    }
    let latents = results
        .latents
        .values()
        .map(|l| LatentRow {
            id: l.id.to_string(),
            explanation: l.explanation.clone(),
            explanation_failed: l.explanation_failed,
            firing_rate: l.firing_rate().and_then(finite),
            max_activation: l
                .record
                .as_ref()
                .map(|r| r.stats.max_activation)
                .filter(|m| m.is_finite()),
            scores: results
                .scorers
                .iter()
                .map(|k| l.scores.get(k).and_then(|s| finite(s.value)))
                .collect(),
            failed: results
                .scorers
                .iter()
                .map(|k| l.scores.get(k).map(|s| (s.n_failed, s.n_items)))
                .collect(),
            problems: problems.remove(&l.id).unwrap_or_default(),
            groups: l
                .record
                .as_ref()
                .map(|r| {
                    vec![
                        group("Activating examples (train)", &r.train, max_examples),
                        group("Held-out activating examples (test)", &r.test, max_examples),
                        group("Non-activating examples", &r.non_activating, max_examples),
                    ]
                })
                .unwrap_or_default(),
            logits: l
                .record
                .as_ref()
                .and_then(|r| r.logits.as_ref())
                .map(LogitsView::new),
        })
        .collect();
    PageData {
        scorers: results.scorers.iter().map(ToString::to_string).collect(),
        latents,
    }
}

const CSS: &str = r#"
:root { --fg: #1d1d1f; --muted: #666; --line: #ddd; --accent: #1f77b4; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg); margin: 0 auto; padding: 1em 1.5em 3em; max-width: 1600px; }
h1 { font-size: 1.5em; margin: 0.2em 0; }
h2 { font-size: 1.2em; margin: 1.2em 0 0.4em; border-bottom: 1px solid var(--line); padding-bottom: 0.2em; }
h3 { font-size: 1em; margin: 1em 0 0.3em; }
.muted { color: var(--muted); }
table { border-collapse: collapse; }
th, td { padding: 3px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.summary-table { overflow-x: auto; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
.plots figure { margin: 0; width: 400px; }
.plots img { width: 100%; border: 1px solid var(--line); }
.plots figcaption { font-size: 0.85em; color: var(--muted); }
#controls { display: flex; gap: 1em; align-items: center; margin: 0.5em 0; flex-wrap: wrap; }
#filter { width: 24em; padding: 4px 6px; }
#browser { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 1.2em; align-items: start; }
#list-wrap { max-height: 80vh; overflow: auto; border: 1px solid var(--line); }
#latents thead th { position: sticky; top: 0; background: #f4f4f6; cursor: pointer; user-select: none; white-space: nowrap; }
#latents tbody tr { cursor: pointer; }
#latents tbody tr:hover { background: #f2f7fc; }
#latents tbody tr.selected { background: #dcebf7; }
#latents td.expl { max-width: 32em; }
.failed-expl { color: #b00; font-style: italic; }
#detail { position: sticky; top: 0; max-height: 90vh; overflow: auto; border: 1px solid var(--line); padding: 0.6em 1em; }
.example { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; white-space: pre-wrap; word-break: break-word; padding: 4px 6px; margin: 4px 0; border-left: 3px solid var(--line); }
.tok { border-radius: 2px; }
.logit { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; background: #eef3f8; border-radius: 2px; padding: 0 2px; white-space: pre; }
.q { display: inline-block; color: var(--muted); font-size: 11px; margin-right: 6px; }
.problems li { color: #8a4b00; }
pre.config { background: #f6f6f6; padding: 0.6em; overflow: auto; max-height: 30em; }
"#;

const JS: &str = r##"
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var state = { sort: "id", dir: 1, filter: "", onlyProblems: false, selected: null };
  var byId = {};
  data.latents.forEach(function (l, i) { l.order = i; byId[l.id] = l; });

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function fmt(x) { return (x === null || x === undefined) ? "\u2013" : x.toFixed(3); }
  function fmtRate(x) { return (x === null || x === undefined) ? "\u2013" : x.toExponential(2); }
  function key(l, k) {
    if (k === "id") { return l.order; }
    if (k === "explanation") { return (l.explanation || "").toLowerCase(); }
    if (k === "firing_rate") { return l.firing_rate; }
    return l.scores[k];
  }
  function visible() {
    var f = state.filter.toLowerCase();
    var rows = data.latents.filter(function (l) {
      if (state.onlyProblems && l.problems.length === 0) { return false; }
      if (!f) { return true; }
      return l.id.toLowerCase().indexOf(f) >= 0 ||
        (l.explanation || "").toLowerCase().indexOf(f) >= 0;
    });
    rows.sort(function (a, b) {
      var x = key(a, state.sort), y = key(b, state.sort);
      var xn = x === null || x === undefined, yn = y === null || y === undefined;
      if (xn || yn) { return xn === yn ? a.order - b.order : (xn ? 1 : -1); }
      if (x < y) { return -state.dir; }
      if (x > y) { return state.dir; }
      return a.order - b.order;
    });
    return rows;
  }
  function header() {
    var tr = document.querySelector("#latents thead tr");
    tr.textContent = "";
    var cols = [["id", "latent", ""], ["explanation", "explanation", ""], ["firing_rate", "firing rate", "num"]];
    data.scorers.forEach(function (s, i) { cols.push([i, s, "num"]); });
    cols.forEach(function (c) {
      var arrow = state.sort === c[0] ? (state.dir > 0 ? " \u25b2" : " \u25bc") : "";
      var th = el("th", c[2], c[1] + arrow);
      th.title = "sort by " + c[1];
      th.addEventListener("click", function () {
        if (state.sort === c[0]) { state.dir = -state.dir; } else { state.sort = c[0]; state.dir = typeof c[0] === "number" || c[0] === "firing_rate" ? -1 : 1; }
        render();
      });
      tr.appendChild(th);
    });
  }
  function render() {
    header();
    var tbody = document.querySelector("#latents tbody");
    tbody.textContent = "";
    var rows = visible();
    rows.forEach(function (l) {
      var tr = el("tr");
      tr.setAttribute("data-latent", l.id);
      tr.tabIndex = 0;
      if (l.id === state.selected) { tr.className = "selected"; }
      tr.appendChild(el("td", "id", l.id));
      var expl = el("td", "expl");
      if (l.explanation !== null) { expl.textContent = l.explanation; }
      else { expl.appendChild(el("span", "failed-expl", l.explanation_failed ? "(explanation failed)" : "(no explanation)")); }
      tr.appendChild(expl);
      tr.appendChild(el("td", "num", fmtRate(l.firing_rate)));
      l.scores.forEach(function (s) { tr.appendChild(el("td", "num", fmt(s))); });
      tr.addEventListener("click", function () { select(l.id); });
      tr.addEventListener("keydown", function (e) { if (e.key === "Enter") { select(l.id); } });
      tbody.appendChild(tr);
    });
    document.getElementById("count").textContent =
      "showing " + rows.length + " of " + data.latents.length + " latents";
  }
  function exampleView(ex, max) {
    var div = el("div", "example");
    if (ex.quantile !== null && ex.quantile !== undefined) { div.appendChild(el("span", "q", "q" + ex.quantile)); }
    ex.tokens.forEach(function (t, i) {
      var a = ex.acts[i] || 0;
      var span = el("span", "tok", t.replace(/\n/g, "\u23ce").replace(/\r/g, "\u240d"));
      if (a > 0 && max > 0) {
        span.style.backgroundColor = "rgba(255, 110, 0, " + Math.min(1, a / max).toFixed(3) + ")";
      }
      span.title = "activation " + a;
      div.appendChild(span);
    });
    return div;
  }
  function select(id) {
    var l = byId[id];
    if (!l) { return; }
    state.selected = id;
    try { history.replaceState(null, "", "#" + encodeURIComponent(id)); } catch (e) { /* file:// may refuse */ }
    document.querySelectorAll("#latents tbody tr").forEach(function (tr) {
      tr.className = tr.getAttribute("data-latent") === id ? "selected" : "";
    });
    var d = document.getElementById("detail");
    d.textContent = "";
    d.appendChild(el("h2", "", l.id));
    if (l.explanation !== null) { d.appendChild(el("p", "explanation", l.explanation)); }
    else { d.appendChild(el("p", "failed-expl", l.explanation_failed ? "(explanation failed)" : "(no explanation)")); }
    var meta = [];
    if (l.firing_rate !== null) { meta.push("firing rate " + fmtRate(l.firing_rate)); }
    if (l.max_activation !== null) { meta.push("max activation " + l.max_activation.toFixed(3)); }
    if (meta.length) { d.appendChild(el("p", "muted", meta.join(" \u00b7 "))); }
    var table = el("table", "scores");
    data.scorers.forEach(function (s, i) {
      if (l.failed[i] === null) { return; }
      var tr = el("tr");
      tr.appendChild(el("td", "", s));
      tr.appendChild(el("td", "num", fmt(l.scores[i])));
      tr.appendChild(el("td", "num muted", l.failed[i][0] + "/" + l.failed[i][1] + " failed"));
      table.appendChild(tr);
    });
    if (table.children.length) { d.appendChild(table); } else { d.appendChild(el("p", "muted", "No scores.")); }
    if (l.problems.length) {
      var ul = el("ul", "problems");
      l.problems.forEach(function (p) { ul.appendChild(el("li", "", p)); });
      d.appendChild(ul);
    }
    if (l.logits) {
      d.appendChild(el("h3", "", "Output: the tokens it promotes and suppresses (logit lens)"));
      [["promotes", l.logits.promoted], ["suppresses", l.logits.suppressed]].forEach(function (side) {
        var p = el("p", "logits");
        p.appendChild(el("span", "muted", side[0] + ": "));
        side[1].forEach(function (t, i) {
          if (i) { p.appendChild(document.createTextNode(", ")); }
          p.appendChild(el("span", "logit", t[0].replace(/\n/g, "\u23ce").replace(/\r/g, "\u240d")));
          p.appendChild(el("span", "muted", " " + (t[1] >= 0 ? "+" : "") + t[1].toFixed(2)));
        });
        d.appendChild(p);
      });
    }
    if (!l.groups.length) { d.appendChild(el("p", "muted", "No record: examples unavailable.")); }
    var max = l.max_activation || 0;
    l.groups.forEach(function (g) {
      g.examples.forEach(function (ex) { ex.acts.forEach(function (a) { if (a > max) { max = a; } }); });
    });
    l.groups.forEach(function (g) {
      if (!g.total) { return; }
      d.appendChild(el("h3", "", g.name + " \u2014 " + g.examples.length + " of " + g.total));
      g.examples.forEach(function (ex) { d.appendChild(exampleView(ex, max)); });
    });
  }
  document.getElementById("filter").addEventListener("input", function (e) { state.filter = e.target.value; render(); });
  document.getElementById("only-problems").addEventListener("change", function (e) { state.onlyProblems = e.target.checked; render(); });
  render();
  var fromHash = decodeURIComponent((location.hash || "").replace(/^#/, ""));
  if (byId[fromHash]) { select(fromHash); }
  else if (data.latents.length) { select(visible()[0].id); }
  document.body.setAttribute("data-rendered", String(data.latents.length));
})();
"##;

/// A table of numbers (all columns but the first right-aligned), `empty` shown when there are
/// no rows.
fn html_table(h: &mut String, header: &[String], rows: &[Vec<String>], empty: &str) {
    h.push_str("<div class=\"summary-table\"><table>\n<thead><tr>");
    for (i, c) in header.iter().enumerate() {
        let cls = if i == 0 { "" } else { " class=\"num\"" };
        let _ = write!(h, "<th{cls}>{}</th>", escape_html(c));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        h.push_str("<tr>");
        for (i, c) in row.iter().enumerate() {
            let cls = if i == 0 { "" } else { " class=\"num\"" };
            let _ = write!(h, "<td{cls}>{}</td>", escape_html(c));
        }
        h.push_str("</tr>\n");
    }
    if rows.is_empty() {
        let _ = writeln!(
            h,
            "<tr><td colspan=\"{}\">{}</td></tr>",
            header.len(),
            escape_html(empty)
        );
    }
    h.push_str("</tbody></table></div>\n");
}

fn plot_caption(p: &PlotFile) -> String {
    match p.kind {
        PlotKind::Histogram => format!("{}: score histogram", p.scorer),
        PlotKind::FiringRate => format!("{}: score vs firing rate", p.scorer),
        PlotKind::Roc => format!("{}: pooled ROC", p.scorer),
    }
}

/// The whole page. `max_examples` caps the examples shown per group and latent.
pub(crate) fn render_page(
    results: &Results,
    summary: &Summary,
    plots: &[PlotFile],
    max_examples: usize,
) -> serde_json::Result<String> {
    let data = script_safe_json(&page_data(results, summary, max_examples))?;
    let mut h = String::new();
    let title = format!(
        "autointerp report \u{2014} {}",
        results
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| results.root.display().to_string())
    );
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{}</h1>\n\
         <p class=\"muted\">Results: <code>{}</code></p>\n",
        escape_html(&title),
        escape_html(&title),
        escape_html(&results.root.display().to_string()),
    );
    let _ = writeln!(
        h,
        "<p>{} latents: {} explained, {} failed explanations, {} with records, {} scored.</p>",
        summary.n_latents,
        summary.n_explained,
        summary.n_explanation_failed,
        summary.n_with_record,
        summary.n_scored
    );
    for sentence in summary.control_sentences() {
        let _ = writeln!(h, "<p class=\"control\">{}</p>", escape_html(&sentence));
    }

    h.push_str("<h2>Scorers</h2>\n");
    let (header, rows) = summary.table();
    html_table(&mut h, &header, &rows, "No scores found.");
    let _ = writeln!(h, "<p class=\"muted\">{}</p>", escape_html(TABLE_NOTE));
    let (header, rows) = summary.classifier_table();
    if !rows.is_empty() {
        h.push_str("<h2>Classifier metrics</h2>\n");
        html_table(&mut h, &header, &rows, "");
        let _ = writeln!(h, "<p class=\"muted\">{}</p>", escape_html(CLASSIFIER_NOTE));
    }

    if !plots.is_empty() {
        h.push_str("<h2>Plots</h2>\n<div class=\"plots\">\n");
        for p in plots {
            let cap = escape_html(&plot_caption(p));
            let _ = writeln!(
                h,
                "<figure><a href=\"{svg}\"><img src=\"{png}\" alt=\"{cap}\" loading=\"lazy\"></a>\
                 <figcaption>{cap} (<a href=\"{svg}\">SVG</a>)</figcaption></figure>",
                svg = escape_html(&p.svg),
                png = escape_html(&p.png),
            );
        }
        h.push_str("</div>\n");
    }

    h.push_str("<h2>Latents</h2>\n<noscript><p>This list needs JavaScript.</p></noscript>\n");
    h.push_str(
        "<div id=\"controls\"><input id=\"filter\" type=\"search\" \
         placeholder=\"Filter by latent id or explanation\u{2026}\" aria-label=\"filter\">\
         <label><input id=\"only-problems\" type=\"checkbox\"> only latents with problems</label>\
         <span id=\"count\" class=\"muted\"></span></div>\n\
         <div id=\"browser\"><div id=\"list-wrap\"><table id=\"latents\"><thead><tr></tr></thead>\
         <tbody></tbody></table></div>\n<div id=\"detail\"><p class=\"muted\">Select a latent.</p>\
         </div></div>\n",
    );

    let counts = summary.problem_counts();
    h.push_str("<h2>Problems</h2>\n");
    if counts.is_empty() {
        h.push_str("<p>None.</p>\n");
    } else {
        h.push_str("<ul>\n");
        for (kind, n) in counts {
            let _ = write!(h, "<li><b>{kind:?}</b>: {n}<ul>");
            for p in summary.problems.iter().filter(|p| p.kind == kind).take(20) {
                let _ = write!(h, "<li>{}</li>", escape_html(&p.to_string()));
            }
            if n > 20 {
                let _ = write!(
                    h,
                    "<li>\u{2026} and {} more (see summary.json)</li>",
                    n - 20
                );
            }
            h.push_str("</ul></li>\n");
        }
        h.push_str("</ul>\n");
    }
    if let Some(cfg) = &summary.run_config {
        let pretty = serde_json::to_string_pretty(cfg)?;
        let _ = writeln!(
            h,
            "<h2>Run configuration</h2>\n<details><summary>run_config.json</summary>\
             <pre class=\"config\">{}</pre></details>",
            escape_html(&pretty)
        );
    }
    let _ = write!(
        h,
        "<script type=\"application/json\" id=\"report-data\">{data}</script>\n\
         <script>{JS}</script>\n</body>\n</html>\n"
    );
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            escape_html(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let j = script_safe_json(&"</script><script>alert(1)&\u{2028}").unwrap();
        assert_eq!(
            j,
            r#""\u003c/script\u003e\u003cscript\u003ealert(1)\u0026\u2028""#
        );
        let back: String = serde_json::from_str(&j).unwrap();
        assert_eq!(back, "</script><script>alert(1)&\u{2028}");
    }
}
