"""The documentation points at things that exist: README.md and docs/*.md, read as text.

- Every relative link, ``[text](path)`` or ``[text](path#anchor)`` (images and reference definitions
  too), names a file or folder of the repository; an ``#anchor`` into a markdown file names one of its
  headings, slugged as GitHub does (lowercase, punctuation other than ``-`` and ``_`` dropped, spaces
  to ``-``, ``-1``, ``-2``, ... for repeated headings). http(s) and other scheme links are not checked.
- Every command in a fenced code block (and in an inline code span that starts with a command) names a
  script that exists (``python experiments/run.py``, ``bash benchmarks/gpu.sh``, the test files given to
  ``python -m pytest``), a ``make`` target the Makefile defines, and, for python scripts of this
  repository, only flags that the script's argument parser accepts. A script's flags are read from its
  source with ``ast`` (every ``add_argument("--...")``, ``--no-<name>`` for ``BooleanOptionalAction``,
  plus ``-h`` / ``--help``), following the modules it imports from its own folder (``experiments/``,
  ``benchmarks/``), such as a shared parser.

Nothing is imported from the project and nothing is run, so this takes well under a second.
"""

from __future__ import annotations

import ast
import re
import shlex
import urllib.parse
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PYTHON = re.compile(r"^(?:.*/)?python(?:3(?:\.\d+)?)?$")
SEPARATORS = {";", "&&", "||", "|", "&", ";;"}
# Code blocks in these languages hold code or data, not shell commands.
NOT_SHELL = {"python", "py", "pycon", "json", "jsonl", "toml", "yaml", "yml", "csv", "diff"}


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def split_markdown(text: str) -> tuple[str, list[tuple[int, str, list[str]]]]:
    """The text outside fenced code blocks (block lines blanked, so offsets keep their line numbers),
    and the blocks as (line number of the first line inside, info string, lines)."""
    prose, blocks = [], []
    fence = None
    for number, line in enumerate(text.split("\n"), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = (match.group(1)[0], len(match.group(1)))
            blocks.append((number + 1, match.group(2).lower(), []))
            prose.append("")
        elif fence is not None:
            stripped = line.strip()
            if stripped and set(stripped) == {fence[0]} and len(stripped) >= fence[1]:
                fence = None
            else:
                blocks[-1][2].append(line)
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), blocks


def blank_code_spans(text: str) -> str:
    """Inline code spans replaced by as many x's (newlines kept), so that nothing in them reads as a link."""
    return CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", "x", m.group(0)), text)


