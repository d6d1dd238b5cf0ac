"""Loading the Lua scripts in ``scripts/*.lua``.

Each script file starts with a ``#!lua`` shebang (``#!lua flags=no-writes`` for
read-only scripts), then a header comment whose ``-- KEYS:`` line names the
keys the script receives, in order: names of :class:`~.keys.QueueKeys`
attributes, ``all`` (every queue key, in :data:`~.keys.QUEUE_KEY_NAMES`
order), or free names for fleet keys. A script marked ``(repeated per
queue)`` takes that group of keys once per queue.

The runnable source of a script is assembled from: its shebang line (kept
only for servers that understand it: Redis 7 and later, where it makes an
out-of-memory refusal all-or-nothing), a generated table ``K`` mapping each
key name to its ``KEYS[i]``, the definitions of ``_lib.lua`` that the script
uses (directly or through other helpers; Redis runs a script's top level on
every call, so unused helpers would cost time), and the script's own body.
Sources are built once per process; the broker runs them with EVALSHA and
falls back to EVAL on NOSCRIPT.
"""

from __future__ import annotations

import functools
import hashlib
import re
from importlib import resources

import attrs

from taskq.brokers.redis.keys import QUEUE_KEY_NAMES

__all__ = ["Script", "load_scripts"]

_KEYS_LINE = re.compile(r"^--\s*KEYS:\s*(?P<names>[^(\n]*)(?P<rest>.*)$", re.MULTILINE)
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

_DEFINITION = re.compile(r"^local\s+(?:function\s+(\w+)|([\w\s,]+?)\s*=)")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


@attrs.frozen
class Script:
    """One Lua script, ready to run.

    Attributes:
        name: the file name without ``.lua``.
        keys: the key names it takes, in KEYS order (one group of them).
        repeated: whether the key group repeats once per queue.
        read_only: declared ``flags=no-writes``.
        source: the source with the shebang line (Redis >= 7).
        sha: SHA1 of :attr:`source`.
        plain_source: the source without the shebang line (older servers, fakeredis).
        plain_sha: SHA1 of :attr:`plain_source`.
    """

    name: str
    keys: tuple[str, ...]
    repeated: bool
    read_only: bool
    source: str
    sha: str
    plain_source: str
    plain_sha: str

    def variant(self, shebang: bool) -> tuple[str, str]:
        """The (sha, source) to run, with or without the shebang line."""
        return (self.sha, self.source) if shebang else (self.plain_sha, self.plain_source)


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _parse_keys(name: str, text: str) -> tuple[tuple[str, ...], bool]:
    match = _KEYS_LINE.search(text)
    if match is None:
        raise ValueError(f"script {name}.lua has no '-- KEYS:' header line")
    names = tuple(match.group("names").split())
    if names == ("all",):
        names = QUEUE_KEY_NAMES
    for key in names:
        if not _NAME.match(key):
            raise ValueError(f"script {name}.lua names an invalid key {key!r}")
    return names, "repeated per queue" in match.group("rest")


@attrs.frozen
class _Definition:
    names: frozenset[str]
    text: str
    uses: frozenset[str]


def _parse_lib(lib: str) -> list[_Definition]:
    """Split ``_lib.lua`` into its top-level definitions (each with the comment above it)."""
    chunks: list[list[str]] = []
    comment: list[str] = []
    for line in lib.splitlines():
        if not line.strip():
            comment = []  # a comment block not right above a definition is the file's own
        elif line.startswith("--"):
            comment.append(line)
        elif _DEFINITION.match(line):
            chunks.append([*comment, line])
            comment = []
        else:
            chunks[-1].append(line)
    definitions = []
    all_names: set[str] = set()
    parsed = []
    for chunk in chunks:
        match = _DEFINITION.match(next(line for line in chunk if not line.startswith("--")))
        assert match is not None
        names = frozenset(n.strip() for n in (match.group(1) or match.group(2)).split(","))
        all_names |= names
        parsed.append((names, "\n".join(chunk)))
    for names, text in parsed:
        uses = frozenset(_IDENTIFIER.findall(_code(text))) & all_names - names
        definitions.append(_Definition(names, text, uses))
    return definitions


def _code(text: str) -> str:
    """Lua text without its comments (so names mentioned in comments are not dependencies)."""
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


def _needed(definitions: list[_Definition], body: str) -> str:
    """The definitions ``body`` uses, transitively, in their original order."""
    by_name = {name: d for d in definitions for name in d.names}
    wanted = set(_IDENTIFIER.findall(_code(body))) & set(by_name)
    todo = list(wanted)
    while todo:
        for name in by_name[todo.pop()].uses:
            if name not in wanted:
                wanted.add(name)
                todo.append(name)
    chosen = [d for d in definitions if d.names & wanted]
    return "".join(d.text + "\n" for d in chosen)


def _key_table(keys: tuple[str, ...], repeated: bool) -> str:
    fields = ", ".join(f"{name} = KEYS[base + {i}]" for i, name in enumerate(keys, 1))
    return (
        f"local KEY_COUNT = {len(keys)}\n"
        f"local function keyset(group)\n  local base = group * KEY_COUNT\n"
        f"  return {{{fields}}}\nend\n"
        if repeated
        else f"local base = 0\nlocal K = {{{fields}}}\n"
    )


def _build(name: str, text: str, definitions: list[_Definition]) -> Script:
    shebang, _, body = text.partition("\n")
    if not shebang.startswith("#!lua"):
        raise ValueError(f"script {name}.lua must start with a #!lua line")
    keys, repeated = _parse_keys(name, body)
    table = _key_table(keys, repeated)
    plain = table + _needed(definitions, table + body) + body
    source = shebang + "\n" + plain
    return Script(
        name=name,
        keys=keys,
        repeated=repeated,
        read_only="no-writes" in shebang,
        source=source,
        sha=_sha1(source),
        plain_source=plain,
        plain_sha=_sha1(plain),
    )


@functools.cache
def load_scripts() -> dict[str, Script]:
    """Every script of ``scripts/``, by name (built once per process).

    Raises:
        ValueError: a script file lacks its shebang or KEYS header (a packaging bug).
    """
    folder = resources.files("taskq.brokers.redis") / "scripts"
    definitions = _parse_lib((folder / "_lib.lua").read_text(encoding="utf-8"))
    scripts: dict[str, Script] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".lua") and not entry.name.startswith("_"):
            name = entry.name[: -len(".lua")]
            scripts[name] = _build(name, entry.read_text(encoding="utf-8"), definitions)
    return scripts
