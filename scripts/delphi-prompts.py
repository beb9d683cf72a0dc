#!/usr/bin/env python3
"""Write delphi's prompts as autointerp prompt templates.

Run it where delphi is installed (``pip install eai-delphi``); it reads the prompts from that
install and writes one template per prompt into a folder for ``--prompt-dir``:

    python scripts/delphi-prompts.py delphi-prompts/
    autointerp run ... --prompt-dir delphi-prompts/

autointerp ships none of delphi's wording: every text this script writes comes from the delphi
package it imports. It does not copy delphi's strings by hand either. It calls delphi's own
prompt builders with placeholder values (one, two and three examples, tokens or excerpts) and
turns the differences between the results into template loops, so a newer delphi with other
wording gives templates with that wording. When a builder has changed shape beyond what this
script understands, it stops and names the builder.

Written: explainer.jinja, contrastive.jinja, detection.jinja, fuzzing.jinja, intruder.jinja,
simulation.jinja, simulation_json.jinja and surprisal.jinja. delphi has no one-excerpt
(logprob answer mode) detection or fuzzing prompt, so detection_one.jinja and fuzzing_one.jinja
are not written and autointerp's own are used. Known differences from running delphi itself:
autointerp escapes example text (docs/PROMPTS.md), lists at most max_listed_tokens activations
per example, writes the JSON simulation document with compact separators, and takes the
surprisal baseline description from its own configuration.

The templates follow docs/PROMPTS.md: messages are `{% filter role %}` blocks, settings are
top-level `{% set %}` lines. Every block tag after the settings is written `{%+ ... +%}`, so
that whitespace is exactly delphi's.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import re
import sys
import textwrap
import types
from pathlib import Path

LETTERS = "ABC"


class ScriptError(Exception):
    """delphi's prompt builders are not shaped as this script expects."""


# ---------------------------------------------------------------------------------------------
# Template text


def sentinel(stem: str, i: int) -> str:
    """A placeholder for item `i` that cannot occur in delphi's text, and holds no digit."""
    return f"@@AIX{stem}{LETTERS[i]}@@"


def lit(text: str) -> str:
    """Literal text in a template: Jinja openers are written as expressions."""
    return re.sub(r"\{[{%#]", lambda m: "{{ %s }}" % json.dumps(m.group(0)), text)


def tag(body: str) -> str:
    """A block tag that changes no whitespace around it."""
    return "{%+ " + body + " +%}"


def fill(text: str, values: dict[str, str]) -> str:
    """`text` as template source: placeholders (keys of `values`) become their expressions,
    everything else literal."""
    if not values:
        return lit(text)
    pattern = "|".join(re.escape(k) for k in sorted(values, key=len, reverse=True))
    out, at = [], 0
    for m in re.finditer(pattern, text):
        out.append(lit(text[at : m.start()]))
        out.append(values[m.group(0)])
        at = m.end()
    out.append(lit(text[at:]))
    return "".join(out)


def message(role, body: str) -> str:
    """A message block; the line break before its end is the one the block drops. `role` may be
    one of delphi's role enums."""
    role = str(getattr(role, "value", role))
    if role not in ("system", "user", "assistant"):
        raise ScriptError(f"a message from {role!r}")
    return tag(f"filter {role}") + body + "\n" + tag("endfilter") + "\n"


def messages(msgs: list[dict], values: dict[str, str]) -> str:
    return "".join(message(m["role"], fill(m["content"], values)) for m in msgs)


def branches(cases: list[tuple[str, str]]) -> str:
    """`{% if c1 %}s1{% elif c2 %}s2 … {% else %}sn{% endif %}`; the last condition is `else`."""
    if len(cases) == 1:
        return cases[0][1]
    out = []
    for n, (cond, source) in enumerate(cases):
        if n == 0:
            out.append(tag(f"if {cond}"))
        elif n == len(cases) - 1:
            out.append(tag("else"))
        else:
            out.append(tag(f"elif {cond}"))
        out.append(source)
    out.append(tag("endif"))
    return "".join(out)


