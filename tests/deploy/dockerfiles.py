"""Read a Dockerfile and a .dockerignore the way Docker does, for tests that cannot run Docker."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    name: str
    base: str  # the FROM argument with global ARG defaults substituted
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            for token in shlex.split(args):
                key, sep, value = token.partition("=")
                assert sep, f"ENV {args!r}: use the KEY=value form."
                out[key] = value
        return out


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].strip() + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    if current:
        lines.append(current.strip())
    return lines


def parse_dockerfile(path: Path) -> tuple[dict[str, str], dict[str, Stage]]:
    """(global ARG defaults, stages by name)."""
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in _logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            assert len(parts) == 3 and parts[1].upper() == "AS", f"name every stage: {line!r}"
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m[1], m[0]), parts[0])
            stage = Stage(parts[2], base)
            stages[stage.name] = stage
        elif stage is None:
            if keyword == "ARG":
                name, _, default = args.partition("=")
                global_args[name] = default
        else:
            stage.instructions.append((keyword, args))
    return global_args, stages


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    # Docker's rules (moby/patternmatcher): '**' spans directories, '*' and '?' stay inside one.
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(f"^{out}$")


class DockerIgnore:
    def __init__(self, path: Path) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line[1:].strip() if negate else line
            pattern = pattern.strip("/")
            self.rules.append((negate, _pattern_regex(pattern)))

    def excluded(self, rel_path: str) -> bool:
        """True when Docker leaves this file out of the build context (last matching rule wins,
        and a rule matches a file when it matches the file or one of its parent directories)."""
        parts = rel_path.strip("/").split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for negate, regex in self.rules:
            if any(regex.match(c) for c in candidates):
                excluded = not negate
        return excluded
