#!/usr/bin/env bash
# The compose `producer` service: every PRODUCE_EVERY_S seconds, run `retape produce` on each
# finished day of the landing directory (LANDING/<day> -> REPORTS/<day>), then publish the
# newest day's metrics for node_exporter.  A day is a directory named YYYY-MM-DD; today (UTC)
# is skipped because its captures are still being written.  A day whose
# REPORTS/<day>/metrics.prom exists is done and skipped.
#
# `retape produce` serves the day's input bytes to the workers until every segment is
# finished, so days run one after another.  Running it again on a day is safe: a finished job
# whose outputs are there is not submitted again, a job another producer serves is left to
# it, and a job left unfinished (this producer was killed) is resumed; a job Redis lost is
# submitted afresh.
#
# Environment: LANDING (/data), REPORTS (/out), PRODUCE_EVERY_S (3600), REDIS_URL;
# PRODUCE_ONCE=1 makes one pass and exits 1 if a run failed; RETAPE_BIN (retape);
# RETAPE_REPLAY_SOURCES: replay sources for gaps, space-separated, tried in order (each one
# `--replay-source`; the replay workers hold the keys).
set -euo pipefail
: "${LANDING:=/data}" "${REPORTS:=/out}" "${PRODUCE_EVERY_S:=3600}" "${RETAPE_BIN:=retape}"
# SIGTERM: a `retape produce` running in the foreground finishes its job first (bash runs
# the trap once it returns); a sleep is cut short.
trap 'exit 0' TERM INT

log() { printf 'produce.sh: %s\n' "$*" >&2; }

# Copy the newest REPORTS/<day>/metrics.prom to REPORTS/retape.prom (atomically: node_exporter's
# textfile collector reads *.prom files only, so the temporary name is never read half-written).
publish_metrics() {
    local newest="" f
    for f in "$REPORTS"/[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]/metrics.prom; do
        [[ -f $f ]] && newest=$f
    done
    [[ -n $newest ]] || return 0
    if [[ ! -e $REPORTS/retape.prom || $newest -nt $REPORTS/retape.prom ]]; then
        cp "$newest" "$REPORTS/.retape.prom.tmp" && mv -f "$REPORTS/.retape.prom.tmp" "$REPORTS/retape.prom"
    fi
}

replay_args=()
for source in ${RETAPE_REPLAY_SOURCES:-}; do
    replay_args+=(--replay-source "$source")
done

one_pass() {
    local today dir day failed=0
    today=$(date -u +%Y-%m-%d)
    for dir in "$LANDING"/[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]; do
        [[ -d $dir ]] || continue
        day=${dir##*/}
        [[ $day < $today ]] || continue
        [[ -e $REPORTS/$day/metrics.prom ]] && continue
        log "$day: producing"
        if "$RETAPE_BIN" produce "$LANDING/$day" --out "$REPORTS/$day" "${replay_args[@]}"; then
            log "$day: every segment is finished"
        else
            log "$day: retape produce failed; retried on the next pass"
            failed=1
        fi
    done
    publish_metrics || log "could not publish $REPORTS/retape.prom"
    return "$failed"
}

while :; do
    status=0
    one_pass || status=$?
    if [[ ${PRODUCE_ONCE:-0} == 1 ]]; then
        exit "$status"
    fi
    sleep "$PRODUCE_EVERY_S" &
    wait $! || true
done