def header(name: str, delphi_version: str, settings: dict[str, object]) -> str:
    lines = [
        "{#- " + name + ": delphi's prompt, read from delphi " + delphi_version
        + " by scripts/delphi-prompts.py. Variables: docs/PROMPTS.md. -#}"
    ]
    for key, value in settings.items():
        lines.append("{%- set " + key + " = " + json.dumps(value, ensure_ascii=False) + " -%}")
    # Keeps the text after the header from being trimmed by the header's `-%}`.
    return "\n".join(lines) + "{{ '' }}"


# ---------------------------------------------------------------------------------------------
# Lists: from renders with one, two and three items to a template loop


def common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def common_suffix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def insertion(short: str, long: str) -> tuple[str, str, str]:
    """(before, inserted, after) with long == before + inserted + after, short == before + after."""
    p = common_prefix(short, long)
    s = min(common_suffix(short, long), len(short) - p)
    return short[:p], long[p : len(long) - s], short[p:]


def repeat(
    renders: list[str],
    items: list[tuple],
    var: str,
    seq: str,
    what: str,
    fixed: dict[str, str] | None = None,
    numbered: bool = True,
) -> tuple[str, int | None]:
    """A template loop over `seq` (as `var`) that renders as `renders` do for 1, 2 and 3 items.

    `items` lists (placeholder of item i as a function of i, expression); `fixed` maps
    placeholders outside the items to their expressions. Returns the loop's source and the number
    of the first item when items are numbered.

    If r(n) is the render of n items, r(2) is r(1) with one item's text inserted: the text
    before the insertion holds whatever precedes the items and the first item, the text after
    it whatever follows them. The loop writes the first part for the first item, the inserted
    part for each other, then the rest; so it renders n >= 1 items as delphi does. With no item
    it writes only the rest, which drops the heading of a list that delphi omits when empty.
    """
    fixed = fixed or {}
    a, x1, b = insertion(renders[0], renders[1])
    _, x2, b2 = insertion(renders[1], renders[2])
    if b2 != b:
        raise ScriptError(f"{what}: items are not appended one after another")
    shifted = x1
    for ph, _ in items:
        shifted = shifted.replace(ph(1), ph(2))
    base = None
    number_at = None
    if shifted != x2:
        diff = [i for i, (c, d) in enumerate(zip(shifted, x2)) if c != d]
        if not numbered or len(shifted) != len(x2) or not diff:
            raise ScriptError(f"{what}: items differ beyond their placeholders")
        start, end = diff[0], diff[-1] + 1
        while start > 0 and shifted[start - 1].isdigit():
            start -= 1
        while end < len(shifted) and shifted[end].isdigit():
            end += 1
        n1, n2 = shifted[start:end], x2[start:end]
        if not (n1.isdigit() and n2.isdigit() and int(n2) == int(n1) + 1):
            raise ScriptError(f"{what}: items differ beyond their placeholders and number")
        base = int(n1) - 1
        number_at = start
    number = "@@AIXNUMBER@@"

    def mark_number(text: str, i: int) -> str:
        """`text` (item i's) with its number replaced by a placeholder."""
        if number_at is None:
            return text
        anchor = next(ph for ph, _ in items if ph(1) in x1)
        at = text.index(anchor(i)) + number_at - x1.index(anchor(1))
        digits = str(base + i)
        if at < 0 or text[at : at + len(digits)] != digits:
            raise ScriptError(f"{what}: the first item's number is not where the others' are")
        return text[:at] + number + text[at + len(digits) :]

    def source(text: str, i: int) -> str:
        values = dict(fixed)
        values.update({ph(i): expr for ph, expr in items})
        values[number] = "{{ loop.index0 + numbering_base }}"
        return fill(mark_number(text, i), values)

    loop = (
        tag(f"for {var} in {seq}")
        + tag("if loop.first")
        + source(a, 0)
        + tag("else")
        + source(x1, 1)
        + tag("endif")
        + tag("endfor")
        + fill(b, fixed)
    )
    return loop, base


