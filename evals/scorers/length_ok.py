"""Example `type: command` scorer: is the answer short enough?

Scores 1 when the output has at most `config.max_words` words (default 5),
and less the longer it gets beyond that (max_words / words), with a reason.
Used by evals/custom-scorer.yaml.
"""

from dotevals_scorer import run


def score(output, variables, config):
    limit = int(config.get("max_words", 5))
    words = len(output.split())
    print(f"scoring {variables.get('text', '')!r}: {words} words")  # goes to stderr
    if words <= limit:
        return 1.0, f"{words} words, within {limit}"
    return limit / words, f"{words} words, over the limit of {limit}"


if __name__ == "__main__":
    run(score)
