#!/usr/bin/env bash
# Install the offline manifest validators (checkov, kubernetes-validate; pinned in
# deploy/k8s/requirements-tools.txt) into a virtual environment of their own, by default .venv/deploy-tools
# (inside the git-ignored .venv). Not into .venv itself: checkov pins packaging<24, which would
# break pytest there. tests/test_deploy_k8s.py looks for the tools in that folder.
#
#   deploy/k8s/install-tools.sh                  # creates or refreshes the tools venv
#   DEPLOY_TOOLS_VENV=/opt/tools deploy/k8s/install-tools.sh
#
# Reinstalls only when requirements-tools.txt changed since the last install.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${DEPLOY_TOOLS_VENV:-$REPO/.venv/deploy-tools}
REQUIREMENTS=$REPO/deploy/k8s/requirements-tools.txt
PYTHON=${PYTHON:-python3}

wanted=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
stamp=$VENV/.installed-requirements-deploy
if [[ -x $VENV/bin/checkov && -x $VENV/bin/kubernetes-validate && -f $stamp && $(<"$stamp") == "$wanted" ]]; then
    echo "==> deploy tools up to date in $VENV"
    exit 0
fi
[[ -x $VENV/bin/python ]] || { echo "==> creating $VENV"; "$PYTHON" -m venv "$VENV"; }
echo "==> installing $REQUIREMENTS into $VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
echo "$wanted" >"$stamp"
"$VENV/bin/checkov" --version
"$VENV/bin/kubernetes-validate" --version
