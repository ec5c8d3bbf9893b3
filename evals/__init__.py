"""Evaluation: answer scorers (scorers.py) for GSM8K, HiTab and OpenScience, per PAPER.md "Scoring"."""
