# shellcheck shell=bash
# Sourced by the scripts in scripts/: `--help` prints the script's header comment, `--dry-run`
# makes `run` and `run_to` print each command (on stderr, as `+ command`) instead of running it.

DRY_RUN=0
ARGS=()

# The header comment of the script being run: its lines after the shebang up to the first
# line that is not a comment.
usage() {
  sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"
}

# parse_flags "$@": handles --help/-h and, when the script takes it (DRY_RUN_OK=1), --dry-run;
# leaves every other argument, and everything after `--`, in ARGS.
parse_flags() {
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --dry-run)
        if [ "${DRY_RUN_OK:-0}" != 1 ]; then
          echo "error: $(basename "$0") has no --dry-run (see --help)" >&2
          exit 2
        fi
        DRY_RUN=1 ;;
      --) shift; ARGS+=("$@"); break ;;
      *) ARGS+=("$1") ;;
    esac
    shift
  done
}

# A command as it would be typed.
quote() {
  local words=()
  local word
  for word in "$@"; do words+=("$(printf '%q' "$word")"); done
  echo "${words[*]}"
}

# Prints a command, as `+ command`, on stderr.
show() {
  echo "+ $(quote "$@")" >&2
}

# run COMMAND...: prints it, and runs it unless this is a dry run.
run() {
  show "$@"
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

# run_to FILE COMMAND...: as run, with the command's output written to FILE.
run_to() {
  local out="$1"
  shift
  echo "+ $(quote "$@") > $(quote "$out")" >&2
  if [ "$DRY_RUN" = 0 ]; then "$@" >"$out"; fi
}

# need COMMAND...: fails, naming them, unless every command is installed (not on a dry run).
need() {
  local missing=()
  local command
  for command in "$@"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("$command")
  done
  if [ "$DRY_RUN" = 0 ] && [ ${#missing[@]} -gt 0 ]; then
    echo "error: $(basename "$0") needs ${missing[*]} on PATH" >&2
    exit 3
  fi
}

# run_script SCRIPT ARGS...: runs another of these scripts; on a dry run, that one's dry run.
run_script() {
  local script="$1"
  shift
  if [ "$DRY_RUN" = 1 ]; then
    show "$script" --dry-run "$@"
    "$script" --dry-run "$@"
  else
    show "$script" "$@"
    "$script" "$@"
  fi
}

# retry ATTEMPTS COMMAND...: as run, made again (after 10 s, then 20 s...) until it succeeds, at
# most ATTEMPTS times: for pulls from registries that refuse now and then (429).
retry() {
  local attempts="$1" attempt=1
  shift
  show "$@"
  if [ "$DRY_RUN" = 1 ]; then return 0; fi
  until "$@"; do
    if [ "$attempt" -ge "$attempts" ]; then
      echo "error: failed $attempts times: $(quote "$@")" >&2
      return 1
    fi
    sleep $((${RETRY_PAUSE:-10} * attempt))
    attempt=$((attempt + 1))
  done
}

# rollout KUBECTL... -- WORKLOAD: waits for a rollout (180 s); when it does not finish, prints
# why (the namespace's pods and recent events: image pulls refused, crashes) before failing.
rollout() {
  local kubectl=()
  while [ "$1" != "--" ]; do kubectl+=("$1"); shift; done
  shift
  if run "${kubectl[@]}" rollout status "$1" --timeout=180s; then return 0; fi
  echo "error: $1 did not become ready within 180 s; its namespace's pods and events:" >&2
  "${kubectl[@]}" get pods -o wide >&2 || true
  "${kubectl[@]}" get events --sort-by=.lastTimestamp >&2 || true
  return 1
}
