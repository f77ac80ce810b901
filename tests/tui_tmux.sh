#!/usr/bin/env bash
# Drive the capsearch TUI in a real terminal (tmux): start it, press keys, capture the pane after each step.
#
#   tests/tui_tmux.sh WORKSPACE OUT_DIR [PYTHON]
#
# Captures are written to OUT_DIR/NN-name.txt; the script fails (naming the step and showing the pane) when
# an expected text does not appear in time. tests/test_tui_tmux.py runs it and checks the captures.
# It uses its own tmux server (-L) and no user configuration, so it never touches your tmux sessions.
set -euo pipefail

ws=${1:?usage: tests/tui_tmux.sh WORKSPACE OUT_DIR [PYTHON]}
out=${2:?usage: tests/tui_tmux.sh WORKSPACE OUT_DIR [PYTHON]}
py=${3:-python3}
sock="capsearch-tui-test-$$"
mkdir -p "$out"

tm() { tmux -L "$sock" "$@"; }
cleanup() { tm kill-server >/dev/null 2>&1 || true; }
trap cleanup EXIT

# A terminal with truecolor, as a user's tmux.conf would set it.
conf="$out/tmux.conf"
term=tmux-256color
infocmp "$term" >/dev/null 2>&1 || term=screen-256color
printf 'set -g default-terminal "%s"\nset -ga terminal-overrides ",*:Tc"\nset -g escape-time 10\n' "$term" > "$conf"

tm -f "$conf" new-session -d -s tui -x 100 -y 30 \
  "cd '$PWD' && COLORTERM=truecolor '$py' -m tui --workspace '$ws'; echo \"TUI-EXITED \$?\"; sleep 120"

step=0
capture() { tm capture-pane -p -t tui > "$1"; }
# wait_for NAME TIMEOUT TEXT...: capture until every TEXT is on the screen
wait_for() {
  local name=$1 timeout=$2; shift 2
  step=$((step + 1))
  local file; file=$(printf '%s/%02d-%s.txt' "$out" "$step" "$name")
  local deadline=$((SECONDS + timeout))
  while true; do
    capture "$file"
    local missing=""
    for text in "$@"; do grep -qF -- "$text" "$file" || missing="$text"; done
    [ -z "$missing" ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "step $step ($name): '$missing' did not appear within ${timeout}s; the pane shows:" >&2
      cat "$file" >&2
      return 1
    fi
    sleep 0.2
  done
}
# keys K...: one key at a time, as a person types (an escape followed at once by a key reads as alt+key)
keys() {
  for k in "$@"; do
    tm send-keys -t tui "$k"
    if [ "$k" = Escape ]; then sleep 0.6; else sleep 0.15; fi
  done
}
type_text() { tm send-keys -t tui -l "$1"; }

wait_for pipeline 60 "1 Pipeline" "ingest ✓" "report"
keys 2
wait_for captions 30 "of 30 target photos"
keys Enter
wait_for photo 30 "1/30" "Reference captions" "#1 "
# scroll down (j) until the prompt shows: how far that is depends on the captions' lengths and the terminal
for _ in $(seq 1 20); do
  capture "$out/scroll.tmp"; grep -qF "Prompt given to the VLM" "$out/scroll.tmp" && break
  keys j j j
done
rm -f "$out/scroll.tmp"
wait_for prompt 30 "Prompt given to the VLM"
keys n
wait_for next-photo 30 "2/30"
keys Escape 3
wait_for search-ready 90 "evaluation queries (ctrl+n)"
type_text "a pink tree"
wait_for search 30 "results ·" "a pink tree" "every photo"
keys C-o
# "· targets only" is in the line of a finished search of the targets (the loading line says "(targets only)…")
wait_for search-targets 90 "· targets only"
# ctrl+t cycles the methods of the targets scope until the oracle's (at most one round of them); the method label
# changes at once, the results line once the search is done (waited for below), so a slow search cannot make
# the loop press past the oracle
for _ in 1 2 3 4 5 6 7 8; do
  capture "$out/cycle.tmp"; grep -qF "method oracle" "$out/cycle.tmp" && break
  keys C-t; sleep 0.3
done
rm -f "$out/cycle.tmp"
wait_for search-oracle 30 "· oracle ·"
keys Escape 4
wait_for evaluation 30 "R@10" "knn-consensus" "per method"
keys Enter
wait_for missed 30 "queries whose true photo"
keys Enter
wait_for search-from-evaluation 30 "true photo ranked #" "(short query)"
keys Escape 5
wait_for runs 30 "Stage runs in this workspace"
keys '?'
wait_for help 10 "capsearch keys"
keys '?' 1 r
wait_for run 180 "run completed"
keys q
wait_for exit 30 "TUI-EXITED 0"
