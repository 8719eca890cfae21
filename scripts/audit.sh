#!/usr/bin/env bash
# Audit pinned requirements for known vulnerabilities with pip-audit (PyPI's advisory database).
#   scripts/audit.sh                      requirements.txt (what the image installs)
#   scripts/audit.sh requirements-dev.txt other files instead
# pip-audit resolves each file in a throwaway virtual environment, so dependencies of the pins
# are audited too.  Exit status: 0 no known vulnerability, 1 vulnerabilities found, 2 the audit
# could not run or could not check every package (pip-audit not installed, database out of reach).
set -euo pipefail
cd "$(dirname "$0")/.."

tool=.venv/bin/pip-audit
if [ ! -x "$tool" ]; then
  echo "error: pip-audit is not installed; run: .venv/bin/python -m pip install -r requirements-dev.txt" >&2
  exit 2
fi
[ "$#" -gt 0 ] || set -- requirements.txt
args=()
for file in "$@"; do args+=(--requirement "$file"); done

report=$(mktemp)
trap 'rm -f "$report"' EXIT
echo "==> pip-audit ${args[*]}"
status=0
"$tool" "${args[@]}" --format json --progress-spinner off --output "$report" || status=$?
if [ ! -s "$report" ]; then
  echo "error: pip-audit failed (exit $status) without a report" >&2
  exit 2
fi

# pip-audit exits 0 when it could not look a package up; count those as not audited.
.venv/bin/python - "$report" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
deps = report["dependencies"]
skipped = [d for d in deps if "skip_reason" in d]
vulnerable = [d for d in deps if d.get("vulns")]
for d in vulnerable:
    for v in d["vulns"]:
        fixed = ", ".join(v.get("fix_versions") or []) or "no fixed release"
        print(f"VULNERABLE {d['name']} {d['version']}: {v['id']} (fixed in: {fixed})")
for d in skipped:
    print(f"NOT AUDITED {d['name']}: {d['skip_reason']}")
print(f"==> {len(deps)} packages, {len(vulnerable)} vulnerable, {len(skipped)} not audited")
sys.exit(1 if vulnerable else 2 if skipped else 0)
PY
