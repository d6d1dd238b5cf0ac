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
key name to its ``KEYS[i]``, the shared helpers of ``_lib.lua``, and the
script's own body. Sources are built once per process; the broker runs them
with EVALSHA and falls back to EVAL on NOSCRIPT.
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

_KEY_TABLE = """\
local KEY_NAMES = {{{names}}}
local STRICT_KEYS = {{__index = function(_, name)
  error('taskq script bug: key ' .. tostring(name) .. ' is not passed in KEYS')
end}}
local function keyset(group)
  local t, base = {{}}, group * #KEY_NAMES
  for i, name in ipairs(KEY_NAMES) do
    t[name] = KEYS[base + i]
  end
  return setmetatable(t, STRICT_KEYS)
end
local K = keyset(0)
"""


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


def _build(name: str, text: str, lib: str) -> Script:
    shebang, _, body = text.partition("\n")
    if not shebang.startswith("#!lua"):
        raise ValueError(f"script {name}.lua must start with a #!lua line")
    keys, repeated = _parse_keys(name, body)
    table = _KEY_TABLE.format(names=", ".join(f"'{k}'" for k in keys))
    plain = table + lib + "\n" + body
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
    lib = (folder / "_lib.lua").read_text(encoding="utf-8")
    scripts: dict[str, Script] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".lua") and not entry.name.startswith("_"):
            name = entry.name[: -len(".lua")]
            scripts[name] = _build(name, entry.read_text(encoding="utf-8"), lib)
    return scripts
