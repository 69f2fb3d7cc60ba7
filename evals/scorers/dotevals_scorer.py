"""The JSON-lines loop of a dotevals `type: command` scorer, around your function.

    # my_scorer.py, next to this file
    from dotevals_scorer import run

    def score(output, variables, config):
        return 1.0 if variables["expected"] in output else 0.0   # or (score, "reason")

    run(score)

dotevals starts the program once per run and writes one request per line on
stdin: {"id": 7, "output": "...", "variables": {...}, "config": {...}}. `run`
answers each on stdout with {"id": 7, "score": 0.8, "reason": "..."}, or with
{"id": 7, "error": "..."} when `score` raises (the traceback goes to stderr).
stdout carries only replies: while `run` is running, print() and anything
else written to sys.stdout goes to stderr, which dotevals shows in its error
message when the program crashes. Scores must be in [0, 1]; booleans count as
1 and 0. Standard library only.
"""

import json
import sys
import traceback

__all__ = ["run"]


def _reply(rid, result):
    if isinstance(result, tuple):
        value, reason = result
    else:
        value, reason = result, None
    reply = {"id": rid, "score": float(value)}
    if reason is not None:
        reply["reason"] = str(reason)
    return reply


def run(score):
    """Answers dotevals' requests with `score(output, variables, config)` until stdin closes."""
    replies = sys.stdout
    sys.stdout = sys.stderr  # the user's prints must not reach the replies
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        request = json.loads(line)
        rid = request.get("id")
        try:
            reply = _reply(
                rid,
                score(
                    request.get("output", ""),
                    request.get("variables") or {},
                    request.get("config") or {},
                ),
            )
        except Exception as e:  # the user's bug: this sample is unscored, the loop goes on
            traceback.print_exc(file=sys.stderr)
            reply = {"id": rid, "error": f"{type(e).__name__}: {e}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
