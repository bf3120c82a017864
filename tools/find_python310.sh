#!/usr/bin/env bash
# Prints the path of a working Python 3.10 interpreter, or explains what to install and fails.
# Order: $PYTHON310, python3.10 on PATH, pyenv's versions folder, common install locations.
set -u
works() { [ -n "$1" ] && "$1" -c 'import sys, venv; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; }
candidates=()
[ -n "${PYTHON310:-}" ] && candidates+=("$PYTHON310")
command -v python3.10 >/dev/null 2>&1 && candidates+=("$(command -v python3.10)")
root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
for p in "$root"/versions/3.10*/bin/python3.10; do [ -e "$p" ] && candidates+=("$p"); done
candidates+=(/usr/local/bin/python3.10 /usr/bin/python3.10 /opt/homebrew/bin/python3.10)
for c in "${candidates[@]}"; do
  if works "$c"; then echo "$c"; exit 0; fi
done
cat >&2 <<'MSG'
error: Python 3.10 is required (TFX 1.16 supports Python 3.9-3.10 only) and none was found.
Install one of:
  - pyenv:   pyenv install 3.10.13        (then re-run; pyenv's versions folder is searched)
  - Debian/Ubuntu: apt-get install python3.10 python3.10-venv
  - or set PYTHON310=/path/to/python3.10
MSG
exit 1