def placeholder(stem: str):
    return lambda i: sentinel(stem, i)


# ---------------------------------------------------------------------------------------------
# Fakes delphi's builders are called with


class Values(list):
    """A list with `tolist`, where delphi expects a tensor."""

    def tolist(self):
        return list(self)


class Plain:
    """An example for builders that do not check its class."""


def example_of(cls, stem: str, i: int):
    """A delphi example (class `cls`) whose one token names placeholder (stem, i), built
    without its constructor so that the fields the builders read are all there is."""
    ex = object.__new__(cls)
    ex.str_tokens = [f"{stem}:{i}"]
    ex.tokens = Values([0])
    ex.activations = Values([1.0])
    ex.normalized_activations = Values([7])
    return ex


def token_placeholder(toks) -> str:
    stem, i = toks[0].split(":")
    return sentinel(stem, int(i))


def fake_explainer(activations: bool, cot: bool = False):
    """What delphi's explainers read of `self`, highlighting and listing to placeholders."""
    return types.SimpleNamespace(
        activations=activations,
        cot=cot,
        threshold=0.3,
        verbose=False,
        _highlight=lambda toks, acts: token_placeholder(toks),
        _join_activations=lambda toks, acts, norm: token_placeholder(toks).replace("@@AIX", "@@AIXACTS"),
    )


# ---------------------------------------------------------------------------------------------
# Each prompt


def activation_list(Explainer) -> str:
    """delphi's activation line as a loop over an example's listed tokens."""
    fake = types.SimpleNamespace(threshold=0.3)
    renders = []
    for n in (1, 2, 3):
        toks = [sentinel("TOKEN", i) for i in range(n)]
        # Values 7, 8, 9: numbers, since delphi writes int(value).
        renders.append(Explainer._join_activations(fake, toks, [1.0] * n, [7 + i for i in range(n)]))
    source, _ = repeat(
        renders,
        [(placeholder("TOKEN"), "{{ a.token }}"), (lambda i: str(7 + i), "{{ a.value }}")],
        "a",
        "ex.activations",
        "the activation line (Explainer._join_activations)",
        numbered=False,
    )
    return source


def highlight_markers(Explainer) -> tuple[str, str]:
    fake = types.SimpleNamespace(threshold=0.3)
    shown = Explainer._highlight(fake, ["x", "y", "z"], [0.0, 1.0, 0.0])
    m = re.fullmatch(r"x(.+)y(.+)z", shown)
    if not m:
        raise ScriptError(f"Explainer._highlight: unexpected form {shown!r}")
    return m.group(1), m.group(2)


def explainer(delphi, version: str) -> str:
    from delphi.explainers.default.default import DefaultExplainer
    from delphi.explainers.explainer import Explainer

    acts = activation_list(Explainer)
    items = [
        (placeholder("TEXT"), "{{ ex.text }}"),
        (placeholder("ACTSTEXT"), acts),
    ]
    cases = []
    for show, cot, cond in [
        (True, True, "show_activations and cot"),
        (True, False, "show_activations"),
        (False, True, "cot"),
        (False, False, ""),
    ]:
        def render(n: int) -> list[dict]:
            exs = [example_of(Plain, "TEXT", i) for i in range(n)]
            return DefaultExplainer._build_prompt(fake_explainer(show, cot), exs)

        loop, _ = repeat(
            [render(n)[-1]["content"] for n in (1, 2, 3)],
            items,
            "ex",
            "examples",
            "DefaultExplainer._build_prompt",
        )
        msgs = render(1)
        cases.append((cond, messages(msgs[:-1], {}) + message(msgs[-1]["role"], loop)))
    open_, close = highlight_markers(Explainer)
    settings = {"highlight_open": open_, "highlight_close": close, "answer_marker": "[EXPLANATION]:"}
    return header("explainer.jinja", version, settings) + branches(cases)


