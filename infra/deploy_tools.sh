#!/usr/bin/env bash
# Installs the tools the deployment checks (tests/deploy) need and that cannot live in the project
# venv. Idempotent: a second run only verifies and takes well under a second.
#
#   checkov    PyPI, in its own virtualenv under .local/checkov (it pins dependencies that clash
#              with the project's); the tests run it with --skip-download.
#   provider   `terraform validate` / `terraform test` need the hashicorp/google provider. When the
#              terraform CLI config (TF_CLI_CONFIG_FILE, else ~/.terraformrc) provides one, that is
#              used as it is. Otherwise the schema-only stand-in from
#              ../shared/tools/terraform-offline/ is prepared here (its cache lives in
#              ~/.cache/terraform-offline); the tests make the same choice.
#   terraform  not installable from the reachable registries: must be on PATH already (>= 1.9).
#
# usage: bash infra/deploy_tools.sh
# Environment: CHECKOV_VERSION (default below), PYTHON (default python3, must be >= 3.11).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
checkov_version=${CHECKOV_VERSION:-3.3.30}
checkov_venv=$root/.local/checkov
python=${PYTHON:-python3}
offline_dir=$(cd "$root/../shared/tools/terraform-offline" 2>/dev/null && pwd -P) || offline_dir=$root/../shared/tools/terraform-offline
offline_setup=$offline_dir/setup

say() { echo "deploy_tools: $*" >&2; }
die() { say "error: $*"; exit 1; }

# --- terraform -----------------------------------------------------------------------------------
if command -v terraform >/dev/null; then
  say "terraform: $(terraform version 2>/dev/null | head -n1)"
else
  say "warning: terraform is not on PATH; the terraform checks will be skipped"
fi

# --- checkov ---------------------------------------------------------------------------------------
installed_checkov() {
  [[ -x $checkov_venv/bin/checkov ]] &&
    "$checkov_venv/bin/python" -c 'import importlib.metadata as m; print(m.version("checkov"))' 2>/dev/null
}
if [[ $(installed_checkov || true) == "$checkov_version" ]]; then
  say "checkov $checkov_version: present in $checkov_venv"
else
  say "checkov $checkov_version: installing into $checkov_venv"
  rm -rf "$checkov_venv"
  mkdir -p "$(dirname "$checkov_venv")"
  "$python" -m venv "$checkov_venv" || die "'$python -m venv' failed (Debian: apt-get install python3-venv)"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$checkov_venv/bin/python" -m pip install --quiet --no-input \
    "checkov==$checkov_version" >"$root/.local/checkov-pip.log" 2>&1 || {
    tail -n 30 "$root/.local/checkov-pip.log" >&2
    die "pip install checkov==$checkov_version failed; log: $root/.local/checkov-pip.log"
  }
  [[ $(installed_checkov || true) == "$checkov_version" ]] || die "checkov did not install"
  say "checkov $checkov_version: installed"
fi

# --- the google provider for terraform validate / test -------------------------------------------
cli_config=${TF_CLI_CONFIG_FILE:-$HOME/.terraformrc}
if [[ -f $cli_config ]] && grep -q 'hashicorp/google' "$cli_config"; then
  say "google provider: from the terraform CLI config $cli_config"
elif [[ -x $offline_setup ]]; then
  # Only warms the stand-in's cache; the tests call setup again (milliseconds when warm).
  "$offline_setup" >/dev/null || die "$offline_setup failed"
  say "google provider: schema-only stand-in from $offline_dir"
else
  say "warning: no google provider in the CLI config and no $offline_setup; terraform validate/test will be skipped"
fi
