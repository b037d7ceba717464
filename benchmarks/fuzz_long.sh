#!/usr/bin/env bash
# The long fuzz profile (random seeds, thousands of cases per property) of tests/test_fuzz.py: run it
# before resolving a hardening change; record the counts and findings in docs/HARDENING.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export HIL_FUZZ_PROFILE=long
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_fuzz.py --hypothesis-show-statistics "$@"
