"""Print the Debian mirror this machine's apt sources use for a suite (for debootstrap).

Usage: debian_mirror.py SUITE [--default URL] [--sources-dir DIR]
Reads one-line (sources.list, *.list) and deb822 (*.sources) files; prints the first 'deb' URI
serving SUITE from a Debian archive (not -security), else the default.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT = "http://deb.debian.org/debian"


def one_line_entries(text: str) -> list[tuple[str, list[str]]]:
    """(uri, [suite]) for each 'deb' line of a one-line-style file."""
    entries: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2:
            entries.append((words[0], [words[1]]))
    return entries


def deb822_entries(text: str) -> list[tuple[str, list[str]]]:
    """(uri, suites) for each stanza of a deb822 .sources file whose Types include 'deb'."""
    entries: list[tuple[str, list[str]]] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            entries.append((uri, fields.get("suites", "").split()))
    return entries


def find_mirror(suite: str, sources_dir: Path) -> str | None:
    files = [sources_dir / "sources.list"]
    parts = sources_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(parts.iterdir())
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".sources":
            entries = deb822_entries(text)
        elif path.name == "sources.list" or path.suffix == ".list":
            entries = one_line_entries(text)
        else:
            continue
        for uri, suites in entries:
            if suite in suites and "security" not in uri and uri.startswith(("http://", "https://", "file:/")):
                return uri.rstrip("/")
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("--default", default=DEFAULT)
    parser.add_argument("--sources-dir", type=Path, default=Path("/etc/apt"))
    args = parser.parse_args(argv)
    print(find_mirror(args.suite, args.sources_dir) or args.default)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
