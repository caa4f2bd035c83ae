#!/usr/bin/env bash
# Run a queue of long jobs one at a time, resumably: the study's evidence runs.
#
# Usage:
#   scripts/queue.sh JOBS_FILE          (run with nohup ... & ; logs go to logs/queue/)
#
# JOBS_FILE holds one job per line, `NAME | DONE_MARKER | COMMAND` (blank lines and lines
# starting with # are skipped). A job is done when DONE_MARKER (a path relative to the
# repository root) exists. The file is read again after every job, so jobs can be added,
# reordered or removed while the queue runs; the first job not done runs next. Training
# commands should carry --resume (it starts fresh where no checkpoint exists), so a queue
# restarted after the machine went away continues each run from its last epoch (from its
# checkpoint, or where checkpoints are gone, from its latest export: see warm_if_needed). The queue
# stops at the first job that fails (later jobs may need its output); fix it and restart.
# Commands run with the repository's .venv first on PATH where there is one.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
JOBS="${1:?usage: scripts/queue.sh JOBS_FILE}"
[[ -f "${JOBS}" ]] || { echo "[queue] no jobs file ${JOBS}" >&2; exit 2; }
LOGS="${ROOT}/logs/queue"
mkdir -p "${LOGS}"
[[ -x "${ROOT}/.venv/bin/python" ]] && export PATH="${ROOT}/.venv/bin:${PATH}"

next_job() {
  while IFS= read -r line; do
    [[ -z "${line// /}" || "${line}" =~ ^[[:space:]]*# ]] && continue
    local name marker
    name="$(echo "${line}" | cut -d'|' -f1 | xargs)"
    marker="$(echo "${line}" | cut -d'|' -f2 | xargs)"
    [[ -e "${marker}" ]] && continue
    echo "${line}"
    return 0
  done < "${JOBS}"
  return 1
}

# A run whose checkpoints are gone (a new machine: they are never committed) but whose metrics
# and exports are here continues from its latest export instead (--warm-start: same data
# order, keys and learning rates; Adam's moments restart, recorded in config.json).
warm_if_needed() {
  local cmd="$1" wd last
  [[ "${cmd}" == *"--resume"* ]] || { echo "${cmd}"; return; }
  wd="$(echo "${cmd}" | sed -n 's/.*--workdir \([^ ]*\).*/\1/p')"
  if [[ -n "${wd}" && -f "${wd}/metrics.jsonl" && -z "$(ls -A "${wd}/checkpoints" 2>/dev/null)" ]]; then
    last="$(ls -d "${wd}"/exports/epoch_[0-9][0-9][0-9] 2>/dev/null | sort | tail -1)"
    if [[ -n "${last}" ]]; then
      echo "[queue] ${wd} has no checkpoints: warm start from ${last}" >&2
      cmd="${cmd/--resume/--warm-start ${last}}"
    fi
  fi
  echo "${cmd}"
}

while line="$(next_job)"; do
  name="$(echo "${line}" | cut -d'|' -f1 | xargs)"
  cmd="$(echo "${line}" | cut -d'|' -f3-)"
  cmd="$(warm_if_needed "${cmd}")"
  echo "[queue] $(date -u +%FT%TZ) start ${name}: ${cmd}"
  start=$(date +%s)
  bash -c "${cmd}" > "${LOGS}/${name}.log" 2>&1
  rc=$?
  echo "[queue] $(date -u +%FT%TZ) end ${name}: exit ${rc} after $(($(date +%s) - start)) s"
  if [[ ${rc} -ne 0 ]]; then
    tail -5 "${LOGS}/${name}.log" | sed 's/^/[queue]   /'
    echo "[queue] stopped: ${name} failed (log ${LOGS}/${name}.log)"
    exit 1
  fi
done
echo "[queue] $(date -u +%FT%TZ) nothing left to run"
