"""Check the numbers on the pages: every results block names its command, and the cheap ones are re-run.

A results block is a fenced block (three backticks, no language) that holds a decimal number. The line
before it (blank lines aside) must be a marker naming the command that printed it and whether this
checker re-runs it:

    <!-- results: python run.py --demo -q; check: yes -->
    <!-- results: python run.py --task probe ...; check: no (about 40 min on 2 CPU cores, needs the photos) -->

For a block marked ``check: yes`` the command (``python SCRIPT ...`` of this repository, no shell syntax) runs
in a scratch folder whose ``data`` is this repository's ``data/`` (so nothing in the repository is written);
every line of the block that holds a number must then be a line the command printed (spaces aside).
Exit 1 naming each page, line and the printed line that differs; 0 when every checked block agrees.

    python docs/tools/check_numbers.py                      # every page under docs/ and the README
    python docs/tools/check_numbers.py docs/cross_lingual.md
    python docs/tools/check_numbers.py --list               # the blocks and their commands, nothing run

tests/test_docs.py runs it on the cheap blocks.
"""
import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NUMBER = re.compile(r"\d\.\d")
NUMBERS = re.compile(r"-?\d+\.\d+")
MARKER = re.compile(r"^<!-- results: (?P<command>.+?); check: (?P<check>yes|no)(?P<why>.*?) -->$")
SCRIPTS = ("run.py", "get_embeds.py", "cluster.py")


@dataclass
class Block:
    page: Path
    line: int            # 1-based line of the opening fence
    lines: list          # the block's lines
    command: str         # None: no marker
    check: bool
    why: str             # for check: no, how long it takes and what it needs

    def where(self):
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages():
    return sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


def blocks(page):
    """The results blocks of a page, with their markers."""
    text = page.read_text().split("\n")
    out, i = [], 0
    while i < len(text):
        if text[i].strip() == "```":
            j = next((k for k in range(i + 1, len(text)) if text[k].strip() == "```"), len(text))
            body = text[i + 1:j]
            if any(NUMBER.search(line) for line in body):
                k = i - 1
                while k >= 0 and not text[k].strip():
                    k -= 1
                m = MARKER.match(text[k].strip()) if k >= 0 else None
                out.append(Block(page, i + 1, body, m and m.group("command"), bool(m and m.group("check") == "yes"),
                                 (m.group("why").strip(" ()") if m else "")))
            i = j + 1
        else:
            i += 1
    return out


def _normal(line):
    return " ".join(line.split())


def run_command(command, timeout=1800):
    """stdout of one repository command, run in a scratch folder that sees this repository's data/."""
    argv = shlex.split(command)
    if len(argv) < 2 or argv[0] not in ("python", "python3") or argv[1] not in SCRIPTS or any(
            c in command for c in "$|;&<>`"):
        raise ValueError(f"{command!r}: a checked command is `python SCRIPT ...` of this repository "
                         f"({', '.join(SCRIPTS)}), without shell syntax; mark the block check: no")
    with tempfile.TemporaryDirectory(prefix="check-numbers-") as tmp:
        os.symlink(ROOT / "data", Path(tmp) / "data")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        done = subprocess.run([sys.executable, str(ROOT / argv[1])] + argv[2:], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{command!r} exited {done.returncode}: {done.stderr.strip()[-600:]}")
    return done.stdout


def _label(line):
    """A line's text before its first decimal number (a table row's name)."""
    return _normal(re.split(r"-?\d+\.\d", line, maxsplit=1)[0])


def compare(block, printed):
    """The block's lines that hold a number and were not printed, each with the printed line of the same
    label (its text before the first number), if any."""
    printed_lines = [_normal(line) for line in printed.split("\n")]
    have = set(printed_lines)
    problems = []
    for offset, line in enumerate(block.lines):
        if NUMBER.search(line) and _normal(line) not in have:
            label, count = _label(line), len(NUMBERS.findall(line))
            # the printed line of the same label and as many numbers that shares the most of them (the same
            # row of the same table), else any of that label
            same = [p for p in printed_lines if label and _label(p) == label]
            rows = [p for p in same if len(NUMBERS.findall(p)) == count]
            near = max(rows, key=lambda p: sum(a == b for a, b in zip(NUMBERS.findall(p), NUMBERS.findall(line))),
                       default=same[0] if same else None)
            where = f"{block.page.relative_to(ROOT)}:{block.line + 1 + offset}"
            problems.append(f"{where}: the page has\n    {_normal(line)}\n"
                            + (f"  the command printed\n    {near}" if near else "  the command printed no such line"))
    return problems


def check(paths, run=True, only_markers=False):
    """(problems, checked, skipped) over the pages."""
    problems, checked, skipped = [], [], []
    for page in paths:
        for b in blocks(page):
            if b.command is None:
                problems.append(f"{b.where()}: a results block without a `<!-- results: COMMAND; check: yes|no -->` "
                                f"line naming the command that printed it")
                continue
            if not b.check:
                skipped.append(b)
                continue
            if only_markers or not run:
                checked.append(b)
                continue
            try:
                problems += compare(b, run_command(b.command))
            except (ValueError, RuntimeError, subprocess.TimeoutExpired) as e:
                problems.append(f"{b.where()}: {e}")
            checked.append(b)
    return problems, checked, skipped


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("pages", nargs="*", help="pages to check (default: docs/*.md and README.md)")
    p.add_argument("--list", action="store_true", help="list the results blocks and their commands, run nothing")
    args = p.parse_args(argv)
    paths = [Path(x).resolve() for x in args.pages] or pages()
    if args.list:
        for page in paths:
            for b in blocks(page):
                state = "no marker" if b.command is None else ("checked" if b.check else f"not re-run: {b.why}")
                print(f"{b.where()}: {b.command or '-'} [{state}]")
        return 0
    problems, checked, skipped = check(paths)
    for line in problems:
        print(line, file=sys.stderr)
    print(f"{len(checked)} block(s) re-run, {len(skipped)} marked too expensive to re-run, "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
