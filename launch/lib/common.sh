# shellcheck shell=bash disable=SC2154  # tag and dry_run: the sourcing script's
# What every launcher shares: its usage errors, the checks of numbers and words, and the
# shell quoting behind --dry-run. The sourcing script sets `tag` (its name without .sh)
# before sourcing, and `dry_run` (0 or 1) before calling run.

die_usage() {
  echo "$tag.sh: $*" >&2
  echo "Run launch/$tag.sh --help for usage." >&2
  exit 2
}

positive_int_re='^[1-9][0-9]*$'
# shellcheck disable=SC2034  # for the sourcing scripts
non_negative_int_re='^(0|[1-9][0-9]*)$'
is_positive_int() { [[ $1 =~ $positive_int_re ]]; }

# Words that need no shell quoting (nor JSON escaping); also keeps remote paths free of
# quoting problems.
plain_word_re='^[A-Za-z0-9_@%+=:,./-]+$'
option_eq_re='^(--[A-Za-z][A-Za-z0-9_.-]*=)'

quote() {
  if [[ $1 =~ $plain_word_re ]]; then
    printf '%s' "$1"
  elif [[ $1 =~ $option_eq_re ]]; then
    # --opt='value' reads better than '--opt=value' and means the same to a shell.
    printf '%s' "${BASH_REMATCH[1]}"
    quote "${1#"${BASH_REMATCH[1]}"}"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

quote_words() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(quote "$word")"
  done
  printf '%s' "$out"
}

# Dry run: the command on stdout, exactly as a shell would need it. Real run: echoed to
# stderr, then run.
run() {
  if [[ $dry_run == 1 ]]; then
    printf '%s\n' "$(quote_words "$@")"
  else
    printf '+ %s\n' "$(quote_words "$@")" >&2
    "$@"
  fi
}

# A real run needs the Google Cloud CLI.
require_gcloud() {
  if [[ $dry_run == 0 ]] && ! command -v gcloud >/dev/null 2>&1; then
    echo "$tag.sh: gcloud not found; install the Google Cloud CLI (or use --dry-run)" >&2
    exit 1
  fi
}
