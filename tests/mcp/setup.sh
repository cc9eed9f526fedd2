#!/usr/bin/env bash
# Creates tests/mcp/.venv with the real MCP servers that tests/mcp_tools.rs starts
# (mcp-server-time, mcp-server-fetch, the official `mcp` SDK for test_server.py), all
# pinned in requirements.txt. Idempotent: a stamp holding the requirements' checksum
# makes a second run a no-op until requirements.txt changes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
stamp="$venv/.installed"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --require-virtualenv -r "$here/requirements.txt"
"$venv/bin/python" -m pip check --disable-pip-version-check >/dev/null
printf '%s\n' "$want" > "$stamp"
echo "tests/mcp/.venv ready"