def contrastive(delphi, version: str) -> str:
    from delphi.explainers.contrastive_explainer import ContrastiveExplainer
    from delphi.explainers.explainer import Explainer
    from delphi.latents.latents import ActivatingExample, NonActivatingExample

    acts = activation_list(Explainer)
    what = "ContrastiveExplainer._build_prompt"

    def render(show: bool, n_active: int, n_silent: int) -> list[dict]:
        exs = [example_of(ActivatingExample, "TEXT", i) for i in range(n_active)]
        exs += [example_of(NonActivatingExample, "SILENT", i) for i in range(n_silent)]
        return ContrastiveExplainer._build_prompt(fake_explainer(show), exs)

    cases = []
    bases = set()
    for show in (True, False):
        # The active examples alone, then what silent examples add after them.
        active = [render(show, n, 0)[-1]["content"] for n in (1, 2, 3)]
        silent = []
        for n in (1, 2, 3):
            both = render(show, 1, n)[-1]["content"]
            if not both.startswith(active[0]):
                raise ScriptError(f"{what}: the silent examples do not follow the active ones")
            silent.append(both[len(active[0]) :])
        if render(show, 2, 2)[-1]["content"] != active[1] + silent[1]:
            raise ScriptError(f"{what}: the two groups are not independent")
        active_loop, active_base = repeat(
            active,
            [(placeholder("TEXT"), "{{ ex.text }}"), (placeholder("ACTSTEXT"), acts)],
            "ex",
            "examples",
            what,
        )
        silent_loop, silent_base = repeat(
            silent, [(placeholder("SILENT"), "{{ ex.text }}")], "ex", "silent", what
        )
        bases.update({active_base, silent_base} - {None})
        msgs = render(show, 1, 1)
        body = messages(msgs[:-1], {}) + message(msgs[-1]["role"], active_loop + silent_loop)
        cases.append(("show_activations" if show else "", body))
    if len(bases) > 1:
        raise ScriptError(f"{what}: the two groups are numbered differently")
    open_, close = highlight_markers(Explainer)
    settings = {
        "numbering_base": bases.pop() if bases else 1,
        "highlight_open": open_,
        "highlight_close": close,
        "answer_marker": "[EXPLANATION]:",
    }
    return header("contrastive.jinja", version, settings) + branches(cases)


def classifier(cls, name: str, version: str, markers: tuple[str, str] | None) -> str:
    what = f"{cls.__name__}._build_prompt"
    explanation = "@@AIXEXPLANATION@@"

    def render(n: int) -> list[dict]:
        fake = types.SimpleNamespace(prompt=lambda **kw: cls.prompt(None, **kw))
        batch = [types.SimpleNamespace(text=sentinel("TEXT", i)) for i in range(n)]
        return cls._build_prompt(fake, explanation, batch)

    loop, base = repeat(
        [render(n)[-1]["content"] for n in (1, 2, 3)],
        [(placeholder("TEXT"), "{{ ex.text }}")],
        "ex",
        "examples",
        what,
        fixed={explanation: "{{ explanation }}"},
    )
    msgs = render(1)
    settings: dict[str, object] = {"numbering_base": base if base is not None else 1}
    if markers:
        settings.update(highlight_open=markers[0], highlight_close=markers[1])
    body = messages(msgs[:-1], {}) + message(msgs[-1]["role"], loop)
    return header(name, version, settings) + body