def github_slug(heading: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """The anchors GitHub gives the headings of a markdown file (repeated slugs get -1, -2, ...)."""
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set(HTML_ANCHOR.findall(prose))
    for line in prose.split("\n"):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(found)


def link_problems(doc: Path, root: Path = ROOT) -> list[str]:
    prose, _ = split_markdown(doc.read_text(encoding="utf-8"))
    prose = blank_code_spans(prose)
    targets = [(m.start(1), m.group(1)) for m in LINK.finditer(prose)]
    targets += [(m.start(1), m.group(1)) for m in REF_DEF.finditer(prose)]
    problems = []
    for offset, target in sorted(targets):
        where = f"{doc.relative_to(root)}:{prose.count(chr(10), 0, offset) + 1}"
        target = target.strip("<>")
        if SCHEME.match(target):
            continue  # http(s), mailto: not checked
        path_part, _, anchor = target.partition("#")
        path_part = urllib.parse.unquote(path_part)
        if not path_part:
            resolved = doc
        elif path_part.startswith("/"):
            resolved = (root / path_part.lstrip("/")).resolve()
        else:
            resolved = (doc.parent / path_part).resolve()
        if not resolved.is_relative_to(root.resolve()):
            problems.append(f"{where}: link {target!r} points outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{where}: link {target!r}: {resolved.relative_to(root.resolve())} does not exist")
            continue
        if anchor and resolved.is_file() and resolved.suffix.lower() == ".md":
            if urllib.parse.unquote(anchor) not in anchors(resolved):
                problems.append(f"{where}: link {target!r}: {resolved.relative_to(root.resolve())} has no heading "
                                f"with anchor #{anchor}")
    return problems


# --- commands ---------------------------------------------------------------------------------------


def make_targets(root: Path) -> set[str]:
    makefile = root / "Makefile"
    targets = set()
    if makefile.is_file():
        for line in makefile.read_text(encoding="utf-8").split("\n"):
            match = re.match(r"^([^\s:=#][^:=]*?)\s*::?(?!=)", line)
            if match:
                targets.update(name for name in match.group(1).split() if "$" not in name and "%" not in name)
    return targets


def module_file(name: str, base: Path, root: Path) -> Path | None:
    """The repository file a module name imports, looked up from the repository root and from ``base``."""
    relative = Path(*name.split("."))
    for folder in (root, base):
        for candidate in (folder / relative.with_suffix(".py"), folder / relative / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def script_flags(script: Path, root: Path = ROOT) -> set[str]:
    """Every option string the script's parser (or a repository module it imports) declares."""
    return _script_flags(script.resolve(), root.resolve())


@cache
def _script_flags(script: Path, root: Path) -> frozenset[str]:
    flags = {"-h", "--help"}
    home = root / script.relative_to(root).parts[0]  # imports are followed within the script's folder
    todo, done = [script], set()
    while todo:
        path = todo.pop()
        if path in done:
            continue
        done.add(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                base = path.parent
                if isinstance(node, ast.ImportFrom) and node.level:
                    for _ in range(node.level - 1):
                        base = base.parent
                    names = [node.module or ""] + [f"{node.module}.{a.name}" if node.module else a.name
                                                   for a in node.names]
                    found = [module_file(n, base, base) for n in names if n]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                    found = [module_file(n, base, root) for n in names if n]
                else:
                    found = [module_file(a.name, base, root) for a in node.names]
                todo += [f.resolve() for f in found if f is not None and f.resolve().is_relative_to(home)]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "add_argument":
                options = [a.value for a in node.args
                           if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("-")]
                flags.update(options)
                action = next((k.value for k in node.keywords if k.arg == "action"), None)
                action_name = action.attr if isinstance(action, ast.Attribute) else getattr(action, "id", None)
                if action_name == "BooleanOptionalAction":
                    flags.update("--no-" + o[2:] for o in options if o.startswith("--"))
    return frozenset(flags)


def logical_lines(lines: list[str]) -> list[tuple[int, str]]:
    """Lines joined across ``\\`` continuations, each with the offset of its first line."""
    out, current, start = [], [], 0
    for index, line in enumerate(lines):
        if not current:
            start = index
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            current.append(stripped[:-1])
            continue
        current.append(line)
        out.append((start, " ".join(current)))
        current = []
    if current:
        out.append((start, " ".join(current)))
    return out


def tokenize(line: str) -> list[str]:
    line = re.sub(r"^\s*[$>]\s+", "", line)  # a shell prompt
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        return list(lexer)
    except ValueError:  # unbalanced quotes: program output, not a command
        line = re.sub(r"(^|\s)#.*$", "", line)
        return re.findall(r"[;&|]+|[^\s;&|]+", line)


def split_commands(tokens: list[str]) -> list[list[str]]:
    commands, current = [], []
    for token in tokens:
        if token in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [c for c in commands if c]


def checkable_script(path: str) -> bool:
    """A relative path into this repository (not an absolute one, a PLACEHOLDER or a hidden folder)."""
    first = path.split("/")[0]
    return not (path.startswith(("/", "$", "~")) or re.match(r"^\.[^./]", path) or first.isupper())


def command_problems(tokens: list[str], root: Path, targets: set[str]) -> list[str]:
    problems = []
    words = list(tokens)
    while words and ASSIGNMENT.match(words[0]):
        words.pop(0)  # environment variables set for the command
    if words and words[0] == "make":
        for word in words[1:]:
            if not word.startswith("-") and not ASSIGNMENT.match(word) and word not in targets:
                problems.append(f"make target {word!r} is not defined in the Makefile")
        return problems
    if words and words[0] in ("bash", "sh") and len(words) > 1 and words[1].endswith(".sh"):
        if checkable_script(words[1]) and not (root / words[1]).is_file():
            problems.append(f"script {words[1]} does not exist")
        return problems
    for index, word in enumerate(words):  # a python command may follow text, e.g. "resume with: python ..."
        if not PYTHON.match(word) and word not in ("$(PY)", "$PY", "${PY}"):
            continue
        rest = words[index + 1:]
        if rest[:2] == ["-m", "pytest"]:
            for arg in rest[2:]:
                path = arg.split("::")[0]
                if not arg.startswith("-") and ("/" in path or path.endswith(".py")) and checkable_script(path) \
                        and not (root / path).exists():
                    problems.append(f"test path {path} does not exist")
            return problems
        if not rest or not rest[0].endswith(".py"):
            return problems  # python -c, python -m other, or the word "python" in prose
        script, args = rest[0], rest[1:]
        if not checkable_script(script):
            return problems
        path = root / script
        if not path.is_file():
            problems.append(f"script {script} does not exist")
            return problems
        flags = script_flags(path, root)
        for arg in args:
            if arg == "--":
                break
            option = arg.split("=", 1)[0]
            if re.match(r"^--?[A-Za-z]", option) and option not in flags:
                problems.append(f"{script} has no option {option} (its parser accepts: {', '.join(sorted(flags))})")
        return problems
    return problems


def shown_commands(doc: Path) -> list[tuple[int, str]]:
    """(line number, command line) of every fenced shell block line and every inline code span that
    starts with a command."""
    text = doc.read_text(encoding="utf-8")
    prose, blocks = split_markdown(text)
    shown = []
    for first, info, lines in blocks:
        if info in NOT_SHELL:
            continue
        for offset, line in logical_lines(lines):
            if line.strip():
                shown.append((first + offset, line))
    for match in CODE_SPAN.finditer(prose):
        span = " ".join(match.group(2).split())
        if re.match(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(?:\S*python3?|bash|sh|make)\s", span):
            shown.append((prose.count("\n", 0, match.start()) + 1, span))
    return shown


def all_command_problems(docs: list[Path], root: Path = ROOT) -> list[str]:
    targets = make_targets(root)
    problems = []
    for doc in docs:
        for number, line in shown_commands(doc):
            for command in split_commands(tokenize(line)):
                for problem in command_problems(command, root, targets):
                    problems.append(f"{doc.relative_to(root)}:{number}: {problem}\n    in: {line.strip()}")
    return problems


def all_link_problems(docs: list[Path], root: Path = ROOT) -> list[str]:
    return [problem for doc in docs for problem in link_problems(doc, root)]


# --- tests --------------------------------------------------------------------------------------------


def test_docs_exist():
    missing = [str(p.relative_to(ROOT)) for p in doc_files() if not p.is_file()]
    assert not missing, f"missing documentation files: {missing}"
    assert len(doc_files()) > 1, "no pages under docs/"


def test_relative_links_point_to_existing_files_and_headings():
    problems = all_link_problems(doc_files())
    assert not problems, f"{len(problems)} broken link(s):\n" + "\n".join(problems)


def test_commands_name_existing_scripts_targets_and_flags():
    problems = all_command_problems(doc_files())
    assert not problems, f"{len(problems)} bad command(s):\n" + "\n".join(problems)


def test_the_checks_catch_broken_references(tmp_path):
    """The checker itself, on a small repository: every kind of broken reference is found, valid ones pass."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "tools").mkdir()
    (tmp_path / "Makefile").write_text(".PHONY: demo\n$(STAMP): x\n\ttouch\ndemo: $(STAMP)\n\techo\n")
    (tmp_path / "tools" / "shared.py").write_text(
        "import argparse\n\ndef parser():\n    p = argparse.ArgumentParser()\n"
        "    p.add_argument('--out')\n    p.add_argument('--plots', action=argparse.BooleanOptionalAction)\n"
        "    return p\n")
    (tmp_path / "tools" / "train.py").write_text(
        "from tools.shared import parser\n\np = parser()\np.add_argument('-s', '--seeds', type=int)\n")
    (tmp_path / "docs" / "page.md").write_text(
        "# A page\n\n## Input validation and `--check`\n\n## Repeated\n\n## Repeated\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Top\n\n"
        "[ok](docs/page.md#input-validation-and---check) [ok](docs/page.md#repeated-1) [ok](docs/) "
        "[ok](#top) [web](https://example.org/missing) `[not a link](nowhere.md)`\n"
        "[bad file](docs/nope.md) [bad anchor](docs/page.md#no-such-heading)\n"
        "[bad self](#nothing)\n\n"
        "```bash\n"
        "JMARL_X=1 python tools/train.py --seeds 2 --out runs/x --no-plots   # fine\n"
        "python tools/train.py --seeds 2 \\\n    --unknown-flag 3\n"
        "python tools/missing.py --seeds 2\n"
        "make demo && make nope\n"
        "bash tools/missing.sh OUT\n"
        "```\n\n"
        "```python\npython tools/missing.py --in-a-python-block\n```\n\n"
        "Inline: `python tools/train.py --help` and `python tools/train.py --wrong`.\n")
    links = all_link_problems([readme, tmp_path / "docs" / "page.md"], tmp_path)
    assert len(links) == 3, links
    assert any("docs/nope.md does not exist" in p for p in links)
    assert any("#no-such-heading" in p for p in links)
    assert any("#nothing" in p for p in links)
    commands = all_command_problems([readme], tmp_path)
    assert len(commands) == 5, commands
    assert any("README.md:9: tools/train.py has no option --unknown-flag" in p for p in commands)
    assert any("script tools/missing.py does not exist" in p for p in commands)
    assert any("make target 'nope'" in p for p in commands)
    assert any("script tools/missing.sh does not exist" in p for p in commands)
    assert any("has no option --wrong" in p for p in commands)
