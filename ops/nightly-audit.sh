#!/usr/bin/env bash
# Audit one day of the landing directory: LANDING/<day> -> REPORTS/<day>.
# Exit status is retape's: 1 when a stream scores below RETAPE_FAIL_UNDER (default 98).
set -euo pipefail
day=${1:-$(date -u -d yesterday +%Y-%m-%d)}
: "${LANDING:=/srv/captures/landing}" "${REPORTS:=/srv/captures/reports}"
cd "${RETAPE_HOME:-/opt/retape}"
exec .venv/bin/retape audit "$LANDING/$day" --out "$REPORTS/$day" --quiet --fail-under "${RETAPE_FAIL_UNDER:-98}"