def intruder(delphi, version: str, markers: tuple[str, str]) -> str:
    from delphi.scorers.classifier.intruder import IntruderScorer
    from delphi.scorers.classifier.prompts import intruder_prompt

    what = "IntruderScorer._build_prompt"
    cases = []
    base = None
    system = ""
    for cot in (True, False):
        def render(n: int) -> list[dict]:
            fake = types.SimpleNamespace(
                prompt=lambda examples: intruder_prompt.prompt(examples, cot=cot)
            )
            sample = types.SimpleNamespace(examples=[sentinel("TEXT", i) for i in range(n)])
            return IntruderScorer._build_prompt(fake, sample)

        loop, base = repeat(
            [render(n)[-1]["content"] for n in (1, 2, 3)],
            [(placeholder("TEXT"), "{{ ex.text }}")],
            "ex",
            "examples",
            what,
        )
        msgs = render(1)
        system = msgs[0]["content"]
        cases.append(("cot" if cot else "", messages(msgs[:-1], {}) + message(msgs[-1]["role"], loop)))
    # The answer marker: the bracketed word the instructions and IntruderScorer._parse share.
    marker = next(iter(re.findall(r"\[[A-Z_]+\]:", system)), None)
    parse = inspect.getsource(IntruderScorer._parse)
    if marker is None or marker[:-1] not in parse.replace("\\", ""):
        raise ScriptError("IntruderScorer: cannot tell the answer marker")
    settings = {
        "numbering_base": base if base is not None else 1,
        "highlight_open": markers[0],
        "highlight_close": markers[1],
        "answer_marker": marker,
    }
    return header("intruder.jinja", version, settings) + branches(cases)


def simulation(delphi, version: str) -> str:
    from delphi.scorers.simulator.simulation.simulator import NeuronSimulator

    what = "NeuronSimulator._make_logprob_prompt"
    explanation = "@@AIXEXPLANATION@@"
    sim = NeuronSimulator(client=None, explanation=explanation, use_logprobs=True)
    renders = [
        sim._make_logprob_prompt([sentinel("TOKEN", i) for i in range(n)]) for n in (1, 2, 3)
    ]
    last = [r[-1]["content"] for r in renders]
    loop, _ = repeat(
        last, [(placeholder("TOKEN"), "{{ token }}")], "token", "tokens", what, numbered=False
    )
    # The document's first and last lines, which the parser reads the predictions after.
    lines = last[0].split("\n")
    at = next(i for i, l in enumerate(lines) if sentinel("TOKEN", 0) in l)
    start, end = lines[at - 1], lines[at + 1] if at + 1 < len(lines) else ""
    if "\t" not in lines[at] or len(start) < 2 or len(end) < 2:
        raise ScriptError(f"{what}: the document is not one token and a tab per line")
    msgs = renders[0]
    body = messages(msgs[:-1], {explanation: "{{ explanation }}"})
    settings = {"document_start": start, "document_end": end}
    return header("simulation.jinja", version, settings) + body + message(msgs[-1]["role"], loop)


def simulation_json(delphi, version: str) -> str:
    from delphi.scorers.simulator.simulation.simulator import NeuronSimulator

    what = "NeuronSimulator._make_json_prompt"
    explanation = "@@AIXEXPLANATION@@"
    tokens = [sentinel("TOKEN", i) for i in range(2)]
    sim = NeuronSimulator(client=None, explanation=explanation, use_logprobs=False)
    msgs = sim._make_json_prompt(tokens)
    try:
        doc = json.loads(msgs[-1]["content"])
    except json.JSONDecodeError as e:
        raise ScriptError(f"{what}: the last message is not JSON ({e})")
    parts = []
    for key, value in doc.items():
        if value == explanation:
            expr = "{{ explanation | json }}"
        elif value == "".join(tokens):
            expr = "{{ tokens | join | json }}"
        elif isinstance(value, list) and len(value) == len(tokens):
            entry = value[0]
            if not isinstance(entry, dict):
                raise ScriptError(f"{what}: unexpected activation entries {value!r}")
            fields = []
            for k, v in entry.items():
                if v == tokens[0]:
                    fields.append(f"{json.dumps(k)}: {{{{ token | json }}}}")
                elif v is None:
                    fields.append(f"{json.dumps(k)}: null")
                else:
                    raise ScriptError(f"{what}: unexpected activation entry {entry!r}")
            expr = (
                "[" + tag("for token in tokens") + "{" + ", ".join(fields) + "}"
                + tag("if not loop.last") + ", " + tag("endif") + tag("endfor") + "]"
            )
        else:
            raise ScriptError(f"{what}: unexpected field {key!r}")
        parts.append(f"{json.dumps(key)}: {expr}")
    if "activations" not in doc:
        raise ScriptError(f"{what}: no `activations` list, which autointerp's parser reads")
    body = messages(msgs[:-1], {}) + message(msgs[-1]["role"], "{" + ", ".join(parts) + "}")
    return header("simulation_json.jinja", version, {}) + body


