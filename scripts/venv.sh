# Sourced by run_api.sh and run_tests.sh: create or refresh .venv from a requirements file, with
# this project installed in editable mode (its `ad-purchase` command in .venv/bin).  The venv is
# rebuilt only when the requirements files or pyproject.toml change, so repeated runs start fast.
ensure_venv() {
  local requirements="$1"
  local python="${PYTHON:-python3}"
  local stamp=".venv/.installed-$(basename "$requirements")"
  local wanted
  wanted=$(cat requirements*.txt pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $($python --version 2>&1)"
    "$python" -m venv .venv
  fi
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ] || [ ! -x .venv/bin/ad-purchase ]; then
    echo "==> installing $requirements and this project (editable) into .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r "$requirements" --editable .
    echo "$wanted" > "$stamp"
  fi
}
