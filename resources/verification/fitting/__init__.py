"""Fitting the verifier: its classifier chosen, fitted and measured on labelled public claims.

`ai-pipelines calibrate` fits a calibration here for the configured models and the fact-check
evaluation (`python -m evals.fact_check`) reports the same figures. Nothing here decides a
verdict at run time: the calibration file it writes does, so the library's version
(`resources.verification.verifier_version`) counts the files it writes, not this code.
"""