def surprisal(delphi, version: str) -> str:
    from delphi.scorers.surprisal import prompts as surprisal_prompts
    from delphi.scorers.surprisal.surprisal import SurprisalScorer

    what = "SurprisalScorer._query"
    tree = ast.parse(textwrap.dedent(inspect.getsource(SurprisalScorer._query)))
    value = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "explanation_prompt" for t in node.targets
        ):
            value = node.value
    if value is None:
        raise ScriptError(f"{what}: no explanation_prompt")

    def flatten(node) -> list:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return flatten(node.left) + flatten(node.right)
        return [node]

    pieces = []
    for node in flatten(value):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            pieces.append(lit(node.value))
        elif isinstance(node, ast.Name) and node.id == "explanation":
            pieces.append("{{ description }}")
        elif isinstance(node, ast.Name) and node.id == "base_prompt":
            pieces.append(lit(surprisal_prompts.BASEPROMPT))
        else:
            raise ScriptError(f"{what}: explanation_prompt holds {ast.dump(node)}")
    return header("surprisal.jinja", version, {}) + "".join(pieces)


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder to write (for --prompt-dir)")
    parser.add_argument("--force", action="store_true", help="overwrite existing templates")
    args = parser.parse_args()
    try:
        import delphi
    except ImportError:
        print("delphi is not installed here: pip install eai-delphi", file=sys.stderr)
        return 1
    version = getattr(delphi, "__version__", "(unknown version)")
    from delphi.explainers.explainer import Explainer
    from delphi.scorers.classifier.detection import DetectionScorer
    from delphi.scorers.classifier.fuzz import FuzzingScorer

    markers = highlight_markers(Explainer)
    builders = {
        "explainer.jinja": lambda: explainer(delphi, version),
        "contrastive.jinja": lambda: contrastive(delphi, version),
        "detection.jinja": lambda: classifier(DetectionScorer, "detection.jinja", version, None),
        "fuzzing.jinja": lambda: classifier(FuzzingScorer, "fuzzing.jinja", version, markers),
        "intruder.jinja": lambda: intruder(delphi, version, markers),
        "simulation.jinja": lambda: simulation(delphi, version),
        "simulation_json.jinja": lambda: simulation_json(delphi, version),
        "surprisal.jinja": lambda: surprisal(delphi, version),
    }
    written = {}
    for name, build in builders.items():
        try:
            written[name] = build()
        except ScriptError as e:
            print(f"{name}: not written: {e}", file=sys.stderr)
            return 1
    args.out.mkdir(parents=True, exist_ok=True)
    existing = [n for n in written if (args.out / n).exists()]
    if existing and not args.force:
        print(f"{args.out}: {', '.join(existing)} already there (--force overwrites)", file=sys.stderr)
        return 1
    for name, source in written.items():
        (args.out / name).write_text(source, encoding="utf-8")
    (args.out / "README.md").write_text(
        f"delphi {version}'s prompts, written by autointerp's scripts/delphi-prompts.py from\n"
        f"{Path(delphi.__file__).parent}. Use with `--prompt-dir {args.out}`.\n",
        encoding="utf-8",
    )
    print(f"wrote {len(written)} templates to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
