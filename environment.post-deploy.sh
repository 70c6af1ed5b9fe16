#!/usr/bin/env bash
# Snakemake runs this inside the new environment.yml environment, from the workflow's folder.
# These data packages declare loaders we do not use (tensorflow, sentence-transformers): install
# them without their dependencies, as .ci/bootstrap does.
set -euo pipefail
grep -v '^#' .ci/requirements-nodeps.txt | xargs python -m pip install --no-deps
