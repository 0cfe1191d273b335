"""The docs' curl examples run as written: every curl command in a ```bash block of README.md and
docs/*.md, pointed at the integration app, exits 0 with an answer.

A command is one logical shell line (lines ending in a backslash, or inside an open quote, joined) that starts with ``curl`` or
pipes into it (the media examples build their body with ``{ printf ...; base64 ...; } | curl ... -d @-``).
A block that needs a GPU, a cluster or an API key is marked on the line before its opening fence with
``<!-- not run in tests: <reason> -->``; its commands are reported as skipped with that reason.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 300

SKIP_MARK = re.compile(r"^\s*<!--\s*not run in tests:\s*(.*?)\s*-->\s*$")
BASH_FENCE = re.compile(r"^\s*```(bash|sh|shell)\s*$")
FENCE = re.compile(r"^\s*```")
# The address the docs use, with or without the scheme: http://127.0.0.1:8000, localhost:8000, ...
DOCS_ADDRESS = re.compile(r"(?:https?://)?(?:localhost|127\.0\.0\.1):8000(?!\d)")
CURL_COMMAND = re.compile(r"^curl\s|\|\s*curl\s")


@dataclass(frozen=True)
class CurlExample:
    doc: str  # path relative to the repository root
    line: int  # 1-based line of the command's first line
    command: str  # as written, continuation lines included
    skip_reason: str | None = None

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    def against(self, base_url: str) -> str:
        """The command with the docs' address replaced by ``base_url`` (e.g. ``http://127.0.0.1:23456``)."""
        return DOCS_ADDRESS.sub(base_url.rstrip("/"), self.command)


def _continues(command: str) -> bool:
    """Whether a shell command goes on past its last line: a trailing backslash, or a quote still open
    (a JSON body written over several lines inside '...')."""
    if command.rstrip().endswith("\\"):
        return True
    try:
        shlex.split(command, comments=True)
    except ValueError:  # "No closing quotation"
        return True
    return False


def curl_examples(text: str, doc: str) -> list[CurlExample]:
    """Every curl command of the ```bash blocks of one markdown text."""
    examples: list[CurlExample] = []
    lines = text.splitlines()
    in_block, skip_reason, i = False, None, 0
    while i < len(lines):
        line = lines[i]
        if not in_block:
            if BASH_FENCE.match(line):
                in_block = True
                mark = SKIP_MARK.match(lines[i - 1]) if i > 0 else None
                skip_reason = mark.group(1) if mark else None
            elif FENCE.match(line):  # another language's block: skip to its end
                i += 1
                while i < len(lines) and not FENCE.match(lines[i]):
                    i += 1
            i += 1
            continue
        if FENCE.match(line):
            in_block = False
            i += 1
            continue
        start, parts = i, [line]
        while _continues("\n".join(parts)) and i + 1 < len(lines) and not FENCE.match(lines[i + 1]):
            i += 1
            parts.append(lines[i])
        command = "\n".join(parts).strip()
        if not command.startswith("#") and CURL_COMMAND.search(command):
            examples.append(CurlExample(doc, start + 1, command, skip_reason))
        i += 1
    return examples


def all_curl_examples() -> list[CurlExample]:
    return [e for path in DOC_FILES for e in curl_examples(path.read_text(), str(path.relative_to(REPO_ROOT)))]


def _params() -> list[object]:
    return [
        pytest.param(e, id=e.id, marks=[pytest.mark.skip(reason=e.skip_reason)] if e.skip_reason else [])
        for e in all_curl_examples()
    ]


@pytest.mark.integration
@pytest.mark.parametrize("example", _params())
def test_docs_curl_example_runs(example: CurlExample, serve_app: str) -> None:
    command = example.against(serve_app)
    result = subprocess.run(command, shell=True, cwd=REPO_ROOT, timeout=120, capture_output=True)
    assert result.returncode == 0, f"{example.id}: exit {result.returncode}\n{command}\n{result.stderr.decode(errors='replace')}"
    assert result.stdout.strip(), f"{example.id}: no output\n{command}\n{result.stderr.decode(errors='replace')}"


def test_extract_finds_the_readme_first_curl_and_points_it_at_the_app() -> None:
    examples = curl_examples((REPO_ROOT / "README.md").read_text(), "README.md")
    first = examples[0]
    assert first.command.startswith("curl -s localhost:8000/v1/infer -d '")
    assert first.skip_reason is None
    assert first.against("http://127.0.0.1:23456").startswith("curl -s http://127.0.0.1:23456/v1/infer -d '")
    assert (REPO_ROOT / "README.md").read_text().splitlines()[first.line - 1] == first.command


def test_extract_joins_continuations_follows_pipes_and_honours_the_skip_mark() -> None:
    text = "\n".join([
        "```bash",                                                          # 1
        "make run     # not a curl command",                                # 2
        "curl -s localhost:8000/v1/models        # comment",                # 3
        "{ printf '{\"input\": \"'; base64 -w0 a.wav; printf '\"}'; } \\",  # 4
        "  | curl -s http://localhost:8000/v1/infer -d @-",                 # 5
        "```",                                                              # 6
        "```text",                                                          # 7
        "curl -s localhost:8000/not-bash",                                  # 8
        "```",                                                              # 9
        "<!-- not run in tests: needs a GPU -->",                           # 10
        "```bash",                                                          # 11
        "curl -s 127.0.0.1:8000/v1/infer \\",                               # 12
        "  -d '{}'",                                                        # 13
        "curl -s localhost:80001/x",                                        # 14
        "```",                                                              # 15
    ])
    examples = curl_examples(text, "x.md")
    assert [(e.line, e.skip_reason) for e in examples] == [(3, None), (4, None), (12, "needs a GPU"), (14, "needs a GPU")]
    base = "http://127.0.0.1:23456"
    assert examples[0].against(base) == f"curl -s {base}/v1/models        # comment"
    assert examples[1].against(base).endswith(f"| curl -s {base}/v1/infer -d @-")
    assert examples[2].against(base) == f"curl -s {base}/v1/infer \\\n  -d '{{}}'"
    assert examples[3].against(base) == "curl -s localhost:80001/x"  # only port 8000 is the docs' address


def test_every_doc_curl_example_is_found() -> None:
    examples = all_curl_examples()
    docs = {e.doc for e in examples}
    assert {"README.md", "docs/api.md", "docs/media.md"} <= docs
    media = [e for e in examples if e.doc == "docs/media.md"]
    assert all("tests/fixtures/" in e.command for e in media)  # run from the repository root
    # the examples that need a cluster of their own are marked, and only those
    needs_own_cluster = [e for e in examples if e.doc == "docs/kubernetes.md" or re.search(r":(40695|8080)\b", e.command)]
    assert needs_own_cluster and all(e.skip_reason for e in needs_own_cluster)


def test_readme_is_at_most_300_lines() -> None:
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the manual goes in docs/"
