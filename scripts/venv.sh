# Sourced by run_api.sh and run_tests.sh: create or refresh .venv from a requirements file.
# The venv is rebuilt only when the requirements files change, so repeated runs start fast.
ensure_venv() {
  local requirements="$1"
  local python="${PYTHON:-python3}"
  local stamp=".venv/.installed-$(basename "$requirements")"
  local wanted
  wanted=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $($python --version 2>&1)"
    "$python" -m venv .venv
  fi
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "==> installing $requirements into .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r "$requirements"
    echo "$wanted" > "$stamp"
  fi
}
