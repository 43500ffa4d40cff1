"""Write docs/usage.md's tables from the parsers and registries, so that the page cannot drift from the code.

docs/usage.md holds blocks between ``<!-- generated: NAME -->`` and ``<!-- end generated -->``; this script
rewrites every block from the source it names (the three scripts' parsers, the encoder, dataset, task, method,
metric and perturbation registries) and leaves the prose around them as it is.

    python docs/tools/usage_tables.py           # rewrite docs/usage.md
    python docs/tools/usage_tables.py --check   # exit 1, naming the blocks, when the page differs

tests/test_docs.py runs the check.
"""
import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PAGE = ROOT / "docs" / "usage.md"
BLOCK = re.compile(r"(<!-- generated: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def _cell(text):
    return " ".join(str(text).replace("%%", "%").replace("|", "\\|").split())


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]) + "\n"


def _default(action, option_defaults):
    if action.dest in option_defaults:
        value = option_defaults[action.dest]
    elif action.default is argparse.SUPPRESS:
        return ""
    else:
        value = action.default
    if isinstance(action, argparse._StoreTrueAction) or value is False:
        return "off"
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def flag_tables(parser, option_defaults=None):
    """One table per argument group of a parser: its flags (aliases together), default and help."""
    option_defaults = option_defaults or {}
    out = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.option_strings and a.dest != "help"]
        if not actions:
            continue
        title = {"options": "", "optional arguments": ""}.get(group.title, group.title)
        if title:
            out.append(f"*{title}*\n\n")
        rows = []
        for a in actions:
            flags = ", ".join(f"`{s}`" for s in a.option_strings)
            if a.choices is not None and not isinstance(a.choices, range) and len(a.choices) <= 12:
                flags += " {" + ", ".join(map(str, a.choices)) + "}"
            rows.append((flags, _default(a, option_defaults), a.help or ""))
        out.append(_table(["flag", "default", "meaning"], rows))
        out.append("\n")
    return "".join(out).rstrip("\n") + "\n"


def run_flags():
    import run
    from src.methods import METHODS
    defaults = {m.dest(f.name): f.default for m in METHODS.values() for f in m.option_fields()}
    return flag_tables(run.build_parser(), defaults)


def get_embeds_flags():
    import get_embeds
    return flag_tables(get_embeds.build_parser())


def cluster_flags():
    import cluster
    return flag_tables(cluster.build_parser())


def encoders():
    from src.encoders import REGISTRY
    rows = [(f"`{s.name}`", s.family, s.hub_id or "", "/".join(s.modalities), s.pooling) for s in REGISTRY.values()]
    return _table(["name", "family", "weights (hub id or package)", "rows", "one row is"], rows)


def datasets():
    from src.datasets import KNOWN
    from src.tvdatasets import PREFIX, ROOT_VAR
    rows = [(f"`{name}`", "`--images DIR --captions FILE`", f"`{var}`: `${var}/{img}/`, `${var}/{cap}`")
            for name, (var, img, cap) in KNOWN.items()]
    rows += [("any other `NAME`", "`--images DIR --captions FILE` (COCO-format captions json)", ""),
             ("any other `NAME`", "`--images ROOT` (an ImageFolder tree: one class a folder)", ""),
             (f"`{PREFIX}CLASS`", "`--images ROOT [--split SPLIT] [--download]` (a torchvision dataset class)",
              f"`{ROOT_VAR}`"),
             ("`NAME-LANG`, `NAME-VARIANT`", "captions in another language, or class texts from `--descriptions`",
              "read by run.py as a side's `:LANG`")]
    return _table(["dataset (`--d`)", "flags", "or environment variable"], rows)


def tasks():
    from src.tasks import TASKS
    rows = [(f"`{n}`", t.sides, ", ".join(f"`{c.name}`" for c in t.columns), t.description) for n, t in TASKS.items()]
    return _table(["task (`--task`)", "sides", "score columns", "what it does"], rows)


def methods():
    from src.methods import METHODS
    rows = []
    for n, m in METHODS.items():
        opts = ", ".join(f"`{f.metadata['flag']}` ({_default_text(f.default)})" for f in m.option_fields())
        rows.append((f"`{n}`", m.description, opts))
    return _table(["method (`--m`)", "what it does", "options (default)"], rows)


def _default_text(value):
    return "off" if value is False else str(value)


def metrics():
    from src.metrics import METRICS
    rows = [(f"`{n}`", _first_paragraph(f.__doc__)) for n, f in METRICS.items()]
    return _table(["column", "definition"], rows)


def _first_paragraph(doc):
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def perturbations():
    from src.perturb import KINDS, ROWS
    rows = [(f"`~{k.name}:{k.level}`", "run.py, on loaded rows" if k.stage == ROWS else
             "get_embeds.py `--perturb`, its own file", k.applies_to,
             f"[{k.low}, {k.high}]" if k.high is not None else f">= {k.low}", k.low, k.meaning)
            for k in KINDS.values()]
    return _table(["kind", "applied by", "perturbs", "level", "identity", "definition"], rows)


BLOCKS = {"run_flags": run_flags, "get_embeds_flags": get_embeds_flags, "cluster_flags": cluster_flags,
          "encoders": encoders, "datasets": datasets, "tasks": tasks, "methods": methods, "metrics": metrics,
          "perturbations": perturbations}


def render(text):
    """The page with every generated block rewritten; unknown block names are an error."""
    def one(m):
        name = m.group("name")
        if name not in BLOCKS:
            raise SystemExit(f"{PAGE.name}: unknown generated block {name!r}; known: {', '.join(BLOCKS)}")
        return m.group(1) + BLOCKS[name]() + m.group(4)
    return BLOCK.sub(one, text)


def differing_blocks(old, new):
    a = {m.group("name"): m.group("body") for m in BLOCK.finditer(old)}
    b = {m.group("name"): m.group("body") for m in BLOCK.finditer(new)}
    return [n for n in b if a.get(n) != b[n]]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="do not write; exit 1 when the page differs")
    args = p.parse_args(argv)
    old = PAGE.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print(f"{PAGE.relative_to(ROOT)} is stale in: {', '.join(differing_blocks(old, new))}; run "
                  f"python docs/tools/usage_tables.py", file=sys.stderr)
            return 1
        return 0
    if new != old:
        PAGE.write_text(new)
        print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
