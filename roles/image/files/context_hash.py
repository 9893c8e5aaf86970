"""Content hash of a Docker build: the files the build context sends plus the extra inputs.

Usage: context_hash.py CONTEXT_DIR [--dockerfile PATH] [--input KEY=VALUE ...] [--exclude PATTERN ...]
Prints JSON {"hash": <sha256 hex>, "files": <count>} on stdout. Files are selected like Docker
does (the context's .dockerignore, '**' and '!' supported); the hash covers each file's relative
path, executable bit and content, and every --input (build args, base image id) in sorted order.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

def _pattern_to_regex(pattern: str) -> re.Pattern[str]:
    """Translate one .dockerignore pattern (Go filepath.Match plus '**') into a regex."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1:end]
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    # A pattern that names a directory excludes everything below it as well.
    return re.compile("^" + "".join(out) + "(?:/.*)?$")


def read_patterns(context: Path, extra: list[str]) -> list[tuple[bool, re.Pattern[str]]]:
    """Rules in order: (negated, regex). Later rules win, as in Docker."""
    # Exactly what Docker sends: nothing is left out that .dockerignore does not leave out, so
    # equal tags always mean equal contexts (keep caches out with the context's .dockerignore).
    lines: list[str] = list(extra)
    ignore_file = context / ".dockerignore"
    if ignore_file.is_file():
        lines.extend(ignore_file.read_text(encoding="utf-8").splitlines())
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:].strip()
        line = os.path.normpath(line).lstrip("/")
        if line in ("", "."):
            continue
        rules.append((negated, _pattern_to_regex(line)))
    return rules


def is_excluded(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    excluded = False
    for negated, regex in rules:
        if regex.match(rel):
            excluded = not negated
    return excluded


def context_files(context: Path, rules: list[tuple[bool, re.Pattern[str]]]) -> list[str]:
    """Relative paths of the regular files and symlinks the context would send, sorted."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(context):
        rel_dir = os.path.relpath(dirpath, context)
        rel_dir = "" if rel_dir == "." else rel_dir
        # Docker still walks excluded directories when a '!' rule could re-include something.
        has_negation = any(negated for negated, _ in rules)
        if not has_negation:
            dirnames[:] = [d for d in dirnames if not is_excluded(os.path.join(rel_dir, d), rules)]
        dirnames.sort()
        for name in filenames:
            rel = os.path.join(rel_dir, name)
            if not is_excluded(rel, rules):
                found.append(rel)
    return sorted(found)


def digest(context: Path, files: list[str], dockerfile: Path | None, inputs: list[str]) -> str:
    sha = hashlib.sha256()
    for rel in files:
        path = context / rel
        sha.update(b"F\0" + rel.encode() + b"\0")
        if path.is_symlink():
            sha.update(b"L\0" + os.readlink(path).encode() + b"\0")
            continue
        sha.update(b"X\0" if os.access(path, os.X_OK) else b"-\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                sha.update(chunk)
    if dockerfile is not None:
        sha.update(b"D\0" + dockerfile.read_bytes())
    for item in sorted(inputs):
        sha.update(b"I\0" + item.encode() + b"\0")
    return sha.hexdigest()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("context", type=Path)
    parser.add_argument("--dockerfile", type=Path, help="Dockerfile (hashed even when outside the context)")
    parser.add_argument("--input", action="append", default=[], help="KEY=VALUE extra build input")
    parser.add_argument("--exclude", action="append", default=[], help="extra .dockerignore-style pattern")
    args = parser.parse_args(argv)
    if not args.context.is_dir():
        print(json.dumps({"error": f"build context {args.context} is not a directory"}))
        return 2
    if args.dockerfile is not None and not args.dockerfile.is_file():
        print(json.dumps({"error": f"Dockerfile {args.dockerfile} not found"}))
        return 2
    rules = read_patterns(args.context, args.exclude)
    files = context_files(args.context, rules)
    print(json.dumps({"hash": digest(args.context, files, args.dockerfile, args.input), "files": len(files)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
